//! Logging: `tracing` with plain or JSON lines; our crates at the configured level,
//! dependencies at `warn`. Every HTTP request runs in a `request` span carrying its
//! `request_id` (also the `X-Request-Id` answer header) and, once a route knows it, its
//! `business_id`; every sync run in a `sync` span with `business_id`, `job_id` and `trigger`.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_subscriber::{EnvFilter, fmt};
use tributary_domain::BusinessId;

use crate::settings::{LogFormat, LogSettings};

const OUR_CRATES: &[&str] = &[
    "tributary_api",
    "tributary_scheduler",
    "tributary_web",
    "tributary_sync",
    "tributary_persistence",
    "tributary_stripe_connect",
    "tributary_stripe_sim",
    "tributary_domain",
];

/// The filter for `level`: `RUST_LOG`, when set, replaces it entirely.
pub fn filter(level: &str) -> EnvFilter {
    if let Ok(custom) = std::env::var("RUST_LOG") {
        return EnvFilter::new(custom);
    }
    let mut directives = vec!["warn".to_owned()];
    directives.extend(OUR_CRATES.iter().map(|c| format!("{c}={level}")));
    EnvFilter::new(directives.join(","))
}

/// Installs the global subscriber, writing to stderr. Calling it twice is harmless.
pub fn init(log: &LogSettings) {
    let builder = fmt()
        .with_env_filter(filter(&log.level))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}

/// The header a request id comes in and goes out with.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's `X-Request-Id` when it is a short token (1 to 64 of `A-Z a-z 0-9 . _ : -`),
/// so a proxy's id follows the request through; anything else is replaced by a new UUIDv7,
/// never logged.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// Records the business the current request acts on into its `request` span: the extractors of
/// [`crate::auth`] call it once a token's business is resolved, the webhook routes once an event
/// is routed.
pub fn record_business(business: &BusinessId) {
    tracing::Span::current().record("business_id", business.as_str());
}

/// Health checks and scrapes answer at `debug`: they come every few seconds.
fn quiet(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Runs the request in its `request` span, answers its id in `X-Request-Id`, counts it in the
/// HTTP metrics (by route pattern, never the raw path) and writes one line: method, path (never
/// the query, which carries OAuth codes and states, nor any header), status and duration.
pub(crate) async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = req.method().clone();
    let path = req.path().to_owned();
    let route = req.match_pattern();
    let request_id = request_id(req.headers());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        business_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    crate::metrics::http_request(
        method.as_str(),
        route.as_deref().unwrap_or("unmatched"),
        status,
        elapsed,
    );
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        if quiet(&path) {
            tracing::debug!(%method, %path, status, elapsed_ms, "request");
        } else {
            tracing::info!(%method, %path, status, elapsed_ms, "request");
        }
    });
    if let (Ok(r), Ok(value)) = (&mut res, HeaderValue::from_str(&request_id)) {
        r.headers_mut().insert(REQUEST_ID, value);
    }
    res
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::test::{TestRequest, call_service, init_service};
    use actix_web::{App, HttpResponse, web};

    use super::*;

    #[test]
    fn request_ids_are_taken_only_when_sane() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                REQUEST_ID,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
            request_id(&h)
        };
        assert_eq!(with("abc-123_x.y:z"), "abc-123_x.y:z");
        for bad in ["", "has space", "semi;colon", &"x".repeat(65)] {
            let id = with(bad);
            assert_ne!(id, bad);
            assert!(
                uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 7),
                "{id}"
            );
        }
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn business_route(id: web::Path<String>) -> HttpResponse {
        if let Ok(business) = BusinessId::parse(&id) {
            record_business(&business);
        }
        tracing::info!("inside the handler");
        HttpResponse::Ok().finish()
    }

    /// The lines the JSON formatter wrote, parsed.
    fn lines(buffer: &Buffer) -> Vec<serde_json::Value> {
        let bytes = buffer.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    #[actix_web::test]
    async fn json_lines_carry_the_request_id_and_business() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(access_log))
                .route("/b/{id}", web::get().to(business_route)),
        )
        .await;

        let res = call_service(
            &app,
            TestRequest::get()
                .uri("/b/biz-7?code=secret-oauth-code")
                .insert_header(("x-request-id", "proxy-id-1"))
                .to_request(),
        )
        .await;
        assert_eq!(
            res.headers().get("x-request-id").map(|v| v.as_bytes()),
            Some(&b"proxy-id-1"[..])
        );
        let res = call_service(&app, TestRequest::get().uri("/b/biz-8").to_request()).await;
        let generated = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated:?}");

        let lines = lines(&buffer);
        let of = |id: &str, message: &str| {
            lines
                .iter()
                .find(|l| l["span"]["request_id"] == id && l["fields"]["message"] == message)
                .cloned()
                .unwrap_or_else(|| panic!("no {message:?} line of {id}: {lines:?}"))
        };
        for (id, business) in [("proxy-id-1", "biz-7"), (generated.as_str(), "biz-8")] {
            let inside = of(id, "inside the handler");
            assert_eq!(inside["span"]["business_id"], business, "{inside}");
            let access = of(id, "request");
            assert_eq!(access["span"]["business_id"], business, "{access}");
            assert_eq!(access["fields"]["status"], 200, "{access}");
        }
        let all = serde_json::to_string(&lines).unwrap_or_default();
        assert!(
            !all.contains("secret-oauth-code"),
            "the query is never logged: {all}"
        );
    }
}
