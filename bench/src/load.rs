//! `tributary-bench reads|webhooks|load`: the API under concurrent load, in this process
//! (`Application::with_listener`, no sync workers), on a business first synced from the
//! simulator.
//!
//! - `reads` (issue #10, item 4): `wrk` drives each read path — summary-by-emails with 1,000
//!   emails, customer-grid pages, the per-email info and the three dashboards — for a fixed
//!   time with a fixed number of connections; a Lua `done()` prints the request count, the
//!   duration and the p50/p95/p99 latency, which this module turns into table rows.
//! - `webhooks` (item 5): the simulator makes realistic changes to the synced account
//!   (`/_sim/accounts/{acct}/mutate`), their events are read back from `/v1/events`, and a
//!   concurrent client in this process (reqwest, N tasks) posts each event to the Connect
//!   endpoint, signed at send time, plus re-deliveries of earlier events. `wrk` is not used
//!   here: a fixed set of deliveries (each sent exactly once) is what lets the run check that
//!   every event id was recorded exactly once, and wrk runs for a duration, not a count.
//!   With `--webhook-accounts K` the events come from K synced accounts (businesses),
//!   interleaved, as one platform's Connect endpoint receives its tenants' events.
//! - `load`: both on one synced business (what `just bench` runs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_domain::{BusinessId, Slug, StripeAccountId};
use tributary_persistence::entities::{stripe_customers, webhook_events};
use tributary_persistence::sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tributary_persistence::testing::TestDb;
use tributary_persistence::{access, businesses};
use tributary_stripe_connect::{Stripe, StripeConfig, sign_payload};
use tributary_sync::{SyncConfig, SyncContext, Trigger, fetch_stripe_data};
use tributary_web::auth::{Claims, Portal};
use tributary_web::settings::{Purpose, Settings};
use tributary_web::{Application, Tuning};

use crate::{Sim, start_sim};

const BUSINESS: &str = "bench";
const PLATFORM_KEY: &str = "sk_test_bench";
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef";
const CONNECT_SECRET: &str = "whsec_bench_connect_endpoint_secret";
/// p95 targets (issue #10): contacts reads and dashboards.
const CONTACTS_P95_MS: f64 = 25.0;
const DASHBOARD_P95_MS: f64 = 100.0;
/// Webhook ingest target, deliveries per second.
const WEBHOOK_TARGET_PER_S: f64 = 2000.0;

/// The load benchmarks (see the module documentation).
#[derive(Debug, clap::Subcommand)]
pub enum LoadCommand {
    /// Read paths under wrk load (p50/p95/p99, requests/s).
    Reads(LoadArgs),
    /// Signed, partly duplicated webhook deliveries into the Connect endpoint (events/s).
    Webhooks(LoadArgs),
    /// `reads`, then `webhooks`, on one synced business.
    Load(LoadArgs),
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Simulated account size: small, medium or bench.
    #[arg(long, default_value = "bench")]
    scale: String,
    /// Database: postgres or sqlite.
    #[arg(long, default_value = "postgres")]
    db: String,
    /// PostgreSQL server for the fresh benchmark database.
    #[arg(
        long,
        env = "TRIBUTARY_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
    )]
    pg_url: String,
    /// The simulator binary (default: `tributary-stripe-sim` next to this one).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// Append the results as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The `wrk` binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// wrk connections (concurrent requests) per read route; each level is one run (1: the
    /// unloaded latency; 16: as many as the API's PostgreSQL pool holds).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    connections: Vec<u32>,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Only these read routes (summary_by_emails, customers_grid, stripe_info, revenue,
    /// retention, acquisition); all by default.
    #[arg(long, value_delimiter = ',')]
    routes: Vec<String>,
    /// Seconds of load per read route.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unrecorded load per read route before the measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Distinct webhook events to deliver.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Extra deliveries repeating an earlier event, as a fraction of `--events`.
    #[arg(long, default_value_t = 0.1)]
    duplicates: f64,
    /// Concurrent webhook deliveries.
    #[arg(long, default_value_t = 16)]
    webhook_concurrency: usize,
    /// Milliseconds of latency in front of the simulator while the webhooks are delivered:
    /// the Stripe reads some events need (a refunded charge's refunds, a session's line
    /// items, a re-fetch on a tie) then take as long as they would from a real Stripe.
    #[arg(long, default_value_t = 0)]
    stripe_latency_ms: u64,
    /// Connected accounts the webhook events come from, each a business synced at `--scale`
    /// (a platform's Connect endpoint receives every tenant's events); the reads use the first.
    #[arg(long, default_value_t = 1)]
    webhook_accounts: usize,
}

