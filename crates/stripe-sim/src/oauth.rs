//! Connect OAuth: `/oauth/authorize` (approval page), `/oauth/token`, `/oauth/deauthorize`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::Sim;
use crate::api::api_key;

const CODE_LIFETIME: i64 = 300;
pub const CLIENT_ID: &str = "ca_tributary_sim";

fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": error, "error_description": description}))
}

fn query_pairs(qs: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(qs.as_bytes())
        .into_owned()
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn redirect(base: &str, params: &[(&str, &str)]) -> HttpResponse {
    let mut url = match url::Url::parse(base) {
        Ok(u) => u,
        Err(_) => return HttpResponse::BadRequest().body(format!("Invalid redirect_uri: {base}")),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    HttpResponse::Found()
        .insert_header(("Location", url.to_string()))
        .finish()
}

async fn authorize(req: HttpRequest, sim: web::Data<Sim>) -> HttpResponse {
    let pairs = query_pairs(req.query_string());
    let Some(redirect_uri) = get(&pairs, "redirect_uri") else {
        return HttpResponse::BadRequest()
            .body("Missing redirect_uri (the simulator has no registered default).");
    };
    let state = get(&pairs, "state").unwrap_or_default();
    if get(&pairs, "sim_decision") == Some("deny") {
        return redirect(
            redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "The user denied your request"),
                ("state", state),
            ],
        );
    }
    if let Some(acct) = get(&pairs, "sim_account") {
        let mut world = sim.write();
        if !world.order.iter().any(|a| a == acct) {
            return HttpResponse::BadRequest().body(format!("Unknown simulator account: {acct}"));
        }
        let code = world.rng.id("ac_", 32);
        world.codes.insert(
            code.clone(),
            crate::OAuthCode {
                account: acct.to_string(),
                issued: sim.now(),
                used: false,
            },
        );
        let scope = get(&pairs, "scope").unwrap_or("read_write").to_string();
        return redirect(
            redirect_uri,
            &[("code", &code), ("scope", &scope), ("state", state)],
        );
    }
    let world = sim.read();
    let base = format!("/oauth/authorize?{}", req.query_string());
    let mut rows = String::new();
    for id in &world.order {
        let name = world
            .account(id)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let href = format!("{base}&sim_account={id}");
        rows.push_str(&format!(
            "<li><a class=\"approve\" href=\"{}\">Connect <b>{}</b> ({})</a></li>\n",
            html_escape(&href),
            html_escape(&name),
            html_escape(id)
        ));
    }
    let deny = format!("{base}&sim_decision=deny");
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Connect with Stripe (simulator)</title></head>\
         <body><h1>Connect your Stripe account</h1><p>Client <code>{}</code> asks for <code>{}</code> access.</p>\
         <ul>{rows}</ul><p><a class=\"deny\" href=\"{}\">Deny access</a></p></body></html>",
        html_escape(get(&pairs, "client_id").unwrap_or("")),
        html_escape(get(&pairs, "scope").unwrap_or("read_write")),
        html_escape(&deny)
    ))
}

fn form_or_query(req: &HttpRequest, body: &web::Bytes) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    pairs.extend(query_pairs(req.query_string()));
    pairs
}

/// The platform key: `Authorization`, else `client_secret` in the form.
#[allow(clippy::result_large_err)]
fn platform_key(req: &HttpRequest, pairs: &[(String, String)]) -> Result<String, HttpResponse> {
    if req.headers().contains_key("authorization") {
        return api_key(req).map_err(|_| {
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid API Key provided.",
            )
        });
    }
    match get(pairs, "client_secret") {
        Some(k) if (k.starts_with("sk_test_") || k.starts_with("sk_live_")) && k.len() > 8 => {
            Ok(k.to_string())
        }
        _ => Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "No valid API key provided.",
        )),
    }
}

async fn token(req: HttpRequest, body: web::Bytes, sim: web::Data<Sim>) -> HttpResponse {
    let pairs = form_or_query(&req, &body);
    let key = match platform_key(&req, &pairs) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let live = key.starts_with("sk_live_");
    let now = sim.now();
    let mut world = sim.write();
    let account = match get(&pairs, "grant_type") {
        Some("authorization_code") => {
            let Some(code) = get(&pairs, "code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "No authorization code provided",
                );
            };
            let Some(c) = world.codes.get_mut(code) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    &format!("Authorization code does not exist: {code}"),
                );
            };
            if c.used {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    &format!("Authorization code provided has already been used: {code}"),
                );
            }
            c.used = true;
            if now - c.issued > CODE_LIFETIME {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    &format!("Authorization code expired: {code}"),
                );
            }
            c.account.clone()
        }
        Some("refresh_token") => {
            let rt = get(&pairs, "refresh_token").unwrap_or_default();
            match world.refresh_tokens.get(rt) {
                Some(a) => a.clone(),
                None => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        &format!("Invalid refresh token: {rt}"),
                    );
                }
            }
        }
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "No grant type specified",
            );
        }
    };
    let mode = if live { "live" } else { "test" };
    let access = world.rng.id(&format!("sk_{mode}_"), 99);
    let refresh = world.rng.id("rt_", 60);
    let publishable = world.rng.id(&format!("pk_{mode}_"), 99);
    world
        .refresh_tokens
        .insert(refresh.clone(), account.clone());
    let was_revoked = world.accounts.get(&account).is_some_and(|a| a.revoked);
    if let Some(a) = world.accounts.get_mut(&account) {
        a.revoked = false;
        let app = json!({"id": CLIENT_ID, "object": "application", "name": "Tributary (sim)"});
        let event = a.record_event("account.application.authorized", &app, None, now);
        let _ = was_revoked;
        sim.dispatch(&world, &account, &event);
    }
    HttpResponse::Ok().json(json!({
        "access_token": access,
        "livemode": live,
        "refresh_token": refresh,
        "scope": "read_write",
        "stripe_publishable_key": publishable,
        "stripe_user_id": account,
        "token_type": "bearer",
    }))
}

async fn deauthorize(req: HttpRequest, body: web::Bytes, sim: web::Data<Sim>) -> HttpResponse {
    let pairs = form_or_query(&req, &body);
    if let Err(e) = platform_key(&req, &pairs) {
        return e;
    }
    let Some(client_id) = get(&pairs, "client_id").filter(|c| !c.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "No client_id provided",
        );
    };
    let Some(acct) = get(&pairs, "stripe_user_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "No stripe_user_id provided",
        );
    };
    let now = sim.now();
    let mut world = sim.write();
    let connected =
        world.order.iter().any(|a| a == acct) && world.account(acct).is_some_and(|a| !a.revoked);
    if !connected {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!(
                "This application is not connected to stripe account {acct}, or that account does not exist."
            ),
        );
    }
    revoke(&sim, &mut world, acct, client_id, now);
    HttpResponse::Ok().json(json!({"stripe_user_id": acct}))
}

/// The platform loses access to `acct`; `account.application.deauthorized` goes out.
pub fn revoke(sim: &Sim, world: &mut crate::World, acct: &str, client_id: &str, now: i64) {
    let Some(a) = world.accounts.get_mut(acct) else {
        return;
    };
    a.revoked = true;
    let app = json!({"id": client_id, "object": "application", "name": "Tributary (sim)"});
    let event = a.record_event("account.application.deauthorized", &app, None, now);
    sim.dispatch(world, acct, &event);
}

pub fn scope() -> actix_web::Scope {
    web::scope("/oauth")
        .route("/authorize", web::get().to(authorize))
        .route("/token", web::post().to(token))
        .route("/deauthorize", web::post().to(deauthorize))
}
