//! Stripe webhooks (SPEC §6): the platform's Connect endpoint, each business's own endpoint and
//! the platform-billing endpoint. No bearer token: the `Stripe-Signature` authenticates.
//!
//! Every delivery is verified on the raw body, then recorded in `webhook_events` in the same
//! transaction as the change it causes, so a retried or duplicated delivery changes nothing.
//! Events are applied within the request (see `docs/decisions.md`, "Webhooks"): a failure rolls
//! the record back and answers `5xx`, and Stripe delivers again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;
use tributary_domain::BusinessId;
use tributary_persistence::entities::{stripe_access, webhook_events};
use tributary_persistence::sea_orm::sea_query::Expr;
use tributary_persistence::sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
};
use tributary_persistence::{Database, access, billing, businesses, jobs, webhooks};
use tributary_stripe_connect::{
    DEFAULT_TOLERANCE, EventEnvelope, SigningSecret, StripeError, WebhookError,
    account_display_name, construct_event,
};
use tributary_sync::SyncError;
use tributary_sync::apply::{EventBatch, Failed, Prefetched};
use tributary_sync::readmodel;

use crate::error::ApiError;
use crate::metrics;
use crate::state::AppState;

/// Largest webhook body read (1 MiB); Stripe's events are far smaller.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest a delivery may take (reading the body, looking up its business, applying the event
/// with its re-fetches, recording it) before it is answered `503` and left to Stripe's retry:
/// Stripe gives up on a delivery after a few seconds more. Stalled on Stripe: `503
/// stripe_unavailable`; on the database (down, restarting, SQLite's write lock held elsewhere):
/// `503 database_unavailable`, instead of waiting out the connection pool's 30 s.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The idempotency-record endpoint of the Connect webhook.
pub const CONNECT_ENDPOINT: &str = "connect";
const DEAUTHORIZED: &str = "account.application.deauthorized";

/// Runs a delivery until `deadline` (plus a moment, so a stall inside [`apply`] is answered
/// by `apply` itself, which knows whether it waited on Stripe or on the database). Whatever
/// else stalls is the database: `503 database_unavailable`. Dropping the delivery rolls its
/// transaction back, so nothing is stored and Stripe's retry applies the event.
async fn bounded(
    deadline: Instant,
    delivery: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let grace = Duration::from_millis(250);
    tokio::time::timeout_at((deadline + grace).into(), delivery)
        .await
        .unwrap_or_else(|_| Err(database_stalled()))
}

/// A delivery that waited [`APPLY_TIMEOUT`] on the database.
fn database_stalled() -> ApiError {
    ApiError::DatabaseUnavailable(
        format!(
            "the database did not answer within {} s",
            APPLY_TIMEOUT.as_secs()
        )
        .into(),
    )
}

/// Reads the body, refusing more than [`MAX_BODY`] bytes (`413`) before reading them when the
/// length is announced.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Bytes, ApiError> {
    let announced = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_body", format!("the body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::PayloadTooLarge(MAX_BODY));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Verifies the `Stripe-Signature` of `body` against `secrets` and parses the event.
fn verify<S: SigningSecret + ?Sized>(
    req: &HttpRequest,
    body: &[u8],
    secrets: &[&S],
) -> Result<EventEnvelope, ApiError> {
    let header = match req.headers().get("Stripe-Signature") {
        None => "",
        Some(v) => v.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_signature",
                "malformed Stripe-Signature header: not ASCII",
            )
        })?,
    };
    construct_event(
        body,
        header,
        secrets,
        DEFAULT_TOLERANCE,
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| match e {
        WebhookError::Signature(e) => ApiError::bad_request("invalid_signature", e.to_string()),
        WebhookError::Event(e) => ApiError::bad_request("invalid_event", e.to_string()),
    })
}

fn configured<'a>(
    secret: Option<&'a SecretString>,
    key: &'static str,
) -> Result<&'a SecretString, ApiError> {
    secret.ok_or(ApiError::NotConfigured(key))
}

