//! Database faults under a running API (docs/security.md, "Faults and load"): a private
//! PostgreSQL server stopped and started again in the middle of a sync and of a webhook burst,
//! and SQLite's write lock held by another connection. Whatever fails answers non-2xx or fails
//! its job, nothing is half-written, and a retry (Stripe's redelivery, the next sync) leaves
//! the mirror exact with every event recorded once.

use std::collections::HashSet;

use futures::StreamExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use secrecy::SecretString;
use tributary_persistence::sea_orm::EntityTrait;
use tributary_persistence::testing::cluster::{PgCluster, StopMode};
use tributary_persistence::testing::{Backend, TestDb};
use tributary_stripe_connect::{Stripe, StripeConfig, sign_payload};
use tributary_sync::{SyncConfig, SyncContext};

use super::*;

pub(crate) const CONNECT_HOOK: &str = "/api/webhooks/stripe/connect";
pub(crate) const HOOK_SECRET: &str = "whsec_faults_connect_secret";
const PLATFORM_KEY: &str = "sk_test_tributary_api_tests";

/// A migrated database on a private PostgreSQL server the test may stop.
struct Private {
    cluster: PgCluster,
    db: TestDb,
}

impl Private {
    async fn start() -> Option<Private> {
        let cluster = PgCluster::start()?;
        let db = cluster.test_db().await;
        Some(Private { cluster, db })
    }

    fn handle(&self) -> TestDbRef {
        TestDbRef {
            db: self.db.db.clone(),
            url: self.db.url.clone(),
            backend: Backend::Postgres,
        }
    }

    async fn cleanup(self) {
        self.db.cleanup().await;
        drop(self.cluster);
    }
}

/// The app with the Connect webhook secret, a short lease and a generous Stripe budget.
pub(crate) async fn spawn_app(t: &TestDbRef, accounts: usize) -> TestApp {
    TestApp::spawn_configured(
        t,
        Opts {
            workers: true,
            scale: Scale::Small,
            accounts,
            ..Opts::default()
        },
        |s| {
            s.stripe.connect_webhook_secret = Some(String::from(HOOK_SECRET).into());
            s.stripe.max_requests_per_second = 1000;
            s.sync.lease_secs = 3;
        },
    )
    .await
}

impl TestApp {
    pub(crate) fn sim_stripe(&self) -> Stripe {
        Stripe::new(StripeConfig {
            api_base: self.sim.base_url(),
            connect_base: self.sim.base_url(),
            max_requests_per_second: 1000,
            ..StripeConfig::new(SecretString::from(PLATFORM_KEY))
        })
        .unwrap()
    }

    /// Every event id the account has now.
    pub(crate) async fn event_ids(&self, acct: &str) -> HashSet<String> {
        self.account_events(acct, &HashSet::new())
            .await
            .into_iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The account's events not in `before`, as the Connect endpoint receives them.
    pub(crate) async fn account_events(&self, acct: &str, before: &HashSet<String>) -> Vec<Value> {
        self.sim_stripe()
            .account(acct)
            .unwrap()
            .list::<Value>("/v1/events")
            .collect_all()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.raw)
            .filter(|e| !before.contains(e["id"].as_str().unwrap()))
            .map(|mut e| {
                e["account"] = json!(acct);
                e
            })
            .collect()
    }

    /// Delivers one event body signed now; the status, or `None` when no answer came.
    pub(crate) async fn deliver_body(&self, body: &str) -> Option<StatusCode> {
        let signature = sign_payload(body.as_bytes(), HOOK_SECRET, now());
        self.http
            .post(format!("{}{CONNECT_HOOK}", self.base))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    pub(crate) async fn audit(&self, business: &str, acct: &str) -> tributary_sync::audit::Audit {
        let stripe = self.sim_stripe();
        let ctx = SyncContext::new(self.db.clone(), stripe.clone(), SyncConfig::default());
        tributary_sync::audit::audit(&ctx, &biz(business), &stripe.account(acct).unwrap())
            .await
            .unwrap()
    }
}

/// Every recorded `(endpoint, event_id)` of the Connect endpoint, and how often each event id
/// appears.
pub(crate) async fn recorded_ids(db: &Database) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for row in webhook_events::Entity::find().all(db.conn()).await.unwrap() {
        *out.entry(row.event_id).or_insert(0) += 1;
    }
    out
}

