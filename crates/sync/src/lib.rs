//! The Tributary sync engine: [`fetch_stripe_data`], the one implementation behind the manual
//! sync button, the scheduler, backfills and webhook-triggered refreshes, and the event
//! appliers that webhooks share with it.
//!
//! # Example
//!
//! Another service syncs one business (whose Stripe account is already connected) and reads
//! the spend summary the sync keeps current:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use secrecy::SecretString;
//! use tributary_domain::{BusinessId, Email};
//! use tributary_persistence::{Database, reads};
//! use tributary_stripe_connect::{Stripe, StripeConfig};
//! use tributary_sync::{SyncConfig, SyncContext, Trigger, fetch_stripe_data};
//!
//! let db = Database::connect("sqlite://tributary.db?mode=rwc").await?;
//! db.migrate().await?;
//! let stripe = Stripe::new(StripeConfig::new(SecretString::from("sk_test_…")))?;
//! let ctx = SyncContext::new(db, stripe, SyncConfig::default());
//! let business = BusinessId::parse("biz_1")?;
//! let report = fetch_stripe_data(&ctx, &business, Trigger::Manual).await?;
//! println!("{} objects written", report.written());
//!
//! // What one person spent with the business, per currency (SPEC §7).
//! let email = Email::parse("ada@example.com")?.into_inner();
//! let spend = reads::spend_of_emails(ctx.db().conn(), &business, &[email]).await?;
//! for row in spend.values().flatten() {
//!     println!("{} {}: net {} (minor units)", row.email, row.currency, row.net);
//! }
//! # Ok(()) }
//! ```

pub mod apply;
pub mod audit;
pub mod billing;
mod engine;
pub mod map;
pub mod metrics;
pub mod notify;
pub mod readmodel;
mod scheduler;
pub mod verify;
mod worker;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use tributary_domain::BusinessId;
use tributary_persistence::{Database, PersistenceError};
use tributary_stripe_connect::{Stripe, StripeError};

pub use engine::{FetchOptions, Resource, run_job};
pub use scheduler::{Round, run_once};
pub use worker::WorkerPool;

/// Tunables of the sync (SPEC §2 `sync.*`).
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// History pulled on the first sync, in days; 0 = everything.
    pub backfill_days: u32,
    /// Full re-list interval in days.
    pub reconcile_every_days: u32,
    /// Businesses synced at once by one worker pool.
    pub concurrency: usize,
    /// Lease length; renewed every third of it while a job runs.
    pub lease_secs: i64,
    /// Incremental lists start this long before the last successful sync (clock skew, objects
    /// created during the previous run).
    pub overlap_secs: i64,
    /// This process's lease owner id.
    pub worker_id: String,
    /// Host notices (`notify.url`, `notify.secret`), if configured.
    pub notify: Option<notify::NotifyConfig>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            backfill_days: 0,
            reconcile_every_days: 7,
            concurrency: 4,
            lease_secs: 60,
            overlap_secs: 300,
            worker_id: format!("{}-{}", hostname(), uuid_short()),
            notify: None,
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into())
}

fn uuid_short() -> String {
    let id = tributary_domain::JobId::new().to_string();
    id[id.len() - 8..].to_owned()
}

/// What a sync needs: the database, the Stripe client and the tunables. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    stripe: Stripe,
    config: SyncConfig,
    clock_offset: std::sync::atomic::AtomicI64,
    /// Set once by [`SyncContext::shutdown`].
    stop: tokio::sync::watch::Sender<bool>,
    /// Jobs this process is running now (see [`SyncContext::running_here`]).
    running: Mutex<HashSet<String>>,
}

impl SyncContext {
    /// A context over the database and the Stripe client; clone it freely (it is shared).
    pub fn new(db: Database, stripe: Stripe, config: SyncConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                stripe,
                config,
                clock_offset: Default::default(),
                stop: tokio::sync::watch::Sender::new(false),
                running: Mutex::default(),
            }),
        }
    }

    /// Asks every run of this context to stop (SIGTERM): each finishes the page it is
    /// writing, releases its job (back to `queued`, unleased, so the next worker takes it at
    /// once) and reports [`SyncError::Interrupted`]; no new job is claimed.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Whether [`SyncContext::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Resolves once [`SyncContext::shutdown`] is called.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.inner.stop.subscribe();
        // The sender lives as long as the context, so this only returns on a shutdown.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Whether this process runs `job_id` now. A run stalled past its lease (a database
    /// outage or lock) lets the job become claimable again, by this process too: claimers
    /// check this so the job does not get a second run here.
    pub fn running_here(&self, job_id: &str) -> bool {
        self.inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(job_id)
    }

    /// Marks `job_id` as running here until the guard drops; `None` when it already is.
    pub(crate) fn start_running(&self, job_id: &str) -> Option<RunningGuard> {
        let fresh = self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job_id.to_owned());
        fresh.then(|| RunningGuard {
            ctx: self.clone(),
            job_id: job_id.to_owned(),
        })
    }

    /// The sync's clock (unix seconds): wall time, plus an offset tests and the demo use to
    /// follow a simulator whose clock was moved forward.
    pub fn now(&self) -> i64 {
        tributary_persistence::now()
            + self
                .inner
                .clock_offset
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves this context's clock forward (tests and the demo, alongside `/_sim/clock`).
    pub fn advance_clock(&self, secs: i64) {
        self.inner
            .clock_offset
            .fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The Stripe client.
    pub fn stripe(&self) -> &Stripe {
        &self.inner.stripe
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.inner.config
    }
}

/// A job marked as running in this process ([`SyncContext::start_running`]).
#[derive(Debug)]
pub(crate) struct RunningGuard {
    ctx: SyncContext,
    job_id: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.ctx
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.job_id);
    }
}