/// The answer to every accepted delivery.
fn received(event: &EventEnvelope, outcome: &str, duplicate: bool) -> HttpResponse {
    let mut res = HttpResponse::Ok().json(json!({
        "received": true,
        "id": event.id,
        "outcome": outcome,
        "duplicate": duplicate,
    }));
    res.extensions_mut().insert(metrics::Delivered {
        outcome: outcome.to_owned(),
        duplicate,
    });
    res
}

/// The outcome a turn's record has between its claim and its settling, in the turn's
/// transaction (never committed).
const CLAIMED: &str = "claimed";

/// The idempotency record of `event` at `endpoint`.
fn record(
    endpoint: &str,
    event: &EventEnvelope,
    business: Option<&BusinessId>,
    account: Option<&str>,
    outcome: &str,
    now: i64,
) -> webhook_events::Model {
    webhook_events::Model {
        endpoint: endpoint.to_owned(),
        event_id: event.id.clone(),
        business_id: business.map(|b| b.as_str().to_owned()),
        event_type: event.event_type.clone(),
        account: account.map(str::to_owned),
        livemode: event.livemode,
        received_at: now,
        processed_at: Some(now),
        outcome: outcome.to_owned(),
        payload: None,
    }
}

async fn seen<C: ConnectionTrait>(
    conn: &C,
    endpoint: &str,
    event_id: &str,
) -> Result<bool, ApiError> {
    Ok(
        webhook_events::Entity::find_by_id((endpoint.to_owned(), event_id.to_owned()))
            .one(conn)
            .await
            .map_err(ApiError::internal)?
            .is_some(),
    )
}

/// Records an event that changes nothing (unrouted, other mode, revoked connection).
async fn record_only(
    db: &Database,
    event: &EventEnvelope,
    row: webhook_events::Model,
) -> Result<HttpResponse, ApiError> {
    let outcome = row.outcome.clone();
    let txn = db.begin_write().await.map_err(ApiError::internal)?;
    let fresh = webhooks::record_event(&txn, row).await?;
    txn.commit().await.map_err(ApiError::internal)?;
    log(event, &outcome, !fresh);
    Ok(received(event, &outcome, !fresh))
}

fn log(event: &EventEnvelope, outcome: &str, duplicate: bool) {
    tracing::info!(
        event_id = %event.id,
        event_type = %event.event_type,
        account = event.account.as_deref().unwrap_or(""),
        outcome,
        duplicate,
        "webhook event"
    );
}

/// Where a Connect or per-business event goes.
struct Route<'a> {
    endpoint: &'a str,
    business: BusinessId,
    account: String,
}

/// `POST /api/webhooks/stripe/connect` — events of every connected account, routed by `account`.
#[utoipa::path(
    post,
    path = "/api/webhooks/stripe/connect",
    tag = "webhooks",
    summary = "The platform's Connect endpoint: events of every connected account",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body")),
    request_body(content = Object, content_type = "application/json",
        description = "A Stripe event, verified on the raw body (at most 1 MiB)"),
    responses(
        (status = 200, description = "Accepted (also a duplicate, or an event with nowhere to go).",
            body = crate::openapi::WebhookReceived),
        (status = 400, description = "`invalid_signature`, `invalid_event`, `invalid_body`.",
            body = crate::openapi::Error),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, description = "`not_configured` (no signing secret set), or \
            `stripe_unavailable` / `database_unavailable`: not applied now, Stripe delivers again.",
            body = crate::openapi::Error),
    )
)]
pub async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    let result = bounded(deadline, connect_delivery(state, req, payload, deadline)).await;
    metrics::webhook_delivery("connect", &result);
    result
}

