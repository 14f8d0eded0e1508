//! A batch of events applied together (`EventBatch::apply`: a webhook turn, a page of the
//! sync's events) leaves the mirror, the spend read model and the outcomes exactly as the same
//! events applied one at a time, and each way the spend is what the whole mirror implies
//! (the one walk after each write found every email the write took money from or gave it
//! to). The batch decides each event from the stored versions read
//! once and the events before it, and writes each table once; one at a time, each event reads
//! what the one before wrote. A small world (three objects of each type, four seconds, three
//! emails; payments, invoices and sessions linking each other) makes ties, stale events,
//! deletions, re-creations and moved links collide inside a batch.
//! On SQLite and PostgreSQL (`name::sqlite`, `name::postgres`).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tributary_domain::BusinessId;
use tributary_persistence::entities::*;
use tributary_persistence::mirror::{self, Mirror};
use tributary_persistence::testing::{Backend, TestDbRef, run};
use tributary_stripe_connect::{EventEnvelope, STRIPE_VERSION};
use tributary_sync::apply::{EventBatch, Outcome, apply_event, prefetch};

const T: i64 = 1_700_000_000;

/// `(type, object)` of one event of the small world.
fn event() -> impl Strategy<Value = (String, Value, i64)> {
    (
        0..6_u8,
        0..3_u8,
        0..3_u8,
        0..3_u8,
        0..3_u8,
        1..5_i64,
        0..4_i64,
    )
        .prop_map(|(kind, i, j, k, variant, amount, second)| {
            let email = format!("e{j}@x.io");
            let (ty, object) = match kind {
                0 => {
                    let ty = ["customer.created", "customer.updated", "customer.deleted"]
                        [variant as usize];
                    let object = json!({"id": format!("cus_{i}"), "object": "customer",
                        "created": T, "email": email, "name": format!("n{amount}"),
                        "livemode": false});
                    (ty.to_owned(), object)
                }
                1 => {
                    let status = ["succeeded", "succeeded", "canceled"][variant as usize];
                    let object = json!({"id": format!("pi_{i}"), "object": "payment_intent",
                        "created": T, "livemode": false, "status": status,
                        "amount": amount * 100, "amount_received": amount * 100,
                        "currency": "usd", "customer": format!("cus_{k}"),
                        "receipt_email": if variant == 1 { Value::Null } else { json!(email) }});
                    (format!("payment_intent.{status}"), object)
                }
                2 => {
                    let object = json!({"id": format!("re_{i}"), "object": "refund",
                        "created": T, "status": "succeeded", "amount": amount * 10,
                        "currency": "usd", "payment_intent": format!("pi_{k}")});
                    ("refund.created".to_owned(), object)
                }
                // Invoices paid through a payment, paid out of band, or deleted: a deleted
                // one still leads to the sessions that name it.
                4 => {
                    let ty = ["invoice.paid", "invoice.updated", "invoice.deleted"]
                        [variant as usize];
                    let object = json!({"id": format!("in_{i}"), "object": "invoice",
                        "created": T, "livemode": false, "status": "paid",
                        "amount_due": amount * 100, "amount_paid": amount * 100,
                        "total": amount * 100, "currency": "usd",
                        "customer": if variant == 1 { Value::Null } else { json!(format!("cus_{k}")) },
                        "customer_email": email,
                        "payment_intent": if variant == 0 { json!(format!("pi_{k}")) } else { Value::Null },
                        "lines": {"object": "list", "data": [], "has_more": false}});
                    (ty.to_owned(), object)
                }
                // Sessions with no customer: their email names the money of the payment or
                // invoice they link, or their own.
                5 => {
                    let object = json!({"id": format!("cs_{i}"), "object": "checkout.session",
                        "created": T, "livemode": false, "mode": "payment",
                        "status": "complete", "payment_status": "paid",
                        "amount_total": amount * 100, "currency": "usd", "customer": null,
                        "customer_details": {"email": email},
                        "payment_intent": if variant == 0 { json!(format!("pi_{k}")) } else { Value::Null },
                        "invoice": if variant == 2 { json!(format!("in_{k}")) } else { Value::Null },
                        "line_items": {"object": "list", "data": [], "has_more": false}});
                    ("checkout.session.completed".to_owned(), object)
                }
                _ => {
                    let ty =
                        ["product.created", "product.updated", "product.deleted"][variant as usize];
                    let object = json!({"id": format!("prod_{i}"), "object": "product",
                        "created": T, "name": format!("p{amount}"), "active": true,
                        "livemode": false});
                    (ty.to_owned(), object)
                }
            };
            (ty, object, T + second)
        })
}

