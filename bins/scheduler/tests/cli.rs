//! The `tributary-scheduler` binary as an operator runs it, against the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use tributary_domain::{BusinessId, StripeAccountId};
use tributary_persistence::testing::{Backend, TestDbRef, run, run_unmigrated};
use tributary_persistence::{access, jobs};
use tributary_stripe_sim::{Scale, SimOptions, SimServer};

const BIN: &str = env!("CARGO_BIN_EXE_tributary-scheduler");

fn scheduler(args: &[&str], env: &HashMap<&str, String>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

fn env_for(t: &TestDbRef, sim: &SimServer) -> HashMap<&'static str, String> {
    HashMap::from([
        ("DATABASE_URL", t.url.clone()),
        ("STRIPE_SECRET_KEY", "sk_test_scheduler".to_owned()),
        ("TRIBUTARY__STRIPE__API_BASE", sim.base_url()),
        ("TRIBUTARY__STRIPE__CONNECT_BASE", sim.base_url()),
        (
            "TRIBUTARY__STRIPE__MAX_REQUESTS_PER_SECOND",
            "1000".to_owned(),
        ),
        ("TRIBUTARY__SYNC__LEASE_SECS", "3".to_owned()),
        ("TRIBUTARY__SYNC__CONCURRENCY", "2".to_owned()),
    ])
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn connect_all(t: &TestDbRef, sim: &SimServer) -> Vec<BusinessId> {
    let mut out = Vec::new();
    for (i, acct) in sim.accounts().iter().enumerate() {
        let b = BusinessId::parse(&format!("biz_{i}")).unwrap();
        let account = StripeAccountId::parse(acct).unwrap();
        let conn = access::NewConnection {
            account: &account,
            account_name: None,
            livemode: false,
            scope: "read_write",
        };
        access::connect(&t.db, &b, conn, tributary_persistence::now())
            .await
            .unwrap();
        out.push(b);
    }
    out
}

async fn migrate_applies_the_schema(backend: Backend) {
    run_unmigrated(backend, |t| async move {
        let env = HashMap::from([("DATABASE_URL", t.url.clone())]);
        ok(&scheduler(&["migrate"], &env).output().unwrap());
        // Every table exists: counting rows in each succeeds.
        let backend = t.db.conn().get_database_backend();
        for table in tributary_migrations::TABLES {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            t.db.conn()
                .query_one_raw(Statement::from_string(backend, sql))
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"));
        }
    })
    .await;
}

async fn run_once_syncs_every_connected_business(backend: Backend) {
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 5,
            accounts: 3,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        let businesses = connect_all(&t, &sim).await;
        let env = env_for(&t, &sim);
        let stdout = ok(&scheduler(&["run-once"], &env).output().unwrap());
        assert!(
            stdout.contains("3 queued") && stdout.contains("0 failed"),
            "{stdout}"
        );
        for b in &businesses {
            let (list, total) = jobs::list(&t.db, b, 10, 0).await.unwrap();
            assert_eq!(
                (total, list[0].status.as_str(), list[0].trigger.as_str()),
                (1, jobs::SUCCEEDED, "scheduled")
            );
        }
        // A second round right away finds every business fresh.
        let stdout = ok(&scheduler(&["run-once"], &env).output().unwrap());
        assert!(stdout.contains("0 queued, 3 fresh"), "{stdout}");
        // backfill prints its counts as JSON.
        let out = ok(
            &scheduler(&["backfill", "--business", "biz_0", "--days", "3650"], &env)
                .output()
                .unwrap(),
        );
        let counts: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(counts["status"], "succeeded");
        assert!(
            counts["customers_upserted"].as_u64().unwrap() > 0,
            "{counts}"
        );
        assert_eq!(counts["customers_created"], 0, "already mirrored: {counts}");
        // audit finds the mirror exact.
        let out = ok(&scheduler(&["audit", "--business", "biz_1"], &env)
            .output()
            .unwrap());
        assert!(out.contains("\"differences\": []"), "{out}");
        // A failing business makes the exit status non-zero.
        let http = reqwest::Client::new();
        http.post(format!(
            "{}/_sim/accounts/{}/revoke",
            sim.base_url(),
            sim.accounts()[2]
        ))
        .send()
        .await
        .unwrap();
        let out = scheduler(&["sync", "--business", "biz_2"], &env)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("access_revoked"));
    })
    .await;
}

