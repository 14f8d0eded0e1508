//! Hostile events through the appliers (SPEC §6): every object type the mirror holds, current
//! and older API-version shapes (`hostile/objects.json`), mutated field by field with values
//! Stripe would never send, wrapped in every event type we handle.
//!
//! A business's own webhook endpoint is signed with a secret its owner saved, so whatever a
//! tenant can write reaches these appliers verbatim: they must never panic, write only that
//! business's rows, and leave the read model consistent with the mirror.
//! On SQLite and PostgreSQL (`name::sqlite`, `name::postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_domain::BusinessId;
use tributary_persistence::entities::*;
use tributary_persistence::testing::{Backend, run};
use tributary_persistence::{mirror, webhooks};
use tributary_stripe_connect::{EventEnvelope, STRIPE_VERSION};
use tributary_sync::apply::{Outcome, apply_event};
use tributary_sync::map::{self, Stamp};
use tributary_sync::notify::{NotifyConfig, deliver};

const OBJECTS: &str = include_str!("hostile/objects.json");
const T: i64 = 1_700_000_000;

/// Every object of the fixture file: `(name, object)`.
fn objects() -> Vec<(String, Value)> {
    let all: Value = serde_json::from_str(OBJECTS).unwrap();
    let mut out = Vec::new();
    for group in ["current", "older"] {
        for (name, object) in all[group].as_object().unwrap() {
            out.push((format!("{group}/{name}"), object.clone()));
        }
    }
    out
}

/// The event types that carry an object of `kind`.
fn event_types(kind: &str) -> &'static [&'static str] {
    match kind {
        "customer" => &["customer.created", "customer.updated", "customer.deleted"],
        "product" => &["product.created", "product.updated", "product.deleted"],
        "price" | "plan" => &["price.created", "price.updated", "price.deleted"],
        "payment_intent" => &[
            "payment_intent.succeeded",
            "payment_intent.created",
            "payment_intent.canceled",
        ],
        "charge" => &["charge.refunded", "charge.succeeded", "charge.updated"],
        "refund" => &["refund.created", "refund.updated", "charge.refund.updated"],
        "invoice" => &[
            "invoice.paid",
            "invoice.payment_failed",
            "invoice.finalized",
            "invoice.voided",
            "invoice.deleted",
        ],
        "invoice_payment" => &["invoice_payment.paid"],
        "checkout.session" => &[
            "checkout.session.completed",
            "checkout.session.expired",
            "checkout.session.async_payment_succeeded",
        ],
        "subscription" => &[
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
        ],
        "account" => &["account.updated", "account.application.deauthorized"],
        _ => &["brand_new.event"],
    }
}

/// Values Stripe never sends where a field is expected.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!("")),
        Just(json!("\u{0}")),
        Just(json!("nul\u{0}inside")),
        Just(json!("ÿ€😀\u{202e}")),
        Just(json!("x".repeat(10_000))),
        Just(json!("../../v1/customers")),
        Just(json!("acct_other")),
        Just(json!("123")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"id": "x", "object": "subscription_item"}, null, 5])),
        Just(json!({"object": "list", "data": "not a list", "has_more": "yes"})),
        Just(json!({"id": {"id": {"id": 1}}})),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::from),
    ]
}

