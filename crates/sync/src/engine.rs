//! The sync run: lists, events, reconciliation, read models, cursors, under the lease.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::Instrument;
use tributary_domain::BusinessId;
use tributary_persistence::entities::*;
use tributary_persistence::mirror::{self, Mirror, Text};
use tributary_persistence::{Statistics, access, jobs};
use tributary_stripe_connect::{AccountClient, Created, ListRequest, RawOnly, StripeError};

use crate::map::{self, Stamp};
use crate::{ResourceProgress, SyncContext, SyncError, SyncReport, Trigger, apply, readmodel};

const DAY: i64 = 86_400;
/// Stripe keeps events for 30 days; past that (less a margin) the events feed cannot be trusted.
const EVENT_RETENTION: i64 = 30 * DAY - 3_600;

/// The resources a sync lists, in SPEC §5's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `/v1/products`.
    Products,
    /// `/v1/prices`.
    Prices,
    /// `/v1/customers`.
    Customers,
    /// `/v1/payment_intents`.
    PaymentIntents,
    /// `/v1/charges`.
    Charges,
    /// `/v1/refunds`.
    Refunds,
    /// `/v1/invoices`, with their lines.
    Invoices,
    /// `/v1/invoice_payments`.
    InvoicePayments,
    /// `/v1/checkout/sessions`, with their line items.
    CheckoutSessions,
    /// `/v1/subscriptions`, with their items.
    Subscriptions,
}

impl Resource {
    /// Every resource, in listing order.
    pub const ALL: [Resource; 10] = [
        Resource::Products,
        Resource::Prices,
        Resource::Customers,
        Resource::PaymentIntents,
        Resource::Charges,
        Resource::Refunds,
        Resource::Invoices,
        Resource::InvoicePayments,
        Resource::CheckoutSessions,
        Resource::Subscriptions,
    ];

    /// The resource's key in job progress and `sync_cursors` (`payment_intents`, …).
    pub fn key(self) -> &'static str {
        match self {
            Resource::Products => "products",
            Resource::Prices => "prices",
            Resource::Customers => "customers",
            Resource::PaymentIntents => "payment_intents",
            Resource::Charges => "charges",
            Resource::Refunds => "refunds",
            Resource::Invoices => "invoices",
            Resource::InvoicePayments => "invoice_payments",
            Resource::CheckoutSessions => "checkout_sessions",
            Resource::Subscriptions => "subscriptions",
        }
    }

    /// Stripe's `object` of the resource's objects.
    fn object(self) -> &'static str {
        match self {
            Resource::Products => "product",
            Resource::Prices => "price",
            Resource::Customers => "customer",
            Resource::PaymentIntents => "payment_intent",
            Resource::Charges => "charge",
            Resource::Refunds => "refund",
            Resource::Invoices => "invoice",
            Resource::InvoicePayments => "invoice_payment",
            Resource::CheckoutSessions => "checkout.session",
            Resource::Subscriptions => "subscription",
        }
    }
}

/// A listed page: its objects as trees, or as text for the kinds whose mappers read a few
/// fields ([`map::fields_of`]).
enum Listed {
    Trees(Vec<Value>),
    Texts(Vec<Box<RawValue>>, map::FieldsOf),
}

impl Listed {
    fn len(&self) -> usize {
        match self {
            Listed::Trees(t) => t.len(),
            Listed::Texts(t, _) => t.len(),
        }
    }
}

/// How a sync started from code should run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Re-list everything and reconcile deletions.
    pub full: bool,
    /// Re-list only objects created in the last N days (a backfill); implies a full list of
    /// that window, without reconciliation.
    pub since_days: Option<u32>,
}

pub(crate) async fn fetch(
    ctx: &SyncContext,
    business: &BusinessId,
    trigger: Trigger,
    opts: FetchOptions,
) -> Result<SyncReport, SyncError> {
    let db = ctx.db();
    connected(ctx, business).await?;
    let full = opts.full || opts.since_days.is_some();
    let (job, _) = jobs::enqueue(db, business, trigger.as_str(), full, ctx.now()).await?;
    let owner = &ctx.config().worker_id;
    if !ctx.running_here(&job.id)
        && jobs::claim(db, &job.id, owner, ctx.now(), ctx.config().lease_secs).await?
    {
        count_takeover(&job, owner);
        let job = jobs::get(db, business, &job.id).await?.unwrap_or(job);
        return Ok(run_job_with(ctx, job, opts.since_days).await);
    }
    // Another worker runs it: join by waiting for its outcome.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match jobs::get(db, business, &job.id).await? {
            Some(j) if j.status == jobs::QUEUED || j.status == jobs::RUNNING => {
                // A dead owner's lease expires; take the job over then (unless the owner is
                // this process, stalled past its lease: its run goes on).
                if !ctx.running_here(&j.id)
                    && jobs::claim(db, &j.id, owner, ctx.now(), ctx.config().lease_secs).await?
                {
                    count_takeover(&j, owner);
                    return Ok(run_job(ctx, j).await);
                }
            }
            Some(j) => return Ok(report_of(&j)),
            None => return Err(SyncError::Cancelled),
        }
    }
}

