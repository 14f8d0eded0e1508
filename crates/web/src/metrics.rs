//! `GET /metrics`: every metric the process recorded, in Prometheus' text format.
//!
//! The crates record at the source through the `metrics` facade (`counter!`, `histogram!`); this
//! module installs the one process-wide Prometheus recorder behind it and renders it. The
//! recorder is global, so it is installed once per process however many applications are built
//! (tests build many). The names and labels are listed in `docs/observability.md`.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::HttpResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;

/// Counter: HTTP requests answered, by `method`, `route` (the matched pattern, e.g.
/// `/api/stripe/{businessId}/status`; `unmatched` for paths no route knows) and `status`.
pub const HTTP_REQUESTS: &str = "tributary_http_requests_total";
/// Histogram: seconds to answer, by `method` and `route`.
pub const HTTP_DURATION: &str = "tributary_http_request_duration_seconds";
/// Counter: Stripe webhook deliveries, by `endpoint` (`platform`, `connect`, `business`) and
/// `outcome` (`processed`, `duplicate`, `unrouted`, `other_mode`, `revoked`, `bad_signature`,
/// `malformed`, `too_large`, `unknown_business`, `not_configured`, `unavailable`, `error`; see
/// `docs/observability.md`).
pub const WEBHOOK_DELIVERIES: &str = "tributary_webhook_deliveries_total";
/// Histogram: deliveries of one business written in one transaction (group commit; see
/// `routes::webhooks::Ingest`).
pub const WEBHOOK_BATCH: &str = "tributary_webhook_batch_deliveries";
/// Histogram: seconds of each `phase` of a webhook turn's transaction: `lock` (begin, lock the
/// business), `apply` (claim the records, apply the events, write the outcomes; beside it, the
/// reads of what the events' objects linked to before), `spend` (the spend refresh and the MRR
/// snapshot), `commit`.
pub const WEBHOOK_TURN: &str = "tributary_webhook_turn_seconds";

/// Upper bounds of the latency buckets of HTTP answers and Stripe attempts, in seconds.
const FAST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the sync run buckets, in seconds: a first sync of a large account takes
/// many minutes.
const RUN_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
/// Upper bounds of the webhook turn phase buckets, in seconds: a phase takes milliseconds.
const TURN_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Upper bounds of the webhook batch buckets, in deliveries.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first call; later calls return the same handle.
/// `None` when another recorder was installed first (metrics then go there, and `/metrics`
/// answers `404`).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(build).as_ref()
}

fn build() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), FAST_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(tributary_stripe_connect::metrics::REQUEST_DURATION.into()),
                FAST_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(tributary_sync::metrics::RUN_DURATION.into()),
                RUN_BUCKETS,
            )
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WEBHOOK_BATCH.into()), BATCH_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WEBHOOK_TURN.into()), TURN_BUCKETS));
    let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
            return None;
        }
    };
    describe();
    let upkeep = handle.clone();
    // A thread rather than a task: the recorder outlives any one runtime (tests start many).
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; scrapes still drain histograms");
    }
    Some(handle)
}

/// `# HELP` lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use tributary_stripe_connect::metrics as stripe;
    use tributary_sync::metrics as sync;
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route pattern and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method and route pattern."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Stripe webhook deliveries, by endpoint kind and outcome."
    );
    describe_histogram!(
        WEBHOOK_BATCH,
        "Webhook deliveries of one business written in one transaction."
    );
    describe_histogram!(
        WEBHOOK_TURN,
        metrics::Unit::Seconds,
        "Time of each phase (lock, apply, spend, commit) of a webhook turn's transaction."
    );
    describe_counter!(sync::RUNS, "Finished sync runs, by outcome and trigger.");
    describe_histogram!(
        sync::RUN_DURATION,
        metrics::Unit::Seconds,
        "Duration of a sync run, by outcome."
    );
    describe_gauge!(
        sync::RUNS_IN_PROGRESS,
        "Sync runs executing in this process."
    );
    describe_counter!(
        sync::OBJECTS_WRITTEN,
        "Rows written to the mirror by sync runs, by resource."
    );
    describe_counter!(
        sync::LEASE_TAKEOVERS,
        "Sync jobs taken over from a worker whose lease expired."
    );
    describe_counter!(
        stripe::REQUESTS,
        "HTTP attempts to Stripe (retries included), by endpoint and status."
    );
    describe_histogram!(
        stripe::REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Duration of one attempt to Stripe, by endpoint."
    );
    describe_counter!(stripe::RATE_LIMITED, "429 answers from Stripe.");
    describe_counter!(stripe::RETRIES, "Attempts to Stripe that were retries.");
}

