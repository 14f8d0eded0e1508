//! Logging: `tracing` with plain or JSON lines; our crates at the configured level,
//! dependencies at `warn`.

use tracing_subscriber::{EnvFilter, fmt};

use crate::settings::{LogFormat, LogSettings};

const OUR_CRATES: &[&str] = &[
    "tributary_api",
    "tributary_scheduler",
    "tributary_web",
    "tributary_sync",
    "tributary_persistence",
    "tributary_stripe_connect",
    "tributary_stripe_sim",
    "tributary_domain",
];

/// The filter for `level`: `RUST_LOG`, when set, replaces it entirely.
pub fn filter(level: &str) -> EnvFilter {
    if let Ok(custom) = std::env::var("RUST_LOG") {
        return EnvFilter::new(custom);
    }
    let mut directives = vec!["warn".to_owned()];
    directives.extend(OUR_CRATES.iter().map(|c| format!("{c}={level}")));
    EnvFilter::new(directives.join(","))
}

/// Installs the global subscriber, writing to stderr. Calling it twice is harmless.
pub fn init(log: &LogSettings) {
    let builder = fmt()
        .with_env_filter(filter(&log.level))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}