/// The synced business, the API serving it and what the runs need to call it.
struct Bench {
    sim: Sim,
    test_db: TestDb,
    db_kind: String,
    scale: String,
    base: String,
    token: String,
    handle: actix_web::dev::ServerHandle,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// One result row.
struct Row {
    key: &'static str,
    route: String,
    concurrency: usize,
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    errors: u64,
    target: Target,
    extra: Value,
}

#[derive(Clone, Copy)]
enum Target {
    P95Ms(f64),
    PerSecond(f64),
}

impl Row {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn met(&self) -> bool {
        self.errors == 0
            && self.requests > 0
            && match self.target {
                Target::P95Ms(ms) => self.p95_ms <= ms,
                Target::PerSecond(n) => self.per_second() >= n,
            }
    }

    fn print(&self) {
        let target = match self.target {
            Target::P95Ms(ms) => format!("p95 ≤ {ms:.0} ms"),
            Target::PerSecond(n) => format!("≥ {n:.0}/s"),
        };
        let met = match (self.met(), self.errors, self.requests) {
            (true, _, _) => "yes".to_owned(),
            (false, 0, 0) => "no (no request completed)".to_owned(),
            (false, 0, _) => "no".to_owned(),
            (false, n, _) => format!("no ({n} errors)"),
        };
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
            self.route,
            self.concurrency,
            self.per_second(),
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            target,
            met
        );
    }

    fn json(&self, bench: &Bench, kind: &str) -> Value {
        let mut line = json!({
            "kind": kind, "key": self.key, "scale": bench.scale, "db": bench.db_kind,
            "route": self.route,
            "concurrency": self.concurrency, "requests": self.requests, "seconds": self.seconds,
            "requests_per_s": self.per_second(), "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms, "errors": self.errors, "met": self.met(),
        });
        match self.target {
            Target::P95Ms(ms) => line["target_p95_ms"] = json!(ms),
            Target::PerSecond(n) => line["target_per_s"] = json!(n),
        }
        if let (Some(line), Some(extra)) = (line.as_object_mut(), self.extra.as_object()) {
            line.extend(extra.clone());
        }
        line
    }
}