/// Waits (polling the database directly) until `f` holds for the business's newest job.
pub(crate) async fn wait_job(
    db: &Database,
    business: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (list, _) = jobs::list(db, &biz(business), 1, 0).await.unwrap();
        if let Some(job) = list.first() {
            let v = json!({
                "id": job.id, "status": job.status, "progress": job.progress,
                "error_code": job.error_code, "lease_owner": job.lease_owner,
                "lease_expires_at": job.lease_expires_at,
            });
            if f(&v) {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects `biz-a` to `acct` behind `latency_ms` of Stripe latency, so that its first sync
/// is still running once its first pages are written; returns the job as it is then.
async fn first_sync_under_way(app: &TestApp, db: &Database, acct: &str, latency_ms: u64) -> Value {
    app.sim_control("/_sim/faults", json!({ "latency_ms": latency_ms }))
        .await;
    assert_eq!(app.connect("biz-a", acct).await["stripe"], "connected");
    wait_job(db, "biz-a", "first pages written", |j| {
        j["status"] == "running" && written(j) > 0
    })
    .await
}

/// `job` once it has ended, `succeeded` or `failed`.
async fn job_ended(db: &Database, job: &Value) -> Value {
    wait_job(db, "biz-a", "the job ends", |j| {
        j["id"] == job["id"] && (j["status"] == "succeeded" || j["status"] == "failed")
    })
    .await
}

pub(crate) fn written(job: &Value) -> u64 {
    job["progress"]
        .as_object()
        .map(|p| p.values().filter_map(|r| r["written"].as_u64()).sum())
        .unwrap_or(0)
}

/// PostgreSQL killed (`-m immediate`, as a crash) while the API's worker pool runs a first
/// sync, and webhooks arriving while it is down: the deliveries answer `503`, the job ends
/// once the server is back (never left running, never `succeeded` over pages the crash may
/// have lost), the next sync is exact, and the redelivered events are each recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_sync_then_restarted() {
    let Some(private) = Private::start().await else {
        return;
    };
    let t = private.handle();
    let app = spawn_app(&t, 1).await;
    let acct = app.account(0);
    let before_events = app.event_ids(&acct).await;
    // Slow Stripe down so the sync is still running when the database goes: a resource
    // requests its next page while it writes one, so after the first pages are written the
    // rest of a small account is a request or two away.
    let job = first_sync_under_way(&app, &t.db, &acct, 250).await;

    private.cluster.stop(StopMode::Immediate);
    let down = std::time::Instant::now();
    app.sim_control("/_sim/faults", json!({})).await;
    // Changes happen at Stripe meanwhile; their webhooks find no database.
    app.sim_control(
        &format!("/_sim/accounts/{acct}/mutate"),
        json!({"count": 8, "seed": 3}),
    )
    .await;
    let events = app.account_events(&acct, &before_events).await;
    assert!(events.len() >= 8, "{} events", events.len());
    let bodies: Vec<String> = events.iter().map(Value::to_string).collect();
    let answers: Vec<Option<StatusCode>> = futures::stream::iter(bodies.iter())
        .map(|b| app.deliver_body(b))
        .buffer_unordered(64)
        .collect()
        .await;
    // 503: Stripe retries; answered within the delivery bound, not after the pool's 30 s.
    assert!(
        answers
            .iter()
            .all(|s| *s == Some(StatusCode::SERVICE_UNAVAILABLE)),
        "no delivery may succeed without a database: {answers:?}"
    );
    let ready = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    let outage = down.elapsed();
    let restarted_at = tributary_persistence::now();
    private.cluster.start_server();

    // The interrupted job ends on its own: never left running.
    let ended = job_ended(&t.db, &job).await;
    // Pages committed just before the crash (without waiting for their WAL flush) may be
    // lost, so the interrupted run must not advance its cursors. It fails with `database`,
    // whether a statement was cut off or it reconnected and went on (its unlogged
    // `sync_canaries` row is gone). When its end could not be recorded either (the server
    // was down), the job stays leased until the lease expires and a worker takes it over: a
    // run from the start, whose canary was planted after the restart.
    match (ended["status"].as_str(), ended["error_code"].as_str()) {
        (Some("failed"), Some("database")) => {}
        (Some("succeeded"), None) => {
            let planted = canary_planted_at(&t.db, ended["id"].as_str().unwrap()).await;
            assert!(
                planted.is_some_and(|at| at >= restarted_at),
                "a job may succeed only by a run started after the restart: canary {planted:?}, \
                 restarted at {restarted_at}: {ended}"
            );
        }
        _ => panic!("the interrupted job must fail with `database` or be run again: {ended}"),
    }
    assert!(
        jobs::active_job(&t.db, &biz("biz-a"))
            .await
            .unwrap()
            .is_none(),
        "no job left queued or running"
    );

    // Stripe redelivers: every event is accepted once.
    for body in &bodies {
        assert_eq!(app.deliver_body(body).await, Some(StatusCode::OK));
    }
    let next = app.sync_and_wait("biz-a", "").await;
    let audit = app.audit("biz-a", &acct).await;
    assert!(
        audit.is_exact(),
        "after the interrupted job {ended} and {next}: {:#?}",
        audit.differences
    );
    let recorded = recorded_ids(&app.db).await;
    for e in &events {
        assert_eq!(
            recorded.get(e["id"].as_str().unwrap()),
            Some(&1),
            "{}",
            e["id"]
        );
    }
    let _ = writeln_notice(&format!(
        "postgres_killed_mid_sync_then_restarted: first job {} ({}), outage {outage:?}",
        ended["status"], ended["error_code"]
    ));
    app.stop().await;
    private.cleanup().await;
}

/// The canary a run plants survives a clean restart (`-m fast`) and is gone after a crash
/// (`-m immediate`): the check that fails a run which reconnected and went on over pages the
/// crash may have lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_kills_the_canary_and_a_clean_restart_keeps_it() {
    let Some(private) = Private::start().await else {
        return;
    };
    let db = &private.db.db;
    let (job, owner) = ("job-canary", "worker-canary");
    jobs::plant_canary(db, &biz("biz-a"), job, owner, tributary_persistence::now())
        .await
        .unwrap();
    assert!(jobs::canary_alive(db.conn(), job, owner).await.unwrap());
    assert!(
        !jobs::canary_alive(db.conn(), job, "worker-other")
            .await
            .unwrap(),
        "a canary is its owner's"
    );

    let alive_after = |mode: StopMode| {
        let cluster = &private.cluster;
        async move {
            tokio::task::block_in_place(|| {
                cluster.stop(mode);
                cluster.start_server();
            });
            // The pool's connections died with the server: the first statements may fail
            // before the pool has replaced them.
            for _ in 0..50 {
                if let Ok(alive) = jobs::canary_alive(db.conn(), job, owner).await {
                    return alive;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the server did not come back")
        }
    };
    assert!(
        alive_after(StopMode::Fast).await,
        "a clean restart keeps it"
    );
    assert!(
        !alive_after(StopMode::Immediate).await,
        "a crash empties it"
    );
    private.cleanup().await;
}

/// A run whose canary disappears while it runs (as a crash empties the unlogged table while
/// the run, reconnected, goes on) fails with `database` in its last transaction instead of
/// advancing its cursors, and the next sync is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_canary_is_gone_fails_and_keeps_its_cursors() {
    let Some(private) = Private::start().await else {
        return;
    };
    let t = private.handle();
    let app = spawn_app(&t, 1).await;
    let acct = app.account(0);
    // Slow enough that the run is still listing when its canary goes.
    let job = first_sync_under_way(&app, &t.db, &acct, 500).await;
    let gone =
        t.db.conn()
            .execute_raw(Statement::from_string(
                DbBackend::Postgres,
                "DELETE FROM sync_canaries",
            ))
            .await
            .unwrap();
    assert_eq!(gone.rows_affected(), 1, "the running job's canary: {job}");
    app.sim_control("/_sim/faults", json!({})).await;
    let ended = job_ended(&t.db, &job).await;
    assert_eq!(
        (ended["status"].as_str(), ended["error_code"].as_str()),
        (Some("failed"), Some("database")),
        "{ended}"
    );
    let cursors = tributary_persistence::entities::sync_cursors::Entity::find()
        .all(t.db.conn())
        .await
        .unwrap();
    assert!(
        cursors.iter().all(|c| c.last_successful_date.is_none()),
        "no cursor may advance: {cursors:?}"
    );

    let next = app.sync_and_wait("biz-a", "").await;
    let audit = app.audit("biz-a", &acct).await;
    assert!(audit.is_exact(), "after {next}: {:#?}", audit.differences);
    app.stop().await;
    private.cleanup().await;
}

/// When the run of `job_id` planted its canary, if the row is there.
async fn canary_planted_at(db: &Database, job_id: &str) -> Option<i64> {
    let row = db
        .conn()
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT created_at FROM sync_canaries WHERE job_id = $1",
            [job_id.into()],
        ))
        .await
        .unwrap()?;
    Some(row.try_get::<i64>("", "created_at").unwrap())
}