async fn connect_delivery(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    deadline: Instant,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload).await?;
    let secret = configured(
        state.settings.stripe.connect_webhook_secret.as_ref(),
        "stripe.connect_webhook_secret",
    )?;
    let event = verify(&req, &body, &[secret])?;
    let now = tributary_persistence::now();
    let acct = event.account.clone();
    let unrouted = |outcome: &str| {
        record(
            CONNECT_ENDPOINT,
            &event,
            None,
            acct.as_deref(),
            outcome,
            now,
        )
    };
    if event.livemode != state.livemode {
        return record_only(&state.db, &event, unrouted("other_mode")).await;
    }
    let Some(account) = acct.as_deref() else {
        return record_only(&state.db, &event, unrouted("unrouted")).await;
    };
    let holder = access::by_account(&state.db, account).await?;
    let Some(business) = holder.and_then(|h| BusinessId::parse(&h.business_id).ok()) else {
        return record_only(&state.db, &event, unrouted("unrouted")).await;
    };
    let route = Route {
        endpoint: CONNECT_ENDPOINT,
        business,
        account: account.to_owned(),
    };
    if event.event_type == DEAUTHORIZED {
        return deauthorized(&state, &route, &event, now).await;
    }
    apply(&state, &route, &event, now, deadline).await
}

/// `POST /api/webhooks/stripe/{slug}` — a business's own endpoint, signed with the secret saved
/// through `PUT /api/stripe/{businessId}/webhook-secret`.
#[utoipa::path(
    post,
    path = "/api/webhooks/stripe/{slug}",
    tag = "webhooks",
    summary = "A business's own endpoint, signed with the secret it saved",
    params(("slug" = String, Path, description = "The business's slug"), ("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body")),
    request_body(content = Object, content_type = "application/json",
        description = "A Stripe event, verified on the raw body (at most 1 MiB)"),
    responses(
        (status = 200, description = "Accepted (also a duplicate, or an event with nowhere to go).",
            body = crate::openapi::WebhookReceived),
        (status = 400, description = "`invalid_signature`, `invalid_event`, `invalid_body`, `webhook_secret_missing`.",
            body = crate::openapi::Error),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, description = "`not_configured` (no signing secret set), or \
            `stripe_unavailable` / `database_unavailable`: not applied now, Stripe delivers again.",
            body = crate::openapi::Error),
    )
)]
pub async fn business(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    let result = bounded(
        deadline,
        business_delivery(state, req, slug, payload, deadline),
    )
    .await;
    metrics::webhook_delivery("business", &result);
    result
}

async fn business_delivery(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    payload: web::Payload,
    deadline: Instant,
) -> Result<HttpResponse, ApiError> {
    let slug = slug.into_inner();
    let body = read_body(&req, payload).await?;
    let found = businesses::by_slug(&state.db, &slug).await?;
    let Some(business) = found.and_then(|b| BusinessId::parse(&b.id).ok()) else {
        return Err(ApiError::NotFound("webhook endpoint"));
    };
    let Some(secret) = webhooks::secret(&state.db, &business).await? else {
        return Err(ApiError::bad_request(
            "webhook_secret_missing",
            "no signing secret is saved for this endpoint; save it in the Stripe settings",
        ));
    };
    let event = verify(&req, &body, &[secret.as_str()])?;
    let now = tributary_persistence::now();
    let connection = access::get(&state.db, &business).await?;
    let linked = connection.as_ref().map(|c| c.stripe_account_id.clone());
    let unrouted = |outcome: &str| {
        let account = event.account.as_deref().or(linked.as_deref());
        record(&slug, &event, None, account, outcome, now)
    };
    if event.livemode != state.livemode {
        return record_only(&state.db, &event, unrouted("other_mode")).await;
    }
    // The endpoint belongs to the account the business links; an event naming another account
    // (or arriving while nothing is linked) has nowhere to go.
    let Some(account) = linked
        .clone()
        .filter(|a| event.account.as_deref().is_none_or(|e| e == a))
    else {
        return record_only(&state.db, &event, unrouted("unrouted")).await;
    };
    let route = Route {
        endpoint: &slug,
        business,
        account,
    };
    if event.event_type == DEAUTHORIZED {
        // An account's own endpoint hears about every application it removes: only ours counts.
        let ours = state.settings.stripe.connect_client_id.as_deref();
        if ours.is_some() && event.object_id() == ours {
            return deauthorized(&state, &route, &event, now).await;
        }
    }
    apply(&state, &route, &event, now, deadline).await
}