fn envelopes(events: &[(String, Value, i64)], tag: &str) -> Vec<EventEnvelope> {
    events
        .iter()
        .enumerate()
        .map(|(n, (ty, object, created))| {
            EventEnvelope::from_value(&json!({"id": format!("evt_{tag}_{n}"), "type": ty,
                "created": created, "api_version": STRIPE_VERSION, "livemode": false,
                "data": {"object": object}}))
            .unwrap()
        })
        .collect()
}

/// Every mirror row and spend row of `b` that the small world writes, with the business
/// left out so two businesses compare.
async fn state(t: &TestDbRef, b: &BusinessId) -> Value {
    async fn rows<E: Mirror>(t: &TestDbRef, b: &BusinessId) -> Vec<Value>
    where
        E::Model: serde::Serialize,
    {
        let mut rows: Vec<Value> = mirror::all::<E, _>(t.db.conn(), b)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap();
                v.as_object_mut().unwrap().remove("business_id");
                v
            })
            .collect();
        rows.sort_by_key(|r| r["stripe_id"].to_string());
        rows
    }
    let mut spend: Vec<Value> = tributary_persistence::reads::all_spend(t.db.conn(), b)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("business_id");
            o.remove("updated_at");
            v
        })
        .collect();
    spend.sort_by_key(|r| (r["email"].to_string(), r["currency"].to_string()));
    json!({
        "customers": rows::<stripe_customers::Entity>(t, b).await,
        "orders": rows::<stripe_orders::Entity>(t, b).await,
        "refunds": rows::<stripe_refunds::Entity>(t, b).await,
        "products": rows::<stripe_products::Entity>(t, b).await,
        "invoices": rows::<stripe_invoices::Entity>(t, b).await,
        "sessions": rows::<stripe_checkout_sessions::Entity>(t, b).await,
        "spend": spend,
    })
}

async fn batch_equals_one_at_a_time(backend: Backend) {
    run(backend, |t| async move {
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 40,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let handle = tokio::runtime::Handle::current();
        let case = std::cell::Cell::new(0);
        let seen = std::cell::RefCell::new(std::collections::BTreeSet::<&str>::new());
        runner
            .run(&prop::collection::vec(event(), 1..14), |events| {
                case.set(case.get() + 1);
                let one = BusinessId::parse(&format!("biz_one_{}", case.get())).unwrap();
                let all = BusinessId::parse(&format!("biz_all_{}", case.get())).unwrap();
                let ahead = BusinessId::parse(&format!("biz_ahead_{}", case.get())).unwrap();
                let (singly, together, made_ahead, before, after, after_ahead, exact) =
                    tokio::task::block_in_place(|| {
                        handle.block_on(async {
                            let singly_events = envelopes(&events, "one");
                            let mut singly = Vec::new();
                            for e in &singly_events {
                                let txn = t.db.begin_write().await.unwrap();
                                singly.push(apply_event(&txn, &one, e, T + 9, None).await.unwrap());
                                txn.commit().await.unwrap();
                            }
                            let batch_events = envelopes(&events, "all");
                            let received: Vec<_> =
                                batch_events.iter().map(|e| (e, T + 9)).collect();
                            let txn = t.db.begin_write().await.unwrap();
                            let (mut batch, _) =
                                EventBatch::begin(&txn, &all, &batch_events).await.unwrap();
                            if t.backend == Backend::Postgres {
                                // The batch's lookups by arrays of ids are planned once.
                                use sea_orm::{ConnectionTrait, Statement};
                                let sql = "SELECT current_setting('plan_cache_mode') AS m";
                                let row = txn
                                    .query_one_raw(Statement::from_string(
                                        txn.get_database_backend(),
                                        sql,
                                    ))
                                    .await
                                    .unwrap()
                                    .unwrap();
                                assert_eq!(
                                    row.try_get::<String>("", "m").unwrap(),
                                    "force_generic_plan"
                                );
                            }
                            let together = batch.apply(&txn, &received, &[], None).await.unwrap();
                            batch.finish(&txn, T + 9).await.unwrap();
                            txn.commit().await.unwrap();
                            // The same batch with every event's rows made before its turn, as a
                            // webhook delivery makes them while it waits.
                            let ahead_events = envelopes(&events, "ahead");
                            let received: Vec<_> =
                                ahead_events.iter().map(|e| (e, T + 9)).collect();
                            let mut made = Vec::new();
                            for e in &ahead_events {
                                made.push(prefetch(&ahead, e, T + 9, None).await);
                            }
                            let made_refs: Vec<_> = made.iter().map(Option::as_ref).collect();
                            let txn = t.db.begin_write().await.unwrap();
                            let (mut batch, _) = EventBatch::begin(&txn, &ahead, &ahead_events)
                                .await
                                .unwrap();
                            let made_ahead = batch
                                .apply(&txn, &received, &made_refs, None)
                                .await
                                .unwrap();
                            batch.finish(&txn, T + 9).await.unwrap();
                            txn.commit().await.unwrap();
                            // Each business's spend against the whole mirror's.
                            let mut exact = Vec::new();
                            for b in [&one, &all, &ahead] {
                                let check = tributary_sync::verify::verify_spend(t.db.conn(), b)
                                    .await
                                    .unwrap();
                                exact.push(check.is_consistent().then_some(()).ok_or(check));
                            }
                            (
                                singly,
                                together,
                                made_ahead,
                                state(&t, &one).await,
                                state(&t, &all).await,
                                state(&t, &ahead).await,
                                exact,
                            )
                        })
                    });
                for o in &singly {
                    seen.borrow_mut().insert(o.as_str());
                }
                prop_assert_eq!(&singly, &together, "outcomes of {:?}", events);
                prop_assert_eq!(&singly, &made_ahead, "outcomes ahead of {:?}", events);
                prop_assert_eq!(&before, &after, "rows after {:?}", events);
                prop_assert_eq!(&before, &after_ahead, "rows ahead of {:?}", events);
                for check in exact {
                    prop_assert!(check.is_ok(), "{:?} after {:?}", check, events);
                }
                Ok(())
            })
            .unwrap();
        // The draw reached every outcome a client-less batch writes or skips.
        let seen = seen.into_inner();
        for outcome in [Outcome::Applied, Outcome::Stale, Outcome::Deleted].map(Outcome::as_str) {
            assert!(seen.contains(outcome), "{outcome} never drawn: {seen:?}");
        }
    })
    .await;
}

