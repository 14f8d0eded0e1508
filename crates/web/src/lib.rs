//! actix-web routes, auth, JSON API and pages of Tributary, plus the configuration and
//! start-up both binaries share.
//!
//! Start-up lives here so tests run exactly what the binaries run:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use tributary_web::{Application, settings::Settings};
//! let settings = Settings::load(None)?;
//! let app = Application::build(settings).await?;
//! println!("listening on {}", app.port());
//! app.run_until_stopped().await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod routes;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod views;

use std::net::TcpListener;

use actix_cors::Cors;
use actix_web::http::header::{self, HeaderName};
use actix_web::{App, HttpServer, dev::Server, web};
use secrecy::SecretString;
use tributary_persistence::Database;
use tributary_stripe_connect::{Stripe, StripeConfig, StripeError};
use tributary_sync::{SyncConfig, SyncContext, WorkerPool};

use crate::auth::JwtKeys;
use crate::settings::{ConfigError, Settings};
use crate::state::{AppState, Workers};

pub use crate::state::Tuning;

/// Errors of building the application.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The settings are invalid or incomplete.
    #[error(transparent)]
    Config(#[from] settings::ConfigError),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] tributary_persistence::PersistenceError),
    /// The Stripe client could not be built.
    #[error("stripe client: {0}")]
    Stripe(Box<StripeError>),
    /// The listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address, `host:port`.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A built, bound API server.
pub struct Application {
    port: u16,
    server: Server,
    workers: Workers,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn required<'a, T>(value: Option<&'a T>, key: &str) -> Result<&'a T, ConfigError> {
    value.ok_or_else(|| ConfigError {
        key: key.to_owned(),
        problem: "is required to serve the API".to_owned(),
    })
}

/// The Stripe client of the `stripe.*` settings.
pub fn stripe_client(settings: &Settings) -> Result<Stripe, StartupError> {
    let key: &SecretString = required(settings.stripe.secret_key.as_ref(), "stripe.secret_key")?;
    let config = StripeConfig {
        api_base: settings.stripe.api_base.clone(),
        connect_base: settings.stripe.connect_base.clone(),
        connect_client_id: settings.stripe.connect_client_id.clone(),
        max_requests_per_second: settings.stripe.max_requests_per_second,
        timeout: std::time::Duration::from_secs(settings.stripe.timeout_secs),
        ..StripeConfig::new(key.clone())
    };
    Stripe::new(config).map_err(|e| StartupError::Stripe(Box::new(e)))
}

/// The sync tunables of the `sync.*` settings.
pub fn sync_config(settings: &Settings) -> SyncConfig {
    SyncConfig {
        backfill_days: settings.sync.backfill_days,
        reconcile_every_days: settings.sync.reconcile_every_days,
        concurrency: settings.sync.concurrency,
        lease_secs: settings.sync.lease_secs,
        notify: settings
            .notify
            .url
            .as_ref()
            .zip(settings.notify.secret.as_ref())
            .map(|(url, secret)| {
                tributary_sync::notify::NotifyConfig::new(url.clone(), secret.clone())
            }),
        ..SyncConfig::default()
    }
}

/// CORS for `server.cors_origins` (`*` allows any origin); no origins: same-origin only.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            telemetry::REQUEST_ID,
        ])
        .expose_headers([
            HeaderName::from_static("tributary-revoke"),
            telemetry::REQUEST_ID,
        ])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin.trim_end_matches('/'))
        };
    }
    cors
}

fn validate_origins(origins: &[String]) -> Result<(), ConfigError> {
    for origin in origins {
        let trimmed = origin.trim_end_matches('/');
        let host = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        let ok = origin == "*"
            || host.is_some_and(|h| {
                !h.is_empty() && !h.contains('/') && trimmed.parse::<actix_web::http::Uri>().is_ok()
            });
        if !ok {
            return Err(ConfigError {
                key: "server.cors_origins".into(),
                problem: format!("{origin:?} is not an origin (scheme://host[:port]) or *"),
            });
        }
    }
    Ok(())
}

