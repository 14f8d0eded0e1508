//! `GET /api/openapi.json` (SPEC §11): the document lists exactly the routes the server
//! registers (the table of `tributary_web::routes`), with their path parameters and the
//! security SPEC §10 asks for; every `$ref` resolves; real answers match the schemas the
//! document gives them; and, where Python's `openapi-spec-validator` is installed (always with
//! `CI=true`), it accepts the document.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tributary_persistence::testing::{self, Backend};
use tributary_stripe_sim::Scale;

use super::{Answer, Opts, TestApp, admin, agency};

const OPERATIONS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// Routes of `/api` that need no bearer token (SPEC §10).
fn is_public(path: &str) -> bool {
    !path.starts_with("/api/")
        || path == "/api/openapi.json"
        || path == "/api/stripe/oauth/callback"
        || path.starts_with("/api/webhooks/")
}

async fn document(app: &TestApp) -> Value {
    let res = app.send(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let content_type = res.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    res.json()
}

/// `(method, path)` of every operation of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, op) in item.as_object().expect("path item") {
            if OPERATIONS.contains(&key.as_str()) {
                out.push((key.clone(), path.clone(), op));
            }
        }
    }
    out
}

/// The value `pointer` (`#/components/…`) names in `doc`.
fn resolve<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    pointer.strip_prefix('#').and_then(|p| doc.pointer(p))
}

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn with_test_app<F, Fut>(opts: Opts, body: F) -> impl std::future::Future<Output = ()>
where
    F: FnOnce(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    testing::run(Backend::Sqlite, move |t| async move {
        let app = TestApp::spawn_with(&t, opts).await;
        body(app).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_registered_routes() {
    with_test_app(Opts::default(), |app| async move {
        let doc = document(&app).await;
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3."), "not OpenAPI 3.x: {version:?}");
        assert!(doc["info"]["title"].is_string(), "{}", doc["info"]);

        let registered: BTreeSet<(String, String)> = tributary_web::routes::registered_routes()
            .into_iter()
            .map(|(m, p)| (m.as_str().to_lowercase(), p.to_owned()))
            .collect();
        assert!(
            registered.contains(&("get".to_owned(), "/api/openapi.json".to_owned())),
            "{registered:?}"
        );
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        let missing: Vec<_> = registered.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "registered but not documented: {missing:?}"
        );
        assert!(extra.is_empty(), "documented but not registered: {extra:?}");

        // Every operation: its path's parameters declared, and some success described.
        let mut ids = BTreeSet::new();
        for (method, path, op) in operations(&doc) {
            let at = format!("{method} {path}");
            if let Some(id) = op["operationId"].as_str() {
                assert!(
                    ids.insert(id.to_owned()),
                    "{at}: operationId {id} is not unique"
                );
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{at}: path parameter {name} is not declared: {params:?}"
                );
            }
            for p in &params {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap();
                    assert!(path.contains(&format!("{{{name}}}")), "{at}: stray {p}");
                }
            }
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses
                    .keys()
                    .any(|s| s.starts_with('2') || s.starts_with('3')),
                "{at}: no success answer: {responses:?}"
            );
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_resolve_errors_share_one_schema_and_tokens_are_declared() {
    with_test_app(Opts::default(), |app| async move {
        let doc = document(&app).await;

        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50, "suspiciously few $refs: {}", all.len());
        for r in &all {
            assert!(r.starts_with("#/components/"), "not a local component: {r}");
            assert!(resolve(&doc, r).is_some(), "$ref {r} resolves to nothing");
        }

        // The error shape of SPEC §10.
        let error = &doc["components"]["schemas"]["Error"];
        assert_eq!(error["required"], json!(["error"]), "{error}");
        let detail = resolve(&doc, error["properties"]["error"]["$ref"].as_str().unwrap())
            .expect("ErrorDetail");
        let mut required: Vec<&str> = detail["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["code", "message"], "{detail}");

        let scheme = &doc["components"]["securitySchemes"][tributary_web::openapi::BEARER];
        assert_eq!(scheme["type"], "http", "{scheme}");
        assert_eq!(scheme["scheme"], "bearer", "{scheme}");
        assert_eq!(scheme["bearerFormat"], "JWT", "{scheme}");
        assert!(doc.get("security").is_none(), "no document-wide security");

        let bearer = json!([{ (tributary_web::openapi::BEARER): [] }]);
        let mut secured = 0;
        for (method, path, op) in operations(&doc) {
            let at = format!("{method} {path}");
            if is_public(&path) {
                assert!(op.get("security").is_none(), "{at} needs no token: {op}");
            } else {
                secured += 1;
                assert_eq!(op["security"], bearer, "{at}");
                assert_eq!(
                    op["responses"]["401"]["$ref"], "#/components/responses/Unauthorized",
                    "{at}"
                );
            }
            if path.starts_with("/api/webhooks/") {
                let params = op["parameters"].as_array().unwrap();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "Stripe-Signature" && p["in"] == "header"),
                    "{at}: {params:?}"
                );
            }
            // Every JSON error answer of the API is the one error schema.
            for (status, response) in op["responses"].as_object().unwrap() {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let response = match response["$ref"].as_str() {
                    Some(r) => resolve(&doc, r).unwrap(),
                    None => response,
                };
                if let Some(schema) = response["content"]["application/json"].get("schema") {
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Error",
                        "{at} {status}"
                    );
                } else {
                    assert!(
                        path.starts_with("/ui/"),
                        "{at} {status}: no JSON error body"
                    );
                }
            }
        }
        assert!(secured >= 20, "only {secured} operations need a token");
        app.stop().await;
    })
    .await;
}