/// One change to an object: at a field found by walking it (the index picks one).
#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    Retype(&'static str),
    Id(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<prop::sample::Index>(), hostile_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        3 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => prop_oneof![
            Just("customer"), Just("invoice"), Just("subscription"), Just("charge"),
            Just("checkout.session"), Just("refund"), Just("price"), Just("balance"),
        ]
        .prop_map(Mutation::Retype),
        1 => hostile_value().prop_map(Mutation::Id),
    ]
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Every path into `v`, up to four levels deep.
fn paths(v: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    if prefix.len() >= 4 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(Seg::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Seg::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn parent_mut<'v>(v: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    let mut cur = v;
    for seg in &path[..path.len() - 1] {
        cur = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str())?,
            Seg::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}

fn mutate(object: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    paths(object, &mut Vec::new(), &mut all);
    match m {
        Mutation::Set(i, _) | Mutation::Remove(i) if !all.is_empty() => {
            let path = &all[i.index(all.len())];
            let Some(parent) = parent_mut(object, path) else {
                return;
            };
            match (path.last(), m) {
                (Some(Seg::Key(k)), Mutation::Set(..)) => {
                    if let Some(o) = parent.as_object_mut() {
                        o.insert(k.clone(), mutation_value(m));
                    }
                }
                (Some(Seg::Key(k)), _) => {
                    if let Some(o) = parent.as_object_mut() {
                        o.remove(k);
                    }
                }
                (Some(Seg::Index(i)), Mutation::Set(..)) => {
                    if let Some(a) = parent.as_array_mut() {
                        a[*i] = mutation_value(m);
                    }
                }
                (Some(Seg::Index(i)), _) => {
                    if let Some(a) = parent.as_array_mut() {
                        a.remove(*i);
                    }
                }
                (None, _) => {}
            }
        }
        Mutation::Retype(kind) => object["object"] = json!(kind),
        Mutation::Id(id) => object["id"] = id.clone(),
        _ => {}
    }
}

fn mutation_value(m: &Mutation) -> Value {
    match m {
        Mutation::Set(_, v) => v.clone(),
        _ => Value::Null,
    }
}

/// A mutated object wrapped in an event: `(event JSON, object kind before mutation)`.
fn hostile_event() -> impl Strategy<Value = Value> {
    let objects = objects();
    (
        prop::sample::select(objects),
        prop::collection::vec(mutation(), 0..5),
        any::<prop::sample::Index>(),
        prop_oneof![
            Just(T),
            Just(T + 1),
            Just(0),
            Just(-1),
            Just(i64::MAX),
            Just(i64::MIN)
        ],
        prop_oneof![
            Just(json!(STRIPE_VERSION)),
            Just(json!("2019-12-03")),
            Just(Value::Null),
            Just(json!(""))
        ],
        prop_oneof![
            Just(Value::Null),
            hostile_value(),
            Just(json!({"status": "open"}))
        ],
        0u32..1_000_000,
    )
        .prop_map(
            |((_, mut object), mutations, pick, created, version, previous, n)| {
                let kind = object["object"].as_str().unwrap_or_default().to_owned();
                let types = event_types(&kind);
                let kind = types[pick.index(types.len())];
                for m in &mutations {
                    mutate(&mut object, m);
                }
                json!({
                    "id": format!("evt_hostile_{n}"), "object": "event", "type": kind,
                    "created": created, "livemode": false, "api_version": version,
                    "account": "acct_hostile",
                    "data": {"object": object, "previous_attributes": previous},
                })
            },
        )
}

fn stamp() -> Stamp<'static> {
    Stamp {
        business_id: "biz_hostile",
        at: T,
        now: T,
    }
}

/// Every mapper on any object, whatever its type says: pure functions of JSON.
fn map_everything(object: &Value) {
    let st = stamp();
    let _ = map::product(st, object);
    let _ = map::price(st, object);
    let _ = map::customer(st, object);
    let _ = map::payment_intent(st, object);
    let _ = map::charge(st, object);
    let _ = map::refund(st, object);
    let _ = map::invoice(st, object);
    let _ = map::invoice_line(st, "in_1", T, object);
    let _ = map::invoice_payment(st, object);
    let _ = map::checkout_session(st, object);
    let _ = map::checkout_line(st, "cs_1", T, object);
    let _ = map::subscription(st, object);
    let _ = map::subscription_items(st, object);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The mappers take any object as the appliers would hand it over: the row keeps the
    /// whole object and MRR never goes below zero.
    #[test]
    fn mappers_take_any_mutated_object(event in hostile_event()) {
        let object = &event["data"]["object"];
        map_everything(object);
        let row = map::customer(stamp(), object);
        prop_assert_eq!(&row.raw, object);
        prop_assert!(map::subscription_mrr(object) >= 0);
        let parsed = tributary_stripe_connect::parse_event(event.to_string().as_bytes()).unwrap();
        let mut scrubbed = object.clone();
        tributary_stripe_connect::scrub_nul(&mut scrubbed);
        prop_assert_eq!(&parsed.object, &scrubbed);
        prop_assert!(!parsed.object.to_string().contains("\\u0000"));
    }
}

