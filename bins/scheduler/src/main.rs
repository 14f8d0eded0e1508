//! `tributary-scheduler`: runs Stripe syncs from cron, as a daemon, or one at a time.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tributary_domain::BusinessId;
use tributary_persistence::Database;
use tributary_sync::{FetchOptions, SyncContext, SyncReport, Trigger};
use tributary_web::settings::{Purpose, Settings};

/// Run Tributary's Stripe syncs (cron, daemon or one-off) and database migrations.
///
/// Every command uses the same sync as the API's manual sync button. Several schedulers may run
/// at once against one PostgreSQL database: they share the businesses and never sync one twice
/// at the same time. Exit status is non-zero when any business failed.
#[derive(Debug, Parser)]
#[command(name = "tributary-scheduler", version, about, long_about)]
struct Cli {
    /// TOML configuration file (also `TRIBUTARY_CONFIG`); environment `TRIBUTARY__SECTION__KEY` overrides it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sync every connected business once, then exit (for cron).
    RunOnce {
        /// Skip businesses synced more recently than this (another scheduler of the same round).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        fresh_for: Duration,
    },
    /// Run a round every interval until stopped (SIGINT/SIGTERM: running syncs stop after the
    /// page they are writing and release their jobs, then the process exits 0).
    Daemon {
        /// Time between rounds, e.g. `24h`, `30m`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        every: Duration,
    },
    /// Sync one business now and print its report as JSON.
    Sync {
        /// The business id.
        #[arg(long)]
        business: String,
        /// Re-list everything and mark objects Stripe no longer has as deleted.
        #[arg(long)]
        full: bool,
    },
    /// Re-list the objects created in the last N days for one business; prints counts as JSON.
    Backfill {
        /// The business id.
        #[arg(long)]
        business: String,
        /// How many days of history to re-list.
        #[arg(long)]
        days: u32,
    },
    /// Compare one business's mirror with its Stripe account, object by object.
    Audit {
        /// The business id.
        #[arg(long)]
        business: String,
    },
    /// Recompute one business's spend read model from its mirror and report any difference
    /// with the stored rows (exit status 1 when they differ).
    Verify {
        /// The business id.
        #[arg(long)]
        business: String,
    },
    /// Apply pending database migrations and exit.
    Migrate,
}

