//! Webhooks (SPEC §6) through the real HTTP server, on SQLite and PostgreSQL: signature
//! verification, idempotency, routing, ordering against the simulator's state,
//! deauthorization and platform billing.
//!
//! Events are signed by the official Python library (`pip install stripe==16.1.0`). Without it
//! the tests fall back to our own signer and say so on stderr, unless `CI=true`, where they fail.

use std::io::Write as _;
use std::sync::OnceLock;

use futures::StreamExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use secrecy::SecretString;
use tributary_persistence::billing;
use tributary_persistence::entities::agency_billing;
use tributary_persistence::sea_orm::{EntityTrait, PaginatorTrait};
use tributary_stripe_connect::{STRIPE_VERSION, Stripe, StripeConfig};
use tributary_sync::{SyncConfig, SyncContext};

use super::*;

const CONNECT_SECRET: &str = "whsec_connect_endpoint_secret_1";
const PLATFORM_SECRET: &str = "whsec_platform_billing_secret_1";
const BUSINESS_SECRET: &str = "whsec_business_own_secret_1";
const OLD_SECRET: &str = "whsec_connect_endpoint_secret_0";
const PLATFORM_KEY: &str = "sk_test_tributary_api_tests";

/// [`TestApp::spawn_with`] with the two webhook secrets configured.
async fn spawn(t: &TestDbRef, opts: Opts) -> TestApp {
    TestApp::spawn_configured(t, opts, |settings| {
        settings.stripe.secret_key = Some(String::from(PLATFORM_KEY).into());
        settings.stripe.connect_webhook_secret = Some(String::from(CONNECT_SECRET).into());
        settings.stripe.platform_webhook_secret = Some(String::from(PLATFORM_SECRET).into());
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Signing with the official library
// ---------------------------------------------------------------------------------------

const PY_SIGN: &str = r#"
import json, sys
import stripe
req = json.load(sys.stdin)
out = [stripe.WebhookSignature._compute_signature("%d.%s" % (t, payload), secret)
       for (t, payload, secret) in req]
json.dump(out, sys.stdout)
"#;

/// `v1` signatures of `(t, payload, secret)` by the Python library; `None` when it cannot run.
fn python_signatures(items: &[(i64, String, String)]) -> Option<Vec<String>> {
    let mut child = std::process::Command::new("python3")
        .args(["-c", PY_SIGN])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let input = serde_json::to_vec(items).unwrap();
    child.stdin.take()?.write_all(&input).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Whether the official library is there; without it (and outside CI) we sign ourselves.
fn python_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = python_signatures(&[(1, "{}".into(), "whsec_x".into())]).is_some_and(|s| {
            s == ["36ee2f7498f0c1777d1312b2a7361947fe5ad31223be30d0c62421f4ca753401"]
        });
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: the Python `stripe` library must sign the webhook tests (pip install stripe==16.1.0)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: python3 -c 'import stripe' failed: webhook tests sign with tributary_stripe_connect (sign_payload's compute_signature) instead"
            );
        }
        ok
    })
}

/// `v1` signatures of every `(t, payload, secret)`, in one Python process.
fn signatures(items: &[(i64, String, String)]) -> Vec<String> {
    if python_available()
        && let Some(sigs) = python_signatures(items)
    {
        return sigs;
    }
    items
        .iter()
        .map(|(t, payload, secret)| {
            tributary_stripe_connect::compute_signature(payload.as_bytes(), secret, *t)
        })
        .collect()
}

/// A `Stripe-Signature` header for `payload` signed at `t` with each of `secrets`.
fn header(payload: &str, t: i64, secrets: &[&str]) -> String {
    let items: Vec<_> = secrets
        .iter()
        .map(|s| (t, payload.to_owned(), (*s).to_owned()))
        .collect();
    let mut h = format!("t={t}");
    for sig in signatures(&items) {
        h.push_str(&format!(",v1={sig}"));
    }
    h
}

impl TestApp {
    /// Posts a webhook body with an optional `Stripe-Signature`.
    async fn hook(&self, path: &str, body: impl Into<String>, signature: Option<&str>) -> Answer {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.into());
        if let Some(s) = signature {
            req = req.header("Stripe-Signature", s);
        }
        let res = req.send().await.expect("request");
        Answer {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }

    /// Posts `event` signed now with `secret`; expects `200`.
    async fn deliver(&self, path: &str, event: &Value, secret: &str) -> Value {
        let body = event.to_string();
        let res = self
            .hook(path, body.clone(), Some(&header(&body, now(), &[secret])))
            .await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "{path} {}: {}",
            event["id"],
            res.text
        );
        res.json()
    }

    fn stripe(&self) -> Stripe {
        Stripe::new(StripeConfig {
            api_base: self.sim.base_url(),
            connect_base: self.sim.base_url(),
            max_requests_per_second: 100,
            ..StripeConfig::new(SecretString::from(PLATFORM_KEY))
        })
        .unwrap()
    }
}

fn event(id: &str, kind: &str, account: Option<&str>, created: i64, object: Value) -> Value {
    let mut e = json!({
        "id": id, "object": "event", "type": kind, "api_version": STRIPE_VERSION,
        "created": created, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object},
    });
    if let Some(a) = account {
        e["account"] = json!(a);
    }
    e
}

fn customer_object(id: &str, email: &str, created: i64) -> Value {
    json!({"id": id, "object": "customer", "email": email, "name": "Webhook Customer",
           "created": created, "livemode": false, "currency": "usd", "metadata": {}})
}

async fn events_recorded(db: &Database) -> Vec<webhook_events::Model> {
    webhook_events::Entity::find().all(db.conn()).await.unwrap()
}

async fn event_count(db: &Database) -> u64 {
    webhook_events::Entity::find()
        .count(db.conn())
        .await
        .unwrap()
}

async fn customer_row(db: &Database, business: &str, id: &str) -> Option<stripe_customers::Model> {
    mirror::find::<stripe_customers::Entity, _>(db.conn(), &biz(business), id)
        .await
        .unwrap()
}

/// An app with workers over an empty simulated account, which `biz-a` connects and syncs.
async fn empty_and_connected(t: &TestDbRef) -> (TestApp, String) {
    let app = spawn(
        t,
        Opts {
            workers: true,
            accounts: 1,
            scale: Scale::Empty,
            ..Opts::default()
        },
    )
    .await;
    let acct = app.account(0);
    app.connect_and_sync("biz-a", &acct).await;
    (app, acct)
}

const CONNECT: &str = "/api/webhooks/stripe/connect";
const PLATFORM: &str = "/api/webhooks/stripe";

// ---------------------------------------------------------------------------------------
// Verification and idempotency
// ---------------------------------------------------------------------------------------

