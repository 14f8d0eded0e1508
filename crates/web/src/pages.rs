//! The pages of SPEC §12: the Stripe settings panel, the sales grid and the dashboard.
//!
//! Each page is a static shell compiled into the binary (`assets/`): it holds no data and
//! needs no token. Its script reads the JWT from the URL fragment (`#token=…`, which browsers
//! never send to a server), keeps it in `sessionStorage` and calls the JSON API with it, so
//! the pages have exactly the caller's rights and nothing else.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use tributary_domain::BusinessId;

const LAYOUT: &str = include_str!("../assets/layout.html");
const SETTINGS: &str = include_str!("../assets/settings.html");
const SALES: &str = include_str!("../assets/sales.html");
const DASHBOARD: &str = include_str!("../assets/dashboard.html");
const RETURN: &str = include_str!("../assets/return.html");

/// Assets by name: body and content type.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        include_str!("../assets/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "ui.js",
        include_str!("../assets/ui.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "settings.js",
        include_str!("../assets/settings.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "sales.js",
        include_str!("../assets/sales.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "dashboard.js",
        include_str!("../assets/dashboard.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "charts.js",
        include_str!("../assets/charts.js"),
        "text/javascript; charset=utf-8",
    ),
];

/// Scripts and styles come from this origin only; the API is the only thing fetched.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'";

/// The page of one business; the tab it opens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Settings,
    Sales,
    Dashboard,
}

impl Tab {
    fn title(self) -> &'static str {
        match self {
            Tab::Settings => "Stripe settings",
            Tab::Sales => "Sales",
            Tab::Dashboard => "Dashboard",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Tab::Settings => "settings/stripe",
            Tab::Sales => "sales",
            Tab::Dashboard => "dashboard",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Tab::Settings => SETTINGS,
            Tab::Sales => SALES,
            Tab::Dashboard => DASHBOARD,
        }
    }

    fn scripts(self) -> &'static [&'static str] {
        match self {
            Tab::Settings => &["settings.js"],
            Tab::Sales => &["sales.js"],
            Tab::Dashboard => &["charts.js", "dashboard.js"],
        }
    }
}

/// Percent-encodes a path segment; the result is also safe inside an HTML attribute.
fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The page's script tags: the shared `ui.js` first, then its own.
fn scripts(own: &[&str]) -> String {
    std::iter::once("ui.js")
        .chain(own.iter().copied())
        .map(|s| format!("<script src=\"/ui/assets/{s}\" defer></script>\n"))
        .collect()
}

fn page_headers(mut res: HttpResponse) -> HttpResponse {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn html(body: String) -> HttpResponse {
    page_headers(
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(body),
    )
}

fn not_found() -> HttpResponse {
    page_headers(
        HttpResponse::NotFound()
            .content_type("text/html; charset=utf-8")
            .body(
                LAYOUT
                    .replace("{{title}}", "Not found")
                    .replace("{{page}}", "missing")
                    .replace("{{nav}}", "")
                    .replace("{{scripts}}", &scripts(&[]))
                    .replace(
                        "{{main}}",
                        "<section class=\"card\"><h1>Page not found</h1>\
                         <p class=\"muted\">Check the link you followed.</p></section>",
                    ),
            ),
    )
}

fn render(id: &str, tab: Tab) -> HttpResponse {
    if BusinessId::parse(id).is_err() {
        return not_found();
    }
    let base = format!("/ui/businesses/{}", encode_segment(id));
    let nav: String = [Tab::Settings, Tab::Sales, Tab::Dashboard]
        .into_iter()
        .map(|t| {
            let current = if t == tab {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{base}/{}\"{current}>{}</a>", t.path(), t.title())
        })
        .collect();
    html(
        LAYOUT
            .replace("{{title}}", tab.title())
            .replace("{{page}}", tab.path())
            .replace("{{nav}}", &nav)
            .replace("{{scripts}}", &scripts(tab.scripts()))
            .replace("{{main}}", tab.body()),
    )
}

#[utoipa::path(
    get,
    path = "/ui/businesses/{id}/settings/stripe",
    tag = "pages",
    summary = "The Stripe settings panel of a business",
    description = "The page reads the bearer token from the URL fragment (`#token=…`).",
    params(("id" = String, Path, description = "The business")),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 404, description = "Not a business id.", content_type = "text/html", body = String),
    )
)]
pub(crate) async fn settings_page(id: web::Path<String>) -> HttpResponse {
    render(&id, Tab::Settings)
}

