//! Integration tests: the client against a scripted HTTP server (exact requests, retry
//! behaviour) and against the Stripe simulator (whole accounts under injected faults).
//! No assertion depends on how long anything took.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "client/hostile.rs"]
mod hostile;
#[path = "client/mock.rs"]
mod mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use mock::{MockServer, Reply, json, json_with, stripe_error};
use secrecy::SecretString;
use serde_json::json as j;
use tributary_stripe_connect::rate::max_in_any_second;
use tributary_stripe_connect::{Created, STRIPE_VERSION, Stripe, StripeConfig, StripeError};

const KEY: &str = "sk_test_tributaryIntegrationKey42";

fn config(base: &str) -> StripeConfig {
    StripeConfig {
        connect_client_id: Some("ca_test123".into()),
        max_retries: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        ..StripeConfig::new(SecretString::from(KEY)).with_base(base)
    }
}

fn stripe(base: &str) -> Stripe {
    Stripe::new(config(base)).expect("client")
}

fn customer(id: &str, created: i64) -> serde_json::Value {
    j!({"id": id, "object": "customer", "created": created, "livemode": false, "email": format!("{id}@example.com")})
}

fn list(data: Vec<serde_json::Value>, has_more: bool) -> Reply {
    json(
        200,
        j!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data}),
    )
}

fn assert_no_key(err: &StripeError) {
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY), "secret key leaked: {shown}");
}

// ---------------------------------------------------------------- scripted server

#[tokio::test]
async fn every_request_carries_key_version_and_account_over_one_connection() {
    let server = MockServer::start(|_, _| json(200, customer("cus_1", 1))).await;
    let stripe = stripe(&server.base);
    let acct = stripe.account("acct_42").expect("acct");
    for _ in 0..5 {
        let item = acct.retrieve_customer("cus_1").await.expect("customer");
        assert_eq!(item.id, "cus_1");
        assert!(item.typed.is_ok(), "{:?}", item.typed.err());
        assert_eq!(item.raw["email"], "cus_1@example.com");
    }
    stripe
        .platform()
        .get_json("/v1/balance", &[])
        .await
        .expect("platform call");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 6);
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(r.header("stripe-version"), Some(STRIPE_VERSION));
        assert_eq!(r.method, "GET");
    }
    assert_eq!(STRIPE_VERSION, "2026-09-30.endive");
    assert!(
        reqs[..5]
            .iter()
            .all(|r| r.header("stripe-account") == Some("acct_42"))
    );
    assert_eq!(reqs[0].path(), "/v1/customers/cus_1");
    assert_eq!(
        reqs[5].header("stripe-account"),
        None,
        "platform calls send no Stripe-Account"
    );
    assert_eq!(
        server.connections(),
        1,
        "sequential requests reuse one pooled connection"
    );
    assert!(reqs.iter().all(|r| r.connection == reqs[0].connection));
}

#[tokio::test]
async fn async_stripe_typed_requests_go_through_our_client() {
    let server = MockServer::start(|_, _| json(200, customer("cus_typed", 7))).await;
    let acct = stripe(&server.base).account("acct_7").expect("acct");
    let c = stripe_core::customer::RetrieveCustomer::new("cus_typed")
        .send(&acct)
        .await
        .expect("typed");
    match c {
        stripe_core::customer::RetrieveCustomerReturned::Customer(c) => {
            assert_eq!(c.id.as_str(), "cus_typed")
        }
        other => panic!("{other:?}"),
    }
    // A per-request account override is honoured (and draws on that account's budget).
    use stripe_client_core::StripeRequest;
    let stripe = acct.stripe().clone();
    stripe.record_dispatch_times(true);
    stripe_core::customer::RetrieveCustomer::new("cus_typed")
        .customize()
        .account_id(stripe_client_core::AccountId::from("acct_other"))
        .send(&stripe.platform())
        .await
        .expect("override");
    let reqs = server.requests();
    assert_eq!(reqs[0].path(), "/v1/customers/cus_typed");
    assert_eq!(reqs[0].header("stripe-account"), Some("acct_7"));
    assert_eq!(reqs[0].header("stripe-version"), Some(STRIPE_VERSION));
    assert_eq!(reqs[1].header("stripe-account"), Some("acct_other"));
    assert_eq!(stripe.dispatch_times("acct_other").len(), 1);
}