db_test!(signatures_are_verified_and_failures_store_nothing, |t| {
    let app = spawn(&t, Opts::default()).await;
    let acct = app.account(0);
    assert_eq!(app.connect("biz-a", &acct).await["stripe"], "connected");
    let created = now();
    let e = event(
        "evt_wh_valid",
        "customer.created",
        Some(&acct),
        created,
        customer_object("cus_wh_1", "First@Example.com", created),
    );
    let body = e.to_string();
    let t0 = now();

    // Tampered body, wrong secret, an hour old, an hour ahead, no header, malformed headers.
    let tampered = body.replace("First@Example.com", "evil@example.com");
    let good = header(&body, t0, &[CONNECT_SECRET]);
    let refused: Vec<(&str, String, Option<String>)> = vec![
        ("tampered body", tampered, Some(good.clone())),
        (
            "wrong secret",
            body.clone(),
            Some(header(&body, t0, &["whsec_somebody_else"])),
        ),
        (
            "platform secret",
            body.clone(),
            Some(header(&body, t0, &[PLATFORM_SECRET])),
        ),
        (
            "hour old",
            body.clone(),
            Some(header(&body, t0 - 3600, &[CONNECT_SECRET])),
        ),
        (
            "hour ahead",
            body.clone(),
            Some(header(&body, t0 + 3600, &[CONNECT_SECRET])),
        ),
        ("missing header", body.clone(), None),
        ("empty header", body.clone(), Some(String::new())),
        ("garbage header", body.clone(), Some("garbage".into())),
        (
            "no timestamp",
            body.clone(),
            Some(good.split_once(',').unwrap().1.to_owned()),
        ),
        ("no v1", body.clone(), Some(format!("t={t0},v0=deadbeef"))),
        (
            "bad timestamp",
            body.clone(),
            Some(good.replacen(&format!("t={t0}"), "t=yesterday", 1)),
        ),
        (
            "truncated signature",
            body.clone(),
            Some(good[..good.len() - 2].to_owned()),
        ),
    ];
    for (what, body, sig) in &refused {
        let res = app.hook(CONNECT, body.clone(), sig.as_deref()).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{what}: {}", res.text);
        assert_eq!(
            res.error_code(),
            "invalid_signature",
            "{what}: {}",
            res.text
        );
        assert_no_trace(&res, &[CONNECT_SECRET, PLATFORM_SECRET]);
    }
    assert_eq!(
        event_count(&app.db).await,
        0,
        "a refused delivery stores nothing"
    );
    assert!(customer_row(&app.db, "biz-a", "cus_wh_1").await.is_none());

    // 2 MiB, even correctly signed, is refused before it is read.
    let mut huge = e.clone();
    huge["data"]["object"]["metadata"] = json!({"pad": "x".repeat(2 * 1024 * 1024)});
    let huge = huge.to_string();
    let res = app
        .hook(
            CONNECT,
            huge.clone(),
            Some(&header(&huge, now(), &[CONNECT_SECRET])),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", res.text);
    assert_eq!(res.error_code(), "payload_too_large");
    assert_eq!(event_count(&app.db).await, 0);

    // Rotation: Stripe signs with the old and the new secret; either v1 may match.
    let rotated = header(&body, now(), &[OLD_SECRET, CONNECT_SECRET]);
    assert_eq!(rotated.matches("v1=").count(), 2);
    let res = app.hook(CONNECT, body.clone(), Some(&rotated)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.json()["outcome"], "applied");
    assert_eq!(res.json()["duplicate"], false);
    let row = customer_row(&app.db, "biz-a", "cus_wh_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("first@example.com"));
    assert_eq!(row.last_event_at, created);

    // Duplicates: the same delivery again, and the same event id with other content.
    let res = app.hook(CONNECT, body.clone(), Some(&good)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.json()["duplicate"], true);
    let mut changed = e.clone();
    changed["data"]["object"]["email"] = json!("changed@example.com");
    changed["created"] = json!(created + 5);
    let answer = app.deliver(CONNECT, &changed, CONNECT_SECRET).await;
    assert_eq!(answer["duplicate"], true);
    let again = customer_row(&app.db, "biz-a", "cus_wh_1").await.unwrap();
    assert_eq!(again, row, "a duplicate changes nothing");
    let recorded = events_recorded(&app.db).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].endpoint, "connect");
    assert_eq!(recorded[0].event_id, "evt_wh_valid");
    assert_eq!(recorded[0].business_id.as_deref(), Some("biz-a"));
    assert_eq!(recorded[0].account.as_deref(), Some(acct.as_str()));
    assert_eq!(recorded[0].outcome, "applied");

    // The same new event delivered eight times in one turn: while the business's lock is held
    // elsewhere, another event's turn waits for it and the eight copies queue behind that turn,
    // so the next turn holds all of them. One copy applies the event, the seven others are
    // duplicates, and it is recorded once, applied.
    let mut other = e.clone();
    other["id"] = json!("evt_wh_before_burst");
    other["created"] = json!(created + 10);
    let mut burst = e.clone();
    burst["id"] = json!("evt_wh_burst");
    burst["created"] = json!(created + 20);
    burst["data"]["object"]["email"] = json!("burst@example.com");
    let hold = app.db.begin_write().await.unwrap();
    tributary_persistence::access::lock_for_write(&hold, &biz("biz-a"), true)
        .await
        .unwrap();
    let deliveries = futures::future::join(app.deliver(CONNECT, &other, CONNECT_SECRET), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        futures::future::join_all((0..8).map(|_| app.deliver(CONNECT, &burst, CONNECT_SECRET)))
            .await
    });
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        hold.commit().await.unwrap();
    };
    let ((before, answers), ()) = futures::future::join(deliveries, release).await;
    assert_eq!(before["duplicate"], false, "{before:?}");
    let first: Vec<_> = answers.iter().filter(|a| a["duplicate"] == false).collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    assert_eq!(first[0]["outcome"], "applied");
    let recorded = events_recorded(&app.db).await;
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert!(
        recorded.iter().all(|r| r.outcome == "applied"),
        "{recorded:?}"
    );
    let row = customer_row(&app.db, "biz-a", "cus_wh_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("burst@example.com"));

    // Not an event at all, correctly signed: 400 and nothing stored.
    let res = app
        .hook(
            CONNECT,
            "[1,2,3]",
            Some(&header("[1,2,3]", now(), &[CONNECT_SECRET])),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text);
    assert_eq!(res.error_code(), "invalid_event");
    assert_eq!(event_count(&app.db).await, 3);
    app.stop().await;
});

