//! `GET /metrics` and request ids through the real HTTP server, on SQLite and PostgreSQL.
//!
//! The Prometheus recorder is global to the process and the tests of this binary run at the
//! same time, so every check compares a counter before and after this test's own traffic and
//! asserts a lower bound: other tests can only add to it.

use tributary_stripe_connect::STRIPE_VERSION;

use super::*;

const CONNECT_SECRET: &str = "whsec_metrics_connect_secret_1";

/// The sum of every sample of `name` whose labels include `labels`; 0 when there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, set) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found = parse_labels(set);
            labels
                .iter()
                .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// `k="v",k2="v2"` → pairs (our label values hold no quotes).
fn parse_labels(set: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = set;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        out.push((key.trim_start_matches(',').to_owned(), value.to_owned()));
        rest = tail;
    }
    out
}

impl TestApp {
    async fn metrics(&self) -> String {
        let res = self.send(Method::GET, "/metrics", None, None).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        let kind = res.headers.get("content-type").unwrap().to_str().unwrap();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        res.text
    }

    /// Posts `body` to the Connect endpoint, signed with `secret` now.
    async fn signed_connect_hook(&self, body: &str, secret: &str) -> Answer {
        let t = now();
        let sig = tributary_stripe_connect::compute_signature(body.as_bytes(), secret, t);
        let res = self
            .http
            .post(format!("{}/api/webhooks/stripe/connect", self.base))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", format!("t={t},v1={sig}"))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        Answer {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }
}

#[test]
fn samples_are_read_by_name_and_labels() {
    let text = "# TYPE x counter\nx{a=\"1\",route=\"/b/{id}\"} 2\nx{a=\"2\"} 3\nxy 9\n";
    assert_eq!(sample(text, "x", &[]), 5.0);
    assert_eq!(sample(text, "x", &[("route", "/b/{id}")]), 2.0);
    assert_eq!(sample(text, "x", &[("a", "3")]), 0.0);
    assert_eq!(sample(text, "xy", &[]), 9.0);
}

db_test!(
    metrics_count_syncs_stripe_requests_webhooks_and_routes,
    |t| {
        let app = TestApp::spawn_configured(
            &t,
            Opts {
                workers: true,
                scale: Scale::Small,
                accounts: 1,
                ..Opts::default()
            },
            |settings| {
                settings.stripe.connect_webhook_secret = Some(String::from(CONNECT_SECRET).into());
            },
        )
        .await;
        let before = app.metrics().await;

        let acct = app.account(0);
        app.connect_and_sync("biz-m", &acct).await;

        let event = json!({
            "id": "evt_metrics_1", "object": "event", "type": "customer.updated",
            "api_version": STRIPE_VERSION, "created": now(), "livemode": false,
            "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
            "account": acct,
            "data": {"object": {"id": "cus_metrics1", "object": "customer",
                "email": "metrics@example.com", "name": "Metrics", "created": now(),
                "livemode": false, "currency": "usd", "metadata": {}}},
        })
        .to_string();
        let res = app.signed_connect_hook(&event, CONNECT_SECRET).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        assert_eq!(res.json()["duplicate"], false, "{}", res.text);
        let res = app.signed_connect_hook(&event, CONNECT_SECRET).await;
        assert_eq!(res.json()["duplicate"], true, "{}", res.text);
        let res = app
            .signed_connect_hook(&event, "whsec_somebody_else_secret")
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text);

        let after = app.metrics().await;
        let delta = |name: &str, labels: &[(&str, &str)]| {
            sample(&after, name, labels) - sample(&before, name, labels)
        };

        // Sync: the run, its duration, what it wrote.
        assert!(
            delta("tributary_sync_runs_total", &[("outcome", "succeeded")]) >= 1.0,
            "{after}"
        );
        assert!(
            delta(
                "tributary_sync_run_duration_seconds_count",
                &[("outcome", "succeeded")]
            ) >= 1.0,
            "{after}"
        );
        assert!(
            after.contains("tributary_sync_run_duration_seconds_bucket{"),
            "a histogram, not a summary: {after}"
        );
        assert!(
            delta(
                "tributary_sync_objects_written_total",
                &[("resource", "customers")]
            ) > 0.0,
            "{after}"
        );
        // Stripe: lists by endpoint and status, ids folded into `{id}`.
        assert!(
            delta(
                "tributary_stripe_requests_total",
                &[("endpoint", "/v1/customers"), ("status", "200")]
            ) >= 1.0,
            "{after}"
        );
        assert!(
            delta(
                "tributary_stripe_request_duration_seconds_count",
                &[("endpoint", "/v1/customers")]
            ) >= 1.0,
            "{after}"
        );
        assert!(
            !after.contains(&acct) && !after.contains("biz-m") && !after.contains("cus_metrics1"),
            "no ids in labels: {after}"
        );
        // Webhooks: processed, duplicate, bad signature.
        for outcome in ["processed", "duplicate", "bad_signature"] {
            assert!(
                delta(
                    "tributary_webhook_deliveries_total",
                    &[("endpoint", "connect"), ("outcome", outcome)]
                ) >= 1.0,
                "{outcome}: {after}"
            );
        }
        // HTTP: by route pattern, never by raw path.
        assert!(
            delta(
                "tributary_http_requests_total",
                &[
                    ("method", "GET"),
                    ("route", "/api/stripe/{businessId}/status"),
                    ("status", "200")
                ]
            ) >= 1.0,
            "{after}"
        );
        assert!(
            delta(
                "tributary_http_request_duration_seconds_count",
                &[("route", "/api/stripe/{businessId}/sync-jobs/{jobId}")]
            ) >= 1.0,
            "{after}"
        );
        assert!(
            after.contains("# HELP tributary_sync_runs_total "),
            "{after}"
        );
        app.stop().await;
    }
);

db_test!(request_ids_are_answered_and_echoed, |t| {
    let app = TestApp::spawn(&t).await;
    let id_of = |a: &Answer| {
        a.headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let with_id = |path: &'static str, id: Option<&'static str>| {
        let mut req = app.http.get(format!("{}{path}", app.base));
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        async move {
            let res = req.send().await.unwrap();
            Answer {
                status: res.status(),
                headers: res.headers().clone(),
                text: res.text().await.unwrap(),
            }
        }
    };

    // Generated: a fresh UUIDv7 per request, on success and error answers alike.
    let a = with_id("/healthz", None).await;
    let b = with_id("/no/such/route", None).await;
    assert_eq!(b.status, StatusCode::NOT_FOUND, "{}", b.text);
    for id in [id_of(&a), id_of(&b)] {
        let uuid = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
        assert_eq!(uuid.get_version_num(), 7, "{id}");
    }
    assert_ne!(id_of(&a), id_of(&b));

    // Echoed when the caller (a proxy) sends a sane one; replaced when it does not.
    let echoed = with_id("/api/stripe/biz-x/status", Some("edge-7f3a.1")).await;
    assert_eq!(echoed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(id_of(&echoed), "edge-7f3a.1");
    let long = "x".repeat(65);
    let long: &'static str = Box::leak(long.into_boxed_str());
    for bad in ["has spaces", "quote\"d", long] {
        let res = with_id("/healthz", Some(bad)).await;
        let id = id_of(&res);
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id:?}");
    }

    // Browsers may send it and read it.
    let res = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    let exposed = res
        .headers()
        .get("access-control-expose-headers")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default();
    assert!(exposed.contains("x-request-id"), "{exposed:?}");
    app.stop().await;
});
