//! A webhook storm (docs/security.md, "Faults and load"): thousands of real simulator events
//! of several connected accounts, 30 % of the deliveries duplicates, shuffled, with
//! same-second ties, delivered by 32 concurrent clients. Afterwards every mirror equals its
//! account object by object and every event is recorded exactly once.
//!
//! Size: about `TRIBUTARY_STORM_EVENTS` deliveries (default 2,000; `just storm` sends 10,000
//! to PostgreSQL), at most 2,000 on SQLite, which serialises every write.

use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tributary_persistence::testing::Backend;

use super::faults::{spawn_app, writeln_notice};
use super::*;

const DEFAULT_DELIVERIES: usize = 2_000;
const DUPLICATE_SHARE: f64 = 0.3;
const CLIENTS: usize = 32;
const ACCOUNTS: usize = 4;
/// SQLite serialises every write: its storm stops at this size.
const SQLITE_MAX_DELIVERIES: usize = 2_000;

fn deliveries_for(backend: Backend) -> usize {
    let n = std::env::var("TRIBUTARY_STORM_EVENTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_DELIVERIES);
    match backend {
        Backend::Postgres => n,
        Backend::Sqlite => n.min(SQLITE_MAX_DELIVERIES),
    }
}

impl TestApp {
    /// Delivers one event body signed now; the status and the JSON answer.
    async fn deliver_answer(&self, body: &str) -> (StatusCode, Value) {
        let signature = tributary_stripe_connect::sign_payload(
            body.as_bytes(),
            super::faults::HOOK_SECRET,
            now(),
        );
        let res = self
            .http
            .post(format!("{}{}", self.base, super::faults::CONNECT_HOOK))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("the API answers");
        let status = res.status();
        let json = res.json().await.unwrap_or(Value::Null);
        (status, json)
    }
}

async fn storm(backend: Backend) {
    tributary_persistence::testing::run(backend, |t| async move {
        let total = deliveries_for(backend);
        let unique = ((total as f64) * (1.0 - DUPLICATE_SHARE)).ceil() as usize;
        let app = spawn_app(&t, ACCOUNTS).await;
        let accounts: Vec<String> = (0..ACCOUNTS).map(|i| app.account(i)).collect();
        for (i, acct) in accounts.iter().enumerate() {
            app.connect_and_sync(&format!("biz-{i}"), acct).await;
        }

        // Real changes at Stripe until the accounts hold `unique` new events between them.
        let mut before = Vec::new();
        for acct in &accounts {
            before.push(app.event_ids(acct).await);
        }
        let mut events: Vec<Value> = Vec::new();
        let mut seed = 100;
        while events.len() < unique {
            for acct in &accounts {
                // About 2.4 events per change.
                let count = (unique * 5 / ACCOUNTS / 12).clamp(5, 1_000);
                app.sim_control(
                    &format!("/_sim/accounts/{acct}/mutate"),
                    json!({"count": count, "seed": seed}),
                )
                .await;
                seed += 1;
            }
            // Three changes of one customer within one second: a tie the appliers must
            // resolve by re-fetching.
            let c = now();
            app.sim_control(
                &format!("/_sim/accounts/{}/objects", accounts[0]),
                json!(["a", "b", "c"].map(|x| json!({"id": format!("cus_storm_tie_{seed}"),
                    "object": "customer", "email": format!("tie-{x}@example.com"),
                    "created": c, "livemode": false, "metadata": {}}))),
            )
            .await;
            events.clear();
            for (acct, before) in accounts.iter().zip(&before) {
                events.extend(app.account_events(acct, before).await);
            }
        }
        let mut per_second_object: HashMap<(i64, String), usize> = HashMap::new();
        for e in &events {
            let key = (
                e["created"].as_i64().unwrap(),
                e["data"]["object"]["id"].as_str().unwrap_or_default().to_owned(),
            );
            *per_second_object.entry(key).or_default() += 1;
        }
        assert!(
            per_second_object.values().any(|n| *n >= 2),
            "the storm has same-second events of one object"
        );
        let stale = app.audit("biz-0", &accounts[0]).await;
        assert!(!stale.is_exact(), "the mirror lags before the storm");

        // Every event once, 30 % of them again, all shuffled.
        let unique = events.len();
        let bodies: Vec<String> = events.iter().map(Value::to_string).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut order: Vec<usize> = (0..unique).collect();
        let duplicates =
            (unique as f64 * DUPLICATE_SHARE / (1.0 - DUPLICATE_SHARE)).round() as usize;
        order.extend((0..duplicates).map(|_| rng.random_range(0..unique)));
        order.shuffle(&mut rng);

        let started = std::time::Instant::now();
        let mut pending = order;
        let mut answers: Vec<(usize, StatusCode, Value)> = Vec::new();
        let mut retried = 0;
        // As Stripe does: what was not answered 2xx is delivered again, later.
        for pass in 0..3 {
            let round: Vec<(usize, StatusCode, Value)> = futures::stream::iter(pending.iter())
                .map(|i| {
                    let app = &app;
                    let body = &bodies[*i];
                    async move {
                        let (status, json) = app.deliver_answer(body).await;
                        (*i, status, json)
                    }
                })
                .buffer_unordered(CLIENTS)
                .collect()
                .await;
            for (_, status, json) in &round {
                assert!(
                    *status == StatusCode::OK || *status == StatusCode::SERVICE_UNAVAILABLE,
                    "only 200, or 503 (Stripe retries), are expected: {status} {json}"
                );
            }
            pending = round
                .iter()
                .filter(|(_, s, _)| *s != StatusCode::OK)
                .map(|(i, _, _)| *i)
                .collect();
            answers.extend(round.into_iter().filter(|(_, s, _)| *s == StatusCode::OK));
            if pending.is_empty() {
                break;
            }
            retried += pending.len();
            assert!(pass < 2, "{} deliveries still refused", pending.len());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let elapsed = started.elapsed();

        // Exactly one delivery of each event was applied; every other one was a duplicate.
        let applied: Vec<&Value> = answers
            .iter()
            .filter(|(_, _, a)| a["duplicate"] == false)
            .map(|(_, _, a)| a)
            .collect();
        assert_eq!(applied.len(), unique, "one non-duplicate answer per event");
        assert_eq!(answers.len(), unique + duplicates);
        let recorded = super::faults::recorded_ids(&app.db).await;
        assert_eq!(recorded.len(), unique);
        assert!(recorded.values().all(|n| *n == 1), "an event recorded twice");
        for e in &events {
            assert!(recorded.contains_key(e["id"].as_str().unwrap()), "{}", e["id"]);
        }
        for (i, acct) in accounts.iter().enumerate() {
            let audit = app.audit(&format!("biz-{i}"), acct).await;
            assert!(audit.is_exact(), "biz-{i}: {:#?}", audit.differences);
        }
        // Concurrent deliveries of one business shared transactions (group commit): some
        // turn wrote more than one (the histogram is the process's, so only "some" is sure).
        let metrics = app.get("/metrics", "").await.text;
        // The value of one series (name and labels, as Prometheus' text format writes them).
        let series = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics"))
        };
        let (turns, written) = (
            series("tributary_webhook_batch_deliveries_count"),
            series("tributary_webhook_batch_deliveries_sum"),
        );
        assert!(written > turns, "no turn wrote two deliveries: {written} in {turns} turns");
        // Each turn's phases are timed in order, so (whatever other tests run meanwhile) no
        // phase has more samples than the one before it, and this storm committed some turns.
        let phases: Vec<f64> = ["lock", "apply", "spend", "commit"]
            .map(|p| series(&format!("tributary_webhook_turn_seconds_count{{phase=\"{p}\"}}")))
            .to_vec();
        assert!(phases[3] >= 1.0, "no turn committed: {phases:?}");
        assert!(
            phases.windows(2).all(|w| w[0] >= w[1]),
            "turn phases out of order: {phases:?}"
        );
        let _ = writeln_notice(&format!(
            "webhook storm ({backend:?}): {written} deliveries written in {turns} transactions;"
        ));
        let _ = writeln_notice(&format!(
            "webhook storm ({backend:?}): {} deliveries ({unique} events, {duplicates} duplicates) by {CLIENTS} clients in {elapsed:?}, {retried} answered 503 and redelivered",
            unique + duplicates
        ));
        app.stop().await;
    })
    .await;
}

mod webhook_storm {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::storm(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::storm(super::Backend::Postgres).await;
    }
}