db_test!(unrouted_other_mode_and_unknown_events_are_recorded, |t| {
    let app = spawn(&t, Opts::default()).await;
    let acct = app.account(0);
    assert_eq!(app.connect("biz-a", &acct).await["stripe"], "connected");
    let c = now();
    let cases = [
        (
            event(
                "evt_nobody",
                "customer.created",
                Some("acct_nobodyholdsthis"),
                c,
                customer_object("cus_x1", "x1@example.com", c),
            ),
            "unrouted",
        ),
        (
            event(
                "evt_noaccount",
                "customer.created",
                None,
                c,
                customer_object("cus_x2", "x2@example.com", c),
            ),
            "unrouted",
        ),
        (
            {
                let mut e = event(
                    "evt_live",
                    "customer.created",
                    Some(&acct),
                    c,
                    customer_object("cus_x3", "x3@example.com", c),
                );
                e["livemode"] = json!(true);
                e
            },
            "other_mode",
        ),
        (
            event(
                "evt_unknown",
                "brand_new.thing_happened",
                Some(&acct),
                c,
                json!({"id": "thing_1", "object": "brand_new_thing"}),
            ),
            "ignored",
        ),
    ];
    for (e, outcome) in &cases {
        let answer = app.deliver(CONNECT, e, CONNECT_SECRET).await;
        assert_eq!(answer["outcome"], *outcome, "{e}");
    }
    let recorded = events_recorded(&app.db).await;
    assert_eq!(recorded.len(), 4);
    for r in &recorded {
        match r.event_id.as_str() {
            "evt_unknown" => {
                assert_eq!(r.business_id.as_deref(), Some("biz-a"));
                assert_eq!(r.event_type, "brand_new.thing_happened");
            }
            "evt_live" => {
                assert_eq!(r.business_id, None);
                assert_eq!(r.outcome, "other_mode");
                assert!(r.livemode);
            }
            _ => {
                assert_eq!(r.business_id, None, "{r:?}");
                assert_eq!(r.outcome, "unrouted");
            }
        }
    }
    for id in ["cus_x1", "cus_x2", "cus_x3"] {
        assert!(customer_row(&app.db, "biz-a", id).await.is_none(), "{id}");
    }
    // Stripe's retry of an unrouted event is a duplicate like any other.
    let answer = app.deliver(CONNECT, &cases[0].0, CONNECT_SECRET).await;
    assert_eq!(answer["duplicate"], true);
    assert_eq!(event_count(&app.db).await, 4);
    app.stop().await;
});