/// A realistic subscription of 20 items billed on different day counts, with discounts, made
/// the exact MRR sum overflow `i128` (a panic in debug builds, a wrong amount or a division by
/// zero in release).
#[test]
fn mrr_of_a_many_item_subscription_is_finite() {
    let counts = [
        1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
    ];
    let items: Vec<Value> = counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            json!({"id": format!("si_{i}"), "object": "subscription_item", "quantity": 1,
                   "price": {"id": format!("price_{i}"), "object": "price", "currency": "usd",
                             "unit_amount": 1000 + i,
                             "recurring": {"interval": "day", "interval_count": count,
                                           "usage_type": "licensed"}}})
        })
        .collect();
    let discounts: Vec<Value> = [1.0, 2.5, 3.3, 7.1, 9.9]
        .iter()
        .map(|p| json!({"object": "discount", "coupon": {"percent_off": p}}))
        .collect();
    let sub = json!({"id": "sub_many", "object": "subscription", "status": "active",
                     "currency": "usd", "items": {"object": "list", "data": items},
                     "discounts": discounts});
    let mrr = map::subscription_mrr(&sub);
    // Σ (1000 + i) × 365 / 12 / count, less 1 %, 2.5 %, 3.3 %, 7.1 % and 9.9 %.
    let exact: f64 = counts
        .iter()
        .enumerate()
        .map(|(i, c)| (1000.0 + i as f64) * 365.0 / 12.0 / f64::from(*c))
        .sum::<f64>()
        * [0.99, 0.975, 0.967, 0.929, 0.901].iter().product::<f64>();
    assert!((mrr as f64 - exact).abs() <= 1.0, "{mrr} vs {exact}");
}

// ---------------------------------------------------------------- through the database

async fn bystander_rows(db: &tributary_persistence::Database, b: &BusinessId) -> Vec<Value> {
    let mut out: Vec<Value> = mirror::all::<stripe_customers::Entity, _>(db.conn(), b)
        .await
        .unwrap()
        .into_iter()
        .map(|m| json!([m.stripe_id, m.email, m.last_event_at, m.deleted]))
        .collect();
    out.extend(
        mirror::all::<stripe_invoices::Entity, _>(db.conn(), b)
            .await
            .unwrap()
            .into_iter()
            .map(|m| json!([m.stripe_id, m.amount_paid, m.last_event_at, m.deleted])),
    );
    out
}

/// Hostile events applied one after another to one business (no Stripe client: the payload
/// is all there is), each in its own transaction as the webhook route does: every one
/// answers, another business's rows never change, and the spend read model still equals what
/// the mirror implies.
async fn hostile_events_touch_only_their_business(backend: Backend) {
    run(backend, |t| async move {
        let target = BusinessId::parse("biz_hostile").unwrap();
        let bystander = BusinessId::parse("biz_bystander").unwrap();
        // The bystander holds the very objects the events name.
        let txn = t.db.begin_write().await.unwrap();
        for (_, object) in objects() {
            let st = Stamp {
                business_id: bystander.as_str(),
                at: T,
                now: T,
            };
            tributary_sync::apply::write_object(&txn, &bystander, &object, st, None)
                .await
                .unwrap();
        }
        txn.commit().await.unwrap();
        webhooks::set_secret(&t.db, &bystander, "whsec_bystander", T)
            .await
            .unwrap();
        let before = bystander_rows(&t.db, &bystander).await;
        assert!(before.len() >= 3, "{before:?}");

        // A fixed seed: the count of applied events below depends on the draw.
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 128,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let handle = tokio::runtime::Handle::current();
        let outcomes = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u32>::new());
        runner
            .run(&hostile_event(), |event| {
                let envelope = EventEnvelope::from_value(&event).unwrap();
                let result = tokio::task::block_in_place(|| {
                    handle.block_on(async {
                        let txn = t.db.begin_write().await.unwrap();
                        let outcome = apply_event(&txn, &target, &envelope, T + 5, None).await;
                        if outcome.is_ok() {
                            txn.commit().await.unwrap();
                        } else {
                            txn.rollback().await.unwrap();
                        }
                        outcome.map_err(|e| e.to_string())
                    })
                });
                let outcome = result.map_err(|e| {
                    TestCaseError::fail(format!("{} refused: {e}", envelope.event_type))
                })?;
                *outcomes.borrow_mut().entry(outcome.as_str()).or_default() += 1;
                if outcome == Outcome::Applied
                    && envelope.object_type() == Some("customer")
                    && let Some(id) = envelope.object_id()
                {
                    let row = tokio::task::block_in_place(|| {
                        handle.block_on(mirror::find::<stripe_customers::Entity, _>(
                            t.db.conn(),
                            &target,
                            id,
                        ))
                    })
                    .unwrap();
                    prop_assert!(row.is_some(), "applied customer {id} not stored");
                }
                Ok(())
            })
            .unwrap();
        let outcomes = outcomes.into_inner();
        assert!(
            outcomes.get("applied").copied().unwrap_or(0) > 10,
            "{outcomes:?}"
        );
        assert_eq!(bystander_rows(&t.db, &bystander).await, before);
        assert_eq!(
            webhooks::secret(&t.db, &bystander)
                .await
                .unwrap()
                .as_deref(),
            Some("whsec_bystander")
        );
        let check = tributary_sync::verify::verify_spend(t.db.conn(), &target)
            .await
            .unwrap();
        assert!(check.is_consistent(), "{:?}", check.differences);
    })
    .await;
}