/// Marks the connection revoked and fails its running sync (whose worker stops at its next
/// lease renewal), so the status shows the reconnect prompt.
///
/// The repositories doing this write on their own connections, so they run before the record
/// rather than inside its transaction (on SQLite that transaction holds the only write lock).
/// Both are idempotent, and a delivery already recorded is skipped, so a retry after a crash
/// between the two repeats nothing harmful.
async fn deauthorized(
    state: &AppState,
    route: &Route<'_>,
    event: &EventEnvelope,
    now: i64,
) -> Result<HttpResponse, ApiError> {
    crate::telemetry::record_business(&route.business);
    if seen(state.db.conn(), route.endpoint, &event.id).await? {
        log(event, "revoked", true);
        return Ok(received(event, "revoked", true));
    }
    revoke(state, &route.business, now).await?;
    let row = record(
        route.endpoint,
        event,
        Some(&route.business),
        Some(&route.account),
        "revoked",
        now,
    );
    record_only(&state.db, event, row).await
}

async fn revoke(state: &AppState, business: &BusinessId, now: i64) -> Result<(), ApiError> {
    let revoked = access::mark_revoked(&state.db, business, now).await?;
    let failed = jobs::fail_active(
        &state.db,
        business,
        "access_revoked",
        "the Stripe account removed the platform's access (account.application.deauthorized)",
        now,
    )
    .await?;
    tracing::warn!(business_id = %business, revoked, failed_jobs = failed, "Stripe access revoked");
    Ok(())
}

/// What went wrong applying an event.
enum Failure {
    /// The platform lost access while re-fetching: the connection is revoked.
    Revoked,
    /// Stripe throttled or failed the re-fetch, or it took too long: let Stripe retry.
    Unavailable(String),
    Internal(ApiError),
}

/// What a delivery's turn in a batch came to: the outcome recorded, `None` for a duplicate.
type Applied = Result<Option<&'static str>, Failure>;

/// Most deliveries written in one transaction.
pub const MAX_BATCH: usize = 128;

/// Group commit of one business's deliveries: each delivery joins its business's queue and
/// waits for the writer's turn; whoever gets the turn writes every delivery queued by then
/// (up to [`MAX_BATCH`]) in one transaction — one lock of the business, one duplicate check,
/// one spend refresh for all the emails touched, one commit — and answers each. A delivery
/// already answered by an earlier turn just returns. Under a burst the transactions grow
/// instead of queueing one by one behind the business's lock; alone, a delivery is a batch of
/// one. The map keeps a (small) queue for each business that received a delivery since the
/// process started.
#[derive(Debug, Default)]
pub struct Ingest(std::sync::Mutex<HashMap<String, Arc<Queue>>>);

/// One business's deliveries waiting for a turn, and the turn.
#[derive(Debug, Default)]
struct Queue {
    pending: std::sync::Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Pending {
    endpoint: String,
    account: String,
    event: EventEnvelope,
    now: i64,
    deadline: Instant,
    /// The event's Stripe reads and rows, made while it waited (see [`ahead_of_turn`]).
    ahead: Option<Prefetched>,
    answer: tokio::sync::oneshot::Sender<Applied>,
}

impl Ingest {
    fn queue(&self, business: &BusinessId) -> Arc<Queue> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(business.as_str().to_owned())
            .or_default()
            .clone()
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Revoked => f.write_str("Revoked"),
            Self::Unavailable(d) => write!(f, "Unavailable({d})"),
            Self::Internal(e) => write!(f, "Internal({e})"),
        }
    }
}

