//! Hostile input through the real HTTP server (issue #11): property tests of JSON bodies,
//! query strings, the OAuth callback's parameters and webhook deliveries; the JWT cases the
//! route matrix of `every_route_refuses_missing_bad_and_foreign_tokens` does not cover; body
//! limits on every JSON route and webhook endpoint; and Stripe calls a person waits on when
//! Stripe never answers. Every answer is a success or a clear `4xx` in the JSON error shape,
//! never a `5xx`, and a refused request writes nothing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary_persistence::businesses;
use tributary_persistence::entities::webhook_events;
use tributary_persistence::sea_orm::{EntityTrait, PaginatorTrait};

use super::*;

const CONNECT_SECRET: &str = "whsec_hostile_connect_secret";
const PLATFORM_SECRET: &str = "whsec_hostile_platform_secret";
const BUSINESS_SECRET: &str = "whsec_hostile_business_secret";

/// The test app with both webhook secrets configured.
async fn spawn(t: &TestDbRef) -> TestApp {
    TestApp::spawn_configured(t, Opts::default(), |s| {
        s.stripe.connect_webhook_secret = Some(String::from(CONNECT_SECRET).into());
        s.stripe.platform_webhook_secret = Some(String::from(PLATFORM_SECRET).into());
    })
    .await
}

/// Runs `check` on `cases` generated inputs, shrinking a failure to a minimal one.
fn property<S, F, Fut>(cases: u32, strategy: S, check: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&strategy, |input| {
        tokio::task::block_in_place(|| handle.block_on(check(input)))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A success, or a `4xx` with `{"error": {"code", "message"}}`; never a `5xx`.
fn clear(what: &str, res: &Answer) -> Result<(), TestCaseError> {
    let s = res.status.as_u16();
    prop_assert!(s < 500, "{what}: {s} {}", res.text);
    if s >= 400 {
        let body: Value = serde_json::from_str(&res.text).map_err(|e| {
            TestCaseError::fail(format!("{what}: {s} not JSON ({e}): {}", res.text))
        })?;
        prop_assert!(
            body["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
                && body["error"]["message"].is_string(),
            "{what}: {s} {}",
            res.text
        );
    }
    Ok(())
}

/// Values no caller should send.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!("")),
        Just(json!("\u{0}")),
        Just(json!("a\u{0}b")),
        Just(json!("whsec_\u{0}abcdefgh")),
        Just(json!("'; DROP TABLE businesses; --")),
        Just(json!("%00%ff%c0%af")),
        Just(json!("ÿ€😀\u{202e}\u{feff}")),
        Just(json!("x".repeat(5_000))),
        Just(json!("biz-other")),
        Just(json!("a@b.c")),
        "\\PC{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes that print as text in a failure report.
#[derive(Clone)]
struct Body(Vec<u8>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.0);
        match text.char_indices().nth(300) {
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &text[..cut], self.0.len()),
            None => write!(f, "{text:?}"),
        }
    }
}

/// A body as sent on the wire: a valid body with one field replaced, added or dropped, any
/// JSON at all, or bytes that are not JSON.
fn hostile_body(valid: Value) -> impl Strategy<Value = Body> {
    hostile_bytes(valid).prop_map(Body)
}

fn hostile_bytes(valid: Value) -> impl Strategy<Value = Vec<u8>> {
    let keys: Vec<String> = valid.as_object().unwrap().keys().cloned().collect();
    let fields = valid.clone();
    prop_oneof![
        4 => (prop::sample::select(keys.clone()), hostile_value()).prop_map(move |(k, v)| {
            let mut b = fields.clone();
            b[k.as_str()] = v;
            b.to_string().into_bytes()
        }),
        1 => prop::sample::select(keys).prop_map({
            let valid = valid.clone();
            move |k| {
                let mut b = valid.clone();
                b.as_object_mut().unwrap().remove(&k);
                b.to_string().into_bytes()
            }
        }),
        1 => ("[a-z]{1,6}", hostile_value()).prop_map({
            let valid = valid.clone();
            move |(k, v)| {
                let mut b = valid.clone();
                b[k.as_str()] = v;
                b.to_string().into_bytes()
            }
        }),
        1 => hostile_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (1usize..5_000).prop_map(|depth| {
            let mut s = "[".repeat(depth);
            s.push_str(&"]".repeat(depth));
            s.into_bytes()
        }),
    ]
}

impl TestApp {
    /// Sends raw bytes with a bearer token and a content type.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        Answer {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }

    async fn json_body(&self, method: Method, path: &str, token: &str, body: Vec<u8>) -> Answer {
        self.raw(
            method,
            path,
            Some(token),
            &[("content-type", "application/json")],
            body,
        )
        .await
    }
}