#[tokio::test]
async fn pagination_follows_starting_after_and_keeps_raw() {
    let server = MockServer::start(|req, _| {
        let q = req.query();
        let after = q
            .iter()
            .find(|(k, _)| k == "starting_after")
            .map(|(_, v)| v.as_str());
        match after {
            None => list(vec![customer("cus_5", 5), customer("cus_4", 4)], true),
            Some("cus_4") => list(
                vec![
                    customer("cus_3", 3),
                    j!({"id": "cus_odd", "object": "customer"}),
                ],
                true,
            ),
            Some("cus_odd") => list(vec![customer("cus_1", 1)], false),
            Some(other) => stripe_error(400, "parameter_invalid", other),
        }
    })
    .await;
    let acct = stripe(&server.base).account("acct_1").expect("acct");
    let items = acct
        .customers(Created {
            gte: Some(1),
            lt: Some(10),
            ..Created::default()
        })
        .collect_all()
        .await
        .expect("list");
    let ids: Vec<_> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["cus_5", "cus_4", "cus_3", "cus_odd", "cus_1"]);
    // An object the typed model cannot read still comes through, raw.
    assert!(items[3].typed.is_err());
    assert_eq!(items[3].raw["id"], "cus_odd");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    let q = reqs[0].query();
    for (k, v) in [
        ("limit", "100"),
        ("created[gte]", "1"),
        ("created[lt]", "10"),
    ] {
        assert!(
            q.contains(&(k.to_owned(), v.to_owned())),
            "{k}={v} missing in {q:?}"
        );
    }
}

#[tokio::test]
async fn retries_5xx_429_lock_timeout_and_resets_then_succeeds() {
    let server = MockServer::start(|_, i| match i {
        0 => stripe_error(500, "api_error", "boom"),
        1 => Reply::Reset,
        2 => json_with(
            429,
            &[("retry-after", "0")],
            j!({"error": {"type": "invalid_request_error", "code": "rate_limit"}}),
        ),
        3 => stripe_error(429, "lock_timeout", "locked"),
        _ => json(200, customer("cus_ok", 1)),
    })
    .await;
    let stripe = stripe(&server.base);
    let item = stripe
        .account("acct_1")
        .expect("a")
        .retrieve_customer("cus_ok")
        .await
        .expect("retried");
    assert_eq!(item.id, "cus_ok");
    assert_eq!(server.requests().len(), 5);
    let stats = stripe.stats();
    assert_eq!((stats.attempts, stats.retries, stats.throttled), (5, 4, 2));
    let by_status: Vec<(&str, u64)> = stats
        .by_status
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        by_status,
        [("200", 1), ("429", 2), ("500", 1), ("transport", 1)]
    );
}