/// Applies a Connect or per-business event to the mirror with the sync's applier, in one
/// transaction with its record (shared with the deliveries of the same business that arrived
/// with it: [`Ingest`]).
async fn apply(
    state: &AppState,
    route: &Route<'_>,
    event: &EventEnvelope,
    now: i64,
    deadline: Instant,
) -> Result<HttpResponse, ApiError> {
    crate::telemetry::record_business(&route.business);
    let ahead = ahead_of_turn(state, route, event, now, deadline).await;
    let queue = state.ingest.queue(&route.business);
    let (answer, mut answered) = tokio::sync::oneshot::channel();
    queue
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Pending {
            endpoint: route.endpoint.to_owned(),
            account: route.account.clone(),
            event: event.clone(),
            now,
            deadline,
            ahead,
            answer,
        });
    let result = loop {
        // Answered by someone else's turn, or our turn to write.
        let turn = tokio::select! {
            biased;
            result = &mut answered => {
                break result.unwrap_or_else(|_| Err(Failure::Internal(database_stalled())));
            }
            turn = queue.turn.lock() => turn,
        };
        match answered.try_recv() {
            Ok(result) => break result,
            // Taken by a turn that was dropped (its request timed out): not written.
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                break Err(Failure::Internal(database_stalled()));
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        let batch: Vec<Pending> = {
            let mut pending = queue
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = pending.len().min(MAX_BATCH);
            pending.drain(..n).collect()
        };
        write_batch(state, &route.business, batch).await;
        drop(turn);
    };
    match result {
        Ok(Some(outcome)) => {
            log(event, outcome, false);
            Ok(received(event, outcome, false))
        }
        Ok(None) => {
            log(event, "duplicate", true);
            Ok(received(event, "duplicate", true))
        }
        Err(Failure::Internal(e)) => Err(e),
        Err(Failure::Unavailable(detail)) => {
            tracing::warn!(event_id = %event.id, %detail, "webhook event not applied; Stripe will retry");
            Ok(
                HttpResponse::ServiceUnavailable().json(crate::error::error_body(
                    "stripe_unavailable",
                    "the event could not be applied now; it will be accepted on a later delivery",
                )),
            )
        }
        Err(Failure::Revoked) => {
            revoke(state, &route.business, now).await?;
            let row = record(
                route.endpoint,
                event,
                Some(&route.business),
                Some(&route.account),
                "revoked",
                now,
            );
            record_only(&state.db, event, row).await
        }
    }
}

/// What the turn would read from Stripe and build for `event`, made before the delivery joins
/// its business's queue ([`tributary_sync::apply::prefetch`]): beside the turn in progress
/// instead of inside the next one, which holds the business's lock. Given at most half the
/// time left, so that the turn can still read again itself when Stripe stalls or fails here.
async fn ahead_of_turn(
    state: &AppState,
    route: &Route<'_>,
    event: &EventEnvelope,
    now: i64,
    deadline: Instant,
) -> Option<Prefetched> {
    let client = state.stripe.account(&route.account).ok()?;
    let budget = deadline.saturating_duration_since(Instant::now()) / 2;
    let made = tributary_sync::apply::prefetch(&route.business, event, now, Some(&client));
    tokio::time::timeout(budget, made).await.ok().flatten()
}

/// Writes one turn's deliveries and answers each; within the earliest deadline among them
/// (deliveries whose deadline passed while they waited are answered `503` unwritten).
async fn write_batch(state: &AppState, business: &BusinessId, batch: Vec<Pending>) {
    let now = Instant::now();
    let (mut live, late): (Vec<Pending>, Vec<Pending>) =
        batch.into_iter().partition(|p| p.deadline > now);
    for p in late {
        let _ = p.answer.send(Err(Failure::Internal(database_stalled())));
    }
    let Some(deadline) = live.iter().map(|p| p.deadline).min() else {
        return;
    };
    ::metrics::histogram!(metrics::WEBHOOK_BATCH).record(live.len() as f64);
    let on_stripe = AtomicBool::new(false);
    // Answered after the turn, with the others: a revocation it causes then follows their
    // writes instead of racing them.
    let mut failed = Vec::new();
    let run = async {
        // A delivery that Stripe fails (unavailable, access revoked) is answered on its own and
        // the turn is written again without it: rare, and cheaper than a savepoint around
        // every delivery.
        loop {
            match write(state, business, &live, &on_stripe).await {
                Ok(results) => return Ok(results),
                Err(Interrupt::Database(e)) => return Err(e),
                Err(Interrupt::Failed(i, failure)) => failed.push((live.remove(i), failure)),
            }
        }
    };
    let results: Vec<Applied> = match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => {
            tracing::error!(error = %e, deliveries = live.len(), "webhook batch not written");
            live.iter()
                .map(|_| Err(Failure::Internal(again(&e))))
                .collect()
        }
        Err(_) => live
            .iter()
            .map(|_| {
                Err(if on_stripe.load(Ordering::Relaxed) {
                    Failure::Unavailable(format!(
                        "applying took longer than {} s",
                        APPLY_TIMEOUT.as_secs()
                    ))
                } else {
                    Failure::Internal(database_stalled())
                })
            })
            .collect(),
    };
    for (p, result) in live.into_iter().zip(results) {
        let _ = p.answer.send(result);
    }
    for (p, failure) in failed {
        let _ = p.answer.send(Err(failure));
    }
}