/// SIGKILL a syncing process at several points, then let one run to the end: the mirror is
/// exact, nothing is duplicated (the primary keys would refuse it), and the dead lease is
/// taken over.
async fn killed_syncs_resume_exactly(backend: Backend) {
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 8,
            accounts: 1,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        let businesses = connect_all(&t, &sim).await;
        let mut env = env_for(&t, &sim);
        // Slow Stripe down so the kills land mid-sync.
        let http = reqwest::Client::new();
        http.post(format!("{}/_sim/faults", sim.base_url()))
            .json(&serde_json::json!({"latency_ms": 40}))
            .send()
            .await
            .unwrap();
        env.insert(
            "TRIBUTARY__STRIPE__MAX_REQUESTS_PER_SECOND",
            "50".to_owned(),
        );
        let mut interrupted = 0;
        let mut last_owner: Option<String> = None;
        for delay_ms in [0u64, 100, 250] {
            let mut child = scheduler(&["sync", "--business", "biz_0", "--full"], &env)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Wait until this process holds the job (after the lease of the one killed before
            // it expired), then kill it a little later.
            for _ in 0..1000 {
                let job = jobs::active_job(&t.db, &businesses[0]).await.unwrap();
                if let Some(j) = job
                    && j.status == jobs::RUNNING
                    && j.lease_owner.is_some()
                    && j.lease_owner != last_owner
                {
                    last_owner = j.lease_owner;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            // Killed mid-run: its job is left running under a lease nobody renews.
            if jobs::active_job(&t.db, &businesses[0])
                .await
                .unwrap()
                .is_some()
            {
                interrupted += 1;
            }
        }
        assert!(
            interrupted >= 2,
            "only {interrupted} of 3 kills landed mid-sync"
        );
        http.post(format!("{}/_sim/faults", sim.base_url()))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        ok(&scheduler(&["sync", "--business", "biz_0"], &env)
            .output()
            .unwrap());
        let out = ok(&scheduler(&["audit", "--business", "biz_0"], &env)
            .output()
            .unwrap());
        assert!(out.contains("\"differences\": []"), "{out}");
        let (list, _) = jobs::list(&t.db, &businesses[0], 10, 0).await.unwrap();
        assert_eq!(list[0].status, jobs::SUCCEEDED);
    })
    .await;
}

mod migrate {
    #[tokio::test]
    async fn sqlite() {
        super::migrate_applies_the_schema(super::Backend::Sqlite).await;
    }
    #[tokio::test]
    async fn postgres() {
        super::migrate_applies_the_schema(super::Backend::Postgres).await;
    }
}

mod run_once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::run_once_syncs_every_connected_business(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::run_once_syncs_every_connected_business(super::Backend::Postgres).await;
    }
}

mod sigkill {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::killed_syncs_resume_exactly(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::killed_syncs_resume_exactly(super::Backend::Postgres).await;
    }
}

/// Three scheduler processes on one PostgreSQL database share twelve businesses: each is
/// synced exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_share_twelve_businesses_on_postgres() {
    run(Backend::Postgres, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 12,
            accounts: 12,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        let businesses = connect_all(&t, &sim).await;
        let env = env_for(&t, &sim);
        let children: Vec<_> = (0..3)
            .map(|_| {
                scheduler(&["run-once"], &env)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ran_here = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = ok(&out);
            ran_here += stdout.lines().filter(|l| l.contains(" succeeded ")).count();
        }
        assert_eq!(
            ran_here, 12,
            "twelve syncs in all across the three processes"
        );
        for b in &businesses {
            let (list, total) = jobs::list(&t.db, b, 10, 0).await.unwrap();
            assert_eq!(total, 1, "{b} synced {total} times");
            assert_eq!(list[0].status, jobs::SUCCEEDED);
        }
    })
    .await;
}

#[test]
fn help_lists_every_subcommand() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "run-once", "daemon", "sync", "backfill", "audit", "verify", "migrate",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}

/// `verify` recomputes the spend read model from the mirror: consistent after a sync; after a
/// stored row is tampered with, exit status 1 and that one difference named.
async fn verify_reports_read_model_drift(backend: Backend) {
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 5,
            accounts: 1,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        connect_all(&t, &sim).await;
        let env = env_for(&t, &sim);
        ok(&scheduler(&["sync", "--business", "biz_0"], &env)
            .output()
            .unwrap());
        let out = ok(&scheduler(&["verify", "--business", "biz_0"], &env)
            .output()
            .unwrap());
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["differences"], serde_json::json!([]), "{report}");
        assert!(report["expected_rows"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["expected_rows"], report["stored_rows"]);
        let conn = t.db.conn();
        conn.execute_raw(Statement::from_string(
            conn.get_database_backend(),
            "UPDATE customer_spend SET net = net + 1 WHERE business_id = 'biz_0' AND is_primary \
             AND email = (SELECT MIN(email) FROM customer_spend WHERE business_id = 'biz_0')",
        ))
        .await
        .unwrap();
        let out = scheduler(&["verify", "--business", "biz_0"], &env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report["differences"].as_array().map(Vec::len),
            Some(1),
            "{report}"
        );
    })
    .await;
}

mod verify {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::verify_reports_read_model_drift(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::verify_reports_read_model_drift(super::Backend::Postgres).await;
    }
}

#[path = "cli/secrets.rs"]
mod secrets;

#[path = "cli/faults.rs"]
mod faults;