pub(crate) fn writeln_notice(msg: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stderr(), "{msg}")
}

/// PostgreSQL stopped (`-m fast`) while 16 clients deliver a shuffled burst of events with
/// same-second ties, and started again while the burst goes on: deliveries that were cut off
/// answer non-2xx; redelivering exactly those (as Stripe does) leaves the mirror exact, and
/// every event is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_webhook_burst() {
    let Some(private) = Private::start().await else {
        return;
    };
    let t = private.handle();
    let app = spawn_app(&t, 1).await;
    let acct = app.account(0);
    app.connect_and_sync("biz-a", &acct).await;
    let before = app.event_ids(&acct).await;
    app.sim_control(
        &format!("/_sim/accounts/{acct}/mutate"),
        json!({"count": 150, "seed": 21}),
    )
    .await;
    let c = now();
    app.sim_control(
        &format!("/_sim/accounts/{acct}/objects"),
        json!(
            ["a", "b", "c"].map(|x| json!({"id": "cus_fault_tie", "object": "customer",
            "email": format!("tie-{x}@example.com"), "created": c, "livemode": false,
            "metadata": {}}))
        ),
    )
    .await;
    let mut events = app.account_events(&acct, &before).await;
    assert!(events.len() >= 150, "{} events", events.len());
    events.shuffle(&mut rand::rngs::StdRng::seed_from_u64(5));
    let bodies: Vec<String> = events.iter().map(Value::to_string).collect();

    let answered = std::sync::atomic::AtomicUsize::new(0);
    let stop_after = bodies.len() / 3;
    let cluster = &private.cluster;
    let burst = futures::stream::iter(bodies.iter().enumerate())
        .map(|(i, b)| {
            let answered = &answered;
            let app = &app;
            async move {
                let status = app.deliver_body(b).await;
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (i, status)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let outage = async {
        while answered.load(std::sync::atomic::Ordering::SeqCst) < stop_after {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::task::block_in_place(|| cluster.stop(StopMode::Fast));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tokio::task::block_in_place(|| cluster.start_server());
    };
    let (answers, ()) = futures::join!(burst, outage);
    let failed: Vec<usize> = answers
        .iter()
        .filter(|(_, s)| *s != Some(StatusCode::OK))
        .map(|(i, _)| *i)
        .collect();
    assert!(
        answers.iter().all(|(_, s)| s.is_some()),
        "the API itself stays up: {answers:?}"
    );
    assert!(!failed.is_empty(), "the stop cut no delivery off");
    let ok_before_retry = answers.len() - failed.len();
    // Stripe retries what was not answered 2xx.
    for i in &failed {
        assert_eq!(app.deliver_body(&bodies[*i]).await, Some(StatusCode::OK));
    }
    // A few successful ones again: duplicates change nothing.
    for (i, _) in answers
        .iter()
        .filter(|(_, s)| *s == Some(StatusCode::OK))
        .take(10)
    {
        assert_eq!(app.deliver_body(&bodies[*i]).await, Some(StatusCode::OK));
    }
    let audit = app.audit("biz-a", &acct).await;
    assert!(audit.is_exact(), "{:#?}", audit.differences);
    let recorded = recorded_ids(&app.db).await;
    assert_eq!(recorded.len(), events.len());
    assert!(recorded.values().all(|n| *n == 1), "{recorded:?}");
    let tie =
        mirror::find::<stripe_customers::Entity, _>(app.db.conn(), &biz("biz-a"), "cus_fault_tie")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(tie.email.as_deref(), Some("tie-c@example.com"));
    let _ = writeln_notice(&format!(
        "postgres_stopped_mid_webhook_burst: {} events, {ok_before_retry} accepted during the burst, {} redelivered",
        events.len(),
        failed.len()
    ));
    app.stop().await;
    private.cleanup().await;
}

/// SQLite's write lock held by another connection (another process's `BEGIN IMMEDIATE`) while
/// webhooks arrive and a sync runs. Held for a moment: deliveries and the sync wait (busy
/// timeout) and go through. Held longer than a delivery may take: deliveries answer `503`
/// within [`tributary_web::routes::webhooks::APPLY_TIMEOUT`] instead of hanging, nothing is
/// stored, and the redelivered events are applied once; the sync waits the lock out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_lock_held_by_another_connection() {
    tributary_persistence::testing::run(Backend::Sqlite, |t| async move {
        let app = spawn_app(&t, 1).await;
        let acct = app.account(0);
        app.connect_and_sync("biz-a", &acct).await;
        let locker = Database::connect(&t.url).await.unwrap();

        // A short lock: everything waits for it.
        let before = app.event_ids(&acct).await;
        app.sim_control(
            &format!("/_sim/accounts/{acct}/mutate"),
            json!({"count": 10, "seed": 4}),
        )
        .await;
        let short: Vec<String> = app
            .account_events(&acct, &before)
            .await
            .iter()
            .map(Value::to_string)
            .collect();
        let lock = locker.begin_write().await.unwrap();
        let release = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            lock.rollback().await.unwrap();
        };
        let deliveries = futures::stream::iter(short.iter())
            .map(|b| app.deliver_body(b))
            .buffer_unordered(8)
            .collect::<Vec<_>>();
        let token = agency(&["biz-a"]);
        let trigger = app.post("/api/stripe/biz-a/sync", &token);
        let (answers, res, ()) = futures::join!(deliveries, trigger, release);
        assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
        let job = res.json()["id"].as_str().unwrap().to_owned();
        assert!(
            answers.iter().all(|s| *s == Some(StatusCode::OK)),
            "{answers:?}"
        );
        app.wait_succeeded("biz-a", &job).await;

        // A long lock (longer than the lease, and than a delivery may take).
        let before = app.event_ids(&acct).await;
        app.sim_control(
            &format!("/_sim/accounts/{acct}/mutate"),
            json!({"count": 3, "seed": 5}),
        )
        .await;
        let account_reads = app.sim_requests("GET /v1/account").await;
        let long: Vec<String> = app
            .account_events(&acct, &before)
            .await
            .iter()
            .map(Value::to_string)
            .collect();
        let res = app
            .post("/api/stripe/biz-a/sync", &agency(&["biz-a"]))
            .await;
        assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
        let job = res.json()["id"].as_str().unwrap().to_owned();
        // Once the sync runs, the lock is taken (so it stalls the sync, too).
        wait_job(&app.db, "biz-a", "the second sync runs", |j| {
            j["id"] == json!(job) && j["status"] == "running"
        })
        .await;
        let lock = locker.begin_write().await.unwrap();
        let started = std::time::Instant::now();
        let answers: Vec<Option<StatusCode>> = futures::stream::iter(long.iter())
            .map(|b| app.deliver_body(b))
            .buffer_unordered(16)
            .collect()
            .await;
        let waited = started.elapsed();
        assert!(
            answers
                .iter()
                .all(|s| *s == Some(StatusCode::SERVICE_UNAVAILABLE)),
            "{answers:?}"
        );
        lock.rollback().await.unwrap();
        app.wait_succeeded("biz-a", &job).await;
        // One run of that job (each run reads the account first), although its lease expired
        // while the lock stalled it.
        assert_eq!(
            app.sim_requests("GET /v1/account").await,
            account_reads + 1,
            "the job ran more than once"
        );
        for body in &long {
            assert_eq!(app.deliver_body(body).await, Some(StatusCode::OK));
        }
        let audit = app.audit("biz-a", &acct).await;
        assert!(audit.is_exact(), "{:#?}", audit.differences);
        let recorded = recorded_ids(&app.db).await;
        assert!(recorded.values().all(|n| *n == 1), "{recorded:?}");
        assert_eq!(recorded.len(), short.len() + long.len());
        let (list, _) = jobs::list(&app.db, &biz("biz-a"), 10, 0).await.unwrap();
        assert!(
            list.iter().all(|j| j.status == jobs::SUCCEEDED),
            "{:?}",
            list.iter()
                .map(|j| (&j.status, &j.error_code))
                .collect::<Vec<_>>()
        );
        let _ = writeln_notice(&format!(
            "sqlite_write_lock_held_by_another_connection: {} deliveries refused in {waited:?}",
            long.len()
        ));
        locker.close().await.unwrap();
        app.stop().await;
    })
    .await;
}

/// SQLite's write lock held by another connection for longer than the 30 s busy timeout: a
/// request that writes (a manual sync trigger) answers `503 database_unavailable` once the
/// timeout runs out — not an opaque `500`, not a hang — and stores nothing; reads keep
/// answering meanwhile (WAL); once the lock is released the same request goes through and the
/// sync leaves the mirror exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_lock_held_past_the_busy_timeout() {
    tributary_persistence::testing::run(Backend::Sqlite, |t| async move {
        let app = spawn_app(&t, 1).await;
        let acct = app.account(0);
        app.connect_and_sync("biz-a", &acct).await;
        let (_, jobs_before) = jobs::list(&app.db, &biz("biz-a"), 100, 0).await.unwrap();
        let locker = Database::connect(&t.url).await.unwrap();
        let lock = locker.begin_write().await.unwrap();
        let token = agency(&["biz-a"]);
        let started = std::time::Instant::now();
        let (trigger, status) = futures::join!(app.post("/api/stripe/biz-a/sync", &token), async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            app.get("/api/stripe/biz-a/status", &token).await
        });
        let waited = started.elapsed();
        assert_eq!(
            status.status,
            StatusCode::OK,
            "a read during the lock: {}",
            status.text
        );
        assert_eq!(
            trigger.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            trigger.text
        );
        assert_eq!(trigger.error_code(), "database_unavailable");
        assert!(
            waited >= Duration::from_secs(29),
            "answered after {waited:?}, before the busy timeout ran out"
        );
        lock.rollback().await.unwrap();
        let (_, jobs_during) = jobs::list(&app.db, &biz("biz-a"), 100, 0).await.unwrap();
        assert_eq!(jobs_during, jobs_before, "the refused trigger stored a job");

        app.sync_and_wait("biz-a", "").await;
        let audit = app.audit("biz-a", &acct).await;
        assert!(audit.is_exact(), "{:#?}", audit.differences);
        locker.close().await.unwrap();
        app.stop().await;
    })
    .await;
}