/// Why a turn's transaction was given up.
enum Interrupt {
    /// The database failed: every delivery of the turn is answered with it.
    Database(ApiError),
    /// Applying the delivery at this index failed on Stripe's side.
    Failed(usize, Failure),
}

impl From<ApiError> for Interrupt {
    fn from(e: ApiError) -> Self {
        Self::Database(e)
    }
}

/// The same server error again, for each delivery of a failed batch.
fn again(e: &ApiError) -> ApiError {
    match e {
        ApiError::DatabaseUnavailable(source) => {
            ApiError::DatabaseUnavailable(source.to_string().into())
        }
        other => ApiError::Internal(other.to_string().into()),
    }
}

/// The transaction of one turn: the business locked once, the deliveries' duplicates found in
/// one query, each event applied, every record written in one statement, the spend of all the
/// emails touched refreshed once, one commit. What the events' objects link to before the
/// write (which leads the spend refresh to the emails they may take money from) is read on
/// other pooled connections meanwhile (see [`EventBatch::lock`]): those reads and the
/// transaction's own overlap instead of following each other.
async fn write(
    state: &AppState,
    business: &BusinessId,
    items: &[Pending],
    on_stripe: &AtomicBool,
) -> Result<Vec<Applied>, Interrupt> {
    let beside = state.db.reading_beside().await;
    let mut phase = Phases::start();
    let txn = state.db.begin_write().await.map_err(ApiError::internal)?;
    let (mut batch, connection) = EventBatch::lock(&txn, business, items.iter().map(|p| &p.event))
        .await
        .map_err(ApiError::internal)?;
    let touched = batch.touched().clone();
    phase.done("lock");
    // Where the transaction cannot read beside itself (SQLite), the links come first, in it.
    let early = match beside {
        Some(_) => None,
        None => Some(
            readmodel::linked_before(&txn, business, &touched)
                .await
                .map_err(ApiError::internal)?,
        ),
    };
    let before = async {
        match early {
            Some(links) => Ok(links),
            None => readmodel::linked_before(state.db.lookups(), business, &touched)
                .await
                .map_err(|e| Interrupt::Database(ApiError::internal(e))),
        }
    };
    let written = apply_and_record(
        state,
        business,
        items,
        on_stripe,
        &txn,
        &mut batch,
        connection.as_ref(),
    );
    let (before, out) = match futures::try_join!(before, written) {
        Ok(done) => done,
        Err(failed @ Interrupt::Failed(..)) => {
            // Released now, so the turn written again gets the lock at once.
            txn.rollback().await.map_err(ApiError::internal)?;
            return Err(failed);
        }
        Err(e) => return Err(e),
    };
    phase.done("apply");
    batch.before(before);
    batch
        .finish(&txn, tributary_persistence::now())
        .await
        .map_err(ApiError::internal)?;
    phase.done("spend");
    txn.commit().await.map_err(ApiError::internal)?;
    phase.done("commit");
    Ok(out)
}

/// Times the phases of a turn's transaction, one after another, into
/// [`metrics::WEBHOOK_TURN`]. A phase that fails is not recorded, nor those after it.
struct Phases(Instant);

impl Phases {
    fn start() -> Self {
        Self(Instant::now())
    }