/// A successful [`jobs::claim`] of `job` (as read before the claim) leased to another worker
/// can only have found that lease expired.
fn count_takeover(job: &sync_jobs::Model, owner: &str) {
    if let Some(previous) = job.lease_owner.as_deref().filter(|o| *o != owner) {
        crate::metrics::lease_taken_over(&job.id, previous);
    }
}

async fn connected(
    ctx: &SyncContext,
    business: &BusinessId,
) -> Result<stripe_access::Model, SyncError> {
    access::get(ctx.db(), business)
        .await?
        .filter(|a| a.status == access::CONNECTED)
        .ok_or_else(|| SyncError::NotConnected(business.to_string()))
}

fn report_of(job: &sync_jobs::Model) -> SyncReport {
    SyncReport {
        job_id: job.id.clone(),
        business_id: job.business_id.clone(),
        status: job.status.clone(),
        full: job.full,
        error: job
            .error_code
            .clone()
            .map(|c| (c, job.error_message.clone().unwrap_or_default())),
        progress: serde_json::from_value(job.progress.clone()).unwrap_or_default(),
    }
}

/// State of one run, shared by its concurrent resource tasks.
struct Run {
    ctx: SyncContext,
    business: BusinessId,
    job_id: String,
    account: String,
    started: i64,
    cancelled: Arc<AtomicBool>,
    /// Set when the run must stop at its next page boundary: a shutdown, or another resource
    /// of the run failed.
    halt: tokio::sync::watch::Sender<bool>,
    /// A full re-list rebuilds the read models once at the end; an incremental run keeps them
    /// current page by page.
    full: AtomicBool,
    progress: Mutex<BTreeMap<String, ResourceProgress>>,
    progress_saved_ms: std::sync::atomic::AtomicI64,
}

