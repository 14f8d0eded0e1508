//! The API process's background worker pool: claims queued jobs through the lease and runs
//! them, `sync.concurrency` at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::SyncContext;

/// A running pool. [`WorkerPool::wake`] after queuing a job; it also polls every few seconds,
/// so jobs queued by other processes and expired leases are picked up.
#[derive(Debug)]
pub struct WorkerPool {
    ctx: SyncContext,
    notify: Arc<Notify>,
    stop: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl WorkerPool {
    /// Starts the pool on the current tokio runtime.
    pub fn start(ctx: SyncContext) -> Self {
        Self::start_with_interval(ctx, Duration::from_secs(5))
    }

    /// [`WorkerPool::start`] with another polling interval (tests poll faster).
    pub fn start_with_interval(ctx: SyncContext, poll: Duration) -> Self {
        let notify = Arc::new(Notify::new());
        let stop = Arc::new(Notify::new());
        let handle = tokio::spawn(run(ctx.clone(), notify.clone(), stop.clone(), poll));
        Self {
            ctx,
            notify,
            stop,
            handle,
        }
    }

    /// Looks for queued jobs now.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Stops claiming new jobs, and waits for the running ones to stop at their next page
    /// boundary and release their jobs ([`SyncContext::shutdown`]), which another worker
    /// resumes at once.
    pub async fn shutdown(self) {
        self.ctx.shutdown();
        self.stop.notify_one();
        let _ = self.handle.await;
    }
}

async fn run(ctx: SyncContext, notify: Arc<Notify>, stop: Arc<Notify>, poll: Duration) {
    let slots = Arc::new(Semaphore::new(ctx.config().concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    loop {
        // Claim as many jobs as there are free slots.
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            if ctx.is_shutting_down() {
                break;
            }
            let now = ctx.now();
            let claimed = tributary_persistence::jobs::claim_next_taking_over(
                ctx.db(),
                &ctx.config().worker_id,
                now,
                ctx.config().lease_secs,
            )
            .await;
            match claimed {
                Ok(Some((job, _))) if ctx.running_here(&job.id) => {
                    // Its run here was stalled past the lease (a database outage or lock):
                    // the claim only renewed it.
                    continue;
                }
                Ok(Some((job, previous))) => {
                    if let Some(previous) = previous {
                        crate::metrics::lease_taken_over(&job.id, &previous);
                    }
                    let ctx = ctx.clone();
                    running.spawn(async move {
                        let _permit = permit;
                        crate::run_job(&ctx, job).await
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim a sync job");
                    break;
                }
            }
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = stop.notified() => break,
        }
    }
    while running.join_next().await.is_some() {}
}