#[utoipa::path(
    get,
    path = "/ui/businesses/{id}/sales",
    tag = "pages",
    summary = "The sales grid of a business",
    description = "The page reads the bearer token from the URL fragment (`#token=…`).",
    params(("id" = String, Path, description = "The business")),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 404, description = "Not a business id.", content_type = "text/html", body = String),
    )
)]
pub(crate) async fn sales_page(id: web::Path<String>) -> HttpResponse {
    render(&id, Tab::Sales)
}

#[utoipa::path(
    get,
    path = "/ui/businesses/{id}/dashboard",
    tag = "pages",
    summary = "The dashboard of a business",
    description = "The page reads the bearer token from the URL fragment (`#token=…`).",
    params(("id" = String, Path, description = "The business")),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 404, description = "Not a business id.", content_type = "text/html", body = String),
    )
)]
pub(crate) async fn dashboard_page(id: web::Path<String>) -> HttpResponse {
    render(&id, Tab::Dashboard)
}

/// The query of `GET /ui/settings`: the OAuth outcome the callback forwards.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReturnQuery {
    #[serde(rename = "businessId")]
    business_id: Option<String>,
    /// `connected` or `error`.
    stripe: Option<String>,
    /// Why the connection failed (see the OAuth callback).
    reason: Option<String>,
}

/// Where the OAuth callback lands (`frontend.agency_settings_url` in the demo): forwards to
/// the business's settings page with the outcome. Without a business (an unreadable state)
/// the page's script returns to the business this tab last showed, or explains.
#[utoipa::path(
    get,
    path = "/ui/settings",
    tag = "pages",
    summary = "Where the OAuth callback lands in the demo",
    params(ReturnQuery),
    responses(
        (status = 302, description = "To the business's settings page, with the outcome.",
            headers(("Location" = String))),
        (status = 200, description = "No business: a page that explains.",
            content_type = "text/html", body = String),
    )
)]
pub(crate) async fn oauth_return(req: HttpRequest) -> HttpResponse {
    let query = web::Query::<ReturnQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(ReturnQuery {
            business_id: None,
            stripe: None,
            reason: None,
        });
    let outcome = |u: &mut url::form_urlencoded::Serializer<'_, String>| {
        if let Some(s) = &query.stripe {
            u.append_pair("stripe", s);
        }
        if let Some(r) = &query.reason {
            u.append_pair("reason", r);
        }
    };
    match query.business_id.as_deref() {
        Some(id) if BusinessId::parse(id).is_ok() => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            outcome(&mut q);
            let q = q.finish();
            let mut location = format!("/ui/businesses/{}/settings/stripe", encode_segment(id));
            if !q.is_empty() {
                location.push('?');
                location.push_str(&q);
            }
            HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        _ => html(
            LAYOUT
                .replace("{{title}}", "Stripe")
                .replace("{{page}}", "return")
                .replace("{{nav}}", "")
                .replace("{{scripts}}", &scripts(&["settings.js"]))
                .replace("{{main}}", RETURN),
        ),
    }
}

#[utoipa::path(
    get,
    path = "/ui/assets/{name}",
    tag = "pages",
    summary = "A script or stylesheet of the pages",
    params(("name" = String, Path, description = "`app.css`, `ui.js`, …")),
    responses(
        (status = 200, description = "The asset.", content(
            (String = "text/css"),
            (String = "text/javascript"),
        )),
        (status = 404, description = "No such asset.", content_type = "text/html", body = String),
    )
)]
pub(crate) async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(n, _, _)| *n == name.as_str()) {
        Some((_, body, content_type)) => HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(*body),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::encode_segment;

    #[test]
    fn business_ids_are_encoded_for_paths_and_attributes() {
        assert_eq!(encode_segment("northwind-1"), "northwind-1");
        assert_eq!(encode_segment("a\"b<c>/d e"), "a%22b%3Cc%3E%2Fd%20e");
    }
}
