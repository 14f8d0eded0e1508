//! Integration tests: the client against a scripted HTTP server (exact requests, retry
//! behaviour) and against the Stripe simulator (whole accounts under injected faults).
//! No assertion depends on how long anything took.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

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
    let reqs = server.requests();
    assert_eq!(reqs[0].path(), "/v1/customers/cus_typed");
    assert_eq!(reqs[0].header("stripe-account"), Some("acct_7"));
    assert_eq!(reqs[0].header("stripe-version"), Some(STRIPE_VERSION));
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
                Duration::from_secs(5),
                Box::new(json(200, customer("cus_slow", 1))),
            )
        } else {
            json(200, customer("cus_fast", 1))
        }
    })
    .await;
    let stripe = Stripe::new(StripeConfig {
        timeout: Duration::from_millis(300),
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