/// `GET /metrics`: the Prometheus text exposition (format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics: sync runs, Stripe requests, webhook deliveries, HTTP answers",
    responses(
        (status = 200, description = "The Prometheus text exposition (format 0.0.4).",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 404, description = "`not_found`: another metrics recorder was installed first.",
            body = crate::openapi::Error),
    )
)]
pub async fn render() -> Result<HttpResponse, ApiError> {
    let handle = install().ok_or(ApiError::NotFound("metrics"))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render()))
}

/// Counts one answered request.
pub(crate) fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    metrics::counter!(
        HTTP_REQUESTS,
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        HTTP_DURATION,
        "method" => method.to_owned(),
        "route" => route.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

/// What a handler accepted a webhook delivery as; the webhook routes attach it to their `200`
/// answers so [`webhook_delivery`] can count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// The outcome recorded for the event (`applied`, `unrouted`, `other_mode`, …).
    pub outcome: String,
    pub duplicate: bool,
}

/// The `outcome` label of a delivery's answer:
///
/// - `processed`: verified, recorded and handled (applied, stale, ignored: the event is done);
/// - `duplicate`: already recorded; `unrouted`, `other_mode`, `revoked`: recorded, changed nothing;
/// - `bad_signature`, `malformed` (unreadable body or event), `too_large`,
///   `unknown_business` (no business has the endpoint's slug), `not_configured` (no signing
///   secret for the endpoint);
/// - `unavailable`: Stripe or the applier could not finish in time, `503`, Stripe retries;
/// - `error`: an internal failure (`500`), Stripe retries.
pub(crate) fn webhook_outcome(result: &Result<HttpResponse, ApiError>) -> &'static str {
    match result {
        Ok(res) => match res.extensions().get::<Delivered>() {
            Some(d) if d.duplicate => "duplicate",
            Some(d) => match d.outcome.as_str() {
                "unrouted" => "unrouted",
                "other_mode" => "other_mode",
                "revoked" => "revoked",
                _ => "processed",
            },
            None if res.status().as_u16() == 503 => "unavailable",
            None => "error",
        },
        Err(e) => match e {
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::NotFound(_) => "unknown_business",
            ApiError::NotConfigured(_) => "not_configured",
            ApiError::BadRequest {
                code: "invalid_signature",
                ..
            } => "bad_signature",
            ApiError::BadRequest {
                code: "webhook_secret_missing",
                ..
            } => "not_configured",
            ApiError::BadRequest { .. } => "malformed",
            _ => "error",
        },
    }
}

/// Counts one delivery to the `endpoint` kind (`platform`, `connect`, `business`).
pub(crate) fn webhook_delivery(endpoint: &'static str, result: &Result<HttpResponse, ApiError>) {
    metrics::counter!(
        WEBHOOK_DELIVERIES,
        "endpoint" => endpoint,
        "outcome" => webhook_outcome(result)
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(outcome: &str, duplicate: bool) -> Result<HttpResponse, ApiError> {
        let mut res = HttpResponse::Ok().finish();
        res.extensions_mut().insert(Delivered {
            outcome: outcome.to_owned(),
            duplicate,
        });
        Ok(res)
    }

    #[test]
    fn webhook_outcomes() {
        assert_eq!(webhook_outcome(&delivered("applied", false)), "processed");
        assert_eq!(webhook_outcome(&delivered("ignored", false)), "processed");
        assert_eq!(webhook_outcome(&delivered("applied", true)), "duplicate");
        assert_eq!(webhook_outcome(&delivered("unrouted", false)), "unrouted");
        assert_eq!(webhook_outcome(&delivered("revoked", false)), "revoked");
        assert_eq!(
            webhook_outcome(&Ok(HttpResponse::ServiceUnavailable().finish())),
            "unavailable"
        );
        assert_eq!(
            webhook_outcome(&Err(ApiError::bad_request("invalid_signature", "x"))),
            "bad_signature"
        );
        assert_eq!(
            webhook_outcome(&Err(ApiError::bad_request("invalid_event", "x"))),
            "malformed"
        );
        assert_eq!(
            webhook_outcome(&Err(ApiError::PayloadTooLarge(1))),
            "too_large"
        );
        assert_eq!(
            webhook_outcome(&Err(ApiError::NotFound("webhook endpoint"))),
            "unknown_business"
        );
        assert_eq!(
            webhook_outcome(&Err(ApiError::internal(std::io::Error::other("x")))),
            "error"
        );
    }
}
