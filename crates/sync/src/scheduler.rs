//! One scheduling round: every connected business synced once, shared by however many
//! scheduler processes run it at the same time.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tributary_domain::BusinessId;
use tributary_persistence::{access, jobs};

use crate::{SyncContext, SyncError, SyncReport, run_job};

/// What a round did in this process.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Round {
    /// Businesses this process queued (others may have queued or run the rest).
    pub queued: usize,
    /// Businesses skipped because they were synced within the freshness window.
    pub fresh: usize,
    /// Every job this process ran.
    pub reports: Vec<SyncReport>,
}

impl Round {
    /// Runs that failed (an interrupted run released its job: it did not fail).
    pub fn failed(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| !r.succeeded() && !r.interrupted())
            .count()
    }

    /// Runs interrupted by a shutdown, whose jobs went back to the queue.
    pub fn interrupted(&self) -> usize {
        self.reports.iter().filter(|r| r.interrupted()).count()
    }
}

/// Queues a `scheduled` sync for every connected business that has no job newer than
/// `fresh_secs`, then runs queued jobs under this process's lease, `sync.concurrency` at a
/// time, until none is left to claim. Several processes may run it at once: the partial unique
/// index makes them share one job per business, the lease (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL) gives each job to one of them, and the freshness window keeps a process that
/// arrives late from syncing a business a second time in the same round.
pub async fn run_once(ctx: &SyncContext, fresh_secs: i64) -> Result<Round, SyncError> {
    let db = ctx.db();
    let now = ctx.now();
    let mut round = Round::default();
    for conn in access::list_by_status(db, access::CONNECTED).await? {
        let Ok(business) = BusinessId::parse(&conn.business_id) else {
            continue;
        };
        let (latest, _) = jobs::list(db, &business, 1, 0).await?;
        if latest
            .first()
            .is_some_and(|j| j.created_at >= now - fresh_secs && j.status != jobs::QUEUED)
        {
            round.fresh += 1;
            continue;
        }
        jobs::enqueue(
            db,
            &business,
            crate::Trigger::Scheduled.as_str(),
            false,
            now,
        )
        .await?;
        round.queued += 1;
    }
    let slots = Arc::new(Semaphore::new(ctx.config().concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        if ctx.is_shutting_down() {
            break;
        }
        let claimed = jobs::claim_next_taking_over(
            db,
            &ctx.config().worker_id,
            ctx.now(),
            ctx.config().lease_secs,
        )
        .await?;
        let Some((job, previous)) = claimed else {
            drop(permit);
            // Nothing claimable now; jobs still running here may be all that is left.
            if running.is_empty() {
                break;
            }
            if let Some(done) = running.join_next().await {
                round.reports.push(done.map_err(|_| SyncError::Cancelled)?);
            }
            continue;
        };
        if ctx.running_here(&job.id) {
            // Its run here was stalled past the lease: the claim only renewed it.
            continue;
        }
        if let Some(previous) = previous {
            crate::metrics::lease_taken_over(&job.id, &previous);
        }
        let ctx = ctx.clone();
        running.spawn(async move {
            let _permit = permit;
            run_job(&ctx, job).await
        });
    }
    while let Some(done) = running.join_next().await {
        round.reports.push(done.map_err(|_| SyncError::Cancelled)?);
    }
    Ok(round)
}
