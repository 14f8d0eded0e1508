//! The sync engine against the simulator, on SQLite and PostgreSQL (`name::sqlite`,
//! `name::postgres`): the mirror must equal the account, field by field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "sync/batch.rs"]
mod batch;
#[path = "sync/hostile.rs"]
mod hostile;

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_domain::{BusinessId, StripeAccountId};
use tributary_persistence::entities::*;
use tributary_persistence::testing::TestDbRef;
use tributary_persistence::{access, db_test, jobs, mirror};
use tributary_stripe_connect::{AccountClient, Stripe, StripeConfig};
use tributary_stripe_sim::{Scale, SimOptions, SimServer};
use tributary_sync::{SyncConfig, SyncContext, Trigger, fetch_stripe_data, fetch_stripe_data_full};

struct Env {
    sim: SimServer,
    ctx: SyncContext,
    business: BusinessId,
    account: String,
    http: reqwest::Client,
}

impl Env {
    async fn new(t: &TestDbRef, seed: u64) -> Env {
        Self::with_rate(t, seed, 1000).await
    }

    /// An environment whose client may send `rate` requests per second to the account.
    async fn with_rate(t: &TestDbRef, seed: u64, rate: u32) -> Env {
        let sim = SimServer::start(SimOptions {
            seed,
            accounts: 1,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .expect("simulator");
        let config = StripeConfig {
            max_requests_per_second: rate,
            // About 3 s over the eight retries (production waits far longer: 0.5 s up to
            // 30 s): the faults test's 40/s limit refills its bucket within that while the
            // reads of an events page (eight at once) wait on it with 20 % of answers failing.
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(640),
            max_retries: 8,
            ..StripeConfig::new(SecretString::from("sk_test_sync")).with_base(sim.base_url())
        };
        let stripe = Stripe::new(config).unwrap();
        let ctx = SyncContext::new(
            t.db.clone(),
            stripe,
            SyncConfig {
                lease_secs: 30,
                ..SyncConfig::default()
            },
        );
        let business = BusinessId::parse("biz_sync").unwrap();
        let account = sim.accounts()[0].clone();
        let acct = StripeAccountId::parse(&account).unwrap();
        let conn = access::NewConnection {
            account: &acct,
            account_name: None,
            livemode: false,
            scope: "read_write",
        };
        access::connect(&t.db, &business, conn, ctx.now())
            .await
            .unwrap();
        Env {
            sim,
            ctx,
            business,
            account,
            http: reqwest::Client::new(),
        }
    }

    fn client(&self) -> AccountClient {
        self.ctx.stripe().account(&self.account).unwrap()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap_or(Value::Null)
    }

    async fn counts(&self) -> Value {
        let all: Value = self
            .http
            .get(format!("{}/_sim/accounts", self.sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == self.account.as_str())
            .unwrap()["counts"]
            .clone()
    }

    async fn sync(&self) -> tributary_sync::SyncReport {
        let report = fetch_stripe_data(&self.ctx, &self.business, Trigger::Manual)
            .await
            .unwrap();
        assert!(report.succeeded(), "sync failed: {report:?}");
        report
    }

    /// Compares every mirrored row's typed columns with what Stripe (the simulator) says now.
    async fn assert_mirror_exact(&self) {
        let audit = tributary_sync::audit::audit(&self.ctx, &self.business, &self.client())
            .await
            .unwrap();
        assert!(
            audit.is_exact(),
            "mirror differs from Stripe:\n{}",
            audit.differences.join("\n")
        );
        // The spend read model equals a recomputation from the whole mirror.
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let mut stored = customer_spend::Entity::find()
            .filter(customer_spend::Column::BusinessId.eq(self.business.as_str()))
            .all(self.ctx.db().conn())
            .await
            .unwrap();
        let mut want =
            tributary_sync::readmodel::compute_spend(self.ctx.db().conn(), &self.business, 0)
                .await
                .unwrap();
        for r in stored.iter_mut().chain(want.iter_mut()) {
            r.updated_at = 0;
        }
        stored.sort_by(|a, b| (&a.email, &a.currency).cmp(&(&b.email, &b.currency)));
        want.sort_by(|a, b| (&a.email, &a.currency).cmp(&(&b.email, &b.currency)));
        assert_eq!(stored.len(), want.len(), "customer_spend rows");
        for (s, w) in stored.iter().zip(&want) {
            assert_eq!(s, w, "customer_spend differs from a recomputation");
        }
        assert!(!want.is_empty());
        let counts = self.counts().await;
        for (table, key) in [
            ("customers", "customers"),
            ("invoice_line_items", "invoice_line_items"),
            ("subscriptions", "subscriptions"),
            ("checkout_line_items", "checkout_line_items"),
        ] {
            assert_eq!(
                audit.compared[table] as u64,
                counts[key].as_u64().unwrap(),
                "{table}"
            );
        }
    }
}

db_test!(first_sync_mirrors_the_account_exactly, |t| {
    let env = Env::new(&t, 21).await;
    let report = env.sync().await;
    assert!(report.progress["customers"].done && report.progress["invoices"].done);
    env.assert_mirror_exact().await;
    // The read models were written in the same run.
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let spend = customer_spend::Entity::find()
        .filter(customer_spend::Column::BusinessId.eq(env.business.as_str()))
        .count(t.db.conn())
        .await
        .unwrap();
    assert!(spend > 0, "customer_spend is empty");
    let snapshots = mrr_snapshots::Entity::find()
        .filter(mrr_snapshots::Column::BusinessId.eq(env.business.as_str()))
        .count(t.db.conn())
        .await
        .unwrap();
    assert_eq!(
        snapshots,
        env.counts().await["subscriptions"].as_u64().unwrap()
    );
    let name = access::get(&t.db, &env.business)
        .await
        .unwrap()
        .unwrap()
        .account_name;
    assert!(name.is_some(), "account display name refreshed");
});

db_test!(
    rows_written_from_listed_text_are_whole_and_mapped_from_all_of_it,
    |t| {
        // Products, prices, customers, orders, refunds and invoice payments are written from
        // each object's text with a few fields parsed (`map::fields_of`); invoices, sessions and
        // subscriptions from the whole tree, parsed for their children. Either way each row's
        // `raw` must be the whole object as listed, and its typed columns what the whole object
        // maps to.
        use tributary_stripe_connect::{Created, ListRequest};
        use tributary_sync::map::{self, Stamp};
        let env = Env::new(&t, 23).await;
        env.sync().await;
        let db = t.db.conn();
        let b = &env.business;
        let client = env.client();
        let listed = |req: ListRequest<Value>| async move {
            let items = req.collect_all().await.unwrap();
            let all: std::collections::HashMap<String, Value> =
                items.into_iter().map(|i| (i.id, i.raw)).collect();
            assert!(!all.is_empty(), "a list is empty");
            all
        };
        let listed_at = |path: &'static str| listed(client.list::<Value>(path));
        let stamp = |at, now| Stamp {
            business_id: b.as_str(),
            at,
            now,
        };
        // Every row of `$entity`: its `raw` is the listed object (`$want`, by id), and its
        // columns are what `$map` makes of that whole object.
        macro_rules! check {
            ($entity:ty, $want:expr, |$st:ident, $raw:ident| $map:expr) => {{
                let want = $want;
                let rows = mirror::all::<$entity, _>(db, b).await.unwrap();
                assert!(!rows.is_empty(), "{} is empty", stringify!($entity));
                for row in &rows {
                    let listed = want.get(&row.stripe_id);
                    assert_eq!(Some(&row.raw), listed, "raw of {}", row.stripe_id);
                    let $st = stamp(row.last_event_at, row.synced_at);
                    let $raw = &row.raw;
                    assert_eq!(Some(row), $map.as_ref(), "columns of {}", row.stripe_id);
                }
                rows
            }};
        }
        check!(
            stripe_products::Entity,
            listed_at("/v1/products").await,
            |st, raw| { Some(map::product(st, raw)) }
        );
        check!(
            stripe_prices::Entity,
            listed_at("/v1/prices").await,
            |st, raw| { Some(map::price(st, raw)) }
        );
        check!(
            stripe_customers::Entity,
            listed_at("/v1/customers").await,
            |st, raw| { Some(map::customer(st, raw)) }
        );
        check!(
            stripe_refunds::Entity,
            listed_at("/v1/refunds").await,
            |st, raw| { Some(map::refund(st, raw)) }
        );
        let payments = listed_at("/v1/invoice_payments").await;
        check!(stripe_invoice_payments::Entity, payments, |st, raw| {
            Some(map::invoice_payment(st, raw))
        });
        let mut intents_and_charges = listed_at("/v1/payment_intents").await;
        intents_and_charges.extend(listed_at("/v1/charges").await);
        let orders = check!(stripe_orders::Entity, intents_and_charges, |st, raw| {
            match raw["object"].as_str() {
                Some("charge") => map::charge(st, raw),
                _ => Some(map::payment_intent(st, raw)),
            }
        });
        assert!(
            orders.iter().any(|o| o.stripe_type == "charge"),
            "no charge without a payment intent"
        );
        let all = Created::all();
        check!(
            stripe_invoices::Entity,
            listed(client.invoices(all).retype()).await,
            |st, raw| { Some(map::invoice(st, raw)) }
        );
        // A session's line items are rows of their own, and its `raw` is kept without them.
        let mut sessions = listed(client.checkout_sessions(all).retype()).await;
        for s in sessions.values_mut() {
            assert!(
                s["line_items"].is_object(),
                "sessions are listed with their items"
            );
            s.as_object_mut().unwrap().remove("line_items");
        }
        check!(stripe_checkout_sessions::Entity, sessions, |st, raw| {
            Some(map::checkout_session(st, raw))
        });
        check!(
            stripe_subscriptions::Entity,
            listed(client.subscriptions(all).retype()).await,
            |st, raw| { Some(map::subscription(st, raw)) }
        );
    }
);

db_test!(incremental_sync_after_random_changes_is_exact, |t| {
    let env = Env::new(&t, 22).await;
    env.sync().await;
    env.control(
        &format!("/_sim/accounts/{}/mutate", env.account),
        json!({"count": 300, "seed": 9}),
    )
    .await;
    let report = env.sync().await;
    assert!(
        report.progress.contains_key("events"),
        "the second sync read the events feed: {report:?}"
    );
    env.assert_mirror_exact().await;
    env.control(
        &format!("/_sim/accounts/{}/mutate", env.account),
        json!({"count": 150, "seed": 10}),
    )
    .await;
    env.sync().await;
    env.assert_mirror_exact().await;
});

db_test!(sync_under_injected_faults_is_exact, |t| {
    let env = Env::new(&t, 23).await;
    env.control(
        "/_sim/faults",
        json!({"error_ratio": 0.2, "reset_ratio": 0.05, "rate_limit_per_second": 40}),
    )
    .await;
    env.sync().await;
    env.control(
        &format!("/_sim/accounts/{}/mutate", env.account),
        json!({"count": 100, "seed": 3}),
    )
    .await;
    env.sync().await;
    env.control("/_sim/faults", json!({})).await;
    env.assert_mirror_exact().await;
});

db_test!(two_syncs_started_together_run_once, |t| {
    let env = Env::new(&t, 24).await;
    let (a, b) = tokio::join!(
        fetch_stripe_data(&env.ctx, &env.business, Trigger::Manual),
        fetch_stripe_data(&env.ctx, &env.business, Trigger::Scheduled)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.job_id, b.job_id, "the second trigger joined the first");
    assert!(a.succeeded() && b.succeeded());
    let (_, total) = jobs::list(&t.db, &env.business, 10, 0).await.unwrap();
    assert_eq!(total, 1);
    // One run, not two under the same lease owner: a run starts by reading the account.
    let requests: Value = env
        .http
        .get(format!("{}/_sim/requests", env.sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        requests["by_route"]["GET /v1/account"]["200"], 1,
        "{requests}"
    );
});

db_test!(revoked_access_fails_the_job_and_stops_syncing, |t| {
    let env = Env::new(&t, 25).await;
    env.control(&format!("/_sim/accounts/{}/revoke", env.account), json!({}))
        .await;
    let report = fetch_stripe_data(&env.ctx, &env.business, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(report.status, jobs::FAILED);
    assert_eq!(
        report.error.as_ref().map(|e| e.0.as_str()),
        Some("access_revoked")
    );
    let row = access::get(&t.db, &env.business).await.unwrap().unwrap();
    assert_eq!(row.status, access::REVOKED);
    let again = fetch_stripe_data(&env.ctx, &env.business, Trigger::Scheduled).await;
    assert!(
        matches!(again, Err(tributary_sync::SyncError::NotConnected(_))),
        "{again:?}"
    );
});

db_test!(
    stale_cursor_triggers_reconciliation_that_marks_vanished_objects_deleted,
    |t| {
        let env = Env::new(&t, 26).await;
        env.sync().await;
        // An object the account no longer has (as if its deletion event was lost).
        let ghost = stripe_customers::Model {
            business_id: env.business.as_str().into(),
            stripe_id: "cus_ghost".into(),
            email: Some("ghost@example.com".into()),
            name: None,
            currency: None,
            raw: json!({"id": "cus_ghost"}),
            livemode: false,
            created: 1,
            deleted: false,
            last_event_at: 1,
            synced_at: 1,
        };
        mirror::upsert::<stripe_customers::Entity, _>(t.db.conn(), &env.business, vec![ghost])
            .await
            .unwrap();
        // And a payment the account no longer has: the full run's rebuild must not count it (on
        // PostgreSQL its facts are read beside the transaction that marks it deleted).
        let ghost_payment = stripe_orders::Model {
            business_id: env.business.as_str().into(),
            stripe_id: "pi_ghost".into(),
            stripe_type: "payment_intent".into(),
            customer: None,
            email: Some("ghost-payer@example.com".into()),
            status: "succeeded".into(),
            amount: 7_000,
            amount_received: 7_000,
            currency: "usd".into(),
            invoice: None,
            payment_intent: None,
            raw: json!({"id": "pi_ghost"}),
            livemode: false,
            created: 1,
            deleted: false,
            last_event_at: 1,
            synced_at: 1,
        };
        mirror::upsert::<stripe_orders::Entity, _>(t.db.conn(), &env.business, vec![ghost_payment])
            .await
            .unwrap();
        // An ordinary incremental sync cannot see them vanish...
        env.sync().await;
        assert!(
            !mirror::find::<stripe_customers::Entity, _>(t.db.conn(), &env.business, "cus_ghost")
                .await
                .unwrap()
                .unwrap()
                .deleted
        );
        // ...but 31 days later the events cursor is past Stripe's retention: a full re-list runs.
        env.control("/_sim/clock", json!({"advance_seconds": 31 * 86_400}))
            .await;
        env.ctx.advance_clock(31 * 86_400);
        let report = env.sync().await;
        let customers = env.counts().await["customers"].as_u64().unwrap();
        assert_eq!(
            report.progress["customers"].fetched, customers,
            "every customer re-listed"
        );
        assert!(
            mirror::find::<stripe_customers::Entity, _>(t.db.conn(), &env.business, "cus_ghost")
                .await
                .unwrap()
                .unwrap()
                .deleted
        );
        let spend = tributary_persistence::reads::all_spend(t.db.conn(), &env.business)
            .await
            .unwrap();
        assert!(
            spend.iter().all(|r| r.email != "ghost-payer@example.com"),
            "the vanished payment still counts"
        );
        env.assert_mirror_exact().await;
    }
);

db_test!(forced_full_sync_reconciles_at_once, |t| {
    let env = Env::new(&t, 27).await;
    env.sync().await;
    let report = fetch_stripe_data_full(&env.ctx, &env.business, Trigger::Manual)
        .await
        .unwrap();
    assert!(report.succeeded() && report.full);
    env.assert_mirror_exact().await;
});

/// Starts a sync of `env`'s business in the background and returns once it has written its
/// first page. Build `env` with a low request rate, so the run is far from done by then.
async fn sync_in_flight(env: &Env) -> tokio::task::JoinHandle<tributary_sync::SyncReport> {
    let ctx = env.ctx.clone();
    let business = env.business.clone();
    let handle = tokio::spawn(async move {
        fetch_stripe_data(&ctx, &business, Trigger::Manual)
            .await
            .unwrap()
    });
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let job = jobs::active_job(env.ctx.db(), &env.business).await.unwrap();
        if job.is_some_and(|j| j.progress.as_object().is_some_and(|p| !p.is_empty())) {
            return handle;
        }
    }
    panic!("the sync never wrote a page");
}

db_test!(revocation_mid_run_fails_the_job_with_access_revoked, |t| {
    let env = Env::with_rate(&t, 28, 4).await;
    let running = sync_in_flight(&env).await;
    env.control(&format!("/_sim/accounts/{}/revoke", env.account), json!({}))
        .await;
    let report = running.await.unwrap();
    assert_eq!(report.status, jobs::FAILED, "{report:?}");
    assert_eq!(
        report.error.as_ref().map(|e| e.0.as_str()),
        Some("access_revoked")
    );
    assert_eq!(
        access::get(&t.db, &env.business)
            .await
            .unwrap()
            .unwrap()
            .status,
        access::REVOKED
    );
});

db_test!(disconnect_mid_run_leaves_no_rows_behind, |t| {
    let env = Env::with_rate(&t, 29, 4).await;
    let running = sync_in_flight(&env).await;
    // What DELETE /api/stripe/{id} does: fail the job, then clear every row in one transaction.
    jobs::fail_active(
        &t.db,
        &env.business,
        "cancelled",
        "disconnected",
        env.ctx.now(),
    )
    .await
    .unwrap();
    t.db.purge_business(&env.business).await.unwrap();
    let report = running.await.unwrap();
    assert_ne!(report.status, jobs::SUCCEEDED, "{report:?}");
    use sea_orm::ConnectionTrait;
    let backend = t.db.conn().get_database_backend();
    for table in tributary_migrations::TABLES
        .iter()
        .filter(|t| !matches!(**t, "businesses" | "agency_billing"))
    {
        let sql =
            format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE business_id = 'biz_sync'");
        let row =
            t.db.conn()
                .query_one_raw(sea_orm::Statement::from_string(backend, sql))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            row.try_get_by_index::<String>(0).unwrap(),
            "0",
            "{table} has rows written after the disconnect"
        );
    }
});

/// A host receiving notices: answers 500 to the first request, then 200; records the rest.
async fn notice_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    actix_web::dev::ServerHandle,
) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let (seen2, calls2) = (seen.clone(), calls.clone());
    let server = HttpServer::new(move || {
        let (seen, calls) = (seen2.clone(), calls2.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (seen, calls) = (seen.clone(), calls.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return HttpResponse::InternalServerError().finish();
                }
                let sig = req
                    .headers()
                    .get("tributary-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock()
                    .unwrap()
                    .push((sig, String::from_utf8_lossy(&body).into_owned()));
                HttpResponse::Ok().finish()
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}/notices"), seen, handle)
}

db_test!(
    host_notices_are_signed_retried_and_sent_for_each_outcome,
    |t| {
        let (url, seen, server) = notice_receiver().await;
        let mut env = Env::new(&t, 30).await;
        let mut config = env.ctx.config().clone();
        let mut notify =
            tributary_sync::notify::NotifyConfig::new(url, SecretString::from("whsec_host"));
        notify.backoff = Duration::from_millis(50);
        config.notify = Some(notify);
        env.ctx = SyncContext::new(t.db.clone(), env.ctx.stripe().clone(), config);
        env.sync().await;
        env.control(&format!("/_sim/accounts/{}/revoke", env.account), json!({}))
            .await;
        let report = fetch_stripe_data(&env.ctx, &env.business, Trigger::Scheduled)
            .await
            .unwrap();
        assert_eq!(report.status, jobs::FAILED);
        let mut kinds = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            kinds = seen
                .lock()
                .unwrap()
                .iter()
                .map(|(_, b)| {
                    serde_json::from_str::<Value>(b).unwrap()["type"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            if kinds.len() >= 3 {
                break;
            }
        }
        kinds.sort();
        assert_eq!(
            kinds,
            vec!["connection.revoked", "sync.failed", "sync.succeeded"],
            "the first attempt's 500 was retried"
        );
        for (sig, body) in seen.lock().unwrap().iter() {
            let now = time::OffsetDateTime::now_utc();
            tributary_stripe_connect::verify_signature(
                body.as_bytes(),
                sig,
                &["whsec_host"],
                Duration::from_secs(300),
                now,
            )
            .expect("notice signature verifies");
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["business_id"], env.business.as_str());
        }
        server.stop(true).await;
    }
);