#[tokio::test]
async fn stripe_should_retry_header_wins_both_ways() {
    // false forbids retrying a 503
    let server = MockServer::start(|_, _| {
        json_with(
            503,
            &[("stripe-should-retry", "false")],
            j!({"error": {"type": "api_error", "message": "no"}}),
        )
    })
    .await;
    let err = stripe(&server.base)
        .account("acct_1")
        .expect("a")
        .retrieve_customer("cus_1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StripeError::Unavailable {
                attempts: 1,
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);

    // true forces retrying a 409
    let server = MockServer::start(|_, i| {
        if i == 0 {
            json_with(
                409,
                &[("stripe-should-retry", "true")],
                j!({"error": {"type": "idempotency_error"}}),
            )
        } else {
            json(200, customer("cus_1", 1))
        }
    })
    .await;
    stripe(&server.base)
        .account("acct_1")
        .expect("a")
        .retrieve_customer("cus_1")
        .await
        .expect("forced retry");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_are_typed() {
    let server = MockServer::start(|req, _| match req.path() {
        "/v1/customers/cus_missing" => {
            stripe_error(404, "resource_missing", "No such customer: 'cus_missing'")
        }
        "/v1/customers/cus_bad" => {
            stripe_error(400, "parameter_invalid_integer", "Invalid integer")
        }
        _ => stripe_error(401, "", &format!("Invalid API Key provided: {KEY}")),
    })
    .await;
    let acct = stripe(&server.base).account("acct_1").expect("a");
    let e = acct.retrieve_customer("cus_missing").await.unwrap_err();
    assert!(matches!(e, StripeError::NotFound { .. }), "{e:?}");
    let e = acct.retrieve_customer("cus_bad").await.unwrap_err();
    assert!(
        matches!(e, StripeError::BadRequest { status: 400, .. }),
        "{e:?}"
    );
    let e = acct.retrieve_customer("cus_other").await.unwrap_err();
    assert!(matches!(e, StripeError::Unauthorized { .. }), "{e:?}");
    assert_no_key(&e);
    assert_eq!(server.requests().len(), 3, "no 4xx retried");
}

#[tokio::test]
async fn exhausted_retries_become_rate_limited_or_unavailable() {
    let server = MockServer::start(|req, _| match req.path() {
        "/v1/customers/cus_throttled" => stripe_error(429, "rate_limit", "Too many requests"),
        "/v1/customers/cus_down" => stripe_error(502, "api_error", "bad gateway"),
        _ => Reply::Reset,
    })
    .await;
    let acct = stripe(&server.base).account("acct_1").expect("a");
    let e = acct.retrieve_customer("cus_throttled").await.unwrap_err();
    assert!(
        matches!(e, StripeError::RateLimited { attempts: 5, .. }),
        "{e:?}"
    );
    let e = acct.retrieve_customer("cus_down").await.unwrap_err();
    assert!(
        matches!(
            e,
            StripeError::Unavailable {
                attempts: 5,
                status: Some(502),
                ..
            }
        ),
        "{e:?}"
    );
    let e = acct.retrieve_customer("cus_reset").await.unwrap_err();
    assert!(
        matches!(
            e,
            StripeError::Unavailable {
                attempts: 5,
                status: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert_no_key(&e);
    assert_eq!(server.requests().len(), 15);
}

#[tokio::test]
async fn timeouts_are_retried() {
    let server = MockServer::start(|_, i| {
        if i == 0 {
            Reply::Delay(
                Duration::from_secs(30),
                Box::new(json(200, customer("cus_slow", 1))),
            )
        } else {
            json(200, customer("cus_fast", 1))
        }
    })
    .await;
    let stripe = Stripe::new(StripeConfig {
        // Generous, so a loaded machine still answers the second attempt in time.
        timeout: Duration::from_secs(2),
        ..config(&server.base)
    })
    .expect("c");
    let item = stripe
        .account("acct_1")
        .expect("a")
        .retrieve_customer("cus_x")
        .await
        .expect("retried after timeout");
    assert_eq!(item.id, "cus_fast");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn revoked_account_is_access_revoked_on_the_first_call() {
    let server = MockServer::start(|req, _| {
        let acct = req.header("stripe-account").unwrap_or_default().to_owned();
        stripe_error(
            403,
            "account_invalid",
            &format!("The provided key '{KEY}' does not have access to account '{acct}' (or that account does not exist). Application access may have been revoked."),
        )
    })
    .await;
    let acct = stripe(&server.base).account("acct_gone").expect("a");
    let e = acct
        .customers(Created::all())
        .pages()
        .try_next()
        .await
        .unwrap_err();
    match &e {
        StripeError::AccessRevoked { account, .. } => {
            assert_eq!(account.as_deref(), Some("acct_gone"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.code(), "access_revoked");
    assert_no_key(&e);
    assert_eq!(server.requests().len(), 1, "revocation is not retried");
}

#[tokio::test]
async fn budget_is_shared_by_every_task_of_one_account() {
    let server = MockServer::start(|_, _| json(200, customer("cus_1", 1))).await;
    let stripe = Stripe::new(StripeConfig {
        max_requests_per_second: 8,
        ..config(&server.base)
    })
    .expect("c");
    stripe.record_dispatch_times(true);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        // Each task gets its own client for the same account: the budget still is one.
        let acct = stripe.account("acct_busy").expect("a");
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                acct.retrieve_customer("cus_1").await.expect("ok");
            }
        }));
    }
    // Another account has its own budget and is not slowed by the busy one.
    let other = stripe.account("acct_quiet").expect("a");
    other.retrieve_customer("cus_1").await.expect("ok");
    for t in tasks {
        t.await.expect("task");
    }
    let times = stripe.dispatch_times("acct_busy");
    assert_eq!(times.len(), 15);
    assert!(
        max_in_any_second(&times) <= 8,
        "over budget: {}",
        max_in_any_second(&times)
    );
    assert_eq!(stripe.dispatch_times("acct_quiet").len(), 1);
}

#[tokio::test]
async fn oauth_exchange_and_deauthorize() {
    let server = MockServer::start(|req, _| match (req.path(), req.form().iter().find(|(k, _)| k == "code").map(|(_, v)| v.clone())) {
        ("/oauth/token", Some(code)) if code == "ac_good" => json(
            200,
            j!({"access_token": "sk_test_connectedtoken", "refresh_token": "rt_x", "token_type": "bearer",
                "stripe_publishable_key": "pk_test_x", "stripe_user_id": "acct_new", "scope": "read_write", "livemode": false}),
        ),
        ("/oauth/token", _) => json(400, j!({"error": "invalid_grant", "error_description": "Authorization code does not exist: ac_bad"})),
        ("/oauth/deauthorize", _) => json(200, j!({"stripe_user_id": "acct_new"})),
        _ => json(404, j!({})),
    })
    .await;
    let stripe = stripe(&server.base);
    let grant = stripe.exchange_code("ac_good").await.expect("grant");
    assert_eq!(grant.stripe_user_id, "acct_new");
    assert!(!grant.livemode);
    assert_eq!(grant.scope.as_deref(), Some("read_write"));
    let e = stripe.exchange_code("ac_bad").await.unwrap_err();
    assert!(
        matches!(&e, StripeError::InvalidGrant { description } if description.contains("ac_bad")),
        "{e:?}"
    );
    stripe.deauthorize("acct_new").await.expect("deauthorize");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        reqs[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        reqs[0].form(),
        [
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), "ac_good".to_owned())
        ]
    );
    assert_eq!(reqs[2].path(), "/oauth/deauthorize");
    assert_eq!(
        reqs[2].form(),
        [
            ("client_id".to_owned(), "ca_test123".to_owned()),
            ("stripe_user_id".to_owned(), "acct_new".to_owned())
        ]
    );
    assert_eq!(
        stripe.authorize_url("ca_test123", "http://app/cb", "nonce1"),
        format!(
            "{}/oauth/authorize?response_type=code&client_id=ca_test123&scope=read_write&redirect_uri=http%3A%2F%2Fapp%2Fcb&state=nonce1",
            server.base
        )
    );
}

#[tokio::test]
async fn oauth_transport_failure_is_unavailable() {
    let server = MockServer::start(|_, _| Reply::Reset).await;
    let e = stripe(&server.base)
        .exchange_code("ac_x")
        .await
        .unwrap_err();
    assert!(matches!(e, StripeError::Unavailable { .. }), "{e:?}");
    assert_no_key(&e);
}

#[tokio::test]
async fn account_display_name_and_line_item_lists() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = MockServer::start(move |req, _| {
        c.fetch_add(1, Ordering::SeqCst);
        match req.path() {
            "/v1/account" => json(200, j!({"id": "acct_1", "object": "account", "business_profile": {"name": null},
                                          "settings": {"dashboard": {"display_name": "Dash Name"}}})),
            "/v1/invoices/in_1/lines" => json(200, j!({"object": "list", "has_more": false, "url": "/v1/invoices/in_1/lines",
                                                       "data": [{"id": "il_1", "object": "line_item"}]})),
            "/v1/checkout/sessions/cs_1/line_items" => json(200, j!({"object": "list", "has_more": false, "url": "x",
                                                       "data": [{"id": "li_1", "object": "item"}]})),
            _ => stripe_error(404, "resource_missing", "no"),
        }
    })
    .await;
    let acct = stripe(&server.base).account("acct_1").expect("a");
    assert_eq!(
        acct.display_name().await.expect("name").as_deref(),
        Some("Dash Name")
    );
    assert_eq!(
        acct.invoice_lines("in_1")
            .collect_all()
            .await
            .expect("lines")[0]
            .id,
        "il_1"
    );
    assert_eq!(
        acct.checkout_session_line_items("cs_1")
            .collect_all()
            .await
            .expect("lines")[0]
            .id,
        "li_1"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn invoice_lines_continue_after_the_embedded_ten() {
    let line = |n: usize| j!({"id": format!("il_{n}"), "object": "line_item", "amount": 100});
    let server = MockServer::start(move |req, _| {
        let after = req.query().into_iter().find(|(k, _)| k == "starting_after").map(|(_, v)| v);
        match (req.path(), after.as_deref()) {
            ("/v1/invoices/in_big/lines", Some("il_9")) => json(
                200,
                j!({"object": "list", "has_more": true, "url": "/v1/invoices/in_big/lines", "data": (10..12).map(line).collect::<Vec<_>>()}),
            ),
            ("/v1/invoices/in_big/lines", Some("il_11")) => json(
                200,
                j!({"object": "list", "has_more": false, "url": "/v1/invoices/in_big/lines", "data": [line(12)]}),
            ),
            ("/v1/checkout/sessions/cs_plain/line_items", None) => json(
                200,
                j!({"object": "list", "has_more": false, "url": "x", "data": [{"id": "li_1", "object": "item"}]}),
            ),
            _ => stripe_error(400, "parameter_invalid", "unexpected"),
        }
    })
    .await;
    let acct = stripe(&server.base).account("acct_1").expect("a");
    let invoice = j!({"id": "in_big", "object": "invoice",
        "lines": {"object": "list", "has_more": true, "url": "/v1/invoices/in_big/lines", "data": (0..10).map(line).collect::<Vec<_>>()}});
    let lines = acct.all_invoice_lines(&invoice).await.expect("lines");
    let ids: Vec<_> = lines.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids, (0..13).map(|n| format!("il_{n}")).collect::<Vec<_>>());
    assert_eq!(server.requests().len(), 2);

    // Fully embedded: no request at all.
    let small =
        j!({"id": "in_small", "lines": {"object": "list", "has_more": false, "data": [line(1)]}});
    assert_eq!(
        acct.all_invoice_lines(&small).await.expect("lines").len(),
        1
    );
    assert_eq!(server.requests().len(), 2);

    // A session listed without expansion: its lines come from the API.
    let session = j!({"id": "cs_plain", "object": "checkout.session"});
    let items = acct
        .all_checkout_session_line_items(&session)
        .await
        .expect("items");
    assert_eq!(items[0].id, "li_1");
    assert_eq!(server.requests().len(), 3);
}

// ---------------------------------------------------------------- simulator

mod sim {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use futures::future::try_join_all;
    use tributary_stripe_connect::{AccountClient, FromRaw, Item, ListRequest};
    use tributary_stripe_sim::{Scale, SimOptions, SimServer};

    pub struct Sim {
        pub server: SimServer,
        pub base: String,
        http: reqwest::Client,
    }

    impl Sim {
        pub async fn start(accounts: usize, scale: Scale) -> Sim {
            let server = SimServer::start(SimOptions {
                seed: 7,
                accounts,
                scale,
                ..Default::default()
            })
            .await
            .expect("simulator");
            let base = server.base_url();
            Sim {
                server,
                base,
                http: reqwest::Client::new(),
            }
        }

        pub async fn control(
            &self,
            method: reqwest::Method,
            path: &str,
            body: Option<serde_json::Value>,
        ) -> serde_json::Value {
            let mut req = self.http.request(method, format!("{}{path}", self.base));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.expect("control call");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.json().await.expect("control json")
        }

        pub async fn counts(&self, acct: &str) -> BTreeMap<String, u64> {
            let all = self
                .control(reqwest::Method::GET, "/_sim/accounts", None)
                .await;
            let entry = all
                .as_array()
                .expect("array")
                .iter()
                .find(|a| a["id"] == acct)
                .expect("account listed");
            serde_json::from_value(entry["counts"].clone()).expect("counts")
        }

        pub async fn faults(&self, faults: serde_json::Value) {
            self.control(reqwest::Method::POST, "/_sim/faults", Some(faults))
                .await;
        }

        pub async fn requests(&self) -> serde_json::Value {
            self.control(reqwest::Method::GET, "/_sim/requests", None)
                .await
        }
    }

    fn sim_config(base: &str) -> StripeConfig {
        StripeConfig {
            max_retries: 12,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(250),
            max_requests_per_second: 25,
            connect_client_id: Some("ca_tributary_sim".into()),
            ..config(base)
        }
    }

    /// Every object of a list, checking that no id comes twice.
    async fn ids_of<T: FromRaw>(req: ListRequest<T>, page_size: u32, what: &str) -> Vec<Item<T>> {
        let items = req
            .limit(page_size)
            .collect_all()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let unique: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(unique.len(), items.len(), "{what}: an object came twice");
        assert!(
            items.iter().all(|i| !i.id.is_empty() && i.raw.is_object()),
            "{what}: raw missing"
        );
        items
    }

    fn typed_failures<T>(items: &[Item<T>]) -> usize {
        items.iter().filter(|i| i.typed.is_err()).count()
    }

    /// Pages every resource of one account, resources concurrently (they share the account's
    /// budget), and returns the observed count per resource name of `/_sim/accounts`.
    async fn page_account(
        acct: &AccountClient,
        page_size: u32,
    ) -> (BTreeMap<String, u64>, BTreeMap<String, usize>) {
        let all = Created::all();
        let (
            products,
            prices,
            customers,
            pis,
            charges,
            refunds,
            invoices,
            inv_payments,
            sessions,
            subs,
        ) = tokio::join!(
            ids_of(acct.products(all), page_size, "products"),
            ids_of(acct.prices(all), page_size, "prices"),
            ids_of(acct.customers(all), page_size, "customers"),
            ids_of(acct.payment_intents(all), page_size, "payment_intents"),
            ids_of(acct.charges(all), page_size, "charges"),
            ids_of(acct.refunds(all), page_size, "refunds"),
            ids_of(acct.invoices(all), page_size, "invoices"),
            ids_of(acct.invoice_payments(all), page_size, "invoice_payments"),
            ids_of(acct.checkout_sessions(all), page_size, "checkout_sessions"),
            ids_of(acct.subscriptions(all), page_size, "subscriptions"),
        );
        let lines = try_join_all(invoices.iter().map(|inv| acct.all_invoice_lines(&inv.raw)))
            .await
            .expect("invoice lines");
        let session_lines = try_join_all(
            sessions
                .iter()
                .map(|s| acct.all_checkout_session_line_items(&s.raw)),
        )
        .await
        .expect("session lines");
        let mut line_ids = HashSet::new();
        for (inv, ls) in invoices.iter().zip(&lines) {
            for l in ls {
                assert!(
                    line_ids.insert(format!("{}/{}", inv.id, l.id)),
                    "line {} of {} twice",
                    l.id,
                    inv.id
                );
            }
        }
        let mut session_line_ids = HashSet::new();
        for (s, ls) in sessions.iter().zip(&session_lines) {
            for l in ls {
                assert!(
                    session_line_ids.insert(format!("{}/{}", s.id, l.id)),
                    "line {} of {} twice",
                    l.id,
                    s.id
                );
            }
        }
        let n = |v: usize| u64::try_from(v).expect("count");
        let counts = BTreeMap::from([
            ("products".to_owned(), n(products.len())),
            ("prices".to_owned(), n(prices.len())),
            ("customers".to_owned(), n(customers.len())),
            ("payment_intents".to_owned(), n(pis.len())),
            ("charges".to_owned(), n(charges.len())),
            ("refunds".to_owned(), n(refunds.len())),
            ("invoices".to_owned(), n(invoices.len())),
            ("invoice_line_items".to_owned(), n(line_ids.len())),
            ("invoice_payments".to_owned(), n(inv_payments.len())),
            ("checkout_sessions".to_owned(), n(sessions.len())),
            ("checkout_line_items".to_owned(), n(session_line_ids.len())),
            ("subscriptions".to_owned(), n(subs.len())),
        ]);
        let typed = BTreeMap::from([
            ("products".to_owned(), typed_failures(&products)),
            ("prices".to_owned(), typed_failures(&prices)),
            ("customers".to_owned(), typed_failures(&customers)),
            ("payment_intents".to_owned(), typed_failures(&pis)),
            ("charges".to_owned(), typed_failures(&charges)),
            ("refunds".to_owned(), typed_failures(&refunds)),
            ("invoices".to_owned(), typed_failures(&invoices)),
            (
                "invoice_line_items".to_owned(),
                lines.iter().map(|l| typed_failures(l)).sum(),
            ),
            ("invoice_payments".to_owned(), typed_failures(&inv_payments)),
            ("checkout_sessions".to_owned(), typed_failures(&sessions)),
            (
                "checkout_line_items".to_owned(),
                session_lines.iter().map(|l| typed_failures(l)).sum(),
            ),
            ("subscriptions".to_owned(), typed_failures(&subs)),
        ]);
        (counts, typed)
    }

    /// `page_size` below 100 makes a small account take hundreds of requests and page turns.
    async fn page_every_resource_under_faults(scale: Scale, page_size: u32) {
        let sim = Sim::start(2, scale).await;
        let accounts = sim.server.accounts();
        let stripe = Stripe::new(sim_config(&sim.base)).expect("client");
        stripe.record_dispatch_times(true);
        sim.faults(j!({"error_ratio": 0.2, "reset_ratio": 0.05, "rate_limit_per_second": 25}))
            .await;

        // Both accounts at once: each has its own budget.
        let clients: Vec<AccountClient> = accounts
            .iter()
            .map(|a| stripe.account(a).expect("acct"))
            .collect();
        let results =
            futures::future::join_all(clients.iter().map(|c| page_account(c, page_size))).await;
        sim.faults(j!({})).await;

        let mut total_objects = 0;
        for (acct, (seen, typed_fail)) in accounts.iter().zip(results) {
            let expected = sim.counts(acct).await;
            for (resource, want) in &expected {
                assert_eq!(
                    seen.get(resource),
                    Some(want),
                    "{acct} {resource}: listed {:?}, simulator holds {want}",
                    seen.get(resource)
                );
            }
            total_objects += seen.values().sum::<u64>();
            eprintln!("{acct}: typed-parse failures per resource (raw kept): {typed_fail:?}");
            let times = stripe.dispatch_times(acct);
            let peak = max_in_any_second(&times);
            assert!(
                peak <= 25,
                "{acct}: {peak} requests in one second, budget 25"
            );
            eprintln!(
                "{acct}: {} requests, peak {peak} in any second",
                times.len()
            );
        }
        assert!(total_objects > 0);
        let stats = stripe.stats();
        assert!(
            stats.retries > 0,
            "faults were injected, some retries expected: {stats:?}"
        );
        let log = sim.requests().await;
        let connections = log["connections"].as_u64().expect("connections");
        let total = log["total"].as_u64().expect("total");
        eprintln!(
            "simulator saw {total} requests over {connections} connections; client {stats:?}"
        );
        // A connection is opened per concurrent stream (10 lists per account) and after each
        // reset; everything else reuses the pool.
        let resets: u64 = log["by_route"]
            .as_object()
            .expect("by_route")
            .values()
            .filter_map(|statuses| statuses.get("reset").and_then(serde_json::Value::as_u64))
            .sum();
        let concurrent_streams = 10 * u64::try_from(accounts.len()).expect("n");
        eprintln!("{resets} resets");
        assert!(
            // (+10: the server may close a keep-alive connection that sat idle.)
            connections <= resets + concurrent_streams + 10,
            "{connections} connections for {total} requests ({resets} resets)"
        );
        assert!(
            connections * 3 < total,
            "{connections} connections for {total} requests"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_every_resource_of_small_accounts_under_faults() {
        page_every_resource_under_faults(Scale::Small, 10).await;
    }

    /// The size: two medium accounts (about 15,000 objects each) under 20% errors,
    /// 5% resets and a 25 req/s limit; about 40 s in a debug build.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_every_resource_of_medium_accounts_under_faults() {
        page_every_resource_under_faults(Scale::Medium, 100).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_reused_without_faults() {
        let sim = Sim::start(1, Scale::Small).await;
        let acct = sim.server.accounts()[0].clone();
        let stripe = Stripe::new(sim_config(&sim.base)).expect("client");
        let client = stripe.account(&acct).expect("acct");
        let before = sim.requests().await;
        for _ in 0..3 {
            let customers = client
                .customers(Created::all())
                .limit(10)
                .collect_all()
                .await
                .expect("customers");
            assert!(!customers.is_empty());
        }
        let after = sim.requests().await;
        let requests = after["total"].as_u64().expect("t") - before["total"].as_u64().expect("t");
        let connections =
            after["connections"].as_u64().expect("c") - before["connections"].as_u64().expect("c");
        assert!(requests >= 6, "{requests}");
        assert!(
            connections <= 2,
            "{connections} connections for {requests} requests"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoked_access_is_access_revoked_on_the_first_call() {
        let sim = Sim::start(2, Scale::Small).await;
        let accounts = sim.server.accounts();
        let stripe = Stripe::new(sim_config(&sim.base)).expect("client");
        sim.control(
            reqwest::Method::POST,
            &format!("/_sim/accounts/{}/revoke", accounts[0]),
            None,
        )
        .await;
        let before = sim.requests().await["total"].as_u64().expect("t");
        let err = stripe
            .account(&accounts[0])
            .expect("a")
            .customers(Created::all())
            .pages()
            .try_next()
            .await
            .unwrap_err();
        assert!(err.is_access_revoked(), "{err:?}");
        assert_no_key(&err);
        let after = sim.requests().await["total"].as_u64().expect("t");
        // One API call (the control call to read the log is not counted by the simulator).
        assert_eq!(after - before, 1, "revocation must not be retried");
        // The other account is untouched.
        let name = stripe
            .account(&accounts[1])
            .expect("a")
            .display_name()
            .await
            .expect("account");
        assert!(name.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oauth_code_exchange_invalid_grant_and_deauthorize() {
        let sim = Sim::start(1, Scale::Empty).await;
        let acct = sim.server.accounts()[0].clone();
        let stripe = Stripe::new(sim_config(&sim.base)).expect("client");
        let url = format!(
            "{}&sim_account={acct}",
            stripe.authorize_url(
                "ca_tributary_sim",
                "http://127.0.0.1:1/api/stripe/oauth/callback",
                "state123"
            )
        );
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http");
        let resp = no_redirect.get(&url).send().await.expect("authorize");
        assert_eq!(resp.status().as_u16(), 302);
        let location = resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let location = url::Url::parse(&location).expect("url");
        let q: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(q.get("state").map(String::as_str), Some("state123"));
        let code = q.get("code").expect("code").clone();

        let grant = stripe.exchange_code(&code).await.expect("exchange");
        assert_eq!(grant.stripe_user_id, acct);
        assert_eq!(grant.scope.as_deref(), Some("read_write"));
        // A code works once.
        let err = stripe.exchange_code(&code).await.unwrap_err();
        assert!(matches!(err, StripeError::InvalidGrant { .. }), "{err:?}");
        let err = stripe.exchange_code("ac_never_issued").await.unwrap_err();
        assert!(matches!(err, StripeError::InvalidGrant { .. }), "{err:?}");

        let client = stripe.account(&acct).expect("a");
        client
            .retrieve_account()
            .await
            .expect("connected account readable");
        stripe.deauthorize(&acct).await.expect("deauthorize");
        let err = client.retrieve_account().await.unwrap_err();
        assert!(err.is_access_revoked(), "{err:?}");
        // Deauthorizing again: Stripe says the application is not connected.
        let err = stripe.deauthorize(&acct).await.unwrap_err();
        assert!(matches!(err, StripeError::OAuth { .. }), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_and_retrieve_by_id() {
        let sim = Sim::start(1, Scale::Small).await;
        let acct = sim.server.accounts()[0].clone();
        let stripe = Stripe::new(sim_config(&sim.base)).expect("client");
        let client = stripe.account(&acct).expect("a");
        sim.control(
            reqwest::Method::POST,
            &format!("/_sim/accounts/{acct}/mutate"),
            Some(j!({"count": 20, "seed": 3})),
        )
        .await;
        let events = ids_of(client.events(Created::all(), &[]), 100, "events").await;
        assert!(!events.is_empty());
        assert!(
            events.iter().all(|e| e.typed.is_ok()),
            "every event envelope parses"
        );
        let newest = events[0].typed().expect("envelope");
        let again = client
            .retrieve_event(&newest.id)
            .await
            .expect("event by id");
        assert_eq!(again.id, newest.id);
        // Re-fetch the object an event names.
        let mut refetched = 0;
        for e in events.iter().filter_map(|e| e.typed()).take(20) {
            if let (Some(kind), Some(id)) = (e.object_type(), e.object_id()) {
                match client.retrieve_object(kind, id).await {
                    Ok(Some(item)) => {
                        assert_eq!(item.id, id);
                        refetched += 1;
                    }
                    Ok(None) | Err(StripeError::NotFound { .. }) => {}
                    Err(other) => panic!("{kind} {id}: {other}"),
                }
            }
        }
        assert!(refetched > 0);
        // Filter by type.
        let first_type = newest.event_type.clone();
        let filtered = ids_of(
            client.events(Created::all(), &[first_type.as_str()]),
            100,
            "events by type",
        )
        .await;
        assert!(
            filtered
                .iter()
                .all(|e| e.typed().is_some_and(|t| t.event_type == first_type))
        );
        // created filter: nothing after the newest.
        let none = ids_of(
            client.events(
                Created {
                    gt: Some(newest.created),
                    ..Created::default()
                },
                &[],
            ),
            100,
            "future",
        )
        .await;
        assert!(none.is_empty());
    }
}
