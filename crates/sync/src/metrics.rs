//! Metric names the sync records through the `metrics` facade (exported by the API's
//! `GET /metrics`; see `docs/observability.md`).

/// Counter: finished runs, by `outcome` (`succeeded`, `failed`, `revoked`, `cancelled`,
/// `interrupted`: stopped by a shutdown, job released) and
/// `trigger` (`manual`, `scheduled`, `backfill`, `webhook`).
pub const RUNS: &str = "tributary_sync_runs_total";
/// Histogram: seconds from claiming a job to its outcome, by `outcome`.
pub const RUN_DURATION: &str = "tributary_sync_run_duration_seconds";
/// Gauge: runs executing in this process now.
pub const RUNS_IN_PROGRESS: &str = "tributary_sync_runs_in_progress";
/// Counter: rows written to the mirror by runs, by `resource` (`customers`, …, and `events`
/// for events applied by an incremental run).
pub const OBJECTS_WRITTEN: &str = "tributary_sync_objects_written_total";
/// Counter: jobs this process claimed from another worker whose lease had expired.
pub const LEASE_TAKEOVERS: &str = "tributary_sync_lease_takeovers_total";

/// What became of a run, as the `outcome` label says it.
pub(crate) fn outcome(status: &str, error_code: Option<&str>) -> &'static str {
    match (status, error_code) {
        (tributary_persistence::jobs::SUCCEEDED, _) => "succeeded",
        (_, Some("access_revoked")) => "revoked",
        (_, Some("cancelled")) => "cancelled",
        (_, Some(crate::INTERRUPTED)) => "interrupted",
        _ => "failed",
    }
}

pub(crate) fn lease_taken_over(job_id: &str, previous_owner: &str) {
    metrics::counter!(LEASE_TAKEOVERS).increment(1);
    tracing::info!(
        job_id,
        previous_owner,
        "took over a sync job whose lease expired"
    );
}

#[cfg(test)]
mod tests {
    use super::outcome;

    #[test]
    fn outcomes() {
        assert_eq!(outcome("succeeded", None), "succeeded");
        assert_eq!(outcome("failed", Some("access_revoked")), "revoked");
        assert_eq!(outcome("failed", Some("cancelled")), "cancelled");
        assert_eq!(outcome("failed", Some("rate_limited")), "failed");
        assert_eq!(outcome("queued", Some("interrupted")), "interrupted");
        assert_eq!(outcome("failed", None), "failed");
    }
}