/// What a refused request must leave as it was.
async fn snapshot(db: &Database) -> Value {
    let business = |id: &str| {
        let db = db.clone();
        let id = id.to_owned();
        async move {
            businesses::get(&db, &biz(&id))
                .await
                .unwrap()
                .map(|b| json!([b.id, b.slug, b.name, b.agency_id]))
        }
    };
    json!({
        "biz-h": business("biz-h").await,
        "victim": business("biz-victim").await,
        "secret": webhooks::secret(db, &biz("biz-h")).await.unwrap(),
        "events": webhook_events::Entity::find().count(db.conn()).await.unwrap(),
        "access": access::get(db, &biz("biz-h")).await.unwrap().map(|a| a.stripe_account_id),
    })
}

/// `biz-h` registered (slug `hostile-co`) with a webhook secret; `biz-victim` registered too.
async fn registered(app: &TestApp) {
    for (id, slug) in [("biz-h", "hostile-co"), ("biz-victim", "victim-co")] {
        let res = app
            .put(
                &format!("/api/businesses/{id}"),
                &admin(),
                json!({"name": format!("{id} Ltd"), "slug": slug, "agency_id": "ag-1"}),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    }
    let res = app
        .put(
            "/api/stripe/biz-h/webhook-secret",
            &agency(&["biz-h"]),
            json!({"secret": BUSINESS_SECRET}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
}

// ---------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `header.payload` signed with HMAC-SHA256 under `key`, whatever the header claims.
fn hs256(header: &Value, payload: &[u8], key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload)
    );
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(key),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{signature}")
}

fn forged(header: &Value, claims: &Value, key: &[u8]) -> String {
    hs256(header, claims.to_string().as_bytes(), key)
}

db_test!(jwt_gaps_are_refused_and_write_nothing, |t| {
    let app = spawn(&t).await;
    registered(&app).await;
    let before = snapshot(&app.db).await;
    let base = || json!({"sub": "intruder", "exp": now() + 600, "portal": "agency", "businesses": ["biz-h"]});
    let with = |k: &str, v: Value| {
        let mut c = base();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = base();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let good = sign(SECRET, &base());
    let parts: Vec<&str> = good.split('.').collect();
    let admin_claims =
        json!({"sub": "intruder", "exp": now() + 600, "portal": "agency", "admin": true});
    let admin_token = sign(SECRET, &admin_claims);
    let admin_parts: Vec<&str> = admin_token.split('.').collect();
    let hs = json!({"alg": "HS256", "typ": "JWT"});

    let mut refused: Vec<(String, String)> = vec![
        (
            "nbf an hour ahead".into(),
            sign(SECRET, &with("nbf", json!(now() + 3600))),
        ),
        (
            "nbf past the leeway".into(),
            sign(SECRET, &with("nbf", json!(now() + 120))),
        ),
        (
            "nbf not a number".into(),
            sign(SECRET, &with("nbf", json!("soon"))),
        ),
        ("no sub".into(), sign(SECRET, &without("sub"))),
        ("blank sub".into(), sign(SECRET, &with("sub", json!("   ")))),
        ("sub not text".into(), sign(SECRET, &with("sub", json!(42)))),
        ("no exp".into(), sign(SECRET, &without("exp"))),
        (
            "exp as text".into(),
            sign(SECRET, &with("exp", json!((now() + 600).to_string()))),
        ),
        (
            "exp as a fraction".into(),
            sign(SECRET, &with("exp", json!(1e12 + 0.5))),
        ),
        (
            "expired past the leeway".into(),
            sign(SECRET, &with("exp", json!(now() - 45))),
        ),
        ("no portal".into(), sign(SECRET, &without("portal"))),
        (
            "unknown portal".into(),
            sign(SECRET, &with("portal", json!("superadmin"))),
        ),
        (
            "client portal and admin".into(),
            sign(
                SECRET,
                &json!({"sub": "u", "exp": now() + 600, "portal": "client", "businesses": ["biz-h"], "admin": true}),
            ),
        ),
        (
            "client portal without a business".into(),
            sign(
                SECRET,
                &json!({"sub": "u", "exp": now() + 600, "portal": "client"}),
            ),
        ),
        (
            "businesses as text".into(),
            sign(SECRET, &with("businesses", json!("biz-h"))),
        ),
        (
            "businesses of objects".into(),
            sign(SECRET, &with("businesses", json!([{"id": "biz-h"}]))),
        ),
        (
            "admin as text".into(),
            sign(SECRET, &with("admin", json!("true"))),
        ),
        (
            "HS256 without its signature".into(),
            format!("{}.{}.", parts[0], parts[1]),
        ),
        (
            "HS256 with no third part".into(),
            format!("{}.{}", parts[0], parts[1]),
        ),
        (
            "admin claims with another token's signature".into(),
            format!("{}.{}.{}", admin_parts[0], admin_parts[1], parts[2]),
        ),
        ("a fourth part".into(), format!("{good}.{}", parts[2])),
        (
            "HS512".into(),
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS512),
                &base(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "RS256 header, HMAC with the secret".into(),
            forged(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &base(),
                SECRET.as_bytes(),
            ),
        ),
        (
            "ES256 header, HMAC with the secret".into(),
            forged(&json!({"alg": "ES256"}), &base(), SECRET.as_bytes()),
        ),
        (
            "HS256 signed with an empty key".into(),
            forged(&hs, &base(), b""),
        ),
        (
            "HS256 signed with the secret's first half".into(),
            forged(&hs, &base(), &SECRET.as_bytes()[..SECRET.len() / 2]),
        ),
        (
            "claims not JSON".into(),
            hs256(&hs, b"not json", SECRET.as_bytes()),
        ),
        (
            "claims an array".into(),
            forged(&hs, &json!([base()]), SECRET.as_bytes()),
        ),
    ];
    for alg in ["none", "None", "NONE", "nOnE"] {
        refused.push((
            format!("alg {alg}"),
            format!(
                "{}.{}.",
                b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
                parts[1]
            ),
        ));
    }

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/stripe/biz-h/status".into(), None),
        (
            Method::PUT,
            "/api/stripe/biz-h/webhook-secret".into(),
            Some(json!({"secret": "whsec_attacker_chosen_1"})),
        ),
        (
            Method::GET,
            "/api/contacts/stripe-customers?businessId=biz-h".into(),
            None,
        ),
        (
            Method::GET,
            "/api/businesses/biz-h/revenue?from=2025-01&to=2025-02".into(),
            None,
        ),
        (Method::GET, "/api/admin/connections".into(), None),
        (
            Method::PUT,
            "/api/businesses/biz-victim".into(),
            Some(json!({"name": "Pwned", "slug": "pwned"})),
        ),
        (Method::DELETE, "/api/businesses/biz-victim".into(), None),
    ];
    for (name, token) in &refused {
        for (method, path, body) in &routes {
            let res = app
                .send(method.clone(), path, Some(token), body.clone())
                .await;
            assert_eq!(
                res.status,
                StatusCode::UNAUTHORIZED,
                "{name}: {method} {path}: {}",
                res.text
            );
            assert_eq!(res.error_code(), "unauthorized", "{name}");
            assert_eq!(res.headers["www-authenticate"], "Bearer", "{name}");
        }
    }
    // The token anywhere but a Bearer Authorization header is no token.
    for (what, header) in [
        ("Basic scheme", format!("Basic {good}")),
        ("no scheme", good.clone()),
        ("Token scheme", format!("Token {good}")),
        ("Bearer without a token", "Bearer ".to_owned()),
    ] {
        let res = app
            .raw(
                Method::GET,
                "/api/stripe/biz-h/status",
                None,
                &[("authorization", &header)],
                Vec::new(),
            )
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{what}: {}", res.text);
    }
    for query in [
        format!("access_token={good}"),
        format!("token={good}"),
        format!("jwt={good}"),
    ] {
        let res = app
            .raw(
                Method::GET,
                &format!("/api/stripe/biz-h/status?{query}"),
                None,
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{query}");
    }
    assert_eq!(
        snapshot(&app.db).await,
        before,
        "a refused token changed something"
    );

    // Controls: the same claims are accepted when valid; `nbf` within the 30 s leeway or past.
    for (name, token) in [
        ("valid", good.clone()),
        ("nbf past", sign(SECRET, &with("nbf", json!(now() - 60)))),
        (
            "nbf within the leeway",
            sign(SECRET, &with("nbf", json!(now() + 5))),
        ),
        ("lowercase scheme", good.clone()),
    ] {
        let res = if name == "lowercase scheme" {
            app.raw(
                Method::GET,
                "/api/stripe/biz-h/status",
                None,
                &[("authorization", &format!("bearer {token}"))],
                Vec::new(),
            )
            .await
        } else {
            app.get("/api/stripe/biz-h/status", &token).await
        };
        assert_eq!(res.status, StatusCode::OK, "{name}: {}", res.text);
    }
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Body limits
// ---------------------------------------------------------------------------------------

/// Sends `body` with `Transfer-Encoding: chunked` (no length announced) over a raw socket;
/// returns the status and the body of the answer.
async fn chunked(base: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n"
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    for chunk in body.chunks(16 * 1024) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything: that is the point.
    let _ = stream.write_all(&wire).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let json = text
        .find('{')
        .and_then(|i| serde_json::from_str(text[i..].trim_end_matches(['\r', '\n', '0'])).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// `{"key": "<pad>"}` of exactly `len` bytes.
fn padded(key: &str, prefix: &str, len: usize) -> Vec<u8> {
    let empty = json!({ key: prefix }).to_string().len();
    let body = json!({ key: format!("{prefix}{}", "a".repeat(len - empty)) }).to_string();
    assert_eq!(body.len(), len);
    body.into_bytes()
}

db_test!(
    oversized_bodies_answer_413_on_every_json_route_and_webhook,
    |t| {
        let app = spawn(&t).await;
        registered(&app).await;
        let before = snapshot(&app.db).await;
        let limit = tributary_web::error::JSON_LIMIT;
        let hook_limit = tributary_web::routes::webhooks::MAX_BODY;
        let json_routes: Vec<(Method, &str, String, &str)> = vec![
            (
                Method::PUT,
                "/api/stripe/biz-h/webhook-secret",
                agency(&["biz-h"]),
                "secret",
            ),
            (Method::PUT, "/api/businesses/biz-h", admin(), "name"),
            (
                Method::POST,
                "/api/contacts/stripe-customers",
                agency(&["biz-h"]),
                "businessId",
            ),
            (
                Method::POST,
                "/api/contacts/stripe-summary-by-emails",
                agency(&["biz-h"]),
                "businessId",
            ),
        ];
        let hooks = [
            "/api/webhooks/stripe",
            "/api/webhooks/stripe/connect",
            "/api/webhooks/stripe/hostile-co",
        ];
        let check_413 = |what: &str, status: u16, body: &Value| {
            assert_eq!(status, 413, "{what}: {body}");
            assert_eq!(body["error"]["code"], "payload_too_large", "{what}: {body}");
            assert!(body["error"]["message"].is_string(), "{what}: {body}");
        };
        for (method, path, token, key) in &json_routes {
            // One byte over, announced.
            let res = app
                .json_body(
                    method.clone(),
                    path,
                    token,
                    padded(key, "whsec_", limit + 1),
                )
                .await;
            check_413(
                &format!("{method} {path}"),
                res.status.as_u16(),
                &res.json(),
            );
            // At the limit exactly, the body is read (and judged on its content).
            let res = app
                .json_body(method.clone(), path, token, padded(key, "whsec_", limit))
                .await;
            assert_ne!(
                res.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{method} {path} at the limit"
            );
            clear(path, &res).unwrap();
            // Far over, streamed without a length.
            if *method == Method::POST {
                let (status, body) =
                    chunked(&app.base, path, Some(token), &padded(key, "", limit * 4)).await;
                check_413(&format!("chunked {path}"), status, &body);
            }
        }
        for path in hooks {
            let (status, body) =
                chunked(&app.base, path, None, &padded("id", "evt_", hook_limit + 1)).await;
            check_413(&format!("chunked {path}"), status, &body);
            let res = app
                .raw(
                    Method::POST,
                    path,
                    None,
                    &[
                        ("content-type", "application/json"),
                        ("stripe-signature", "t=1,v1=00"),
                    ],
                    padded("id", "evt_", hook_limit + 1),
                )
                .await;
            check_413(path, res.status.as_u16(), &res.json());
            let res = app
                .raw(
                    Method::POST,
                    path,
                    None,
                    &[
                        ("content-type", "application/json"),
                        ("stripe-signature", "t=1,v1=00"),
                    ],
                    padded("id", "evt_", hook_limit),
                )
                .await;
            assert_eq!(
                res.status,
                StatusCode::BAD_REQUEST,
                "{path} at the limit: {}",
                res.text
            );
            assert_eq!(res.error_code(), "invalid_signature");
        }
        assert_eq!(snapshot(&app.db).await, before);
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------
// JSON bodies and query strings
// ---------------------------------------------------------------------------------------

db_test!(hostile_json_bodies_answer_clearly_and_write_nothing, |t| {
    let app = spawn(&t).await;
    registered(&app).await;
    let before = snapshot(&app.db).await;
    let routes: Vec<(Method, &str, String, Value)> = vec![
        (
            Method::PUT,
            "/api/stripe/biz-h/webhook-secret",
            agency(&["biz-h"]),
            json!({"secret": "whsec_abcdef0123456789"}),
        ),
        (
            Method::PUT,
            "/api/businesses/biz-victim",
            admin(),
            json!({"name": "biz-victim Ltd", "slug": "victim-co", "agency_id": "ag-1"}),
        ),
        (
            Method::POST,
            "/api/contacts/stripe-customers",
            agency(&["biz-h"]),
            json!({"businessId": "biz-h", "contact_emails": ["a@example.com"]}),
        ),
        (
            Method::POST,
            "/api/contacts/stripe-summary-by-emails",
            agency(&["biz-h"]),
            json!({"businessId": "biz-h", "emails": ["a@example.com"]}),
        ),
    ];
    for (method, path, token, valid) in routes {
        // Every field in turn holds a NUL (PostgreSQL refuses it) or a control character: a
        // business name with one answered 500.
        for key in valid.as_object().unwrap().keys() {
            for bad in ["a\u{0}b", "line\nbreak", "\u{7}"] {
                let mut body = valid.clone();
                body[key.as_str()] = json!(bad);
                let res = app
                    .json_body(method.clone(), path, &token, body.to_string().into_bytes())
                    .await;
                clear(&format!("{path} {key}={bad:?}"), &res).unwrap();
                assert!(
                    res.status.is_client_error(),
                    "{path} {key}={bad:?}: {}",
                    res.text
                );
            }
        }
        property(48, hostile_body(valid.clone()), |Body(body)| {
            let (app, method, token) = (&app, method.clone(), token.clone());
            async move {
                let res = app
                    .json_body(method.clone(), path, &token, body.clone())
                    .await;
                clear(path, &res)?;
                let sent: Option<Value> = serde_json::from_slice(&body).ok();
                if path.ends_with("webhook-secret") {
                    let stored = webhooks::secret(&app.db, &biz("biz-h")).await.unwrap();
                    if res.status == StatusCode::NO_CONTENT {
                        // A valid secret was saved: put the original back for the next case.
                        prop_assert_eq!(
                            stored.as_deref(),
                            sent.as_ref().and_then(|b| b["secret"].as_str())
                        );
                        webhooks::set_secret(&app.db, &biz("biz-h"), BUSINESS_SECRET, now())
                            .await
                            .unwrap();
                    } else {
                        prop_assert_eq!(stored.as_deref(), Some(BUSINESS_SECRET));
                    }
                }
                if path.starts_with("/api/businesses/") && res.status != StatusCode::OK {
                    let row = businesses::get(&app.db, &biz("biz-victim"))
                        .await
                        .unwrap()
                        .unwrap();
                    prop_assert_eq!(
                        (row.name.as_str(), row.slug.as_str()),
                        ("biz-victim Ltd", "victim-co")
                    );
                }
                if path.starts_with("/api/businesses/") && res.status == StatusCode::OK {
                    // Accepted: it was a valid rename; put the original back.
                    app.put(
                        path,
                        &admin(),
                        json!({"name": "biz-victim Ltd", "slug": "victim-co", "agency_id": "ag-1"}),
                    )
                    .await;
                }
                Ok(())
            }
        });
    }
    // Not JSON at all, with and without the content type.
    for (ct, body) in [
        (
            "text/plain",
            b"{\"secret\":\"whsec_abcdef0123456789\"}".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"secret=whsec_abcdef0123456789".to_vec(),
        ),
        ("application/json", vec![0xff, 0xfe, b'{', b'}']),
    ] {
        let res = app
            .raw(
                Method::PUT,
                "/api/stripe/biz-h/webhook-secret",
                Some(&agency(&["biz-h"])),
                &[("content-type", ct)],
                body,
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{ct}: {}", res.text);
        assert_eq!(res.error_code(), "invalid_json", "{ct}");
    }
    assert_eq!(snapshot(&app.db).await, before);
    app.stop().await;
});

/// A query string of known and unknown keys with hostile values, percent-encoded or raw.
fn hostile_query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("businessId".to_owned()),
        Just("page".to_owned()),
        Just("per_page".to_owned()),
        Just("sort".to_owned()),
        Just("order".to_owned()),
        Just("q".to_owned()),
        Just("currency".to_owned()),
        Just("email".to_owned()),
        Just("from".to_owned()),
        Just("to".to_owned()),
        Just("status".to_owned()),
        Just("full".to_owned()),
        "[a-z%]{1,6}",
    ];
    let value = prop_oneof![
        Just("biz-h".to_owned()),
        Just("biz-victim".to_owned()),
        Just("2025-01".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("%00".to_owned()),
        Just("a%00b".to_owned()),
        Just("%ff%fe".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        Just("a@b.c%00".to_owned()),
        Just("%25%27%22%3B--".to_owned()),
        Just("true".to_owned()),
        Just("x".repeat(3000)),
        "\\PC{0,12}".prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
        "[ -~]{0,12}".prop_map(|s| s.replace(['#', ' '], "")),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

db_test!(hostile_query_strings_and_paths_answer_clearly, |t| {
    let app = spawn(&t).await;
    registered(&app).await;
    let before = snapshot(&app.db).await;
    let token = agency(&["biz-h"]);
    let gets = [
        "/api/contacts/stripe-customers",
        "/api/contacts/stripe-info",
        "/api/businesses/biz-h/revenue",
        "/api/businesses/biz-h/retention",
        "/api/businesses/biz-h/acquisition",
        "/api/stripe/biz-h/sync-jobs",
        "/api/stripe/biz-h/status",
        "/api/stripe/connect-url",
        "/api/admin/connections",
    ];
    let segment = prop_oneof![
        Just("biz-h".to_owned()),
        Just("%00".to_owned()),
        Just("biz-h%00".to_owned()),
        Just("..%2F..%2Fadmin".to_owned()),
        Just("%ff".to_owned()),
        Just("x".repeat(2000)),
        "[a-zA-Z0-9._~-]{1,20}",
    ];
    // Control characters in every parameter: a NUL in the grid's search answered 500.
    for path in gets {
        let token = if path.contains("admin") {
            admin()
        } else {
            token.clone()
        };
        for key in [
            "businessId",
            "q",
            "email",
            "currency",
            "from",
            "to",
            "status",
            "sort",
        ] {
            for bad in ["a%00b", "%0a", "%07", "biz-h%00"] {
                let url = format!("{path}?businessId=biz-h&{key}={bad}");
                let res = app.get(&url, &token).await;
                clear(&url, &res).unwrap();
            }
        }
    }
    property(
        64,
        (
            prop::sample::select(gets.to_vec()),
            hostile_query(),
            segment,
        ),
        |(path, query, segment)| {
            let (app, token) = (&app, token.clone());
            async move {
                let token = if path.contains("admin") {
                    admin()
                } else {
                    token
                };
                let res = app.get(&format!("{path}?{query}"), &token).await;
                clear(&format!("{path}?{query}"), &res)?;
                if res.status == StatusCode::OK {
                    prop_assert!(
                        serde_json::from_str::<Value>(&res.text).is_ok(),
                        "{}",
                        res.text
                    );
                }
                let odd = path.replace("biz-h", &segment);
                let res = app.get(&format!("{odd}?{query}"), &token).await;
                clear(&odd, &res)?;
                let res = app
                    .post(&format!("/api/stripe/{segment}/sync?{query}"), &token)
                    .await;
                clear("sync", &res)?;
                prop_assert_ne!(res.status, StatusCode::ACCEPTED, "nothing is connected");
                Ok(())
            }
        },
    );
    // connect-url mints states (that is its job, and the snapshot leaves them out); nothing
    // else may change.
    assert_eq!(snapshot(&app.db).await, before);
    let (jobs_listed, total) = jobs::list(&app.db, &biz("biz-h"), 10, 0).await.unwrap();
    assert_eq!((jobs_listed.len(), total), (0, 0));
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// The OAuth callback
// ---------------------------------------------------------------------------------------

db_test!(hostile_oauth_callbacks_never_connect, |t| {
    let app = spawn(&t).await;
    registered(&app).await;
    let reasons = [
        "stripe_denied",
        "stripe_state_invalid",
        "stripe_exchange_failed",
        "stripe_account_taken",
    ];
    let value = prop_oneof![
        Just("access_denied".to_owned()),
        Just("invalid_scope".to_owned()),
        Just("ac_never_issued".to_owned()),
        Just(String::new()),
        Just("%00".to_owned()),
        Just("%0d%0aLocation:%20https://evil.example".to_owned()),
        Just("\u{202e}".to_owned()),
        Just("a".repeat(4000)),
        Just("ab".repeat(32)),
        Just("AB".repeat(32)),
        "[0-9a-f]{63,65}",
        "\\PC{0,16}".prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
    ];
    let key = prop_oneof![
        Just("code"),
        Just("state"),
        Just("error"),
        Just("error_description"),
        Just("scope"),
        Just("businessId"),
    ];
    // `Some(true)`: use a fresh, genuine state; the rest of the query is hostile.
    let input = (
        prop::collection::vec((key, value), 0..5),
        any::<bool>(),
        any::<bool>(),
    );
    property(64, input, |(pairs, genuine_state, client_portal)| {
        let app = &app;
        async move {
            let mut query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if genuine_state {
                let url = if client_portal {
                    app.get("/api/client/stripe/connect-url", &client("biz-h"))
                        .await
                        .json()["url"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                } else {
                    app.connect_url(&agency(&["biz-h"]), "biz-h").await
                };
                query.push(format!("state={}", query_of(&url)["state"]));
            }
            let url = format!("/api/stripe/oauth/callback?{}", query.join("&"));
            let res = app.send(Method::GET, &url, None, None).await;
            prop_assert_eq!(res.status, StatusCode::FOUND, "{}: {}", url, res.text);
            let location = res.location();
            prop_assert!(
                location.starts_with(AGENCY_URL) || location.starts_with(CLIENT_URL),
                "{}",
                location
            );
            prop_assert!(!location.contains(['\r', '\n']), "{location:?}");
            let q = query_of(&location);
            prop_assert_eq!(
                q.get("stripe").map(String::as_str),
                Some("error"),
                "{}",
                location
            );
            prop_assert!(reasons.contains(&q["reason"].as_str()), "{}", location);
            if let Some(b) = q.get("businessId") {
                prop_assert_eq!(b.as_str(), "biz-h");
            }
            prop_assert!(access::get(&app.db, &biz("biz-h")).await.unwrap().is_none());
            Ok(())
        }
    });
    assert_eq!(app.status("biz-h").await["status"], "not_connected");
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Webhook deliveries
// ---------------------------------------------------------------------------------------

db_test!(
    hostile_webhook_deliveries_store_nothing_unless_signed,
    |t| {
        let app = spawn(&t).await;
        registered(&app).await;
        let acct = app.account(0);
        assert_eq!(app.connect("biz-h", &acct).await["stripe"], "connected");
        let before = snapshot(&app.db).await;
        let endpoints = [
            "/api/webhooks/stripe",
            "/api/webhooks/stripe/connect",
            "/api/webhooks/stripe/hostile-co",
        ];
        let header = prop_oneof![
            Just(None),
            Just(Some(String::new())),
            Just(Some("t=,v1=".to_owned())),
            Just(Some(format!("t={},v1={}", now(), "0".repeat(64)))),
            Just(Some(format!("t={}{}", now(), ",v1=".repeat(3000)))),
            Just(Some("t=99999999999999999999,v1=00".to_owned())),
            "[ -~]{0,80}".prop_map(Some),
        ];
        let body = prop_oneof![
        hostile_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..128),
        Just(br#"{"id":"evt_1","type":"customer.updated","data":{"object":{"id":"cus_1","object":"customer"}}}"#.to_vec()),
    ];
        property(
            64,
            (prop::sample::select(endpoints.to_vec()), header, body),
            |(path, header, body)| {
                let app = &app;
                async move {
                    let mut headers = vec![("content-type", "application/json")];
                    if let Some(h) = &header {
                        headers.push(("stripe-signature", h.as_str()));
                    }
                    let res = app.raw(Method::POST, path, None, &headers, body).await;
                    clear(path, &res)?;
                    prop_assert_eq!(
                        res.status,
                        StatusCode::BAD_REQUEST,
                        "{}: {}",
                        path,
                        res.text
                    );
                    prop_assert_eq!(res.error_code(), "invalid_signature");
                    Ok(())
                }
            },
        );
        assert_eq!(
            snapshot(&app.db).await,
            before,
            "an unsigned delivery stored something"
        );

        // A signed event naming a session Stripe does not know: reading its line items answers
        // 404. That was a 503, so Stripe would have delivered it again for three days.
        for (object, kind) in [
            ("checkout.session", "checkout.session.completed"),
            ("invoice", "invoice.paid"),
        ] {
            let event = json!({
                "id": format!("evt_unknown_{object}"), "object": "event", "type": kind,
                "created": now(), "api_version": STRIPE_VERSION_FOR_TESTS, "livemode": false,
                "account": acct,
                "data": {"object": {"id": format!("{object}_unknown"), "object": object,
                                    "lines": {"object": "list", "data": [], "has_more": true}}},
            });
            let body = event.to_string();
            let signature =
                tributary_stripe_connect::sign_payload(body.as_bytes(), CONNECT_SECRET, now());
            let res = app
                .raw(
                    Method::POST,
                    "/api/webhooks/stripe/connect",
                    None,
                    &[
                        ("content-type", "application/json"),
                        ("stripe-signature", &signature),
                    ],
                    body.into_bytes(),
                )
                .await;
            assert_eq!(res.status, StatusCode::OK, "{kind}: {}", res.text);
            assert_eq!(res.json()["outcome"], "ignored", "{kind}");
        }

        // Correctly signed, hostile content: answered 200 (applied, ignored, unrouted) or a
        // clear 400 when it is not an event; never a 5xx.
        let kinds = prop_oneof![
            Just("customer.updated"),
            Just("customer.deleted"),
            Just("invoice.paid"),
            Just("charge.refunded"),
            Just("customer.subscription.updated"),
            Just("account.updated"),
            Just("account.application.deauthorized"),
            Just("checkout.session.completed"),
            Just("brand_new.event"),
        ];
        let objects = prop_oneof![
            Just("customer"),
            Just("invoice"),
            Just("charge"),
            Just("subscription"),
            Just("checkout.session"),
            Just("account"),
            Just("price"),
        ];
        let event = (
            kinds,
            objects,
            prop::collection::btree_map("[a-z_]{1,10}", hostile_value(), 0..6),
            hostile_value(),
            prop_oneof![
                Just(json!(STRIPE_VERSION_FOR_TESTS)),
                Just(json!("2019-12-03")),
                hostile_value()
            ],
            0u32..1_000_000,
        );
        let secrets = [
            ("/api/webhooks/stripe/connect", CONNECT_SECRET),
            ("/api/webhooks/stripe/hostile-co", BUSINESS_SECRET),
            ("/api/webhooks/stripe", PLATFORM_SECRET),
        ];
        property(
            32,
            (prop::sample::select(secrets.to_vec()), event),
            |((path, secret), (kind, object, fields, created, version, n))| {
                let (app, acct) = (&app, acct.clone());
                async move {
                    let mut object_json = json!({"id": format!("obj_{n}"), "object": object});
                    for (k, v) in fields {
                        object_json[k.as_str()] = v;
                    }
                    let mut event = json!({
                        "id": format!("evt_h{n}"), "object": "event", "type": kind,
                        "created": created, "api_version": version, "livemode": false,
                        "data": {"object": object_json},
                    });
                    if path.ends_with("/connect") {
                        event["account"] = json!(acct);
                    }
                    let body = event.to_string();
                    let signature =
                        tributary_stripe_connect::sign_payload(body.as_bytes(), secret, now());
                    let res = app
                        .raw(
                            Method::POST,
                            path,
                            None,
                            &[
                                ("content-type", "application/json"),
                                ("stripe-signature", &signature),
                            ],
                            body.into_bytes(),
                        )
                        .await;
                    clear(path, &res)?;
                    if res.status == StatusCode::OK {
                        prop_assert_eq!(res.json()["received"].clone(), json!(true));
                    } else {
                        prop_assert_eq!(res.error_code(), "invalid_event", "{}", res.text);
                    }
                    Ok(())
                }
            },
        );
        // Nothing reached the other business.
        let victim = rows_by_table(&app.db, "biz-victim").await;
        assert!(victim.values().all(|n| *n == 0), "{victim:?}");
        app.stop().await;
    }
);

const STRIPE_VERSION_FOR_TESTS: &str = tributary_stripe_connect::STRIPE_VERSION;

// ---------------------------------------------------------------------------------------
// Stripe that never answers
// ---------------------------------------------------------------------------------------

/// A TCP server that accepts connections and reads but never answers; counts connections.
async fn silent_stripe() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (base, accepted, task)
}

// The callback and a disconnect call Stripe while a person waits. With Stripe silent, each
// used to retry for minutes (six attempts of `timeout` each, with backoff); now each call
// gives up at `stripe.timeout_secs`, after one attempt, and the person gets an answer.
db_test!(calls_a_person_waits_on_stop_at_the_stripe_timeout, |t| {
    let (base, accepted, server) = silent_stripe().await;
    let app = TestApp::spawn_configured(
        &t,
        Opts {
            stripe_base: Some(base),
            ..Opts::default()
        },
        |s| s.stripe.timeout_secs = 1,
    )
    .await;
    let url = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
    let state = query_of(&url)["state"].clone();
    let (_, q) = app
        .callback(&format!(
            "{}/api/stripe/oauth/callback?code=ac_x&state={state}",
            app.base
        ))
        .await;
    assert_eq!(
        (q["businessId"].as_str(), q["reason"].as_str()),
        ("biz-a", "stripe_exchange_failed")
    );
    let tried = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&tried),
        "{tried} connections for one code exchange"
    );

    // A connection made earlier; Stripe has gone silent since.
    let account = tributary_domain::StripeAccountId::parse("acct_silent1").unwrap();
    access::connect(
        &app.db,
        &biz("biz-a"),
        access::NewConnection {
            account: &account,
            account_name: None,
            livemode: false,
            scope: "read_write",
        },
        now(),
    )
    .await
    .unwrap();
    let res = app.delete("/api/stripe/biz-a", &agency(&["biz-a"])).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(res.headers["tributary-revoke"], "failed");
    assert!(
        access::get(&app.db, &biz("biz-a")).await.unwrap().is_none(),
        "cleared all the same"
    );
    let tried = accepted.load(Ordering::SeqCst) - tried;
    assert!(
        (1..=2).contains(&tried),
        "{tried} connections for one deauthorize"
    );
    server.abort();
    app.stop().await;
});