/// A task's output, `None` if it was cancelled; a panic in the task goes on in the caller.
fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Option<T> {
    match result {
        Ok(out) => Some(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Runs a job this worker has claimed, to completion or failure, and records the outcome on
/// the job. Never panics on Stripe or database errors: they become the job's error.
pub async fn run_job(ctx: &SyncContext, job: sync_jobs::Model) -> SyncReport {
    run_job_with(ctx, job, None).await
}

async fn run_job_with(
    ctx: &SyncContext,
    job: sync_jobs::Model,
    since_days: Option<u32>,
) -> SyncReport {
    let Ok(business) = BusinessId::parse(&job.business_id) else {
        return report_of(&job);
    };
    let Some(_running) = ctx.start_running(&job.id) else {
        // Already running in this process (a second trigger of the same context, or a claim
        // after the run here stalled past its lease): one run is enough; wait for its outcome.
        tracing::debug!(job_id = %job.id, "job already running in this process; joining it");
        while ctx.running_here(&job.id) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return match jobs::get(ctx.db(), &business, &job.id).await {
            Ok(Some(j)) => report_of(&j),
            _ => report_of(&job),
        };
    };
    let span = tracing::info_span!("sync", business_id = %business, job_id = %job.id, trigger = %job.trigger);
    let trigger = job.trigger.clone();
    let started = std::time::Instant::now();
    let in_progress = metrics::gauge!(crate::metrics::RUNS_IN_PROGRESS);
    in_progress.increment(1.0);
    let report = run_claimed(ctx, job, business, since_days)
        .instrument(span)
        .await;
    in_progress.decrement(1.0);
    let outcome = crate::metrics::outcome(
        &report.status,
        report.error.as_ref().map(|(code, _)| code.as_str()),
    );
    metrics::counter!(crate::metrics::RUNS, "outcome" => outcome, "trigger" => trigger)
        .increment(1);
    metrics::histogram!(crate::metrics::RUN_DURATION, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    report
}

/// The run of a claimed job, in its `sync` span.
async fn run_claimed(
    ctx: &SyncContext,
    job: sync_jobs::Model,
    business: BusinessId,
    since_days: Option<u32>,
) -> SyncReport {
    let owner = ctx.config().worker_id.clone();
    let cancelled = Arc::new(AtomicBool::new(false));
    let renewal = {
        let ctx = ctx.clone();
        let (id, owner, lease) = (job.id.clone(), owner.clone(), ctx.config().lease_secs);
        let cancelled = cancelled.clone();
        tokio::spawn(async move {
            // Renewal doubles as the check that the job is still ours (failed from outside,
            // taken over): every 2 s at most, so a cancelled run stops within a page or two.
            let every = Duration::from_secs((lease / 3).clamp(1, 2) as u64);
            loop {
                tokio::time::sleep(every).await;
                match jobs::renew(ctx.db(), &id, &owner, ctx.now(), lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        cancelled.store(true, Ordering::SeqCst);
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, job = %id, "lease renewal failed"),
                }
            }
        })
    };
    let account = access::get(ctx.db(), &business).await.ok().flatten();
    let run = Arc::new(Run {
        ctx: ctx.clone(),
        business: business.clone(),
        job_id: job.id.clone(),
        account: account.map(|a| a.stripe_account_id).unwrap_or_default(),
        started: ctx.now(),
        cancelled,
        halt: tokio::sync::watch::Sender::new(false),
        full: AtomicBool::new(true),
        progress: Mutex::new(BTreeMap::new()),
        progress_saved_ms: std::sync::atomic::AtomicI64::new(0),
    });
    let result = run.execute(job.full, since_days).await;
    renewal.abort();
    let db = ctx.db();
    if matches!(result, Err(SyncError::Interrupted)) {
        return run.release(&job, &owner).await;
    }
    let (status, error) = match &result {
        Ok(()) => (jobs::SUCCEEDED, None),
        Err(e) => {
            if matches!(e, SyncError::Stripe(se) if se.is_access_revoked()) {
                match access::mark_revoked(db, &business, ctx.now()).await {
                    Ok(true) => {
                        if let Some(n) = &ctx.config().notify {
                            let data = serde_json::json!({"account_id": run.account, "reason": "access_revoked"});
                            crate::notify::send(
                                n,
                                "connection.revoked",
                                business.as_str(),
                                ctx.now(),
                                data,
                            );
                        }
                    }
                    Ok(false) => {}
                    Err(err) => tracing::error!(error = %err, "could not mark access revoked"),
                }
            }
            tracing::warn!(error = %e, code = e.code(), "sync failed");
            // A successful run bumps the data version in its final transaction; the pages a
            // failed one wrote are data too (best effort: the next run bumps again).
            let _ = access::bump_version(db.writer(), &business).await;
            (jobs::FAILED, Some((e.code().to_owned(), e.to_string())))
        }
    };
    let progress = run.progress_json();
    let _ = jobs::set_progress(db, &job.id, &owner, progress).await;
    let finished = jobs::finish(
        db,
        &job.id,
        &owner,
        status,
        error.as_ref().map(|(c, m)| (c.as_str(), m.as_str())),
        ctx.now(),
    )
    .await
    .unwrap_or(false);
    if !finished {
        // The job was failed or cancelled from outside (deauthorization, disconnect).
        if let Ok(Some(j)) = jobs::get(db, &business, &job.id).await {
            return report_of(&j);
        }
    }
    tracing::info!(status, "sync finished");
    let report = SyncReport {
        job_id: job.id.clone(),
        business_id: job.business_id.clone(),
        status: status.to_owned(),
        full: job.full,
        error,
        progress: run.progress.lock().map(|p| p.clone()).unwrap_or_default(),
    };
    if let Some(n) = &ctx.config().notify {
        let kind = if report.succeeded() {
            "sync.succeeded"
        } else {
            "sync.failed"
        };
        let data = serde_json::to_value(&report).unwrap_or_default();
        crate::notify::send(n, kind, business.as_str(), ctx.now(), data);
    }
    report
}

impl Run {
    /// Hands an interrupted run's job back to the queue, with the progress so far.
    async fn release(&self, job: &sync_jobs::Model, owner: &str) -> SyncReport {
        let db = self.ctx.db();
        let _ = access::bump_version(db.writer(), &self.business).await;
        let _ = jobs::set_progress(db, &job.id, owner, self.progress_json()).await;
        match jobs::release(db, &job.id, owner).await {
            Ok(true) => tracing::info!("sync interrupted by shutdown; job released"),
            // Failed or taken over from outside meanwhile: report it as it stands.
            Ok(false) => {
                if let Ok(Some(j)) = jobs::get(db, &self.business, &job.id).await {
                    return report_of(&j);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release the interrupted job; its lease expires")
            }
        }
        let err = SyncError::Interrupted;
        SyncReport {
            job_id: job.id.clone(),
            business_id: job.business_id.clone(),
            status: jobs::QUEUED.to_owned(),
            full: job.full,
            error: Some((err.code().to_owned(), err.to_string())),
            progress: self.progress.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }

    /// Whether the run must stop at this page boundary.
    fn halted(&self) -> bool {
        *self.halt.borrow() || self.ctx.is_shutting_down()
    }

    /// Runs `step` (a Stripe request, or the requests that prepare a page) unless the run is
    /// asked to stop first or meanwhile: nothing is written in a step, so dropping it loses
    /// nothing. Writes are never interrupted; the run stops between pages.
    async fn step<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, SyncError>>,
    ) -> Result<T, SyncError> {
        if self.halted() {
            return Err(SyncError::Interrupted);
        }
        let mut halt = self.halt.subscribe();
        tokio::select! {
            biased;
            () = self.ctx.shutdown_requested() => Err(SyncError::Interrupted),
            Ok(_) = halt.wait_for(|h| *h) => Err(SyncError::Interrupted),
            r = step => r,
        }
    }

    async fn execute(
        self: &Arc<Self>,
        force_full: bool,
        since_days: Option<u32>,
    ) -> Result<(), SyncError> {
        let db = self.ctx.db();
        let access = connected(&self.ctx, &self.business).await?;
        let client = self.ctx.stripe().account(&access.stripe_account_id)?;

        // Account display name, refreshed every run; also the first call, so a revoked
        // connection fails fast.
        let name = self
            .step(async { Ok(client.display_name().await?) })
            .await?;
        // Before any page: the canary that tells the last transaction whether the server lost
        // commits of this run meanwhile (see `jobs::plant_canary`).
        let owner = &self.ctx.config().worker_id;
        jobs::plant_canary(db, &self.business, &self.job_id, owner, self.ctx.now()).await?;
        access::set_account_name(db, &self.business, name.as_deref()).await?;

        let cursors: HashMap<String, sync_cursors::Model> = sync_cursors::Entity::find()
            .filter(sync_cursors::Column::BusinessId.eq(self.business.as_str()))
            .all(db.conn())
            .await?
            .into_iter()
            .map(|c| (c.resource.clone(), c))
            .collect();
        let last_success = Resource::ALL
            .iter()
            .map(|r| cursors.get(r.key()).and_then(|c| c.last_successful_date))
            .collect::<Option<Vec<i64>>>()
            .and_then(|v| v.into_iter().min());
        let events_cursor = cursors.get("events").and_then(|c| c.events_cursor);
        let last_reconciled = cursors.get("events").and_then(|c| c.last_reconciled_at);
        let cfg = self.ctx.config();
        let reconcile_due = last_reconciled
            .is_none_or(|t| self.started - t >= i64::from(cfg.reconcile_every_days) * DAY);
        let events_expired = events_cursor.is_none_or(|c| self.started - c > EVENT_RETENTION);
        let first = last_success.is_none();
        let full = force_full || first || reconcile_due || events_expired;
        let window = since_days.or((first && cfg.backfill_days > 0).then_some(cfg.backfill_days));
        let bounded_backfill = window.is_some();
        let full = full || bounded_backfill;
        let created = match (full, last_success, window) {
            (true, _, Some(days)) => Created::since(self.started - i64::from(days) * DAY),
            (true, _, None) | (false, None, _) => Created::all(),
            (false, Some(since), _) => Created::since(since - cfg.overlap_secs),
        };
        tracing::info!(full, first, "sync started");
        self.full.store(full, Ordering::SeqCst);

        // Each resource lists on its own task, so parsing, mapping and writing pages spread
        // over the runtime's threads. Every resource stops at a page boundary when one fails
        // (or on a shutdown), so no page is abandoned half-written; a real failure wins over
        // the interruptions it caused. Dropping the run drops the set, which aborts them.
        let mut lists = tokio::task::JoinSet::new();
        for r in Resource::ALL {
            let (run, client) = (Arc::clone(self), client.clone());
            lists.spawn(
                async move {
                    let res = run.list(r, &client, created).await;
                    if res.is_err() {
                        run.halt.send_replace(true);
                    }
                    res
                }
                .instrument(tracing::Span::current()),
            );
        }
        let mut first_error = None;
        while let Some(listed) = lists.join_next().await {
            let Err(err) = joined(listed).unwrap_or(Err(SyncError::Interrupted)) else {
                continue;
            };
            if first_error.is_none() || matches!(first_error, Some(SyncError::Interrupted)) {
                first_error = Some(err);
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }

        let mut newest_event = events_cursor.unwrap_or(self.started);
        if !full && let Some(cursor) = events_cursor {
            newest_event = newest_event.max(
                self.apply_events(&client, cursor - cfg.overlap_secs)
                    .await?,
            );
        }

        // A full run reads its facts beside the transaction where it can (below).
        let beside = if full {
            self.ctx.db().reading_beside().await
        } else {
            None
        };
        // A full run may have loaded most of the tables' rows: plans made from the old
        // statistics would scan whole businesses. Where the facts are read beside (PostgreSQL)
        // the mirror is analysed beside them, below; on SQLite first (the analysis writes, and
        // the transaction will hold the one write lock).
        if full && beside.is_none() {
            self.refresh_statistics(Statistics::Mirror).await;
        }
        let txn = self.begin_guarded().await?;
        if !jobs::canary_alive(&txn, &self.job_id, &self.ctx.config().worker_id).await? {
            // Pages commit without waiting for their WAL flush, and a crash loses the newest
            // of them while this run, reconnected, went on: its cursors must not move.
            txn.rollback().await.ok();
            return Err(SyncError::DatabaseRestarted);
        }
        let b = &self.business;
        let reconcile = async {
            if full && !bounded_backfill {
                let s = self.started;
                mirror::mark_unseen_deleted::<stripe_products::Entity, _>(&txn, b, s).await?;
                mirror::mark_unseen_deleted::<stripe_prices::Entity, _>(&txn, b, s).await?;
                mirror::mark_unseen_deleted::<stripe_customers::Entity, _>(&txn, b, s).await?;
                mirror::mark_unseen_deleted::<stripe_orders::Entity, _>(&txn, b, s).await?;
                mirror::mark_unseen_deleted::<stripe_refunds::Entity, _>(&txn, b, s).await?;
                mirror::mark_unseen_deleted::<stripe_invoices::Entity, _>(&txn, b, s).await?;
                mirror::mark_unseen_deleted::<stripe_invoice_payments::Entity, _>(&txn, b, s)
                    .await?;
                mirror::mark_unseen_deleted::<stripe_checkout_sessions::Entity, _>(&txn, b, s)
                    .await?;
                mirror::mark_unseen_deleted::<stripe_subscriptions::Entity, _>(&txn, b, s).await?;
            }
            Ok::<_, SyncError>(())
        };
        if full {
            // The whole business's facts, as they are once the reconciliation has marked the
            // unseen rows deleted. Where it can (PostgreSQL) the load reads on pooled
            // connections beside the reconciliation: this transaction's lock keeps every
            // other writer of the business out, and its own marks are invisible there, so the
            // load leaves out exactly the rows it marks (`seen_since`). Elsewhere (SQLite) it
            // reads in the transaction, after the marks.
            let seen_since = (!bounded_backfill).then_some(self.started);
            let loaded = if beside.is_some() {
                // Through the lookups' pool: 2,000-row chunks in Stripe id order, each planned
                // once (along the primary key whatever the statistics say, so it needs not wait
                // for the analysis beside it).
                let pool = self.ctx.db().lookups();
                let facts = readmodel::load_facts_seen(pool, b, seen_since);
                let analyse = async {
                    self.refresh_statistics(Statistics::Mirror).await;
                    Ok::<_, SyncError>(())
                };
                futures::try_join!(reconcile, facts, analyse)?.1
            } else {
                reconcile.await?;
                readmodel::load_facts_seen(&txn, b, seen_since).await?
            };
            readmodel::rebuild_spend_from(&txn, b, &loaded, self.ctx.now()).await?;
        } else {
            reconcile.await?;
        }
        readmodel::snapshot_mrr(&txn, &self.business, &readmodel::day_of(self.started)).await?;
        // A full re-list's pages wrote under the shared lock, which does not bump the version.
        access::bump_version(&txn, &self.business).await?;
        // Cursors advance only now that every resource finished, to the moment the run started.
        let mut rows: Vec<sync_cursors::ActiveModel> = Resource::ALL
            .iter()
            .map(|r| {
                let prev = cursors.get(r.key());
                sync_cursors::Model {
                    business_id: self.business.as_str().to_owned(),
                    resource: r.key().to_owned(),
                    last_successful_date: Some(self.started),
                    events_cursor: prev.and_then(|c| c.events_cursor),
                    last_reconciled_at: if full && !bounded_backfill {
                        Some(self.started)
                    } else {
                        prev.and_then(|c| c.last_reconciled_at)
                    },
                }
                .into()
            })
            .collect();
        rows.push(
            sync_cursors::Model {
                business_id: self.business.as_str().to_owned(),
                resource: "events".to_owned(),
                last_successful_date: Some(self.started),
                events_cursor: Some(newest_event.max(self.started)),
                last_reconciled_at: if full && !bounded_backfill {
                    Some(self.started)
                } else {
                    last_reconciled
                },
            }
            .into(),
        );
        sync_cursors::Entity::delete_many()
            .filter(sync_cursors::Column::BusinessId.eq(self.business.as_str()))
            .exec(&txn)
            .await?;
        sync_cursors::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        if full {
            // The read models were rebuilt: the grids' and the webhook turns' plans come from
            // their statistics.
            self.refresh_statistics(Statistics::ReadModels).await;
        }
        Ok(())
    }

    /// [`tributary_persistence::Database::refresh_statistics`], best effort: a failure
    /// (another process analysing the same table at once, usually) is logged, and autovacuum
    /// gets there later anyway.
    async fn refresh_statistics(&self, tables: Statistics) {
        if let Err(e) = self.ctx.db().refresh_statistics(tables).await {
            tracing::warn!(error = %e, ?tables, "planner statistics not refreshed in a full run");
        }
    }

    /// Begins a transaction after checking the run may still write: the lease renewal has not
    /// reported the job lost, and the business is still connected to the same account. The connection row is locked for
    /// the transaction (see [`access::lock_for_write`]), so a disconnect waits for the page to
    /// commit or the page sees it gone, and pages, events and webhooks of one business never
    /// recompute the same email's spend at once.
    async fn begin_guarded(&self) -> Result<DatabaseTransaction, SyncError> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(SyncError::Cancelled);
        }
        let txn = self.ctx.db().begin_write().await?;
        if sea_orm::ConnectionTrait::get_database_backend(&txn) == sea_orm::DbBackend::Postgres {
            // A page is re-fetched if it is lost: the cursors advance only in the final
            // transaction, after every page. So pages need not wait for their WAL flush (a
            // server crash can lose only a suffix of commits, never reorder them).
            sea_orm::ConnectionTrait::execute_unprepared(
                &txn,
                "SET LOCAL synchronous_commit = off",
            )
            .await?;
        }
        let exclusive = !self.full.load(Ordering::SeqCst);
        let connection = access::lock_for_write(&txn, &self.business, exclusive).await?;
        let same = connection
            .is_some_and(|a| a.status == access::CONNECTED && a.stripe_account_id == self.account);
        if !same {
            txn.rollback().await.ok();
            self.cancelled.store(true, Ordering::SeqCst);
            return Err(SyncError::Cancelled);
        }
        Ok(txn)
    }

    fn bump(&self, key: &str, fetched: u64, written: u64, done: bool) {
        if let Ok(mut p) = self.progress.lock() {
            let e = p.entry(key.to_owned()).or_default();
            e.fetched += fetched;
            e.written += written;
            e.done |= done;
        }
    }

    fn progress_json(&self) -> Value {
        self.progress
            .lock()
            .map(|p| serde_json::to_value(&*p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Writes progress to the job, at most every 250 ms (the last write of a resource and of
    /// the run always goes through `force`).
    async fn save_progress(&self) {
        self.save_progress_at(false).await;
    }

    async fn save_progress_at(&self, force: bool) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let last = self.progress_saved_ms.load(Ordering::SeqCst);
        if !force && now_ms - last < 250 {
            return;
        }
        self.progress_saved_ms.store(now_ms, Ordering::SeqCst);
        let _ = jobs::set_progress(
            self.ctx.db(),
            &self.job_id,
            &self.ctx.config().worker_id,
            self.progress_json(),
        )
        .await;
    }

    async fn list(
        &self,
        resource: Resource,
        client: &AccountClient,
        created: Created,
    ) -> Result<(), SyncError> {
        match resource {
            Resource::Products => {
                self.pages(resource, client.products(created).retype(), client)
                    .await
            }
            Resource::Prices => {
                self.pages(resource, client.prices(created).retype(), client)
                    .await
            }
            Resource::Customers => {
                self.pages(resource, client.customers(created).retype(), client)
                    .await
            }
            Resource::PaymentIntents => {
                self.pages(resource, client.payment_intents(created).retype(), client)
                    .await
            }
            Resource::Charges => {
                self.pages(resource, client.charges(created).retype(), client)
                    .await
            }
            Resource::Refunds => {
                self.pages(resource, client.refunds(created).retype(), client)
                    .await
            }
            Resource::Invoices => {
                self.pages(resource, client.invoices(created).retype(), client)
                    .await
            }
            Resource::InvoicePayments => {
                self.pages(resource, client.invoice_payments(created).retype(), client)
                    .await
            }
            Resource::CheckoutSessions => {
                self.pages(resource, client.checkout_sessions(created).retype(), client)
                    .await
            }
            Resource::Subscriptions => {
                self.pages(resource, client.subscriptions(created).retype(), client)
                    .await
            }
        }
    }

    async fn pages(
        &self,
        resource: Resource,
        req: ListRequest<RawOnly>,
        client: &AccountClient,
    ) -> Result<(), SyncError> {
        // The next page is requested while this one is written: a resource then lists at the
        // pace of its requests, not of its requests and writes in turn (behind the rate limit
        // the end of a first sync is one or two large resources alone). The feeder stops
        // after the last page or an error, and is aborted with the set when the list ends.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let mut feeder = tokio::task::JoinSet::new();
        let ctx = self.ctx.clone();
        let lean = map::fields_of(resource.object());
        feeder.spawn(
            async move {
                let mut pages = if let Some(of) = lean {
                    req.text_pages()
                        .map_ok(move |page| Listed::Texts(page.objects, of))
                        .boxed()
                } else {
                    req.pages()
                        .map_ok(|page| {
                            Listed::Trees(page.items.into_iter().map(|i| i.raw).collect())
                        })
                        .boxed()
                };
                // The slot is taken before the request: the page is fetched only once the one
                // before it has been taken to be written, so at most one waits ahead.
                while let Ok(slot) = tx.reserve().await {
                    let sent = ctx.now();
                    let next = pages.try_next().await;
                    let last = !matches!(next, Ok(Some(_)));
                    slot.send((sent, next));
                    if last {
                        break;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        loop {
            let Some((sent, next)) = self.step(async { Ok(rx.recv().await) }).await? else {
                // Only a feeder that panicked ends without saying how the list ended.
                if let Some(fed) = feeder.join_next().await {
                    joined(fed);
                }
                return Err(SyncError::Interrupted);
            };
            let Some(page) = next? else {
                break;
            };
            let fetched = page.len() as u64;
            let stamp = Stamp {
                business_id: self.business.as_str(),
                at: sent,
                now: self.ctx.now(),
            };
            let incremental = !self.full.load(Ordering::SeqCst);
            let mut touched = readmodel::Touched::default();
            let write = match page {
                Listed::Trees(raws) => {
                    if incremental {
                        raws.iter().for_each(|r| readmodel::touch(&mut touched, r));
                    }
                    self.step(self.build(resource, stamp, raws, client)).await?
                }
                Listed::Texts(objects, of) => {
                    let lean = objects
                        .into_iter()
                        .map(|text| Ok((of.read(&text)?, String::from(Box::<str>::from(text)))))
                        .collect::<Result<Vec<_>, serde_json::Error>>()
                        .map_err(|e| {
                            StripeError::Deserialize(format!("{} list: {e}", resource.key()))
                        })?;
                    if incremental {
                        lean.iter()
                            .for_each(|(f, _)| readmodel::touch(&mut touched, &f.0));
                    }
                    build_texts(resource, stamp, lean)
                }
            };
            let txn = self.begin_guarded().await?;
            // The page's upserts (one statement per table, the page's JSON as one parameter)
            // have one sensible plan; planned with their values, each execution planned again
            // and parsed the page at plan time (a first sync 4 % slower). The stored versions
            // were read before, outside this transaction, with their values.
            tributary_persistence::plan_once(&txn).await?;
            // Spend moves with the page: the emails it takes money from (before) and gives
            // money to (after) are recomputed in the same transaction.
            let before = readmodel::linked_before(&txn, &self.business, &touched).await?;
            let written = write.commit(&txn, &self.business).await?;
            if incremental {
                let now = self.ctx.now();
                readmodel::refresh_after(&txn, &self.business, &touched, before, now).await?;
            }
            txn.commit().await?;
            metrics::counter!(crate::metrics::OBJECTS_WRITTEN, "resource" => resource.key())
                .increment(written);
            self.bump(resource.key(), fetched, written, false);
            self.save_progress().await;
        }
        self.bump(resource.key(), 0, 0, true);
        self.save_progress_at(true).await;
        Ok(())
    }

    /// The stored raw objects of the given ids, to tell new or changed parents from unchanged.
    async fn stored_raw<E>(&self, ids: &[String]) -> Result<HashMap<String, Value>, SyncError>
    where
        E: Mirror,
        E::Model: tributary_persistence::entities::MirrorModel,
    {
        use tributary_persistence::entities::MirrorModel;
        let col = |name: &str| {
            use sea_orm::{IdenStatic, Iterable};
            E::Column::iter().find(|c| c.as_str() == name)
        };
        let (Some(b), Some(id)) = (col("business_id"), col("stripe_id")) else {
            return Ok(HashMap::new());
        };
        let rows = E::find()
            .filter(b.eq(self.business.as_str()))
            .filter(tributary_persistence::reads::one_of(
                self.ctx.db().conn().get_database_backend(),
                id,
                ids,
            ))
            .all(self.ctx.db().conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.stripe_id().to_owned(), r.raw().clone()))
            .collect())
    }

    async fn build(
        &self,
        resource: Resource,
        st: Stamp<'_>,
        raws: Vec<Value>,
        client: &AccountClient,
    ) -> Result<apply::Rows, SyncError> {
        let mut w = apply::Rows::default();
        match resource {
            Resource::Subscriptions => {
                for r in raws {
                    let items = map::subscription_items(st, &r);
                    w.subscription_items
                        .extend(items.into_iter().map(Text::from));
                    w.subscriptions.push(map::subscription(st, r).into());
                }
            }
            Resource::Invoices => {
                let ids: Vec<String> = raws.iter().filter_map(|r| map::id_of(r, "id")).collect();
                let stored = self.stored_raw::<stripe_invoices::Entity>(&ids).await?;
                let rows: Vec<_> = raws.into_iter().map(|r| map::invoice(st, r)).collect();
                // Only new or changed invoices write lines; those with more than the embedded
                // ten fetch the rest, several invoices at once.
                let lines = child_rows(
                    rows.iter()
                        .filter(|row| stored.get(&row.stripe_id) != Some(&row.raw))
                        .map(|row| async move {
                            let items = apply::invoice_lines(&row.raw, Some(client)).await?;
                            Ok(items
                                .into_iter()
                                .map(|l| {
                                    map::invoice_line(st, &row.stripe_id, row.created, l).into()
                                })
                                .collect())
                        }),
                )
                .await?;
                w.invoice_lines = lines;
                w.invoices = rows.into_iter().map(Text::from).collect();
            }
            Resource::CheckoutSessions => {
                let ids: Vec<String> = raws.iter().filter_map(|r| map::id_of(r, "id")).collect();
                let stored = self
                    .stored_raw::<stripe_checkout_sessions::Entity>(&ids)
                    .await?;
                let rows: Vec<_> = raws.iter().map(|r| map::checkout_session(st, r)).collect();
                let lines = child_rows(
                    rows.iter()
                        .zip(&raws)
                        .filter(|(row, _)| stored.get(&row.stripe_id) != Some(&row.raw))
                        .map(|(row, r)| async move {
                            let items = apply::session_lines(r, Some(client)).await?;
                            Ok(items
                                .into_iter()
                                .map(|l| {
                                    map::checkout_line(st, &row.stripe_id, row.created, l).into()
                                })
                                .collect())
                        }),
                )
                .await?;
                w.session_lines = lines;
                w.sessions = rows.into_iter().map(Text::from).collect();
            }
            _ => unreachable!("{} pages are read as text", resource.key()),
        }
        Ok(w)
    }

    /// Applies every event since `since` through the shared appliers, oldest first. Returns
    /// the newest event time seen.
    async fn apply_events(&self, client: &AccountClient, since: i64) -> Result<i64, SyncError> {
        // Page by page as Stripe returns them (newest first), each page in one transaction, so
        // memory stays flat however many events 30 days hold; the `last_event_at` guard makes
        // the order irrelevant (an older event meeting a newer row is skipped).
        let mut newest = since;
        let mut pages = client.events(Created::since(since), &[]).pages();
        while let Some(page) = self.step(async { Ok(pages.try_next().await?) }).await? {
            self.bump("events", page.items.len() as u64, 0, false);
            let mut events: Vec<_> = page
                .items
                .into_iter()
                .filter_map(|i| i.typed.ok())
                .collect();
            events.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
            let txn = self.begin_guarded().await?;
            let now = self.ctx.now();
            newest = events.iter().map(|e| e.created).fold(newest, i64::max);
            let (mut batch, _) = apply::EventBatch::begin(&txn, &self.business, &events).await?;
            let received: Vec<_> = events.iter().map(|e| (e, now)).collect();
            let outcomes = batch
                .apply(&txn, &received, &[], Some(client))
                .await
                .map_err(|f| *f.error)?;
            batch.finish(&txn, now).await?;
            let applied = outcomes.iter().filter(|o| o.changed()).count() as u64;
            txn.commit().await?;
            metrics::counter!(crate::metrics::OBJECTS_WRITTEN, "resource" => "events")
                .increment(applied);
            self.bump("events", 0, applied, false);
            self.save_progress().await;
        }
        self.bump("events", 0, 0, true);
        Ok(newest)
    }
}

/// The rows of a page read as text: each row mapped from its object's fields, its `raw` the
/// object's text.
fn build_texts(resource: Resource, st: Stamp<'_>, lean: Vec<(map::Fields, String)>) -> apply::Rows {
    fn rows<M>(
        lean: Vec<(map::Fields, String)>,
        f: impl Fn(map::Fields) -> Option<M>,
    ) -> Vec<Text<M>> {
        lean.into_iter()
            .filter_map(|(fields, raw)| f(fields).map(|row| Text { row, raw }))
            .collect()
    }
    let mut w = apply::Rows::default();
    match resource {
        Resource::Products => w.products = rows(lean, |f| Some(map::product(st, f))),
        Resource::Prices => w.prices = rows(lean, |f| Some(map::price(st, f))),
        Resource::Customers => w.customers = rows(lean, |f| Some(map::customer(st, f))),
        Resource::PaymentIntents => w.orders = rows(lean, |f| Some(map::payment_intent(st, f))),
        Resource::Charges => w.orders = rows(lean, |f| map::charge(st, f)),
        Resource::Refunds => w.refunds = rows(lean, |f| Some(map::refund(st, f))),
        Resource::InvoicePayments => {
            w.invoice_payments = rows(lean, |f| Some(map::invoice_payment(st, f)))
        }
        Resource::Invoices | Resource::CheckoutSessions | Resource::Subscriptions => {
            unreachable!("{} pages are read as trees", resource.key())
        }
    }
    w
}

/// Runs `lists` (one future per parent, each giving its child rows) as the Stripe reads of an
/// event batch run (`apply::at_once`) and joins their rows in the parents' order: a page of
/// long invoices no longer waits on one list after another.
async fn child_rows<'a, T>(
    lists: impl Iterator<
        Item = impl std::future::Future<Output = Result<Vec<T>, SyncError>> + Send + 'a,
    >,
) -> Result<Vec<T>, SyncError> {
    let per_parent = apply::at_once(lists).await;
    Ok(per_parent
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}
