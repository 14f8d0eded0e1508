//! `tributary-api` under a signal and under load (docs/security.md, "Faults and load"):
//!
//! - SIGTERM while its worker pool runs a sync: the process exits 0, the job is handed back
//!   (`queued`, unleased), and the next start resumes it to an exact mirror;
//! - a soak: reads of statuses, contacts and dashboards, signed webhooks with duplicates and
//!   manual sync triggers against the real binary, with `tributary-scheduler daemon` syncing the
//!   same database, for `TRIBUTARY_SOAK_SECS` (default 20; `just soak` runs 600). Only the
//!   expected answers come back, no job fails, and the API's resident memory stays flat.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_domain::{BusinessId, StripeAccountId};
use tributary_persistence::testing::{Backend, TestDbRef, run};
use tributary_persistence::{access, jobs};
use tributary_stripe_connect::{Stripe, StripeConfig};
use tributary_stripe_sim::{Scale, SimOptions, SimServer};
use tributary_sync::{SyncConfig, SyncContext};
use tributary_web::auth::{Claims, Portal};

use super::*;

const JWT_SECRET: &str = "load-test-jwt-secret-0123456789";
const HOOK_SECRET: &str = "whsec_load_test_connect_secret";
const PLATFORM_KEY: &str = "sk_test_load_tests";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token(businesses: &[String]) -> String {
    Claims {
        sub: "load-test".into(),
        exp: now() + 3_600,
        portal: Some(Portal::Agency),
        businesses: businesses.to_vec(),
        admin: false,
    }
    .sign(&SecretString::from(JWT_SECRET))
    .unwrap()
}

fn env_for(t: &TestDbRef, sim: &SimServer) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", t.url.clone()),
        ("STRIPE_SECRET_KEY", PLATFORM_KEY.to_owned()),
        ("TRIBUTARY__STRIPE__API_BASE", sim.base_url()),
        ("TRIBUTARY__STRIPE__CONNECT_BASE", sim.base_url()),
        (
            "TRIBUTARY__STRIPE__CONNECT_WEBHOOK_SECRET",
            HOOK_SECRET.into(),
        ),
        ("TRIBUTARY__STRIPE__MAX_REQUESTS_PER_SECOND", "1000".into()),
        ("TRIBUTARY__AUTH__JWT_SECRET", JWT_SECRET.into()),
        ("TRIBUTARY__SYNC__LEASE_SECS", "5".into()),
        ("TRIBUTARY__SYNC__CONCURRENCY", "2".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

fn set(env: &mut Vec<(&'static str, String)>, key: &'static str, value: &str) {
    env.retain(|(k, _)| *k != key);
    env.push((key, value.to_owned()));
}

/// A child process that is killed if the test fails before stopping it.
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts a binary with a clean environment (only `PATH` and `env`), its output dropped.
fn start(bin: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Proc(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display())),
    )
}

/// `tributary-scheduler`, built next to `tributary-api` by `cargo test --workspace` (CI).
/// `None` (with a notice) when it is not there, unless `CI=true`.
fn scheduler_bin() -> Option<PathBuf> {
    let bin = std::path::Path::new(BIN).with_file_name("tributary-scheduler");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: the soak needs {} (cargo test --workspace builds it)",
        bin.display()
    );
    tributary_persistence::testing::notice(&format!(
        "NOTICE: API soak SKIPPED: {} is not built (cargo build -p tributary-scheduler)",
        bin.display()
    ));
    None
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