/// A JSON Schema check of `value` against `schema`, just enough for the document's schemas.
/// Stricter than JSON Schema on one point: an object may carry no property its schema does not
/// list, so an answer that grew a key the document lacks fails.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        match resolve(doc, r) {
            Some(s) => check(doc, s, value, at, errors),
            None => errors.push(format!("{at}: unresolved {r}")),
        }
        return;
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let passing = options
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    check(doc, s, value, at, &mut e);
                    e.is_empty()
                })
                .count();
            if passing == 0 || (key == "oneOf" && passing > 1) {
                errors.push(format!(
                    "{at}: {passing} of the {key} options match {value}"
                ));
            }
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        all.iter().for_each(|s| check(doc, s, value, at, errors));
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Value::Object(map) = value {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap_or_default();
            if !map.contains_key(key) {
                errors.push(format!("{at}: missing required {key}"));
            }
        }
        let properties = schema["properties"].as_object();
        for (k, v) in map {
            let at = format!("{at}.{k}");
            match (
                properties.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => check(doc, s, v, &at, errors),
                (None, Some(extra)) if extra.is_object() => check(doc, extra, v, &at, errors),
                (None, _) if properties.is_some() => {
                    errors.push(format!("{at}: not in the schema"));
                }
                (None, _) => {}
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check(doc, item, v, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Checks an answer against the schema the document gives `method path` for its status;
/// returns the body.
fn conforms(doc: &Value, method: &str, path: &str, answer: &Answer) -> Value {
    let at = format!("{method} {path} {}", answer.status.as_u16());
    let responses = &doc["paths"][path][method]["responses"];
    let mut response = &responses[answer.status.as_str()];
    if let Some(r) = response["$ref"].as_str() {
        response = resolve(doc, r).unwrap();
    }
    assert!(
        response.is_object(),
        "{at}: status not documented: {}",
        answer.text
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{at}: no JSON schema: {response}");
    let body = answer.json();
    let mut errors = Vec::new();
    check(doc, schema, &body, "$", &mut errors);
    assert!(errors.is_empty(), "{at}: {errors:#?}\n{body:#}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_their_documented_schemas() {
    let opts = Opts {
        workers: true,
        scale: Scale::Small,
        accounts: 1,
        ..Opts::default()
    };
    with_test_app(opts, |app| async move {
        let doc = document(&app).await;
        let b = "biz-doc";
        let token = agency(&[b]);
        let get = |path: String| {
            let app = &app;
            let token = token.clone();
            async move { app.get(&path, &token).await }
        };

        let ok = app.send(Method::GET, "/healthz", None, None).await;
        conforms(&doc, "get", "/healthz", &ok);
        let ready = app.send(Method::GET, "/readyz", None, None).await;
        conforms(&doc, "get", "/readyz", &ready);

        let res = app
            .put(
                &format!("/api/businesses/{b}"),
                &admin(),
                json!({"name": "Doc", "slug": "doc", "agency_id": "ag-1"}),
            )
            .await;
        conforms(&doc, "put", "/api/businesses/{id}", &res);
        let res = get(format!("/api/stripe/{b}/status")).await;
        let status = conforms(&doc, "get", "/api/stripe/{businessId}/status", &res);
        assert_eq!(status["status"], "not_connected");
        let res = get(format!("/api/stripe/connect-url?businessId={b}")).await;
        conforms(&doc, "get", "/api/stripe/connect-url", &res);

        // Connected and synced: the answers carry real rows.
        assert_eq!(app.connect(b, &app.account(0)).await["stripe"], "connected");
        let res = get(format!("/api/stripe/{b}/status")).await;
        let status = conforms(&doc, "get", "/api/stripe/{businessId}/status", &res);
        let job_id = status["last_sync"]["id"].as_str().unwrap().to_owned();
        let job = app.wait_for_job(b, &job_id, &["succeeded", "failed"]).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let res = get(format!("/api/stripe/{b}/sync-jobs/{job_id}")).await;
        let job = conforms(
            &doc,
            "get",
            "/api/stripe/{businessId}/sync-jobs/{jobId}",
            &res,
        );
        assert!(!job["progress"].as_object().unwrap().is_empty(), "{job}");
        let res = get(format!("/api/stripe/{b}/sync-jobs")).await;
        conforms(&doc, "get", "/api/stripe/{businessId}/sync-jobs", &res);
        let res = app.post(&format!("/api/stripe/{b}/sync"), &token).await;
        assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
        conforms(&doc, "post", "/api/stripe/{businessId}/sync", &res);

        let res = get(format!(
            "/api/contacts/stripe-customers?businessId={b}&per_page=100"
        ))
        .await;
        let grid = conforms(&doc, "get", "/api/contacts/stripe-customers", &res);
        let items = grid["items"].as_array().unwrap();
        assert!(!items.is_empty(), "{grid}");
        let emails: Vec<&str> = items.iter().filter_map(|i| i["email"].as_str()).collect();
        let res = app
            .send(
                Method::POST,
                "/api/contacts/stripe-customers?per_page=5",
                Some(&token),
                Some(json!({"businessId": b, "contact_emails": [emails[0]]})),
            )
            .await;
        let matched = conforms(&doc, "post", "/api/contacts/stripe-customers", &res);
        assert!(
            matched["items"][0]["contact_match"].is_boolean(),
            "{matched}"
        );
        let res = app
            .send(
                Method::POST,
                "/api/contacts/stripe-summary-by-emails",
                Some(&token),
                Some(json!({"businessId": b, "emails": emails})),
            )
            .await;
        let summaries = conforms(&doc, "post", "/api/contacts/stripe-summary-by-emails", &res);
        assert!(!summaries["summaries"].as_object().unwrap().is_empty());
        // The detail of the emails with the most kinds of rows.
        let mut seen = BTreeSet::new();
        for email in &emails {
            let res = get(format!(
                "/api/contacts/stripe-info?businessId={b}&email={}",
                url::form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>()
            ))
            .await;
            let info = conforms(&doc, "get", "/api/contacts/stripe-info", &res);
            for list in [
                "customers",
                "payments",
                "invoices",
                "checkout_sessions",
                "subscriptions",
            ] {
                if info[list].as_array().is_some_and(|l| !l.is_empty()) {
                    seen.insert(list);
                }
            }
        }
        assert!(
            seen.len() >= 3,
            "the small account shows too few kinds of rows: {seen:?}"
        );

        for board in ["revenue", "retention", "acquisition"] {
            let res = get(format!("/api/businesses/{b}/{board}")).await;
            let body = conforms(
                &doc,
                "get",
                &format!("/api/businesses/{{id}}/{board}"),
                &res,
            );
            assert_eq!(body["months"].as_array().unwrap().len(), 12, "{body}");
        }

        let res = app.get("/api/admin/connections", &admin()).await;
        conforms(&doc, "get", "/api/admin/connections", &res);

        // Errors.
        let res = app
            .send(Method::GET, &format!("/api/stripe/{b}/status"), None, None)
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        conforms(&doc, "get", "/api/stripe/{businessId}/status", &res);
        let res = app.get("/api/stripe/biz-other/status", &token).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
        conforms(&doc, "get", "/api/stripe/{businessId}/status", &res);
        let res = get(format!("/api/stripe/{b}/sync-jobs?page=0")).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        conforms(&doc, "get", "/api/stripe/{businessId}/sync-jobs", &res);
        let res = app.get("/api/admin/connections", &token).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        conforms(&doc, "get", "/api/admin/connections", &res);
        let event = json!({"id": "evt_1", "object": "event"});
        let res = app
            .send(
                Method::POST,
                "/api/webhooks/stripe/connect",
                None,
                Some(event.clone()),
            )
            .await;
        // The test settings set no Connect signing secret.
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{}", res.text);
        conforms(&doc, "post", "/api/webhooks/stripe/connect", &res);
        let res = app
            .send(Method::POST, "/api/webhooks/stripe/doc", None, Some(event))
            .await;
        assert_eq!(res.error_code(), "webhook_secret_missing", "{}", res.text);
        conforms(&doc, "post", "/api/webhooks/stripe/{slug}", &res);
        app.stop().await;
    })
    .await;
}

/// Python's `openapi-spec-validator` on the document; a notice and a pass where it is not
/// installed, unless `CI=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_spec_validator_accepts_the_document() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            !ci,
            "CI=true but python3 cannot import openapi_spec_validator \
             (pip install openapi-spec-validator)"
        );
        eprintln!(
            "NOTICE: openapi-spec-validator is not installed; the OpenAPI document was not \
             checked by it (pip install openapi-spec-validator)"
        );
        return;
    }
    with_test_app(Opts::default(), |app| async move {
        let doc = document(&app).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::new("python3")
                .args(["-m", "openapi_spec_validator", "--validation-errors", "all"])
                .arg(&file)
                .output(),
        )
        .await
        .expect("the validator finishes")
        .expect("python3 runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "openapi-spec-validator refused it:\n{said}"
        );
        assert!(said.contains("OK"), "{said}");
        app.stop().await;
    })
    .await;
}