pub async fn run(command: LoadCommand) -> anyhow::Result<()> {
    let (args, reads, hooks) = match command {
        LoadCommand::Reads(a) => (a, true, false),
        LoadCommand::Webhooks(a) => (a, false, true),
        LoadCommand::Load(a) => (a, true, true),
    };
    if reads {
        let ok = Command::new(&args.wrk)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"));
        if !ok {
            bail!(
                "{} not found: install wrk (apt-get install -y wrk)",
                args.wrk.display()
            );
        }
    }
    let bench = Bench::start(&args).await?;
    println!("| route | concurrency | requests/s | p50 ms | p95 ms | p99 ms | target | met? |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut result = Ok(());
    if reads {
        result = run_reads(&bench, &args).await;
    }
    if hooks && result.is_ok() {
        result = run_webhooks(&bench, &args).await;
    }
    bench.stop().await;
    result
}

fn append_json(path: Option<&Path>, line: &Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

impl Bench {
    /// Starts the simulator, syncs its account into a fresh database and serves the API on it.
    async fn start(args: &LoadArgs) -> anyhow::Result<Bench> {
        let sim_bin = match &args.sim_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("tributary-stripe-sim"),
        };
        let test_db = match args.db.as_str() {
            "postgres" => TestDb::postgres_at(&args.pg_url, true).await,
            "sqlite" => TestDb::sqlite().await,
            other => bail!("--db must be postgres or sqlite, not {other}"),
        };
        let sim = start_sim(&sim_bin, &args.scale, args.webhook_accounts)?;
        let stripe = Stripe::new(StripeConfig {
            max_requests_per_second: 10_000,
            ..StripeConfig::new(SecretString::from(PLATFORM_KEY)).with_base(sim.base.clone())
        })?;
        let ctx = SyncContext::new(test_db.db.clone(), stripe, SyncConfig::default());
        // One business per account: `BUSINESS` first, then `bench-2`, ….
        for (i, account) in sim.accounts.iter().enumerate() {
            let id = match i {
                0 => BUSINESS.to_owned(),
                i => format!("{BUSINESS}-{}", i + 1),
            };
            let business = BusinessId::parse(&id)?;
            let now = ctx.now();
            businesses::upsert(
                &test_db.db,
                &business,
                &Slug::parse(&id)?,
                "Bench",
                None,
                now,
            )
            .await?;
            let conn = access::NewConnection {
                account: &StripeAccountId::parse(account)?,
                account_name: None,
                livemode: false,
                scope: "read_write",
            };
            access::connect(&test_db.db, &business, conn, now).await?;
            let started = Instant::now();
            let report = fetch_stripe_data(&ctx, &business, Trigger::Backfill).await?;
            if !report.succeeded() {
                bail!("sync of {id} failed: {:?}", report.error);
            }
            let objects: u64 = report.progress.values().map(|p| p.fetched).sum();
            eprintln!(
                "synced {objects} objects ({} scale) into {} for {id} in {:.1} s",
                args.scale,
                args.db,
                started.elapsed().as_secs_f64()
            );
        }

        let mut settings = Settings::load_from(None, &HashMap::new())?;
        settings.database.url.clone_from(&test_db.url);
        settings.database.migrate_on_start = false;
        settings.server.port = 0;
        settings.stripe.secret_key = Some(SecretString::from(PLATFORM_KEY));
        settings.stripe.api_base.clone_from(&sim.base);
        settings.stripe.connect_base.clone_from(&sim.base);
        settings.stripe.connect_webhook_secret = Some(SecretString::from(CONNECT_SECRET));
        settings.stripe.max_requests_per_second = 10_000;
        let jwt_secret = SecretString::from(JWT_SECRET);
        settings.auth.jwt_secret = Some(jwt_secret.clone());
        settings.validate(Purpose::Serve)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let app = Application::with_listener(
            settings,
            test_db.db.clone(),
            listener,
            Tuning {
                start_workers: false,
                ..Tuning::default()
            },
        )?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.server_handle();
        let served = tokio::spawn(app.run_until_stopped());
        let token = Claims {
            sub: "bench".into(),
            exp: tributary_persistence::now() + 24 * 3600,
            portal: Some(Portal::Agency),
            businesses: vec![BUSINESS.to_owned()],
            admin: false,
        }
        .sign(&jwt_secret)?;
        Ok(Bench {
            sim,
            test_db,
            db_kind: args.db.clone(),
            scale: args.scale.clone(),
            base,
            token,
            handle,
            served,
        })
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.served.await;
        self.test_db.cleanup().await;
        drop(self.sim);
    }
}

// ---------------------------------------------------------------------------------------
// Read paths (item 4)
// ---------------------------------------------------------------------------------------

/// One read route under load: wrk cycles through `paths` (one request each in turn).
struct ReadRoute {
    /// A short name for the JSON lines.
    key: &'static str,
    name: String,
    method: &'static str,
    paths: Vec<String>,
    body: Option<String>,
    target_ms: f64,
}

/// `path` with `params` as its query string (percent-encoded).
fn with_query(path: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
    let url = reqwest::Url::parse_with_params(&format!("http://x{path}"), params)?;
    Ok(format!(
        "{}?{}",
        url.path(),
        url.query().unwrap_or_default()
    ))
}

/// Up to `n` distinct customer emails of the business (in Stripe-id order, which the
/// simulator's ids make arbitrary), padded with addresses nobody paid with: a host
/// application's contact list holds both.
async fn contact_emails(bench: &Bench, n: usize) -> anyhow::Result<(Vec<String>, usize)> {
    let rows: Vec<Option<String>> = stripe_customers::Entity::find()
        .select_only()
        .column(stripe_customers::Column::Email)
        .filter(stripe_customers::Column::BusinessId.eq(BUSINESS))
        .filter(stripe_customers::Column::Email.is_not_null())
        .order_by_asc(stripe_customers::Column::StripeId)
        .into_tuple()
        .all(bench.test_db.db.conn())
        .await?;
    let mut seen = HashSet::new();
    let mut emails: Vec<String> = rows
        .into_iter()
        .flatten()
        .map(|e| e.trim().to_owned())
        .filter(|e| e.contains('@') && seen.insert(e.to_lowercase()))
        .take(n)
        .collect();
    let customers = emails.len();
    emails.extend((customers..n).map(|i| format!("contact-{i}@example.org")));
    Ok((emails, customers))
}

/// The synced account's default currency (the dashboards' currency).
async fn account_currency(bench: &Bench) -> anyhow::Result<String> {
    let account: Value = reqwest::Client::new()
        .get(format!("{}/v1/account", bench.sim.base))
        .bearer_auth(PLATFORM_KEY)
        .header("Stripe-Account", bench.sim.account())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(account["default_currency"]
        .as_str()
        .unwrap_or("usd")
        .to_owned())
}

async fn run_reads(bench: &Bench, args: &LoadArgs) -> anyhow::Result<()> {
    let (emails, customers) = contact_emails(bench, 1000).await?;
    let currency = account_currency(bench).await?;
    let b = BUSINESS;
    let mut grid = Vec::new();
    for (sort, order) in [
        ("total_spent", "desc"),
        ("last_purchase", "desc"),
        ("email", "asc"),
    ] {
        for page in 1..=10 {
            grid.push(format!(
                "/api/contacts/stripe-customers?businessId={b}&page={page}&per_page=50&sort={sort}&order={order}"
            ));
        }
    }
    let info = emails[..customers.min(100)]
        .iter()
        .map(|e| {
            with_query(
                "/api/contacts/stripe-info",
                &[("businessId", b), ("email", e)],
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dashboard = |name: &'static str| ReadRoute {
        key: name,
        name: format!("GET /api/businesses/{{id}}/{name} (12 months, {currency})"),
        method: "GET",
        paths: vec![format!("/api/businesses/{b}/{name}?currency={currency}")],
        body: None,
        target_ms: DASHBOARD_P95_MS,
    };
    let mut routes = vec![
        ReadRoute {
            key: "summary_by_emails",
            name: format!(
                "POST /api/contacts/stripe-summary-by-emails (1,000 emails, {customers} of them customers)"
            ),
            method: "POST",
            paths: vec!["/api/contacts/stripe-summary-by-emails".into()],
            body: Some(json!({"businessId": b, "emails": emails}).to_string()),
            target_ms: CONTACTS_P95_MS,
        },
        ReadRoute {
            key: "customers_grid",
            name: "GET /api/contacts/stripe-customers (50 a page, pages 1–10 × 3 sorts)".into(),
            method: "GET",
            paths: grid,
            body: None,
            target_ms: CONTACTS_P95_MS,
        },
    ];
    if !info.is_empty() {
        routes.push(ReadRoute {
            key: "stripe_info",
            name: format!("GET /api/contacts/stripe-info ({} emails)", info.len()),
            method: "GET",
            paths: info,
            body: None,
            target_ms: CONTACTS_P95_MS,
        });
    }
    routes.extend(["revenue", "retention", "acquisition"].map(dashboard));
    if !args.routes.is_empty() {
        routes.retain(|r| args.routes.iter().any(|k| k == r.key));
    }

    let dir = std::env::temp_dir().join(format!("tributary-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        for (i, route) in routes.iter().enumerate() {
            check_route(bench, route).await?;
            let script = write_script(&dir, i, bench, route)?;
            let most = args.connections.iter().copied().max().unwrap_or(1);
            if args.warmup > 0 {
                wrk(args, bench, route, &script, most, args.warmup).await?;
            }
            for &connections in &args.connections {
                quiesce(bench).await?;
                let row = wrk(args, bench, route, &script, connections, args.duration).await?;
                row.print();
                append_json(args.json.as_deref(), &row.json(bench, "reads"))?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// CPU time this process has used, in clock ticks (`/proc/self/stat` utime + stime).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(11) + at(12)
}

/// Waits until the API is idle: wrk stops with requests in flight, which the server (and
/// PostgreSQL) may still be working on; they must not weigh on the next measured run. Idle:
/// this process used at most one clock tick (10 ms) of CPU in 250 ms, and no other query of
/// the benchmark database is active.
async fn quiesce(bench: &Bench) -> anyhow::Result<()> {
    use tributary_persistence::sea_orm::{ConnectionTrait, DbBackend, Statement};
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let before = cpu_ticks();
        tokio::time::sleep(Duration::from_millis(250)).await;
        if cpu_ticks().saturating_sub(before) > 1 {
            continue;
        }
        if bench.db_kind == "postgres" {
            let active = bench
                .test_db
                .db
                .conn()
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                     AND state = 'active' AND pid <> pg_backend_pid()",
                ))
                .await?
                .map(|row| row.try_get::<i64>("", "n"))
                .transpose()?
                .unwrap_or(0);
            if active > 0 {
                continue;
            }
        }
        return Ok(());
    }
    bail!("the API stayed busy for 300 s after a load run")
}

/// One request of each path of `route` must answer `200` before it is put under load.
async fn check_route(bench: &Bench, route: &ReadRoute) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for path in route.paths.iter().take(3) {
        let url = format!("{}{path}", bench.base);
        let mut req = match route.method {
            "POST" => http.post(&url),
            _ => http.get(&url),
        }
        .bearer_auth(&bench.token);
        if let Some(body) = &route.body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        let res = req.send().await?;
        let status = res.status();
        if !status.is_success() {
            bail!(
                "{} {path}: {status}: {}",
                route.method,
                res.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A Lua string literal.
fn lua_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The wrk script of `route`: its method, token and body, a `request()` cycling through its
/// paths (each thread from its own offset), and a `done()` printing one machine-readable line.
fn write_script(dir: &Path, i: usize, bench: &Bench, route: &ReadRoute) -> anyhow::Result<PathBuf> {
    let mut lua = String::new();
    lua.push_str(&format!("wrk.method = {}\n", lua_str(route.method)));
    lua.push_str(&format!(
        "wrk.headers[\"Authorization\"] = {}\n",
        lua_str(&format!("Bearer {}", bench.token))
    ));
    lua.push_str("wrk.headers[\"Accept\"] = \"application/json\"\n");
    if let Some(body) = &route.body {
        let file = dir.join(format!("body-{i}.json"));
        std::fs::write(&file, body)?;
        lua.push_str(&format!(
            "do\n  local f = assert(io.open({}, \"rb\"))\n  wrk.body = f:read(\"*a\")\n  f:close()\nend\n",
            lua_str(&file.display().to_string())
        ));
        lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    }
    lua.push_str("local paths = {\n");
    for path in &route.paths {
        lua.push_str(&format!("  {},\n", lua_str(path)));
    }
    lua.push_str("}\n");
    lua.push_str(
        r#"wrk.path = paths[1]
local n = #paths
local i = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * 7)
  threads = threads + 1
end
function init(args)
  i = offset or 0
end
if n > 1 then
  request = function()
    i = i + 1
    return wrk.format(nil, paths[(i % n) + 1])
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("TRIBUTARY_WRK %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n",
    summary.requests, summary.duration,
    latency:percentile(50.0), latency:percentile(95.0), latency:percentile(99.0),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#,
    );
    let file = dir.join(format!("route-{i}.lua"));
    std::fs::write(&file, lua)?;
    Ok(file)
}

/// Runs wrk on `route` with `connections` for `seconds` and reads the line `done()` printed.
async fn wrk(
    args: &LoadArgs,
    bench: &Bench,
    route: &ReadRoute,
    script: &Path,
    connections: u32,
    seconds: u64,
) -> anyhow::Result<Row> {
    let connections = connections.max(1);
    let threads = args.threads.clamp(1, connections);
    let out = tokio::process::Command::new(&args.wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "30s", "-s"])
        .arg(script)
        .arg(format!("{}{}", bench.base, route.paths[0]))
        .output()
        .await
        .with_context(|| format!("run {}", args.wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TRIBUTARY_WRK "))
    else {
        bail!(
            "wrk printed no result for {}: {stdout}{}",
            route.name,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("wrk result line: {line}"))?;
    let v: Vec<u64> = v.into_iter().map(|x| x as u64).collect();
    let [
        requests,
        duration_us,
        p50,
        p95,
        p99,
        connect,
        read,
        write,
        status,
        timeout,
    ] = v[..]
    else {
        bail!("wrk result line: {line}");
    };
    Ok(Row {
        key: route.key,
        route: route.name.clone(),
        concurrency: connections as usize,
        requests,
        seconds: duration_us as f64 / 1e6,
        p50_ms: p50 as f64 / 1e3,
        p95_ms: p95 as f64 / 1e3,
        p99_ms: p99 as f64 / 1e3,
        errors: connect + read + write + status + timeout,
        target: Target::P95Ms(route.target_ms),
        extra: json!({
            "tool": "wrk", "threads": threads,
            "errors_by_kind": {"connect": connect, "read": read, "write": write,
                "status": status, "timeout": timeout},
        }),
    })
}

// ---------------------------------------------------------------------------------------
// Webhook ingest (item 5)
// ---------------------------------------------------------------------------------------

/// About `n` events of realistic changes, shared out over the synced accounts and interleaved
/// (each account's events oldest first), as the Connect endpoint receives them.
async fn simulated_events(bench: &Bench, n: usize) -> anyhow::Result<Vec<Value>> {
    let k = bench.sim.accounts.len();
    let mut per_account = Vec::with_capacity(k);
    for (i, account) in bench.sim.accounts.iter().enumerate() {
        let share = n / k + usize::from(i < n % k);
        per_account.push(account_events(bench, account, share).await?.into_iter());
    }
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let before = events.len();
        events.extend(per_account.iter_mut().filter_map(Iterator::next));
        if events.len() == before {
            break;
        }
    }
    Ok(events)
}

/// Makes realistic changes to `account` until they produced `n` events, and returns those
/// events as the Connect endpoint receives them (with `account`), oldest first.
async fn account_events(bench: &Bench, account: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let http = reqwest::Client::new();
    let sim = &bench.sim;
    let clock: Value = http
        .get(format!("{}/_sim/clock", sim.base))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let since = clock["now"].as_i64().context("simulator clock")?;
    let mut ids = HashSet::new();
    let mut seed = 1;
    while ids.len() < n {
        // A change makes about three events (a new payment: session, intent, charge, …).
        let count = ((n - ids.len()) / 3).clamp(1, 1000);
        let res: Value = http
            .post(format!("{}/_sim/accounts/{account}/mutate", sim.base))
            .json(&json!({"count": count, "seed": seed}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        seed += 1;
        let made = res["events"].as_array().context("mutate events")?;
        if made.is_empty() {
            bail!("the simulator made no events: {res}");
        }
        ids.extend(made.iter().filter_map(|e| e.as_str().map(str::to_owned)));
    }
    let mut events = Vec::with_capacity(ids.len());
    let mut after: Option<String> = None;
    loop {
        let mut req = http
            .get(format!("{}/v1/events", sim.base))
            .bearer_auth(PLATFORM_KEY)
            .header("Stripe-Account", account)
            .query(&[
                ("limit", "100".to_owned()),
                ("created[gte]", since.to_string()),
            ]);
        if let Some(id) = &after {
            req = req.query(&[("starting_after", id)]);
        }
        let page: Value = req.send().await?.error_for_status()?.json().await?;
        let data = page["data"].as_array().context("events page")?;
        for event in data {
            if event["id"].as_str().is_some_and(|id| ids.contains(id)) {
                events.push(event.clone());
            }
        }
        after = data
            .last()
            .and_then(|e| e["id"].as_str().map(str::to_owned));
        if page["has_more"] != json!(true) || after.is_none() {
            break;
        }
    }
    if events.len() != ids.len() {
        bail!(
            "/v1/events listed {} of the {} events the changes made",
            events.len(),
            ids.len()
        );
    }
    events.reverse();
    events.truncate(n);
    for event in &mut events {
        if event["account"].is_null() {
            event["account"] = json!(account);
        }
    }
    Ok(events)
}

/// SplitMix64: a repeatable choice of re-delivered events without another dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The delivery order: every event once, oldest first, plus `ratio` × as many re-deliveries
/// of a recent event (as Stripe's retries and duplicate deliveries arrive), some of them
/// right behind the original so both are in flight at once.
fn delivery_plan(events: usize, ratio: f64) -> Vec<usize> {
    let mut plan = Vec::with_capacity(events + (events as f64 * ratio) as usize + 1);
    let mut credit = 0.0;
    let mut rng = 42;
    for i in 0..events {
        plan.push(i);
        credit += ratio;
        while credit >= 1.0 {
            credit -= 1.0;
            let back = (splitmix(&mut rng) % 200) as usize;
            plan.push(i.saturating_sub(back));
        }
    }
    plan
}

/// One delivery as the client saw it.
struct Sample {
    latency_us: u64,
    status: u16,
    duplicate: bool,
    outcome: String,
}

fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1e3
}

async fn run_webhooks(bench: &Bench, args: &LoadArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let events = simulated_events(bench, args.events).await?;
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *types
            .entry(e["type"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    eprintln!(
        "made {} events in {:.1} s: {}",
        events.len(),
        started.elapsed().as_secs_f64(),
        types
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let bodies: Arc<Vec<String>> = Arc::new(events.iter().map(Value::to_string).collect());
    let plan = Arc::new(delivery_plan(events.len(), args.duplicates));
    let concurrency = args.webhook_concurrency.max(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = Arc::new(format!("{}/api/webhooks/stripe/connect", bench.base));
    let next = Arc::new(AtomicUsize::new(0));
    quiesce(bench).await?;
    let latency = args.stripe_latency_ms;
    if latency > 0 {
        http.post(format!("{}/_sim/faults", bench.sim.base))
            .json(&json!({ "latency_ms": latency }))
            .send()
            .await?
            .error_for_status()?;
    }

    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.clone(), next.clone());
            let (bodies, plan) = (bodies.clone(), plan.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&event) = plan.get(k) else { break };
                    let body = &bodies[event];
                    // Signed when sent, as Stripe does: well inside the 300 s tolerance.
                    let signature = sign_payload(
                        body.as_bytes(),
                        CONNECT_SECRET,
                        tributary_persistence::now(),
                    );
                    let t0 = Instant::now();
                    let res = http
                        .post(url.as_str())
                        .header("Content-Type", "application/json; charset=utf-8")
                        .header("Stripe-Signature", signature)
                        .body(body.clone())
                        .send()
                        .await;
                    let (status, answer) = match res {
                        Ok(res) => {
                            let status = res.status().as_u16();
                            let answer = res
                                .bytes()
                                .await
                                .ok()
                                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                                .unwrap_or(Value::Null);
                            (status, answer)
                        }
                        Err(_) => (0, Value::Null),
                    };
                    samples.push(Sample {
                        latency_us: t0.elapsed().as_micros() as u64,
                        status,
                        duplicate: answer["duplicate"] == json!(true),
                        outcome: answer["outcome"]
                            .as_str()
                            .or_else(|| answer["error"]["code"].as_str())
                            .unwrap_or("-")
                            .to_owned(),
                    });
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(plan.len());
    for task in tasks {
        samples.extend(task.await?);
    }
    let wall = started.elapsed();

    let mut latencies: Vec<u64> = samples.iter().map(|s| s.latency_us).collect();
    latencies.sort_unstable();
    let failed = samples.iter().filter(|s| s.status != 200).count() as u64;
    let duplicate_answers = samples.iter().filter(|s| s.duplicate).count();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for s in &samples {
        let key = if s.status == 200 {
            s.outcome.clone()
        } else {
            format!("{} {}", s.status, s.outcome)
        };
        *outcomes.entry(key).or_default() += 1;
    }

    let turns = turn_phases(bench).await?;
    // Every event id recorded exactly once: the rows of the Connect endpoint are the ids sent.
    let conn = bench.test_db.db.conn();
    let rows = webhook_events::Entity::find()
        .filter(webhook_events::Column::Endpoint.eq("connect"))
        .count(conn)
        .await?;
    let recorded: HashSet<String> = webhook_events::Entity::find()
        .select_only()
        .column(webhook_events::Column::EventId)
        .filter(webhook_events::Column::Endpoint.eq("connect"))
        .into_tuple::<String>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let sent: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let missing = sent.iter().filter(|id| !recorded.contains(**id)).count();
    let unexpected = recorded
        .iter()
        .filter(|id| !sent.contains(id.as_str()))
        .count();
    let redeliveries = plan.len() - ids.len();
    let once = rows == ids.len() as u64
        && missing == 0
        && unexpected == 0
        && duplicate_answers == redeliveries;

    let row = Row {
        key: "webhooks_connect",
        route: format!(
            "POST /api/webhooks/stripe/connect ({} events{} + {} re-deliveries, signed{})",
            ids.len(),
            match bench.sim.accounts.len() {
                1 => String::new(),
                k => format!(" of {k} accounts"),
            },
            redeliveries,
            if latency > 0 {
                format!("; Stripe reads behind {latency} ms")
            } else {
                String::new()
            }
        ),
        concurrency,
        requests: samples.len() as u64,
        seconds: wall.as_secs_f64(),
        p50_ms: percentile_ms(&latencies, 50.0),
        p95_ms: percentile_ms(&latencies, 95.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        errors: failed + u64::from(!once),
        target: Target::PerSecond(WEBHOOK_TARGET_PER_S),
        extra: json!({
            "tool": "reqwest", "events": ids.len(), "redeliveries": redeliveries,
            "failed": failed, "duplicate_answers": duplicate_answers,
            "webhook_events_rows": rows, "missing": missing, "unexpected": unexpected,
            "recorded_once": once, "outcomes": outcomes, "event_types": types,
            "stripe_latency_ms": latency, "accounts": bench.sim.accounts.len(),
            "turns": turns,
        }),
    };
    row.print();
    println!();
    println!(
        "webhook_events (endpoint `connect`): {rows} rows for {} distinct event ids sent \
         ({missing} missing, {unexpected} unexpected); {duplicate_answers} of {redeliveries} \
         re-deliveries answered `duplicate`; {failed} non-200 answers — {}.",
        ids.len(),
        if once {
            "each event id recorded once"
        } else {
            "CHECK FAILED"
        }
    );
    println!(
        "outcomes: {}",
        outcomes
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "turns: {} of {:.1} deliveries on average; a turn's phases, mean ms: {}",
        turns["turns"],
        turns["deliveries_per_turn"].as_f64().unwrap_or_default(),
        TURN_PHASES
            .iter()
            .map(|p| format!(
                "{p} {:.2}",
                turns["mean_ms"][p].as_f64().unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    append_json(args.json.as_deref(), &row.json(bench, "webhooks"))?;
    Ok(())
}

/// The phases of `tributary_webhook_turn_seconds`, in a turn's order.
const TURN_PHASES: [&str; 4] = ["lock", "apply", "spend", "commit"];

/// The webhook turns of the run from the API's `/metrics` (the process's counters, which
/// start at zero with the bench's server): how many, their mean number of deliveries
/// (`tributary_webhook_batch_deliveries`) and the mean milliseconds of each phase
/// (`tributary_webhook_turn_seconds`).
async fn turn_phases(bench: &Bench) -> anyhow::Result<Value> {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", bench.base))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    // The value of the sample line `name` (its labels included) exactly.
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let turns = sample("tributary_webhook_batch_deliveries_count");
    let deliveries = sample("tributary_webhook_batch_deliveries_sum");
    let mut mean_ms = serde_json::Map::new();
    for phase in TURN_PHASES {
        let sum = sample(&format!(
            "tributary_webhook_turn_seconds_sum{{phase=\"{phase}\"}}"
        ));
        let count = sample(&format!(
            "tributary_webhook_turn_seconds_count{{phase=\"{phase}\"}}"
        ));
        let mean = if count > 0.0 { sum / count * 1e3 } else { 0.0 };
        mean_ms.insert(phase.to_owned(), json!((mean * 100.0).round() / 100.0));
    }
    Ok(json!({
        "turns": turns as u64,
        "deliveries_per_turn": if turns > 0.0 { ((deliveries / turns) * 10.0).round() / 10.0 } else { 0.0 },
        "mean_ms": mean_ms,
    }))
}