impl Application {
    /// Connects the database (migrating it unless disabled), builds the Stripe client, starts
    /// the sync worker pool, binds `server.host:server.port` (port 0 picks a free one) and
    /// prepares the server.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, Tuning::default()).await
    }

    /// [`Application::build`] with non-default [`Tuning`] (tests).
    pub async fn build_with(settings: Settings, tuning: Tuning) -> Result<Self, StartupError> {
        let db = Database::connect(&settings.database.url).await?;
        if settings.database.migrate_on_start {
            db.migrate().await?;
        }
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(&addr).map_err(|source| StartupError::Bind { addr, source })?;
        Self::with_listener(settings, db, listener, tuning)
    }

    /// Builds on an existing database and listener (tests, the demo). Must be called inside
    /// a tokio runtime: the worker pool starts here.
    pub fn with_listener(
        settings: Settings,
        db: Database,
        listener: TcpListener,
        tuning: Tuning,
    ) -> Result<Self, StartupError> {
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: "listener".into(),
                source,
            })?
            .port();
        let stripe = stripe_client(&settings)?;
        metrics::install();
        let jwt_secret = required(settings.auth.jwt_secret.as_ref(), "auth.jwt_secret")?;
        let jwt = JwtKeys::new(Some(jwt_secret), settings.auth.jwt_previous_secret.as_ref());
        validate_origins(&settings.server.cors_origins)?;
        let workers = Workers::new(tuning.start_workers.then(|| {
            let ctx = SyncContext::new(db.clone(), stripe.clone(), sync_config(&settings));
            WorkerPool::start_with_interval(ctx, tuning.worker_poll)
        }));
        let state = web::Data::new(AppState {
            db: db.clone(),
            stripe,
            workers: workers.clone(),
            jwt,
            livemode: settings.livemode(),
            settings,
            tuning,
            dashboards: Default::default(),
            spend: Default::default(),
            ingest: Default::default(),
        });
        let db = web::Data::new(db);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(cors(&state.settings.server.cors_origins))
                .wrap(actix_web::middleware::from_fn(telemetry::access_log))
                .app_data(state.clone())
                .app_data(db.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(error::JSON_LIMIT)
                        .error_handler(error::json_error),
                )
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .configure(routes::configure)
                .default_service(web::to(error::not_found))
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: "listener".into(),
            source,
        })?
        // The signals are ours (`run_until_stopped`): actix would stop its worker threads
        // first, and with them the runtimes the pool's database connections were opened on,
        // while a sync still writes its page.
        .disable_signals()
        .run();
        Ok(Self {
            port,
            server,
            workers,
        })
    }

    /// The port it is bound to (the one picked when `server.port` is `0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from outside (tests); [`Application::run_until_stopped`] then returns.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the process is asked to stop, then lets running syncs finish.
    ///
    /// On SIGINT/SIGTERM: no new connection is accepted, the syncs in the worker pool stop
    /// after the page they are writing and release their jobs, then the requests in flight are
    /// answered and the server stops. The syncs go first because their database and Stripe
    /// connections may have been opened on actix's worker threads, which stop with the
    /// server. A second signal stops the server at once, without waiting for the syncs (their
    /// leases then expire as after a crash).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        // Polled on its own task: it carries out `pause` and `stop` only while polled.
        let mut server = tokio::spawn(self.server);
        let mut signals = Signals::install()?;
        tokio::select! {
            served = &mut server => {
                // Stopped through its handle (tests, the demo).
                self.workers.shutdown().await;
                return served.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            }
            () = signals.next() => {}
        }
        tracing::info!("stopping: signal received; running syncs stop after their page");
        handle.pause().await;
        tokio::select! {
            () = self.workers.shutdown() => handle.stop(true).await,
            () = signals.next() => {
                tracing::warn!("second signal: stopping now");
                handle.stop(false).await;
            }
        }
        server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// SIGTERM and SIGINT (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::validate_origins;

    #[test]
    fn cors_origins_are_checked_at_start_up() {
        let ok =
            |o: &[&str]| validate_origins(&o.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert!(
            ok(&[
                "https://app.example",
                "http://localhost:3000",
                "https://a.example/",
                "*"
            ])
            .is_ok()
        );
        for bad in [
            "app.example",
            "https://app.example/path",
            "ftp://x",
            "https://",
        ] {
            let err = ok(&[bad]).unwrap_err();
            assert_eq!(err.key, "server.cors_origins", "{bad}");
        }
    }
}