/// What started a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Someone asked: the sync button, or a one-off run from the command line.
    Manual,
    /// The scheduler (cron or daemon).
    Scheduled,
    /// The first sync after a business connects.
    Backfill,
    /// A webhook-triggered refresh.
    Webhook,
}

impl Trigger {
    /// The `sync_jobs.trigger` value: `manual`, `scheduled`, `backfill` or `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
            Self::Backfill => "backfill",
            Self::Webhook => "webhook",
        }
    }
}

/// Why a sync could not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The business has no connected Stripe account.
    #[error("business {0} is not connected to Stripe")]
    NotConnected(String),
    /// Stripe refused or failed a request, after retries.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] PersistenceError),
    /// The job was cancelled: its lease was lost or the business disconnected.
    #[error("the sync was cancelled (lease lost or business disconnected)")]
    Cancelled,
    /// The process is shutting down ([`SyncContext::shutdown`]): the job was released, not
    /// failed, and the next worker resumes it.
    #[error("the sync was interrupted by a shutdown; its job was released for the next run")]
    Interrupted,
    /// The PostgreSQL server lost recent commits while the run went on (it crashed, was shut
    /// down immediately or failed over): pages the run wrote may be gone, so it does not count.
    #[error(
        "the database server restarted or failed over during the sync and may have lost pages \
         it had written; the next sync lists them again"
    )]
    DatabaseRestarted,
}

impl SyncError {
    /// The job error code of SPEC §4.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConnected(_) => "not_connected",
            Self::Stripe(e) => e.code(),
            Self::Database(_) | Self::DatabaseRestarted => "database",
            Self::Cancelled => "cancelled",
            Self::Interrupted => INTERRUPTED,
        }
    }
}

impl From<tributary_persistence::sea_orm::DbErr> for SyncError {
    fn from(e: tributary_persistence::sea_orm::DbErr) -> Self {
        Self::Database(PersistenceError::Db(e))
    }
}

/// Objects fetched and written for one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceProgress {
    /// Objects listed from Stripe.
    pub fetched: u64,
    /// Rows written to the mirror.
    pub written: u64,
    /// Whether the resource finished listing.
    pub done: bool,
}

/// The outcome of one sync run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    /// The job's id.
    pub job_id: String,
    /// The business synced.
    pub business_id: String,
    /// `succeeded` or `failed`; `queued` when the run was interrupted by a shutdown and its
    /// job released (error code `interrupted`).
    pub status: String,
    /// Whether the job was queued as a full re-list.
    pub full: bool,
    /// `(code, message)` of a failed or interrupted run (codes: SPEC §4).
    pub error: Option<(String, String)>,
    /// Progress per resource, by [`Resource::key`].
    pub progress: BTreeMap<String, ResourceProgress>,
}

impl SyncReport {
    /// Rows written over all resources.
    pub fn written(&self) -> u64 {
        self.progress.values().map(|p| p.written).sum()
    }

    /// Whether the run succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == tributary_persistence::jobs::SUCCEEDED
    }

    /// The run stopped for a shutdown and released its job: neither a success nor a failure.
    pub fn interrupted(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|(code, _)| code == INTERRUPTED)
    }
}

/// The error code of a run interrupted by a shutdown.
pub const INTERRUPTED: &str = "interrupted";

/// Syncs one business: queues a job (or joins the one queued or running), runs it under the
/// lease when no other worker holds it, and waits for it to finish otherwise.
pub async fn fetch_stripe_data(
    ctx: &SyncContext,
    business: &BusinessId,
    trigger: Trigger,
) -> Result<SyncReport, SyncError> {
    engine::fetch(ctx, business, trigger, FetchOptions::default()).await
}

/// Like [`fetch_stripe_data`], forcing a full re-list with reconciliation.
pub async fn fetch_stripe_data_full(
    ctx: &SyncContext,
    business: &BusinessId,
    trigger: Trigger,
) -> Result<SyncReport, SyncError> {
    engine::fetch(
        ctx,
        business,
        trigger,
        FetchOptions {
            full: true,
            since_days: None,
        },
    )
    .await
}

/// [`fetch_stripe_data`] with explicit options (full re-list, backfill window).
pub async fn fetch_stripe_data_with(
    ctx: &SyncContext,
    business: &BusinessId,
    trigger: Trigger,
    opts: FetchOptions,
) -> Result<SyncReport, SyncError> {
    engine::fetch(ctx, business, trigger, opts).await
}