mod batch_equals_one_at_a_time {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::batch_equals_one_at_a_time(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::batch_equals_one_at_a_time(super::Backend::Postgres).await;
    }
}

/// A deleted object's row leads the spend refresh nowhere (walks follow live rows), and may
/// name nothing that names the email its money was attributed to: an invoice paid out of band,
/// with no customer, whose money is the email of the checkout session that names it. Deleting
/// the invoice moves that money (the session becomes a movement of its own), and the refresh
/// still finds the session's email, through the session's link to the seeded invoice.
async fn a_deleted_object_still_leads_to_what_named_it(backend: Backend) {
    run(backend, |t| async move {
        let b = BusinessId::parse("biz_deleted_link").unwrap();
        let invoice = json!({"id": "in_x", "object": "invoice", "created": T,
            "livemode": false, "status": "paid", "amount_due": 5_000, "amount_paid": 5_000,
            "total": 5_000, "currency": "usd", "customer": null,
            "customer_email": "invoice@x.io", "payment_intent": null,
            "lines": {"object": "list", "data": [], "has_more": false}});
        let session = json!({"id": "cs_x", "object": "checkout.session", "created": T,
            "livemode": false, "mode": "payment", "status": "complete",
            "payment_status": "paid", "amount_total": 7_000, "currency": "usd",
            "customer": null, "customer_details": {"email": "session@x.io"},
            "payment_intent": null, "invoice": "in_x",
            "line_items": {"object": "list", "data": [], "has_more": false}});
        let deleted = json!({"id": "in_x", "object": "invoice", "deleted": true});
        let events = [
            ("invoice.paid".to_owned(), invoice, T),
            ("checkout.session.completed".to_owned(), session, T),
            ("invoice.deleted".to_owned(), deleted, T + 1),
        ];
        let spend = || async {
            tributary_persistence::reads::all_spend(t.db.conn(), &b)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.email, r.gross, r.order_count))
                .collect::<Vec<_>>()
        };
        let mut seen = Vec::new();
        for e in envelopes(&events, "link") {
            let txn = t.db.begin_write().await.unwrap();
            apply_event(&txn, &b, &e, T + 9, None).await.unwrap();
            txn.commit().await.unwrap();
            let check = tributary_sync::verify::verify_spend(t.db.conn(), &b)
                .await
                .unwrap();
            assert!(check.is_consistent(), "after {}: {check:?}", e.event_type);
            seen.push(spend().await);
        }
        // The invoice's money is the session's email's, then the session's own.
        assert_eq!(seen[1], [("session@x.io".to_owned(), 5_000, 1)]);
        assert_eq!(seen[2], [("session@x.io".to_owned(), 7_000, 1)]);
    })
    .await;
}

mod a_deleted_object_still_leads_to_what_named_it {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_deleted_object_still_leads_to_what_named_it(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_deleted_object_still_leads_to_what_named_it(super::Backend::Postgres).await;
    }
}
