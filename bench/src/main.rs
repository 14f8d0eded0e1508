//! `tributary-bench`: measures a first sync against the simulator (run as its own process, so
//! its memory is not ours): wall time against the rate-limit floor, objects per second into
//! SQLite and PostgreSQL, and this process's peak RSS. `just bench` runs the standard set.
//! The `reads`, `webhooks` and `load` subcommands put the API under load (`load.rs`).

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_domain::{BusinessId, StripeAccountId};
use tributary_persistence::access;
use tributary_persistence::testing::TestDb;
use tributary_stripe_connect::{Stripe, StripeConfig};
use tributary_sync::{SyncConfig, SyncContext, Trigger, fetch_stripe_data};

mod load;

// The sync is allocation-heavy (JSON pages); mimalloc measured faster than glibc's malloc here.
// `--features system-alloc` leaves it out, so heap profilers that intercept malloc (heaptrack)
// see every allocation.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmark a first sync of a simulated account.
#[derive(Debug, Parser)]
#[command(name = "tributary-bench", version, about)]
struct Args {
    /// Simulated account size: small, medium (about 15,000 objects) or bench (about 150,000).
    #[arg(long, default_value = "medium")]
    scale: String,
    /// Databases to sync into: sqlite, postgres or both.
    #[arg(long, default_value = "both")]
    db: String,
    /// PostgreSQL server for the fresh benchmark database.
    #[arg(
        long,
        env = "TRIBUTARY_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
    )]
    pg_url: String,
    /// Put 50 ms of latency and a 25 req/s limit in front of the simulator (and budget the client
    /// to 25 req/s), to compare the run with the rate-limit floor.
    #[arg(long)]
    throttled: bool,
    /// Requests per second for `--throttled`.
    #[arg(long, default_value_t = 25)]
    rate: u32,
    /// The simulator binary (default: `tributary-stripe-sim` next to this one).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// Append the results as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    load: Option<load::LoadCommand>,
}

/// A simulator child process, killed on drop.
struct Sim {
    child: Child,
    base: String,
    /// Every account (at least one).
    accounts: Vec<String>,
}

impl Sim {
    /// The first account.
    fn account(&self) -> &str {
        &self.accounts[0]
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(bin: &PathBuf, scale: &str, accounts: usize) -> anyhow::Result<Sim> {
    let accounts = accounts.max(1).to_string();
    let mut child = Command::new(bin)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--seed",
            "42",
            "--accounts",
            accounts.as_str(),
            "--scale",
            scale,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let ready: Value =
        serde_json::from_str(&line).with_context(|| format!("ready line: {line}"))?;
    let addr = ready["addr"].as_str().context("addr")?.to_owned();
    let accounts: Vec<String> = ready["accounts"]
        .as_array()
        .context("accounts")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if accounts.is_empty() {
        bail!("the simulator named no account: {line}");
    }
    Ok(Sim {
        child,
        base: format!("http://{addr}"),
        accounts,
    })
}

/// This process's peak resident set since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The fewest list requests a first sync of these counts can make: one account read plus one
/// request per 100 objects of each listed resource.
fn floor_requests(counts: &Value) -> u64 {
    let per = |k: &str| counts[k].as_u64().unwrap_or(0).div_ceil(100).max(1);
    1 + [
        "products",
        "prices",
        "customers",
        "payment_intents",
        "charges",
        "refunds",
        "invoices",
        "invoice_payments",
        "checkout_sessions",
        "subscriptions",
    ]
    .iter()
    .map(|k| per(k))
    .sum::<u64>()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(command) = args.load.take() {
        return load::run(command).await;
    }
    let sim_bin = match &args.sim_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("tributary-stripe-sim"),
    };
    let dbs: Vec<&str> = match args.db.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        other => bail!("--db must be sqlite, postgres or both, not {other}"),
    };
    println!(
        "| scale | db | mode | objects | requests | floor requests | wall s | floor s | wall ÷ floor | objects/s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for db_kind in dbs {
        let sim = start_sim(&sim_bin, &args.scale, 1)?;
        let http = reqwest::Client::new();
        let accounts: Value = http
            .get(format!("{}/_sim/accounts", sim.base))
            .send()
            .await?
            .json()
            .await?;
        let counts = accounts[0]["counts"].clone();
        if args.throttled {
            http.post(format!("{}/_sim/faults", sim.base))
                .json(&json!({"latency_ms": 50, "rate_limit_per_second": args.rate}))
                .send()
                .await?
                .error_for_status()?;
        }
        let test_db = match db_kind {
            "sqlite" => TestDb::sqlite().await,
            _ => TestDb::postgres_at(&args.pg_url, true).await,
        };
        let budget = if args.throttled { args.rate } else { 10_000 };
        let stripe = Stripe::new(StripeConfig {
            max_requests_per_second: budget,
            ..StripeConfig::new(SecretString::from("sk_test_bench")).with_base(sim.base.clone())
        })?;
        let ctx = SyncContext::new(test_db.db.clone(), stripe, SyncConfig::default());
        let business = BusinessId::parse("bench")?;
        let account = StripeAccountId::parse(sim.account())?;
        let conn = access::NewConnection {
            account: &account,
            account_name: None,
            livemode: false,
            scope: "read_write",
        };
        access::connect(&test_db.db, &business, conn, ctx.now()).await?;
        let _ = http
            .delete(format!("{}/_sim/requests", sim.base))
            .send()
            .await;

        reset_peak_rss();
        let started = Instant::now();
        let report = fetch_stripe_data(&ctx, &business, Trigger::Backfill).await?;
        let wall = started.elapsed();
        let rss = peak_rss_mib();
        if !report.succeeded() {
            bail!("sync failed: {:?}", report.error);
        }
        let requests: Value = http
            .get(format!("{}/_sim/requests", sim.base))
            .send()
            .await?
            .json()
            .await?;
        let objects: u64 = report.progress.values().map(|p| p.fetched).sum();
        let floor_req = floor_requests(&counts);
        let floor = Duration::from_secs_f64(floor_req as f64 / f64::from(args.rate));
        let mode = if args.throttled {
            format!("50 ms, {} req/s", args.rate)
        } else {
            "unthrottled".to_owned()
        };
        let ratio = if args.throttled {
            format!("{:.2}", wall.as_secs_f64() / floor.as_secs_f64())
        } else {
            "—".into()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {:.0} | {:.0} |",
            args.scale,
            db_kind,
            mode,
            objects,
            requests["total"],
            floor_req,
            wall.as_secs_f64(),
            if args.throttled {
                format!("{:.1}", floor.as_secs_f64())
            } else {
                "—".into()
            },
            ratio,
            objects as f64 / wall.as_secs_f64(),
            rss
        );
        if let Some(path) = &args.json {
            let line = json!({
                "scale": args.scale, "db": db_kind, "throttled": args.throttled, "rate": args.rate,
                "objects": objects, "requests": requests["total"], "floor_requests": floor_req,
                "wall_s": wall.as_secs_f64(), "objects_per_s": objects as f64 / wall.as_secs_f64(),
                "peak_rss_mib": rss,
            });
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{line}")?;
        }
        test_db.cleanup().await;
        drop(sim);
    }
    Ok(())
}
