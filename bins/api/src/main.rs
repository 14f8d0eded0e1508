//! `tributary-api`: serve the Tributary API, apply migrations, or run the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_web::demo::DemoOptions;
use tributary_web::settings::{Purpose, Settings};

/// Serve the Tributary API (Stripe Connect mirror, spend and metrics for a multi-tenant platform).
#[derive(Debug, Parser)]
#[command(name = "tributary-api", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (also `TRIBUTARY_CONFIG`); environment `TRIBUTARY__SECTION__KEY` overrides it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Run the self-contained demo on a local SQLite file (no configuration needed).
    #[arg(long)]
    demo: bool,

    /// Port to listen on (overrides `server.port`).
    #[arg(long, global = true, value_name = "PORT")]
    port: Option<u16>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

// The sync and the JSON API are allocation-heavy; mimalloc measured faster than glibc's malloc
// (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let purpose = match (&cli.command, cli.demo) {
        (_, true) => Purpose::Demo,
        (Some(Command::Migrate), _) => Purpose::Migrate,
        _ => Purpose::Serve,
    };
    let settings = match Settings::load(cli.config.as_deref()).and_then(|mut s| {
        if let Some(port) = cli.port {
            s.server.port = port;
        }
        s.validate(purpose).map(|()| s)
    }) {
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
    let result = runtime.block_on(async move {
        match purpose {
            Purpose::Migrate => migrate(&settings).await,
            Purpose::Demo => demo(settings).await,
            _ => serve(settings).await,
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

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = tributary_persistence::Database::connect(&settings.database.url).await?;
    db.migrate().await?;
    tracing::info!("migrations applied");
    println!(
        "migrations applied to {}",
        redact_url(&settings.database.url)
    );
    Ok(())
}

/// Serves the API; the same process runs manual and first syncs in its worker pool
/// (`sync.concurrency` at a time). On SIGINT/SIGTERM it stops accepting connections, stops the
/// syncs after the page they are writing and releases their jobs, then answers the requests in
/// flight.
async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = tributary_web::Application::build(settings).await?;
    tracing::info!(port = app.port(), "tributary-api listening");
    app.run_until_stopped().await?;
    Ok(())
}

/// The demo of SPEC §13: an in-process Stripe simulator, a fresh SQLite file and demo
/// businesses (`tributary_web::demo`); prints where to go and serves until stopped.
async fn demo(settings: Settings) -> anyhow::Result<()> {
    println!(
        "Starting the Tributary demo: generating a simulated Stripe account and running its first sync…"
    );
    let demo = tributary_web::demo::Demo::start(settings, DemoOptions::default()).await?;
    println!("{}", demo.banner());
    demo.run_until_stopped().await?;
    Ok(())
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