/// Waits for the child to exit; a deadlock guard, not a timing assertion.
async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the process did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the API at `base` answers `/healthz`.
async fn wait_healthy(http: &reqwest::Client, base: &str, child: &mut Child) {
    for _ in 0..1_000 {
        if let Ok(res) = http.get(format!("{base}/healthz")).send().await
            && res.status().is_success()
        {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the API exited at start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the API did not start");
}

/// Connects one business per simulator account, as the OAuth callback would.
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

fn stripe(sim: &SimServer) -> Stripe {
    Stripe::new(StripeConfig {
        api_base: sim.base_url(),
        connect_base: sim.base_url(),
        max_requests_per_second: 1000,
        ..StripeConfig::new(SecretString::from(PLATFORM_KEY))
    })
    .unwrap()
}

async fn assert_exact(t: &TestDbRef, sim: &SimServer, business: &BusinessId, acct: &str) {
    let stripe = stripe(sim);
    let ctx = SyncContext::new(t.db.clone(), stripe.clone(), SyncConfig::default());
    let audit = tributary_sync::audit::audit(&ctx, business, &stripe.account(acct).unwrap())
        .await
        .unwrap();
    assert!(audit.is_exact(), "{business}: {:#?}", audit.differences);
}

async fn sim_post(http: &reqwest::Client, sim: &SimServer, path: &str, body: Value) {
    let res = http
        .post(format!("{}{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
}

// ---------------------------------------------------------------------------------------
// SIGTERM while the worker pool syncs
// ---------------------------------------------------------------------------------------

async fn sigterm_mid_sync_releases_the_job(backend: Backend) {
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 31,
            accounts: 1,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        let business = connect_all(&t, &sim).await.remove(0);
        let http = reqwest::Client::new();
        // Slow Stripe down so the signal lands mid-sync.
        sim_post(&http, &sim, "/_sim/faults", json!({"latency_ms": 300})).await;
        let mut env = env_for(&t, &sim);
        // A long lease: had the process left the job leased, the next start could not take
        // it for a minute.
        set(&mut env, "TRIBUTARY__SYNC__LEASE_SECS", "60");
        set(&mut env, "TRIBUTARY__STRIPE__MAX_REQUESTS_PER_SECOND", "4");
        let port = free_port().to_string();
        let base = format!("http://127.0.0.1:{port}");
        let mut api = start(std::path::Path::new(BIN), &["serve", "--port", &port], &env);
        wait_healthy(&http, &base, &mut api).await;
        // Concurrent reads first, so the pool's connections are opened by actix's worker
        // threads: a sync that outlives those threads' runtimes at shutdown then fails with
        // `database` ("the Tokio context is being shutdown") instead of being released.
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (http, url) = (http.clone(), format!("{base}/readyz"));
            reads.spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) });
        }
        while let Some(status) = reads.join_next().await {
            assert!(matches!(status.unwrap(), Ok(200)), "/readyz under load");
        }
        // Queued through the route, as a person's manual sync is.
        let res = http
            .post(format!("{base}/api/stripe/{business}/sync"))
            .bearer_auth(token(&[business.to_string()]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202, "manual sync trigger");
        let job = jobs::list(&t.db, &business, 1, 0)
            .await
            .unwrap()
            .0
            .remove(0);
        loop {
            let j = jobs::get(&t.db, &business, &job.id).await.unwrap().unwrap();
            if j.status == jobs::RUNNING
                && j.progress
                    .as_object()
                    .is_some_and(|p| p.values().any(|r| r["written"].as_u64() > Some(0)))
            {
                break;
            }
            assert!(api.try_wait().unwrap().is_none(), "the API exited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sigterm(&api);
        let status = wait_exit(&mut api).await;
        assert!(
            status.success(),
            "tributary-api exited {status} after SIGTERM"
        );
        let after = jobs::get(&t.db, &business, &job.id).await.unwrap().unwrap();
        assert_eq!(
            (after.status.as_str(), after.lease_owner.as_deref()),
            (jobs::QUEUED, None),
            "released, not left running under a live lease: {after:?}"
        );

        // The next start takes the released job over at once and finishes it exactly.
        sim_post(&http, &sim, "/_sim/faults", json!({})).await;
        let mut api = start(std::path::Path::new(BIN), &["serve", "--port", &port], &env);
        loop {
            let j = jobs::get(&t.db, &business, &job.id).await.unwrap().unwrap();
            if j.status == jobs::SUCCEEDED || j.status == jobs::FAILED {
                assert_eq!(j.status, jobs::SUCCEEDED, "{j:?}");
                break;
            }
            assert!(api.try_wait().unwrap().is_none(), "the API exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sigterm(&api);
        assert!(wait_exit(&mut api).await.success());
        let (_, total) = jobs::list(&t.db, &business, 10, 0).await.unwrap();
        assert_eq!(total, 1, "the released job itself was resumed");
        assert_exact(&t, &sim, &business, &sim.accounts()[0]).await;
    })
    .await;
}

mod sigterm_worker_pool {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::sigterm_mid_sync_releases_the_job(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::sigterm_mid_sync_releases_the_job(super::Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn soak_secs() -> u64 {
    std::env::var("TRIBUTARY_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// What the load saw: answers by kind and status.
#[derive(Default)]
struct Tally {
    answers: BTreeMap<(String, u16), u64>,
    unexpected: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: &str, status: u16, expected: &[u16], detail: &str) {
        *self.answers.entry((kind.to_owned(), status)).or_default() += 1;
        if !expected.contains(&status) {
            self.unexpected.push(format!("{kind}: {status} {detail}"));
        }
    }
}

type Shared = Arc<std::sync::Mutex<Tally>>;

async fn read_load(
    base: String,
    businesses: Vec<String>,
    token: String,
    stop: Arc<AtomicBool>,
    tally: Shared,
    worker: usize,
) {
    let http = reqwest::Client::new();
    let mut i = worker;
    while !stop.load(Ordering::Relaxed) {
        let b = &businesses[i % businesses.len()];
        let (kind, path) = match i % 6 {
            0 => ("status", format!("/api/stripe/{b}/status")),
            1 => (
                "contacts",
                format!("/api/contacts/stripe-customers?businessId={b}&per_page=50"),
            ),
            2 => ("revenue", format!("/api/businesses/{b}/revenue")),
            3 => ("retention", format!("/api/businesses/{b}/retention")),
            4 => ("acquisition", format!("/api/businesses/{b}/acquisition")),
            _ => ("sync-jobs", format!("/api/stripe/{b}/sync-jobs")),
        };
        i += 1;
        let res = http
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await;
        let (status, text) = match res {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        tally.lock().unwrap().record(kind, status, &[200], &text);
    }
}

async fn trigger_load(
    base: String,
    businesses: Vec<String>,
    token: String,
    stop: Arc<AtomicBool>,
    tally: Shared,
) {
    let http = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let b = &businesses[i % businesses.len()];
        i += 1;
        let res = http
            .post(format!("{base}/api/stripe/{b}/sync"))
            .bearer_auth(&token)
            .send()
            .await;
        let (status, text) = match res {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        tally
            .lock()
            .unwrap()
            .record("sync trigger", status, &[202], &text);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// Changes at Stripe, delivered as signed webhooks (each event twice: a duplicate).
async fn webhook_load(
    base: String,
    sim_base: String,
    stripe: Stripe,
    accounts: Vec<String>,
    stop: Arc<AtomicBool>,
    tally: Shared,
) {
    let http = reqwest::Client::new();
    // A fresh connection per change: reusing an idle one the simulator is closing at that
    // moment (its keep-alive ran out) fails the request with `IncompleteMessage` (seen once in
    // a 10-minute run), and a change is not safe to send twice.
    let sim = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut seen: Vec<HashSet<String>> = Vec::new();
    for acct in &accounts {
        seen.push(event_ids(&stripe, acct).await);
    }
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let a = (round as usize) % accounts.len();
        let acct = &accounts[a];
        round += 1;
        let res = sim
            .post(format!("{sim_base}/_sim/accounts/{acct}/mutate"))
            .json(&json!({"count": 2, "seed": round}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        let events: Vec<Value> = stripe
            .account(acct)
            .unwrap()
            .list::<Value>("/v1/events")
            .collect_all()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.raw)
            .filter(|e| !seen[a].contains(e["id"].as_str().unwrap()))
            .collect();
        for mut e in events {
            seen[a].insert(e["id"].as_str().unwrap().to_owned());
            e["account"] = json!(acct);
            let body = e.to_string();
            for _ in 0..2 {
                // A `503` (the delivery could not finish within 10 s, on a machine the build
                // shares) is Stripe's cue to deliver again: so do we, and the retry must land.
                for attempt in 0..5 {
                    let signature =
                        tributary_stripe_connect::sign_payload(body.as_bytes(), HOOK_SECRET, now());
                    let res = http
                        .post(format!("{base}/api/webhooks/stripe/connect"))
                        .header("Content-Type", "application/json")
                        .header("Stripe-Signature", signature)
                        .body(body.clone())
                        .send()
                        .await;
                    let (status, text) = match res {
                        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                        Err(e) => (0, e.to_string()),
                    };
                    let retry = status == 503 && attempt < 4;
                    let (kind, expected): (&str, &[u16]) = if retry {
                        ("webhook 503, redelivered", &[503])
                    } else {
                        ("webhook", &[200])
                    };
                    tally.lock().unwrap().record(kind, status, expected, &text);
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn event_ids(stripe: &Stripe, acct: &str) -> HashSet<String> {
    stripe
        .account(acct)
        .unwrap()
        .list::<Value>("/v1/events")
        .collect_all()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|i| i.raw["id"].as_str().map(str::to_owned))
        .collect()
}

fn average(samples: &[u64]) -> f64 {
    samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64
}

async fn soak(backend: Backend) {
    let Some(scheduler) = scheduler_bin() else {
        return;
    };
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 41,
            accounts: 2,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        let businesses: Vec<String> = connect_all(&t, &sim)
            .await
            .iter()
            .map(|b| b.as_str().to_owned())
            .collect();
        let env = env_for(&t, &sim);
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut api = start(
            std::path::Path::new(BIN),
            &["serve", "--port", &port.to_string()],
            &env,
        );
        let http = reqwest::Client::new();
        wait_healthy(&http, &base, &mut api).await;
        // A round every 2 s: scheduled syncs run all along.
        let mut daemon = start(&scheduler, &["daemon", "--every", "2s"], &env);
        let token = token(&businesses);
        for b in &businesses {
            loop {
                let id = BusinessId::parse(b).unwrap();
                if jobs::latest_with_status(&t.db, &id, jobs::SUCCEEDED)
                    .await
                    .unwrap()
                    .is_some()
                {
                    break;
                }
                assert!(daemon.try_wait().unwrap().is_none(), "the scheduler exited");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let tally: Shared = Arc::default();
        let mut load = tokio::task::JoinSet::new();
        for worker in 0..6 {
            load.spawn(read_load(
                base.clone(),
                businesses.clone(),
                token.clone(),
                stop.clone(),
                tally.clone(),
                worker,
            ));
        }
        load.spawn(trigger_load(
            base.clone(),
            businesses.clone(),
            token.clone(),
            stop.clone(),
            tally.clone(),
        ));
        load.spawn(webhook_load(
            base.clone(),
            sim.base_url(),
            stripe(&sim),
            sim.accounts().to_vec(),
            stop.clone(),
            tally.clone(),
        ));
        let secs = soak_secs();
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(secs) {
            samples.push(rss_kib(api.id()).expect("the API is running"));
            assert!(daemon.try_wait().unwrap().is_none(), "the scheduler exited");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stop.store(true, Ordering::Relaxed);
        while let Some(done) = load.join_next().await {
            done.unwrap();
        }

        let tally = std::mem::take(&mut *tally.lock().unwrap());
        assert!(
            tally.unexpected.is_empty(),
            "{} unexpected answers (of {:?}): {:?}",
            tally.unexpected.len(),
            tally.answers,
            &tally.unexpected[..tally.unexpected.len().min(20)]
        );
        for kind in ["status", "contacts", "revenue", "webhook", "sync trigger"] {
            assert!(
                tally.answers.keys().any(|(k, _)| k == kind),
                "no {kind} request ran: {:?}",
                tally.answers
            );
        }
        // Memory is flat: the last third of the run holds no more than the first third, give
        // or take allocator noise (a growth check; it says nothing of speed).
        let third = samples.len() / 3;
        let (first, last) = (
            average(&samples[..third]),
            average(&samples[samples.len() - third..]),
        );
        assert!(
            last <= first * 1.5 + 16.0 * 1024.0,
            "RSS grew from {first:.0} KiB to {last:.0} KiB: {samples:?}"
        );

        // Both processes stop cleanly, and nothing failed on the way (a sync running at the
        // signal is released, not failed).
        sigterm(&daemon);
        sigterm(&api);
        assert!(wait_exit(&mut daemon).await.success(), "the scheduler's exit");
        assert!(wait_exit(&mut api).await.success(), "the API's exit");
        let mut runs = 0;
        for b in &businesses {
            let id = BusinessId::parse(b).unwrap();
            let (list, total) = jobs::list(&t.db, &id, 10_000, 0).await.unwrap();
            runs += total;
            let failed: Vec<_> = list
                .iter()
                .filter(|j| j.status == jobs::FAILED)
                .map(|j| (&j.trigger, &j.error_code, &j.error_message))
                .collect();
            assert!(failed.is_empty(), "{b}: failed jobs {failed:?}");
        }
        // A last sync, then every mirror is exact.
        let stripe = stripe(&sim);
        let ctx = SyncContext::new(t.db.clone(), stripe.clone(), SyncConfig::default());
        for (b, acct) in businesses.iter().zip(sim.accounts()) {
            let id = BusinessId::parse(b).unwrap();
            let report = tributary_sync::fetch_stripe_data(&ctx, &id, tributary_sync::Trigger::Manual)
                .await
                .unwrap();
            assert!(report.succeeded(), "{report:?}");
            assert_exact(&t, &sim, &id, &acct).await;
        }
        tributary_persistence::testing::notice(&format!(
            "API soak ({backend:?}, {secs} s): {} requests, {runs} sync jobs, RSS {:.1} → {:.1} MiB (first/last third), answers {:?}",
            tally.answers.values().sum::<u64>(),
            first / 1024.0,
            last / 1024.0,
            tally.answers
        ));
    })
    .await;
}

mod soak {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::soak(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::soak(super::Backend::Postgres).await;
    }
}