    /// Records the phase that ends now; the next one starts.
    fn done(&mut self, phase: &'static str) {
        let now = Instant::now();
        ::metrics::histogram!(metrics::WEBHOOK_TURN, "phase" => phase)
            .record(now.duration_since(self.0).as_secs_f64());
        self.0 = now;
    }
}

/// Inside a turn's transaction: records every delivery not recorded before (the others are
/// duplicates), applies their events, and writes each record's outcome; each delivery's
/// answer.
async fn apply_and_record(
    state: &AppState,
    business: &BusinessId,
    items: &[Pending],
    on_stripe: &AtomicBool,
    txn: &DatabaseTransaction,
    batch: &mut EventBatch<'_>,
    connection: Option<&stripe_access::Model>,
) -> Result<Vec<Applied>, Interrupt> {
    // Whether a delivery's event goes to the business the turn locked, not "unrouted".
    let routed = |p: &Pending| connection.is_some_and(|c| c.stripe_account_id == p.account);
    let claims: Vec<_> = items
        .iter()
        .map(|p| {
            let to = routed(p).then_some(business);
            record(&p.endpoint, &p.event, to, Some(&p.account), CLAIMED, p.now)
        })
        .collect();
    let mut claimed = webhooks::claim_events(txn, &claims)
        .await
        .map_err(ApiError::from)?;
    // Each delivery's outcome, or the position of its event among those the mirror applies.
    let mut out: Vec<Result<Applied, usize>> = Vec::with_capacity(items.len());
    let mut events = Vec::new();
    // What was made of each of those events before the turn, and its delivery.
    let mut ahead = Vec::new();
    let mut delivery = Vec::new();
    for (i, p) in items.iter().enumerate() {
        // Claimed by this turn, once: a second delivery of the event in it is a duplicate too.
        if !claimed.remove(&(p.endpoint.clone(), p.event.id.clone())) {
            out.push(Ok(Ok(None)));
            continue;
        }
        let outcome = match connection {
            Some(c) if c.stripe_account_id != p.account => "unrouted",
            None => "unrouted",
            Some(c) if c.status != access::CONNECTED => "revoked",
            Some(_) if p.event.event_type == "account.updated" => {
                account_updated(txn, business, &p.account, &p.event).await?
            }
            Some(_) => {
                out.push(Err(events.len()));
                events.push((&p.event, p.now));
                ahead.push(p.ahead.as_ref());
                delivery.push(i);
                continue;
            }
        };
        out.push(Ok(Ok(Some(outcome))));
    }
    let applied = match connection {
        Some(c) if !events.is_empty() => {
            let client = state
                .stripe
                .account(&c.stripe_account_id)
                .map_err(ApiError::internal)?;
            // Applying may re-fetch from Stripe: a stall from here on is Stripe's.
            on_stripe.store(true, Ordering::Relaxed);
            let applied = batch.apply(txn, &events, &ahead, Some(&client)).await;
            on_stripe.store(false, Ordering::Relaxed);
            match applied {
                Ok(outcomes) => outcomes,
                Err(Failed { index, error }) => {
                    let failure = match *error {
                        SyncError::Stripe(StripeError::AccessRevoked { .. }) => Failure::Revoked,
                        SyncError::Stripe(e) => Failure::Unavailable(e.to_string()),
                        other => return Err(ApiError::internal(other).into()),
                    };
                    return Err(Interrupt::Failed(delivery[index], failure));
                }
            }
        }
        _ => Vec::new(),
    };
    let out: Vec<Applied> = out
        .into_iter()
        .map(|o| o.unwrap_or_else(|k| Ok(Some(applied[k].as_str()))))
        .collect();
    // The claimed records (duplicates answer `None`), each with its outcome.
    let settled: Vec<_> = claims
        .into_iter()
        .zip(&out)
        .filter_map(|(mut record, o)| {
            record.outcome = (*o.as_ref().ok()?)?.to_owned();
            Some(record)
        })
        .collect();
    webhooks::settle_events(txn, &settled)
        .await
        .map_err(ApiError::from)?;
    Ok(out)
}

