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

pub mod settings;
pub mod telemetry;

use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, dev::Server, web};
use tributary_persistence::Database;

use crate::settings::Settings;

/// Errors of building the application.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] settings::ConfigError),
    #[error("database: {0}")]
    Database(#[from] tributary_persistence::PersistenceError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A built, bound API server.
pub struct Application {
    port: u16,
    server: Server,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects the database (migrating it unless disabled), binds `server.host:server.port`
    /// (port 0 picks a free one) and prepares the server.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = Database::connect(&settings.database.url).await?;
        if settings.database.migrate_on_start {
            db.migrate().await?;
        }
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(&addr).map_err(|source| StartupError::Bind { addr, source })?;
        Self::with_listener(settings, db, listener)
    }

    /// Builds on an existing database and listener (tests, the demo).
    pub fn with_listener(
        _settings: Settings,
        db: Database,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: "listener".into(),
                source,
            })?
            .port();
        let db = web::Data::new(db);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(db.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: "listener".into(),
            source,
        })?
        .run();
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is asked to stop (SIGINT/SIGTERM: graceful shutdown).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(db: web::Data<Database>) -> HttpResponse {
    if db.ping().await {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"error": {"code": "database_unavailable", "message": "the database does not answer"}}))
    }
}
