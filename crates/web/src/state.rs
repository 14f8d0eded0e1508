//! What every handler shares: the database, the Stripe client, the worker pool, the JWT keys
//! and the settings the routes read.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tributary_persistence::Database;
use tributary_stripe_connect::Stripe;
use tributary_sync::WorkerPool;

use crate::auth::JwtKeys;
use crate::settings::Settings;

/// How long an OAuth state (CSRF nonce) stays valid: 10 minutes (SPEC §3).
pub const OAUTH_STATE_TTL_SECS: i64 = 600;

/// Knobs of a built application that are not configuration: tests shorten or switch them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Lifetime of an OAuth state.
    pub oauth_state_ttl_secs: i64,
    /// Run queued syncs in this process (SPEC §4: manual and first syncs).
    pub start_workers: bool,
    /// How often the worker pool looks for jobs queued elsewhere.
    pub worker_poll: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            oauth_state_ttl_secs: OAUTH_STATE_TTL_SECS,
            start_workers: true,
            worker_poll: Duration::from_secs(5),
        }
    }
}

/// The background worker pool, shared by the handlers (to wake it) and the application (to
/// shut it down).
#[derive(Debug, Clone, Default)]
pub struct Workers(Arc<Mutex<Option<WorkerPool>>>);

impl Workers {
    /// Wraps the pool; `None` when this process runs no workers.
    pub fn new(pool: Option<WorkerPool>) -> Self {
        Self(Arc::new(Mutex::new(pool)))
    }

    /// Tells the pool a job was queued (no-op without a pool: another process runs it).
    pub fn wake(&self) {
        if let Some(pool) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            pool.wake();
        }
    }

    /// Stops claiming jobs and waits for the running ones.
    pub async fn shutdown(&self) {
        let pool = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(pool) = pool {
            pool.shutdown().await;
        }
    }
}

/// Shared by every request (`web::Data<AppState>`).
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub db: Database,
    /// The Stripe client.
    pub stripe: Stripe,
    /// The worker pool, to wake after queuing a job.
    pub workers: Workers,
    /// The keys that verify bearer tokens.
    pub jwt: JwtKeys,
    /// The settings the application was built with.
    pub settings: Settings,
    /// The deployment's mode, from the platform key (`sk_live_…`).
    pub livemode: bool,
    /// Knobs that are not configuration (tests shorten or switch them).
    pub tuning: Tuning,
    /// What the dashboards derive from a whole business, per data version.
    pub dashboards: crate::routes::dashboards::DashboardCache,
    /// The spend rows of each business, per data version (customers grid, summaries).
    pub spend: crate::routes::spend_cache::SpendCache,
    /// The webhook deliveries of each business waiting for their transaction.
    pub ingest: crate::routes::webhooks::Ingest,
}

impl AppState {
    /// Runs a Stripe call a person is waiting on (the OAuth callback, a disconnect) for at
    /// most `stripe.timeout_secs` in all, retries included: the client alone would retry a
    /// silent Stripe for minutes, far past any browser's or proxy's patience.
    pub async fn interactive<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, tributary_stripe_connect::StripeError>>,
    ) -> Result<T, tributary_stripe_connect::StripeError> {
        let limit = Duration::from_secs(self.settings.stripe.timeout_secs);
        match tokio::time::timeout(limit, call).await {
            Ok(answer) => answer,
            Err(_) => Err(tributary_stripe_connect::StripeError::Unavailable {
                attempts: 1,
                status: None,
                detail: format!("no answer within {} s", limit.as_secs()),
            }),
        }
    }
}