db_test!(business_endpoint_takes_only_its_own_secret, |t| {
    let app = spawn(&t, Opts::default()).await;
    let acct = app.account(0);
    for (id, slug) in [("biz-a", "acme"), ("biz-b", "beta")] {
        let res = app
            .put(
                &format!("/api/businesses/{id}"),
                &admin(),
                json!({"name": id, "slug": slug, "agency_id": null}),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    }
    assert_eq!(app.connect("biz-a", &acct).await["stripe"], "connected");
    let res = app
        .put(
            "/api/stripe/biz-a/webhook-secret",
            &agency(&["biz-a"]),
            json!({"secret": BUSINESS_SECRET}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);

    let c = now();
    app.sim_control(
        &format!("/_sim/accounts/{acct}/objects"),
        json!([customer_object("cus_own_1", "own@example.com", c)]),
    )
    .await;
    // A business's own endpoint: events carry no `account`.
    let e = event(
        "evt_own_1",
        "customer.created",
        None,
        c,
        customer_object("cus_own_1", "own@example.com", c),
    );
    let body = e.to_string();
    for secret in [CONNECT_SECRET, PLATFORM_SECRET, OLD_SECRET] {
        let res = app
            .hook(
                "/api/webhooks/stripe/acme",
                body.clone(),
                Some(&header(&body, now(), &[secret])),
            )
            .await;
        assert_eq!(
            res.status,
            StatusCode::BAD_REQUEST,
            "{secret}: {}",
            res.text
        );
        assert_eq!(res.error_code(), "invalid_signature");
    }
    assert_eq!(event_count(&app.db).await, 0);
    // The business's secret does not open the Connect or platform endpoints either.
    for path in [CONNECT, PLATFORM] {
        let res = app
            .hook(
                path,
                body.clone(),
                Some(&header(&body, now(), &[BUSINESS_SECRET])),
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{path}: {}", res.text);
    }

    let answer = app
        .deliver("/api/webhooks/stripe/acme", &e, BUSINESS_SECRET)
        .await;
    assert_eq!(answer["outcome"], "applied");
    let row = customer_row(&app.db, "biz-a", "cus_own_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("own@example.com"));
    let recorded = events_recorded(&app.db).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].endpoint, "acme");
    assert_eq!(recorded[0].business_id.as_deref(), Some("biz-a"));
    assert_eq!(recorded[0].account.as_deref(), Some(acct.as_str()));

    // The same event through the Connect endpoint is recorded there once more; the tie with
    // the stored row is resolved by re-reading the customer, which holds the same state.
    let mut via_connect = e.clone();
    via_connect["account"] = json!(acct);
    let answer = app.deliver(CONNECT, &via_connect, CONNECT_SECRET).await;
    assert_eq!(answer["duplicate"], false);
    assert_eq!(answer["outcome"], "refetched");
    assert_eq!(
        customer_row(&app.db, "biz-a", "cus_own_1")
            .await
            .unwrap()
            .email,
        row.email
    );
    assert_eq!(event_count(&app.db).await, 2);

    // Unknown slug → 404; a business with no saved secret → 400; neither stores anything.
    let res = app
        .hook(
            "/api/webhooks/stripe/nobody",
            body.clone(),
            Some(&header(&body, now(), &[BUSINESS_SECRET])),
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text);
    assert_eq!(res.error_code(), "not_found");
    let res = app
        .hook(
            "/api/webhooks/stripe/beta",
            body.clone(),
            Some(&header(&body, now(), &[BUSINESS_SECRET])),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text);
    assert_eq!(res.error_code(), "webhook_secret_missing");
    // An event naming another account than the one the business links has nowhere to go.
    let foreign = event(
        "evt_own_2",
        "customer.created",
        Some("acct_someoneelse"),
        c,
        customer_object("cus_own_2", "o2@example.com", c),
    );
    let answer = app
        .deliver("/api/webhooks/stripe/acme", &foreign, BUSINESS_SECRET)
        .await;
    assert_eq!(answer["outcome"], "unrouted");
    assert!(customer_row(&app.db, "biz-a", "cus_own_2").await.is_none());
    assert_eq!(event_count(&app.db).await, 3);
    app.stop().await;
});

db_test!(account_updated_renames_the_connection, |t| {
    let app = spawn(&t, Opts::default()).await;
    let acct = app.account(0);
    assert_eq!(app.connect("biz-a", &acct).await["stripe"], "connected");
    let account = |name: &str| {
        json!({"id": acct, "object": "account", "business_profile": {"name": name},
               "email": "owner@example.com"})
    };
    let e = event(
        "evt_acct_1",
        "account.updated",
        Some(&acct),
        now(),
        account("  "),
    );
    assert_eq!(
        app.deliver(CONNECT, &e, CONNECT_SECRET).await["outcome"],
        "applied"
    );
    assert_eq!(
        app.status("biz-a").await["account_name"],
        "owner@example.com"
    );
    let e = event(
        "evt_acct_2",
        "account.updated",
        Some(&acct),
        now(),
        account("Renamed Ltd"),
    );
    assert_eq!(
        app.deliver(CONNECT, &e, CONNECT_SECRET).await["outcome"],
        "applied"
    );
    assert_eq!(app.status("biz-a").await["account_name"], "Renamed Ltd");
    // Another account's object in the event changes nothing.
    let mut other = account("Somebody Else");
    other["id"] = json!("acct_other");
    let e = event("evt_acct_3", "account.updated", Some(&acct), now(), other);
    assert_eq!(
        app.deliver(CONNECT, &e, CONNECT_SECRET).await["outcome"],
        "ignored"
    );
    assert_eq!(app.status("biz-a").await["account_name"], "Renamed Ltd");
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Ordering against the simulator
// ---------------------------------------------------------------------------------------

db_test!(a_shuffled_burst_with_ties_leaves_the_exact_mirror, |t| {
    let app = spawn(
        &t,
        Opts {
            workers: true,
            scale: Scale::Small,
            accounts: 1,
            ..Opts::default()
        },
    )
    .await;
    let acct = app.account(0);
    app.connect_and_sync("biz-a", &acct).await;

    let stripe = app.stripe();
    let client = stripe.account(&acct).unwrap();
    let ctx = SyncContext::new(app.db.clone(), stripe.clone(), SyncConfig::default());
    let business = biz("biz-a");
    let audit = tributary_sync::audit::audit(&ctx, &business, &client)
        .await
        .unwrap();
    assert!(audit.is_exact(), "{:?}", audit.differences);

    let before = app.event_ids(&acct).await;
    // Realistic changes, then the same customer changed three times within one second.
    app.sim_control(
        &format!("/_sim/accounts/{acct}/mutate"),
        json!({"count": 60, "seed": 11}),
    )
    .await;
    // One request: created, updated, updated, all within the same second.
    let c = now();
    app.sim_control(
        &format!("/_sim/accounts/{acct}/objects"),
        json!(
            [
                "tie-1@example.com",
                "tie-2@example.com",
                "tie-3@example.com"
            ]
            .map(|email| customer_object("cus_wh_tie", email, c))
        ),
    )
    .await;
    let mut events = app.account_events(&acct, &before).await;
    assert!(events.len() >= 60, "{} events", events.len());
    let mut per_second_object: HashMap<(i64, String), usize> = HashMap::new();
    for e in &events {
        let key = (
            e["created"].as_i64().unwrap(),
            e["data"]["object"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        *per_second_object.entry(key).or_default() += 1;
    }
    assert!(
        per_second_object.values().any(|n| *n >= 2),
        "the burst has same-second events for one object"
    );
    let stale = tributary_sync::audit::audit(&ctx, &business, &client)
        .await
        .unwrap();
    assert!(!stale.is_exact(), "the mirror lags before the webhooks");

    // Shuffle, sign (one Python process for all), deliver eight at a time.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    events.shuffle(&mut rng);
    let bodies: Vec<String> = events.iter().map(Value::to_string).collect();
    let ts = now();
    let items: Vec<_> = bodies
        .iter()
        .map(|b| (ts, b.clone(), CONNECT_SECRET.to_owned()))
        .collect();
    let sigs = signatures(&items);
    let deliveries = bodies.iter().zip(&sigs).map(|(body, sig)| {
        let app = &app;
        async move {
            let res = app
                .hook(CONNECT, body.clone(), Some(&format!("t={ts},v1={sig}")))
                .await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text);
            res.json()
        }
    });
    let answers: Vec<Value> = futures::stream::iter(deliveries)
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        answers.iter().all(|a| a["duplicate"] == false),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|a| a["outcome"] == "refetched" || a["outcome"] == "stale"),
        "ties and late events were resolved: {answers:?}"
    );

    let audit = tributary_sync::audit::audit(&ctx, &business, &client)
        .await
        .unwrap();
    assert!(audit.is_exact(), "{:#?}", audit.differences);
    // The spend the turns kept current is what the whole mirror implies (emails the burst
    // took money from included: on PostgreSQL those are read beside each turn's transaction).
    let spend = tributary_sync::verify::verify_spend(app.db.conn(), &business)
        .await
        .unwrap();
    assert!(spend.is_consistent(), "{spend:?}");
    let tie = customer_row(&app.db, "biz-a", "cus_wh_tie").await.unwrap();
    assert_eq!(tie.email.as_deref(), Some("tie-3@example.com"));
    assert_eq!(event_count(&app.db).await, events.len() as u64);

    // Stripe delivering the whole burst again changes nothing.
    let ts = now();
    let items: Vec<_> = bodies
        .iter()
        .map(|b| (ts, b.clone(), CONNECT_SECRET.to_owned()))
        .collect();
    let sigs = signatures(&items);
    for (body, sig) in bodies.iter().zip(&sigs).take(20) {
        let res = app
            .hook(CONNECT, body.clone(), Some(&format!("t={ts},v1={sig}")))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        assert_eq!(res.json()["duplicate"], true);
    }
    assert_eq!(event_count(&app.db).await, events.len() as u64);
    let audit = tributary_sync::audit::audit(&ctx, &business, &client)
        .await
        .unwrap();
    assert!(audit.is_exact(), "{:#?}", audit.differences);

    // A paying customer changes email: the money leaves the old email with it (the old email
    // is found only in the state before the turn).
    let rows = tributary_persistence::reads::all_spend(app.db.conn(), &business)
        .await
        .unwrap();
    let payer = rows
        .iter()
        .find(|r| r.gross > 0 && r.customer_ids.as_array().is_some_and(|a| a.len() == 1))
        .expect("a paying customer");
    let (old_email, cus) = (
        payer.email.clone(),
        payer.customer_ids[0].as_str().unwrap().to_owned(),
    );
    app.sim_control(
        &format!("/_sim/accounts/{acct}/objects"),
        json!([customer_object(&cus, "moved-away@example.com", now())]),
    )
    .await;
    let moved = app
        .account_events(&acct, &before)
        .await
        .into_iter()
        .find(|e| {
            e["data"]["object"]["id"] == cus.as_str()
                && e["data"]["object"]["email"] == "moved-away@example.com"
        })
        .unwrap();
    let body = moved.to_string();
    let ts = now();
    let sig = &signatures(&[(ts, body.clone(), CONNECT_SECRET.to_owned())])[0];
    let res = app
        .hook(CONNECT, body, Some(&format!("t={ts},v1={sig}")))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let spend = tributary_sync::verify::verify_spend(app.db.conn(), &business)
        .await
        .unwrap();
    assert!(
        spend.is_consistent(),
        "{old_email} kept its money: {spend:?}"
    );
    app.stop().await;
});

// A payment with no email of its own is found from its old email only in the state before the
// write: when its customer's email changes, the turn must still take the money off the old email
// (on PostgreSQL that state is read on a second connection, beside the turn's transaction).
db_test!(an_email_change_moves_money_only_the_old_state_links, |t| {
    let (app, acct) = empty_and_connected(&t).await;
    let business = biz("biz-a");
    let c = now() - 600;
    let payment = json!({"id": "pi_quiet_1", "object": "payment_intent", "amount": 5_000,
        "amount_received": 5_000, "currency": "usd", "customer": "cus_quiet", "status": "succeeded",
        "created": c + 1, "receipt_email": null, "livemode": false});
    for e in [
        event(
            "evt_quiet_1",
            "customer.created",
            Some(&acct),
            c,
            customer_object("cus_quiet", "quiet-old@example.com", c),
        ),
        event(
            "evt_quiet_2",
            "payment_intent.succeeded",
            Some(&acct),
            c + 1,
            payment,
        ),
    ] {
        let answer = app.deliver(CONNECT, &e, CONNECT_SECRET).await;
        assert_eq!(answer["outcome"], "applied", "{answer}");
    }
    let spend = |email: &'static str| {
        let db = app.db.clone();
        let business = business.clone();
        async move {
            tributary_persistence::reads::all_spend(db.conn(), &business)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.email == email)
                .map(|r| (r.currency, r.gross, r.order_count))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        spend("quiet-old@example.com").await,
        [("usd".to_owned(), 5_000, 1)]
    );

    // The customer's new email: after the write nothing links the payment to the old one.
    let moved = event(
        "evt_quiet_3",
        "customer.updated",
        Some(&acct),
        c + 2,
        customer_object("cus_quiet", "quiet-new@example.com", c),
    );
    let answer = app.deliver(CONNECT, &moved, CONNECT_SECRET).await;
    assert_eq!(answer["outcome"], "applied", "{answer}");
    let old = spend("quiet-old@example.com").await;
    assert!(old.is_empty(), "the old email kept the money: {old:?}");
    assert_eq!(
        spend("quiet-new@example.com").await,
        [("usd".to_owned(), 5_000, 1)]
    );
    let check = tributary_sync::verify::verify_spend(app.db.conn(), &business)
        .await
        .unwrap();
    assert!(check.is_consistent(), "{check:?}");
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Deauthorization
// ---------------------------------------------------------------------------------------

db_test!(
    deauthorization_mid_sync_fails_the_job_and_asks_to_reconnect,
    |t| {
        let app = spawn(
            &t,
            Opts {
                workers: true,
                scale: Scale::Small,
                accounts: 1,
                ..Opts::default()
            },
        )
        .await;
        let acct = app.account(0);
        let deauth = event(
            "evt_deauth_1",
            "account.application.deauthorized",
            Some(&acct),
            now(),
            json!({"id": "ca_tributary_sim", "object": "application", "name": "Tributary"}),
        );
        // Signed ahead, so it arrives while the (slowed down) sync is surely still running.
        let deauth_body = deauth.to_string();
        let deauth_sig = header(&deauth_body, now(), &[CONNECT_SECRET]);
        app.sim_control("/_sim/faults", json!({"latency_ms": 600}))
            .await;
        assert_eq!(app.connect("biz-a", &acct).await["stripe"], "connected");
        let job = app.last_sync_id("biz-a").await;
        app.wait_for_job("biz-a", &job, &["running"]).await;
        let res = app.hook(CONNECT, deauth_body, Some(&deauth_sig)).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        let answer = res.json();
        assert_eq!(answer["outcome"], "revoked");
        let failed = app
            .wait_for_job("biz-a", &job, &["failed", "succeeded"])
            .await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["error"]["code"], "access_revoked", "{failed}");
        let status = app.status("biz-a").await;
        assert_eq!(status["status"], "revoked", "{status}");
        app.sim_control("/_sim/faults", json!({})).await;

        // The worker stops at its next lease renewal and never turns the job back.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let job_now = app
            .get(
                &format!("/api/stripe/biz-a/sync-jobs/{job}"),
                &agency(&["biz-a"]),
            )
            .await
            .json();
        assert_eq!(job_now["status"], "failed", "{job_now}");
        assert_eq!(app.status("biz-a").await["status"], "revoked");

        // A retry of the deauthorization is a duplicate; later events of the revoked account are
        // recorded and not applied; a sync is refused until the business reconnects.
        let answer = app.deliver(CONNECT, &deauth, CONNECT_SECRET).await;
        assert_eq!(answer["duplicate"], true);
        let c = now();
        let late = event(
            "evt_after_revoke",
            "customer.created",
            Some(&acct),
            c,
            customer_object("cus_after", "after@example.com", c),
        );
        let answer = app.deliver(CONNECT, &late, CONNECT_SECRET).await;
        assert_eq!(answer["outcome"], "revoked");
        assert!(customer_row(&app.db, "biz-a", "cus_after").await.is_none());
        let res = app
            .post("/api/stripe/biz-a/sync", &agency(&["biz-a"]))
            .await;
        assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text);
        let recorded = events_recorded(&app.db).await;
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        assert!(
            recorded
                .iter()
                .all(|r| r.business_id.as_deref() == Some("biz-a"))
        );
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------
// Platform billing
// ---------------------------------------------------------------------------------------

fn subscription_object(
    id: &str,
    customer: &str,
    status: &str,
    seats: i64,
    price: &str,
    period_end: i64,
) -> Value {
    json!({
        "id": id, "object": "subscription", "customer": customer, "status": status,
        "metadata": {}, "created": period_end - 30 * 86400,
        "items": {"object": "list", "has_more": false, "data": [{
            "id": format!("si_{id}"), "object": "subscription_item", "quantity": seats,
            "price": {"id": price, "object": "price", "unit_amount": 4900, "currency": "usd"},
            "current_period_start": period_end - 30 * 86400, "current_period_end": period_end,
        }]},
    })
}

async fn billing_row(db: &Database, agency: &str) -> Option<agency_billing::Model> {
    billing::get(db.conn(), agency).await.unwrap()
}

db_test!(platform_billing_from_checkout_to_cancellation, |t| {
    let app = spawn(&t, Opts::default()).await;
    let t0 = now() - 600;
    let end1 = t0 + 30 * 86400;
    let end2 = end1 + 30 * 86400;

    // Stripe often sends the subscription before the checkout that names the agency: it waits.
    let created = event(
        "evt_pb_1",
        "customer.subscription.created",
        None,
        t0,
        subscription_object("sub_pb_1", "cus_pb_1", "incomplete", 3, "price_team", end1),
    );
    assert_eq!(
        app.deliver(PLATFORM, &created, PLATFORM_SECRET).await["outcome"],
        "unrouted"
    );
    assert!(billing_row(&app.db, "agency-1").await.is_none());

    let checkout = event(
        "evt_pb_2",
        "checkout.session.completed",
        None,
        t0 + 1,
        json!({
            "id": "cs_pb_1", "object": "checkout.session", "mode": "subscription",
            "client_reference_id": "agency-1", "customer": "cus_pb_1", "subscription": "sub_pb_1",
            "status": "complete", "payment_status": "paid", "metadata": {},
        }),
    );
    assert_eq!(
        app.deliver(PLATFORM, &checkout, PLATFORM_SECRET).await["outcome"],
        "applied"
    );
    let row = billing_row(&app.db, "agency-1").await.unwrap();
    assert_eq!(row.customer.as_deref(), Some("cus_pb_1"));
    assert_eq!(row.subscription.as_deref(), Some("sub_pb_1"));
    assert_eq!(
        row.status.as_deref(),
        Some("incomplete"),
        "the waiting event was applied"
    );
    assert_eq!(row.seats, Some(3));
    assert_eq!(row.price.as_deref(), Some("price_team"));
    let waited = events_recorded(&app.db)
        .await
        .into_iter()
        .find(|e| e.event_id == "evt_pb_1")
        .unwrap();
    assert_eq!(waited.outcome, "applied");
    assert_eq!(waited.payload, None);

    let mut active = subscription_object("sub_pb_1", "cus_pb_1", "active", 5, "price_pro", end1);
    active["metadata"] = json!({"agency_id": "agency-1"});
    let updated = event(
        "evt_pb_3",
        "customer.subscription.updated",
        None,
        t0 + 2,
        active,
    );
    assert_eq!(
        app.deliver(PLATFORM, &updated, PLATFORM_SECRET).await["outcome"],
        "applied"
    );

    // An invoice maps by customer and moves the period end forward.
    let paid = event(
        "evt_pb_4",
        "invoice.paid",
        None,
        t0 + 3,
        json!({
            "id": "in_pb_1", "object": "invoice", "customer": "cus_pb_1", "status": "paid",
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": "sub_pb_1", "metadata": {}}},
            "lines": {"object": "list", "has_more": false, "data": [
                {"id": "il_1", "object": "line_item", "period": {"start": end1, "end": end2}}]},
        }),
    );
    assert_eq!(
        app.deliver(PLATFORM, &paid, PLATFORM_SECRET).await["outcome"],
        "applied"
    );
    let row = billing_row(&app.db, "agency-1").await.unwrap();
    assert_eq!(row.status.as_deref(), Some("active"));
    assert_eq!(row.seats, Some(5));
    assert_eq!(row.price.as_deref(), Some("price_pro"));
    assert_eq!(row.current_period_end, Some(end2));
    assert_eq!(row.last_event_at, t0 + 2);

    // A late, older update is stale; a duplicate changes nothing.
    let late = event(
        "evt_pb_0",
        "customer.subscription.updated",
        None,
        t0 + 1,
        subscription_object("sub_pb_1", "cus_pb_1", "past_due", 1, "price_team", end1),
    );
    assert_eq!(
        app.deliver(PLATFORM, &late, PLATFORM_SECRET).await["outcome"],
        "stale"
    );
    assert_eq!(
        app.deliver(PLATFORM, &updated, PLATFORM_SECRET).await["duplicate"],
        true
    );
    assert_eq!(
        billing_row(&app.db, "agency-1")
            .await
            .unwrap()
            .status
            .as_deref(),
        Some("active")
    );

    // Cancellation, and a same-second update delivered after it, which cannot reopen it.
    let deleted = event(
        "evt_pb_5",
        "customer.subscription.deleted",
        None,
        t0 + 10,
        subscription_object("sub_pb_1", "cus_pb_1", "canceled", 5, "price_pro", end2),
    );
    let tie = event(
        "evt_pb_6",
        "customer.subscription.updated",
        None,
        t0 + 10,
        subscription_object("sub_pb_1", "cus_pb_1", "active", 5, "price_pro", end2),
    );
    assert_eq!(
        app.deliver(PLATFORM, &deleted, PLATFORM_SECRET).await["outcome"],
        "applied"
    );
    assert_eq!(
        app.deliver(PLATFORM, &tie, PLATFORM_SECRET).await["outcome"],
        "stale"
    );
    let row = billing_row(&app.db, "agency-1").await.unwrap();
    assert_eq!(row.status.as_deref(), Some("canceled"));
    assert_eq!(row.subscription.as_deref(), Some("sub_pb_1"));
    assert_eq!(row.customer.as_deref(), Some("cus_pb_1"));
    assert_eq!(row.last_event_at, t0 + 10);

    // Another agency named by metadata; events nobody can map; other types; the wrong secret.
    let mut named = subscription_object("sub_pb_2", "cus_pb_2", "trialing", 1, "price_team", end1);
    named["metadata"] = json!({"agency_id": "agency-2"});
    let e = event(
        "evt_pb_7",
        "customer.subscription.created",
        None,
        t0 + 11,
        named,
    );
    assert_eq!(
        app.deliver(PLATFORM, &e, PLATFORM_SECRET).await["outcome"],
        "applied"
    );
    assert_eq!(
        billing_row(&app.db, "agency-2")
            .await
            .unwrap()
            .status
            .as_deref(),
        Some("trialing")
    );
    let e = event(
        "evt_pb_8",
        "invoice.payment_failed",
        None,
        t0 + 12,
        json!({"id": "in_x", "object": "invoice", "customer": "cus_unknown"}),
    );
    assert_eq!(
        app.deliver(PLATFORM, &e, PLATFORM_SECRET).await["outcome"],
        "unrouted"
    );
    let e = event(
        "evt_pb_9",
        "charge.succeeded",
        None,
        t0 + 12,
        json!({"id": "ch_x", "object": "charge", "customer": "cus_pb_1"}),
    );
    assert_eq!(
        app.deliver(PLATFORM, &e, PLATFORM_SECRET).await["outcome"],
        "ignored"
    );
    let body = e.to_string();
    let res = app
        .hook(
            PLATFORM,
            body.clone(),
            Some(&header(&body, now(), &[CONNECT_SECRET])),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text);
    // A connected account's checkout (an endpoint registered for the wrong kind of events)
    // names no agency of ours.
    let mut foreign = checkout.clone();
    foreign["id"] = json!("evt_pb_10");
    foreign["account"] = json!("acct_connected_1");
    foreign["data"]["object"]["client_reference_id"] = json!("agency-3");
    assert_eq!(
        app.deliver(PLATFORM, &foreign, PLATFORM_SECRET).await["outcome"],
        "unrouted"
    );
    assert!(billing_row(&app.db, "agency-3").await.is_none());
    let recorded = events_recorded(&app.db).await;
    assert_eq!(recorded.len(), 11);
    assert!(
        recorded
            .iter()
            .all(|r| r.endpoint == "platform" && r.business_id.is_none())
    );
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Failures on our side
// ---------------------------------------------------------------------------------------

db_test!(a_database_failure_answers_5xx_so_stripe_retries, |t| {
    let app = spawn(&t, Opts::default()).await;
    let acct = app.account(0);
    assert_eq!(app.connect("biz-a", &acct).await["stripe"], "connected");
    let c = now();
    let e = event(
        "evt_db_down",
        "customer.created",
        Some(&acct),
        c,
        customer_object("cus_db_1", "db@example.com", c),
    );
    let billing_event = event(
        "evt_db_down_pb",
        "customer.subscription.created",
        None,
        c,
        subscription_object("sub_db", "cus_db", "active", 1, "price_team", c + 86400),
    );
    let backend = app.db.conn().get_database_backend();
    let exec = |sql: &'static str| {
        let db = app.db.clone();
        async move {
            db.conn()
                .execute_raw(Statement::from_string(backend, sql))
                .await
                .unwrap();
        }
    };
    // The idempotency table is unreachable: nothing can be recorded, so nothing is accepted.
    exec("ALTER TABLE webhook_events RENAME TO webhook_events_away").await;
    for (path, e, secret) in [
        (CONNECT, &e, CONNECT_SECRET),
        (PLATFORM, &billing_event, PLATFORM_SECRET),
    ] {
        let body = e.to_string();
        let res = app
            .hook(path, body.clone(), Some(&header(&body, now(), &[secret])))
            .await;
        assert!(
            res.status.is_server_error(),
            "{path}: {} {}",
            res.status,
            res.text
        );
        assert_eq!(res.error_code(), "internal_error");
        assert_no_trace(&res, &["webhook_events", "SELECT", "sqlite", "postgres"]);
    }
    assert!(customer_row(&app.db, "biz-a", "cus_db_1").await.is_none());
    exec("ALTER TABLE webhook_events_away RENAME TO webhook_events").await;
    // Stripe's retry then goes through, once.
    assert_eq!(
        app.deliver(CONNECT, &e, CONNECT_SECRET).await["outcome"],
        "applied"
    );
    assert!(customer_row(&app.db, "biz-a", "cus_db_1").await.is_some());
    assert_eq!(
        app.deliver(PLATFORM, &billing_event, PLATFORM_SECRET).await["outcome"],
        "unrouted"
    );
    assert_eq!(event_count(&app.db).await, 2);
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// The simulator delivering, as Stripe does
// ---------------------------------------------------------------------------------------

impl TestApp {
    /// Waits until the simulator delivered `want[i]` events to its i-th endpoint.
    async fn wait_for_deliveries(&self, want: &[u64]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v: Value = self
                .http
                .get(format!("{}/_sim/webhooks", self.sim.base_url()))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let eps = v.as_array().unwrap();
            for ep in eps {
                assert_eq!(ep["failed"], 0, "{ep}");
            }
            let delivered: Vec<u64> = eps
                .iter()
                .map(|e| e["delivered"].as_u64().unwrap())
                .collect();
            if delivered == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "delivered {delivered:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

db_test!(
    simulator_deliveries_keep_the_mirror_exact_then_revoke,
    |t| {
        let app = spawn(
            &t,
            Opts {
                workers: true,
                scale: Scale::Small,
                accounts: 2,
                ..Opts::default()
            },
        )
        .await;
        let (acct, other) = (app.account(0), app.account(1));
        let res = app
            .put(
                "/api/businesses/biz-a",
                &admin(),
                json!({"name": "Acme", "slug": "acme", "agency_id": null}),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        app.connect_and_sync("biz-a", &acct).await;
        let res = app
            .put(
                "/api/stripe/biz-a/webhook-secret",
                &agency(&["biz-a"]),
                json!({"secret": BUSINESS_SECRET}),
            )
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);

        // The platform's Connect endpoint, and the business's own endpoint on its account.
        app.sim_control(
        "/_sim/webhooks",
        json!({"url": format!("{}{CONNECT}", app.base), "secret": CONNECT_SECRET, "connect": true}),
    )
    .await;
        app.sim_control(
        "/_sim/webhooks",
        json!({"url": format!("{}/api/webhooks/stripe/acme", app.base), "secret": BUSINESS_SECRET,
               "connect": false, "account": acct}),
    )
    .await;
        let before = app.event_ids(&acct).await;
        let before_other = app.event_ids(&other).await;
        app.sim_control(
            &format!("/_sim/accounts/{acct}/mutate"),
            json!({"count": 40, "seed": 5}),
        )
        .await;
        app.sim_control(
            &format!("/_sim/accounts/{other}/mutate"),
            json!({"count": 5, "seed": 6}),
        )
        .await;
        let n = app.account_events(&acct, &before).await.len() as u64;
        let n_other = app.account_events(&other, &before_other).await.len() as u64;
        assert!(n >= 40 && n_other >= 5, "{n} {n_other}");
        app.wait_for_deliveries(&[n + n_other, n]).await;

        let stripe = app.stripe();
        let ctx = SyncContext::new(app.db.clone(), stripe.clone(), SyncConfig::default());
        let audit =
            tributary_sync::audit::audit(&ctx, &biz("biz-a"), &stripe.account(&acct).unwrap())
                .await
                .unwrap();
        assert!(audit.is_exact(), "{:#?}", audit.differences);
        let recorded = events_recorded(&app.db).await;
        let count = |f: &dyn Fn(&webhook_events::Model) -> bool| {
            recorded.iter().filter(|r| f(r)).count() as u64
        };
        assert_eq!(
            count(&|r| r.endpoint == "connect" && r.business_id.as_deref() == Some("biz-a")),
            n
        );
        assert_eq!(
            count(&|r| r.endpoint == "connect" && r.outcome == "unrouted"),
            n_other
        );
        assert_eq!(count(&|r| r.endpoint == "acme"), n);

        // The account removes the platform: both endpoints hear it, the connection is revoked.
        app.sim_control(&format!("/_sim/accounts/{acct}/revoke"), json!({}))
            .await;
        app.wait_for_deliveries(&[n + n_other + 1, n + 1]).await;
        let status = app.status("biz-a").await;
        assert_eq!(status["status"], "revoked", "{status}");
        let deauths: Vec<_> = events_recorded(&app.db)
            .await
            .into_iter()
            .filter(|r| r.event_type == "account.application.deauthorized")
            .collect();
        assert_eq!(deauths.len(), 2, "{deauths:?}");
        assert!(
            deauths.iter().all(|r| r.outcome == "revoked"),
            "{deauths:?}"
        );
        app.stop().await;
    }
);

// ---------------------------------------------------------------------------------------
// The dashboards' inputs are kept per data version: every change shows at once
// ---------------------------------------------------------------------------------------

/// The three dashboards of `biz-a` over the default range, in US dollars.
async fn dashboards(app: &TestApp, tok: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for what in ["revenue", "retention", "acquisition"] {
        let res = app
            .get(&format!("/api/businesses/biz-a/{what}?currency=usd"), tok)
            .await;
        assert_eq!(res.status, StatusCode::OK, "{what}: {}", res.text);
        out.push(res.json());
    }
    out
}

db_test!(dashboards_follow_every_change_of_the_data, |t| {
    let opts = Opts {
        workers: true,
        accounts: 1,
        scale: Scale::Small,
        ..Opts::default()
    };
    let app = spawn(&t, opts.clone()).await;
    let acct = app.account(0);
    app.connect_and_sync("biz-a", &acct).await;
    let tok = agency(&["biz-a"]);
    let this_month_gross = |d: &[Value]| {
        d[0]["months"].as_array().unwrap().last().unwrap()["gross"]
            .as_i64()
            .unwrap()
    };
    let before = dashboards(&app, &tok).await;
    assert_eq!(
        dashboards(&app, &tok).await,
        before,
        "the same data, the same answer"
    );

    // A payment arrives by webhook: the next request counts it.
    let created = now();
    let payment = json!({"id": "pi_dashboard_1", "object": "payment_intent", "amount": 12_345,
        "amount_received": 12_345, "currency": "usd", "customer": null, "status": "succeeded",
        "created": created, "receipt_email": "dashboard@example.com", "livemode": false});
    let answer = app
        .deliver(
            "/api/webhooks/stripe/connect",
            &event(
                "evt_dashboard_1",
                "payment_intent.succeeded",
                Some(&acct),
                created,
                payment,
            ),
            CONNECT_SECRET,
        )
        .await;
    assert_eq!(answer["outcome"], "applied", "{answer}");
    let after_webhook = dashboards(&app, &tok).await;
    assert_eq!(
        this_month_gross(&after_webhook),
        this_month_gross(&before) + 12_345,
        "{:#}",
        after_webhook[0]
    );

    // Changes read by an incremental sync, then by a full re-list: the answers equal those of
    // a process that never saw the earlier data.
    app.sim_control(
        &format!("/_sim/accounts/{acct}/mutate"),
        json!({"count": 40, "seed": 11}),
    )
    .await;
    for query in ["", "?full=true"] {
        app.sync_and_wait("biz-a", query).await;
        let cached = dashboards(&app, &tok).await;
        let fresh = spawn(
            &t,
            Opts {
                workers: false,
                ..opts.clone()
            },
        )
        .await;
        assert_eq!(cached, dashboards(&fresh, &tok).await, "after sync{query}");
        fresh.stop().await;
    }
    assert_ne!(
        dashboards(&app, &tok).await,
        after_webhook,
        "the changes moved some number"
    );
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Group commit: one delivery failing on Stripe leaves its batch-mates applied
// ---------------------------------------------------------------------------------------

db_test!(
    a_delivery_stripe_fails_is_answered_alone_in_its_batch,
    |t| {
        let (app, acct) = empty_and_connected(&t).await;
        let c = now() - 60;
        let created = event(
            "evt_batch_created",
            "customer.created",
            Some(&acct),
            c,
            customer_object("cus_batch_tie", "tie@example.com", c),
        );
        assert_eq!(
            app.deliver(CONNECT, &created, CONNECT_SECRET).await["outcome"],
            "applied"
        );
        // Same second as the stored row: a tie, which only a re-fetch from Stripe settles.
        let tie = event(
            "evt_batch_tie",
            "customer.updated",
            Some(&acct),
            c,
            customer_object("cus_batch_tie", "tie2@example.com", c),
        );
        let others: Vec<Value> = (0..10)
            .map(|i| {
                event(
                    &format!("evt_batch_{i}"),
                    "customer.created",
                    Some(&acct),
                    c + 1,
                    customer_object(
                        &format!("cus_batch_{i}"),
                        &format!("b{i}@example.com"),
                        c + 1,
                    ),
                )
            })
            .collect();
        // Stripe refuses the account now (the re-fetch fails with access revoked, at once); the
        // business's lock is held elsewhere, so the deliveries queue up and the next turn takes
        // them together.
        app.sim_control(&format!("/_sim/accounts/{acct}/revoke"), json!({}))
            .await;
        let locker = Database::connect(&t.url).await.unwrap();
        let lock = locker.begin_write().await.unwrap();
        access::lock_for_write(&lock, &biz("biz-a"), true)
            .await
            .unwrap();
        let send = |e: &Value| {
            let body = e.to_string();
            let sig = header(&body, now(), &[CONNECT_SECRET]);
            let app = &app;
            async move { app.hook(CONNECT, body, Some(&sig)).await }
        };
        // Long enough for the eleven deliveries to reach the queue on a loaded machine (a turn
        // taken after the tie's would see the connection revoked), well within their 10 s.
        let release = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            lock.rollback().await.unwrap();
        };
        let first = send(&others[0]);
        let rest = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut all = vec![send(&tie)];
            all.extend(others[1..].iter().map(&send));
            futures::future::join_all(all).await
        };
        let (first, rest, ()) = futures::join!(first, rest, release);
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        // The failed delivery is answered on its own (the connection is marked revoked, the event
        // recorded as such); its batch-mates were written without it.
        assert_eq!(rest[0].status, StatusCode::OK, "{}", rest[0].text);
        assert_eq!(rest[0].json()["outcome"], "revoked", "{}", rest[0].text);
        for answer in &rest[1..] {
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            assert_eq!(answer.json()["outcome"], "applied", "{}", answer.text);
        }
        assert_eq!(app.status("biz-a").await["status"], "revoked");
        let recorded = super::faults::recorded_ids(&app.db).await;
        assert_eq!(recorded.get("evt_batch_tie"), Some(&1));
        for e in &others {
            assert_eq!(
                recorded.get(e["id"].as_str().unwrap()),
                Some(&1),
                "{}",
                e["id"]
            );
            let id = e["data"]["object"]["id"].as_str().unwrap();
            assert!(
                customer_row(&app.db, "biz-a", id).await.is_some(),
                "{id} not written"
            );
        }
        // The tie's payload was not applied: the stored customer keeps its email.
        let stored = customer_row(&app.db, "biz-a", "cus_batch_tie")
            .await
            .unwrap();
        assert_eq!(stored.email.as_deref(), Some("tie@example.com"));
        locker.close().await.unwrap();
        app.stop().await;
    }
);
