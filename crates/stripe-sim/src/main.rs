//! `tributary-stripe-sim`: runs the simulator and prints one ready line on stdout.

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use tributary_stripe_sim::{Scale, SimOptions, SimServer};

#[derive(Debug, Parser)]
#[command(
    name = "tributary-stripe-sim",
    about = "A stateful Stripe simulator for Tributary"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:12111")]
    addr: SocketAddr,
    /// Seed for all generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of connectable accounts to generate.
    #[arg(long, default_value_t = 2)]
    accounts: usize,
    /// empty | small | medium | bench
    #[arg(long, default_value = "small")]
    scale: Scale,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let server = SimServer::start(SimOptions {
        addr: Some(args.addr),
        seed: args.seed,
        accounts: args.accounts,
        scale: args.scale,
    })
    .await?;
    let line =
        serde_json::json!({"addr": server.addr().to_string(), "accounts": server.accounts()});
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    server.stop().await;
    Ok(())
}