/// `account.updated` of the linked account refreshes the connection's display name (the order
/// of names of SPEC §5), so the settings show a rename without waiting for a sync.
async fn account_updated<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    account: &str,
    event: &EventEnvelope,
) -> Result<&'static str, ApiError> {
    if event.object_type() != Some("account") || event.object_id() != Some(account) {
        return Ok("ignored");
    }
    let Some(name) = account_display_name(&event.object) else {
        return Ok("ignored");
    };
    stripe_access::Entity::update_many()
        .col_expr(stripe_access::Column::AccountName, Expr::value(name))
        .filter(stripe_access::Column::BusinessId.eq(business.as_str()))
        .filter(stripe_access::Column::StripeAccountId.eq(account))
        .exec(conn)
        .await
        .map_err(ApiError::internal)?;
    Ok("applied")
}

/// `POST /api/webhooks/stripe` — the platform's own billing of agencies.
#[utoipa::path(
    post,
    path = "/api/webhooks/stripe",
    tag = "webhooks",
    summary = "The platform's own billing of agencies",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body")),
    request_body(content = Object, content_type = "application/json",
        description = "A Stripe event, verified on the raw body (at most 1 MiB)"),
    responses(
        (status = 200, description = "Accepted (also a duplicate, or an event with nowhere to go).",
            body = crate::openapi::WebhookReceived),
        (status = 400, description = "`invalid_signature`, `invalid_event`, `invalid_body`.",
            body = crate::openapi::Error),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, description = "`not_configured` (no signing secret set), or \
            `stripe_unavailable` / `database_unavailable`: not applied now, Stripe delivers again.",
            body = crate::openapi::Error),
    )
)]
pub async fn platform(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    let result = bounded(deadline, platform_delivery(state, req, payload)).await;
    metrics::webhook_delivery("platform", &result);
    result
}

async fn platform_delivery(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload).await?;
    let secret = configured(
        state.settings.stripe.platform_webhook_secret.as_ref(),
        "stripe.platform_webhook_secret",
    )?;
    let event = verify(&req, &body, &[secret])?;
    let now = tributary_persistence::now();
    let endpoint = billing::PLATFORM_ENDPOINT;
    if event.livemode != state.livemode {
        let row = record(
            endpoint,
            &event,
            None,
            event.account.as_deref(),
            "other_mode",
            now,
        );
        return record_only(&state.db, &event, row).await;
    }
    if event.account.is_some() {
        // A connected account's event (an endpoint registered for "events on connected
        // accounts" by mistake): it says nothing about the platform's billing of agencies.
        let row = record(
            endpoint,
            &event,
            None,
            event.account.as_deref(),
            "unrouted",
            now,
        );
        return record_only(&state.db, &event, row).await;
    }
    let txn = state.db.begin_write().await.map_err(ApiError::internal)?;
    if seen(&txn, endpoint, &event.id).await? {
        txn.rollback().await.map_err(ApiError::internal)?;
        log(&event, "duplicate", true);
        return Ok(received(&event, "duplicate", true));
    }
    let (outcome, agency) = tributary_sync::billing::apply_event(&txn, &event, now)
        .await
        .map_err(ApiError::internal)?;
    let mut row = record(
        endpoint,
        &event,
        None,
        event.account.as_deref(),
        outcome.as_str(),
        now,
    );
    if outcome == tributary_sync::billing::BillingOutcome::Unrouted {
        // Kept so a later checkout that links this customer to an agency can apply it (with
        // NUL characters replaced, as everything read from Stripe: PostgreSQL refuses them).
        row.payload = serde_json::from_slice(&body).ok().map(|mut v| {
            tributary_stripe_connect::scrub_nul(&mut v);
            v
        });
    }
    if !webhooks::record_event(&txn, row).await? {
        txn.rollback().await.map_err(ApiError::internal)?;
        log(&event, "duplicate", true);
        return Ok(received(&event, "duplicate", true));
    }
    txn.commit().await.map_err(ApiError::internal)?;
    tracing::info!(event_id = %event.id, event_type = %event.event_type, agency_id = agency.as_deref().unwrap_or(""), outcome = outcome.as_str(), "platform billing event");
    Ok(received(&event, outcome.as_str(), false))
}