// The sync and the JSON API are allocation-heavy; mimalloc measured faster than glibc's malloc
// (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let purpose = if matches!(cli.command, Command::Migrate) {
        Purpose::Migrate
    } else {
        Purpose::Sync
    };
    let settings =
        match Settings::load(cli.config.as_deref()).and_then(|s| s.validate(purpose).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
    tributary_web::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; `Ok(false)` when a business failed.
async fn run(command: Command, settings: Settings) -> anyhow::Result<bool> {
    let db = Database::connect(&settings.database.url).await?;
    if settings.database.migrate_on_start || matches!(command, Command::Migrate) {
        db.migrate().await?;
    }
    if matches!(command, Command::Migrate) {
        println!("migrations applied");
        return Ok(true);
    }
    let stripe = tributary_web::stripe_client(&settings)?;
    let ctx = SyncContext::new(db, stripe, tributary_web::sync_config(&settings));
    stop_on_signal(&ctx)?;
    match command {
        Command::RunOnce { fresh_for } => round(&ctx, fresh_for).await,
        Command::Daemon { every } => daemon(&ctx, every).await,
        Command::Sync { business, full } => {
            let business = BusinessId::parse(&business)?;
            let opts = FetchOptions {
                full,
                since_days: None,
            };
            let report = with_progress(&ctx, &business, opts).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(report.succeeded() || report.interrupted())
        }
        Command::Backfill { business, days } => {
            let business = BusinessId::parse(&business)?;
            let before = tributary_sync::audit::live_counts(&ctx, &business).await?;
            let opts = FetchOptions {
                full: true,
                since_days: Some(days),
            };
            let report = with_progress(&ctx, &business, opts).await?;
            let after = tributary_sync::audit::live_counts(&ctx, &business).await?;
            let counts = tributary_sync::audit::backfill_counts(&report, &before, &after);
            println!("{}", serde_json::to_string_pretty(&counts)?);
            Ok(report.succeeded() || report.interrupted())
        }
        Command::Audit { business } => {
            let business = BusinessId::parse(&business)?;
            let access = tributary_persistence::access::get(ctx.db(), &business)
                .await?
                .ok_or_else(|| anyhow::anyhow!("business {business} is not connected"))?;
            let client = ctx.stripe().account(&access.stripe_account_id)?;
            let audit = tributary_sync::audit::audit(&ctx, &business, &client).await?;
            println!("{}", serde_json::to_string_pretty(&audit)?);
            Ok(audit.is_exact())
        }
        Command::Verify { business } => {
            let business = BusinessId::parse(&business)?;
            let report = tributary_sync::verify::verify_spend(ctx.db().conn(), &business).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(report.is_consistent())
        }
        Command::Migrate => Ok(true),
    }
}

async fn round(ctx: &SyncContext, fresh_for: Duration) -> anyhow::Result<bool> {
    let fresh = i64::try_from(fresh_for.as_secs()).unwrap_or(i64::MAX);
    let round = tributary_sync::run_once(ctx, fresh).await?;
    for r in &round.reports {
        let outcome = r
            .error
            .as_ref()
            .map_or(String::new(), |(code, msg)| format!(" ({code}: {msg})"));
        println!(
            "{} {} {} objects{}",
            r.business_id,
            r.status,
            r.written(),
            outcome
        );
    }
    println!(
        "round: {} queued, {} fresh, {} run here, {} failed, {} interrupted",
        round.queued,
        round.fresh,
        round.reports.len(),
        round.failed(),
        round.interrupted()
    );
    Ok(round.failed() == 0)
}

async fn daemon(ctx: &SyncContext, every: Duration) -> anyhow::Result<bool> {
    let mut all_ok = true;
    loop {
        let fresh = every.saturating_sub(Duration::from_secs(60).min(every / 2));
        match round(ctx, fresh).await {
            Ok(ok) => all_ok &= ok,
            Err(e) => {
                tracing::error!(error = %e, "scheduling round failed");
                all_ok = false;
            }
        }
        if ctx.is_shutting_down() {
            return Ok(all_ok);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            () = ctx.shutdown_requested() => return Ok(all_ok),
        }
    }
}

/// SIGTERM or SIGINT: running syncs stop after the page they are writing and release their
/// jobs (the next run resumes them at once), no new job starts, and the command exits with
/// the status it would have had (an interrupted sync is not a failure). A second signal exits
/// at once (status 130); the jobs' leases then expire as after a crash.
///
/// The handlers are installed before any sync starts, so a signal never kills the process
/// with a job leased.
fn stop_on_signal(ctx: &SyncContext) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping: signal received; running syncs stop after their page");
            ctx.shutdown();
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
    }
    #[cfg(not(unix))]
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                ctx.shutdown();
            }
        });
    }
    Ok(())
}

/// Runs one business's sync; on a terminal, draws a progress bar per resource from the job's
/// progress as the sync writes it.
async fn with_progress(
    ctx: &SyncContext,
    business: &BusinessId,
    opts: FetchOptions,
) -> anyhow::Result<SyncReport> {
    let sync = tributary_sync::fetch_stripe_data_with(ctx, business, Trigger::Manual, opts);
    if !std::io::stderr().is_terminal() {
        return Ok(sync.await?);
    }
    let bars = indicatif::MultiProgress::new();
    let style =
        indicatif::ProgressStyle::with_template("{prefix:>18} {spinner} {pos:>7} objects {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let mut shown: std::collections::BTreeMap<String, indicatif::ProgressBar> = Default::default();
    tokio::pin!(sync);
    loop {
        tokio::select! {
            report = &mut sync => {
                for bar in shown.values() {
                    bar.finish();
                }
                return Ok(report?);
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let Ok(Some(job)) = tributary_persistence::jobs::active_job(ctx.db(), business).await else { continue };
                let Some(progress) = job.progress.as_object() else { continue };
                for (resource, p) in progress {
                    let bar = shown.entry(resource.clone()).or_insert_with(|| {
                        let bar = bars.add(indicatif::ProgressBar::new_spinner());
                        bar.set_style(style.clone());
                        bar.set_prefix(resource.clone());
                        bar
                    });
                    bar.set_position(p.get("written").and_then(serde_json::Value::as_u64).unwrap_or(0));
                    if p.get("done").and_then(serde_json::Value::as_bool) == Some(true) {
                        bar.set_message("done");
                    }
                    bar.tick();
                }
            }
        }
    }
}