mod hostile_events {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::hostile_events_touch_only_their_business(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::hostile_events_touch_only_their_business(super::Backend::Postgres).await;
    }
}

/// The platform-billing applier (its own endpoint, signed by the platform's secret) on the
/// same mutated objects, typed as the billing events it handles, with the agency named by
/// metadata or `client_reference_id` as anything at all: every event answers.
async fn hostile_billing_events_answer(backend: Backend) {
    run(backend, |t| async move {
        let kinds = prop::sample::select(vec![
            "checkout.session.completed",
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "invoice.paid",
            "invoice.payment_failed",
            "invoice.created",
        ]);
        let agency = prop_oneof![Just(json!("ag-1")), Just(json!("ag-2")), hostile_value()];
        // A fixed seed: the count of applied events below depends on the draw.
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 96,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let handle = tokio::runtime::Handle::current();
        let applied = std::sync::atomic::AtomicUsize::new(0);
        runner
            .run(
                &(hostile_event(), kinds, agency, any::<bool>()),
                |(mut event, kind, agency, in_metadata)| {
                    event["type"] = json!(kind);
                    event.as_object_mut().unwrap().remove("account");
                    let object = &mut event["data"]["object"];
                    if object.is_object() {
                        if in_metadata {
                            object["metadata"] = json!({"agency_id": agency});
                        } else {
                            object["client_reference_id"] = agency;
                        }
                    }
                    let envelope = EventEnvelope::from_value(&event).unwrap();
                    let result = tokio::task::block_in_place(|| {
                        handle.block_on(async {
                            let txn = t.db.begin_write().await.unwrap();
                            let outcome =
                                tributary_sync::billing::apply_event(&txn, &envelope, T).await;
                            if outcome.is_ok() {
                                txn.commit().await.unwrap();
                            } else {
                                txn.rollback().await.unwrap();
                            }
                            outcome.map(|(o, _)| o).map_err(|e| e.to_string())
                        })
                    });
                    let outcome =
                        result.map_err(|e| TestCaseError::fail(format!("{kind} refused: {e}")))?;
                    if outcome == tributary_sync::billing::BillingOutcome::Applied {
                        applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                },
            )
            .unwrap();
        assert!(
            applied.into_inner() > 5,
            "hardly any event reached an agency"
        );
    })
    .await;
}

mod hostile_billing_events {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::hostile_billing_events_answer(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::hostile_billing_events_answer(super::Backend::Postgres).await;
    }
}

/// Amounts at the ends of `i64` for one email: the spend sums saturate instead of
/// overflowing (a panic in debug builds, a sign flip in release).
async fn extreme_amounts_saturate(backend: Backend) {
    run(backend, |t| async move {
        let b = BusinessId::parse("biz_extreme").unwrap();
        let pi = |id: &str, amount: i64| {
            json!({"id": id, "object": "payment_intent", "created": T, "livemode": false,
                   "status": "succeeded", "amount": amount, "amount_received": amount,
                   "currency": "usd", "receipt_email": "max@example.com"})
        };
        let objects = [
            pi("pi_max_1", i64::MAX),
            pi("pi_max_2", i64::MAX),
            json!({"id": "re_min", "object": "refund", "created": T, "status": "succeeded",
                   "amount": i64::MIN, "currency": "usd", "payment_intent": "pi_max_1"}),
        ];
        for (n, object) in objects.iter().enumerate() {
            let event = json!({"id": format!("evt_x{n}"), "type": "x.updated", "created": T,
                               "api_version": STRIPE_VERSION, "data": {"object": object}});
            let envelope = EventEnvelope::from_value(&event).unwrap();
            let txn = t.db.begin_write().await.unwrap();
            let outcome = apply_event(&txn, &b, &envelope, T, None).await.unwrap();
            txn.commit().await.unwrap();
            assert_eq!(outcome, Outcome::Applied);
        }
        let spend = tributary_persistence::reads::all_spend(t.db.conn(), &b)
            .await
            .unwrap();
        let row = spend.iter().find(|r| r.email == "max@example.com").unwrap();
        assert_eq!((row.gross, row.order_count), (i64::MAX, 2), "{row:?}");
        let check = tributary_sync::verify::verify_spend(t.db.conn(), &b)
            .await
            .unwrap();
        assert!(check.is_consistent(), "{:?}", check.differences);
    })
    .await;
}

mod extreme_amounts {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::extreme_amounts_saturate(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::extreme_amounts_saturate(super::Backend::Postgres).await;
    }
}

/// A NUL character in an account's data (PostgreSQL stores it neither in `text` nor in
/// `jsonb`) used to fail every write of its page, so the sync of that business failed for
/// ever; it is now replaced on the way in.
async fn a_nul_in_stripe_data_does_not_poison_the_sync(backend: Backend) {
    use tributary_domain::StripeAccountId;
    use tributary_persistence::{access, jobs};
    use tributary_stripe_connect::{Stripe, StripeConfig};
    use tributary_stripe_sim::{Scale, SimOptions, SimServer};
    use tributary_sync::{SyncConfig, SyncContext, Trigger, fetch_stripe_data};

    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 3,
            accounts: 1,
            scale: Scale::Empty,
            ..Default::default()
        })
        .await
        .unwrap();
        let account = sim.accounts()[0].clone();
        let res = reqwest::Client::new()
            .post(format!(
                "{}/_sim/accounts/{account}/objects",
                sim.base_url()
            ))
            .json(&json!([
                {"id": "cus_nul", "object": "customer", "created": T, "livemode": false,
                 "email": "nul@example.com", "name": "Null\u{0}Byte",
                 "metadata": {"note\u{0}": "a\u{0}b"}},
                {"id": "prod_nul", "object": "product", "created": T, "livemode": false,
                 "name": "\u{0}", "active": true},
            ]))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let stripe = Stripe::new(
            StripeConfig::new(SecretString::from("sk_test_hostile")).with_base(sim.base_url()),
        )
        .unwrap();
        let ctx = SyncContext::new(t.db.clone(), stripe, SyncConfig::default());
        let b = BusinessId::parse("biz_nul").unwrap();
        let acct = StripeAccountId::parse(&account).unwrap();
        let conn = access::NewConnection {
            account: &acct,
            account_name: None,
            livemode: false,
            scope: "read_write",
        };
        access::connect(&t.db, &b, conn, T).await.unwrap();
        let report = fetch_stripe_data(&ctx, &b, Trigger::Manual).await.unwrap();
        assert_eq!(report.status, jobs::SUCCEEDED, "{:?}", report.error);
        let row = mirror::find::<stripe_customers::Entity, _>(t.db.conn(), &b, "cus_nul")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.name.as_deref(), Some("Null\u{FFFD}Byte"));
        assert_eq!(row.raw["metadata"]["note\u{FFFD}"], "a\u{FFFD}b");
        sim.stop().await;
    })
    .await;
}

mod nul_in_stripe_data {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_nul_in_stripe_data_does_not_poison_the_sync(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_nul_in_stripe_data_does_not_poison_the_sync(super::Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------- host notices

/// A host that accepts the connection and never answers: each attempt ends at the configured
/// timeout and the notice is given up after its attempts, instead of holding a task forever.
#[tokio::test]
async fn host_notices_to_a_host_that_never_answers_time_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notices", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let mut config = NotifyConfig::new(url, SecretString::from("whsec_host"));
    config.attempts = 2;
    config.backoff = Duration::from_millis(10);
    config.timeout = Duration::from_millis(300);
    let notice = json!({"id": "ntc_1", "type": "sync.failed", "business_id": "biz_1"});
    // A hang would be the failure; this bound only turns it into a message.
    let delivered = tokio::time::timeout(Duration::from_secs(120), deliver(&config, &notice))
        .await
        .expect("deliver gives up on its own");
    assert!(!delivered);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one connection per attempt"
    );
    server.abort();
}
