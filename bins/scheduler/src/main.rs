//! `tributary-scheduler`: runs Stripe syncs from cron or as a daemon.
//!
//! Today it applies migrations; the sync subcommands (`run-once`, `daemon`, `sync`, `backfill`)
//! arrive with the sync engine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_web::settings::{Purpose, Settings};

/// Run Tributary's Stripe syncs (cron, daemon or one-off) and database migrations.
#[derive(Debug, Parser)]
#[command(name = "tributary-scheduler", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (also `TRIBUTARY_CONFIG`); environment `TRIBUTARY__SECTION__KEY` overrides it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref())
        .and_then(|s| s.validate(Purpose::Migrate).map(|()| s))
    {
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
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Migrate => {
                let db = tributary_persistence::Database::connect(&settings.database.url).await?;
                db.migrate().await?;
                println!("migrations applied");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
