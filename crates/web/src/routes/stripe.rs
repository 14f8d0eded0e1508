//! A business's Stripe connection (SPEC §4): status, manual sync, jobs, webhook secret and
//! disconnect, for the agency app and the client portal.

use actix_web::{HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tributary_domain::BusinessId;
use tributary_persistence::{access, jobs, webhooks};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AuthedBusiness, ClientBusiness};
use crate::error::ApiError;
use crate::openapi::{Error, Forbidden, Internal, NotFound, PayloadTooLarge, Unauthorized};
use crate::state::AppState;
use crate::views::{JobView, PageView, StatusView};

/// The response header reporting a revocation at Stripe that failed.
pub const REVOKE_HEADER: &str = "Tributary-Revoke";

pub(crate) async fn status_of(
    state: &AppState,
    business: &BusinessId,
) -> Result<StatusView, ApiError> {
    let connection = access::get(&state.db, business).await?;
    let (latest, _) = jobs::list(&state.db, business, 1, 0).await?;
    let success = jobs::latest_with_status(&state.db, business, jobs::SUCCEEDED).await?;
    Ok(StatusView::new(
        connection,
        latest.into_iter().next(),
        success,
    ))
}

/// `GET /api/stripe/{businessId}/status`.
#[utoipa::path(
    get,
    path = "/api/stripe/{businessId}/status",
    tag = "connect",
    summary = "The business's Stripe connection and its latest sync",
    params(("businessId" = String, Path, description = "The business (a token must grant it)")),
    responses(
        (status = 200, description = "The connection's status.", body = StatusView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn status(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(status_of(&state, &auth.business).await?))
}

/// `GET /api/client/stripe/status`.
#[utoipa::path(
    get,
    path = "/api/client/stripe/status",
    tag = "connect",
    summary = "The client portal's business: its Stripe connection",
    responses(
        (status = 200, description = "The connection's status.", body = StatusView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn client_status(
    state: web::Data<AppState>,
    auth: ClientBusiness,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(status_of(&state, &auth.business).await?))
}

/// The query of `POST /api/stripe/{businessId}/sync`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Re-list everything and reconcile deletions.
    #[serde(default)]
    full: bool,
}

/// `POST /api/stripe/{businessId}/sync[?full=true]` → `202 {job}`; joins an active job.
#[utoipa::path(
    post,
    path = "/api/stripe/{businessId}/sync",
    tag = "connect",
    summary = "Queue a manual sync, or join the one queued or running",
    params(("businessId" = String, Path, description = "The business (a token must grant it)"), SyncQuery),
    responses(
        (status = 202, description = "The queued or running job.", body = JobView),
        (status = 400, description = "`invalid_query`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "`not_connected`: the business has no Stripe connection.",
            body = Error),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn sync(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    query: web::Query<SyncQuery>,
) -> Result<HttpResponse, ApiError> {
    let connected = access::get(&state.db, &auth.business)
        .await?
        .is_some_and(|a| a.status == access::CONNECTED);
    if !connected {
        return Err(ApiError::not_connected());
    }
    let (job, created) = jobs::enqueue(
        &state.db,
        &auth.business,
        "manual",
        query.full,
        tributary_persistence::now(),
    )
    .await?;
    if created {
        state.workers.wake();
    }
    tracing::info!(business_id = %auth.business, job_id = %job.id, created, "manual sync requested");
    Ok(HttpResponse::Accepted().json(JobView::from(job)))
}

/// The query of `GET /api/stripe/{businessId}/sync-jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// From 1.
    #[serde(default = "first_page")]
    #[param(default = 1, minimum = 1)]
    page: u64,
    /// At most 100.
    #[serde(default = "default_per_page")]
    #[param(default = 20, minimum = 1, maximum = 100)]
    per_page: u64,
}

fn first_page() -> u64 {
    1
}

fn default_per_page() -> u64 {
    20
}

/// Most jobs one page lists.
pub const MAX_PER_PAGE: u64 = 100;

/// `GET /api/stripe/{businessId}/sync-jobs?page=1&per_page=20`, newest first.
#[utoipa::path(
    get,
    path = "/api/stripe/{businessId}/sync-jobs",
    tag = "connect",
    summary = "The business's sync jobs, newest first",
    params(("businessId" = String, Path, description = "The business (a token must grant it)"), PageQuery),
    responses(
        (status = 200, description = "A page of jobs.", body = PageView<JobView>),
        (status = 400, description = "`invalid_page`, `invalid_per_page`, `invalid_query`.",
            body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let PageQuery { page, per_page } = query.into_inner();
    if page == 0 || page > 1_000_000 {
        return Err(ApiError::bad_request(
            "invalid_page",
            "page must be 1 or more",
        ));
    }
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::bad_request(
            "invalid_per_page",
            format!("per_page must be between 1 and {MAX_PER_PAGE}"),
        ));
    }
    let (items, total) =
        jobs::list(&state.db, &auth.business, per_page, (page - 1) * per_page).await?;
    Ok(HttpResponse::Ok().json(PageView {
        items: items.into_iter().map(JobView::from).collect(),
        page,
        per_page,
        total,
    }))
}

/// `GET /api/stripe/{businessId}/sync-jobs/{jobId}`.
#[utoipa::path(
    get,
    path = "/api/stripe/{businessId}/sync-jobs/{jobId}",
    tag = "connect",
    summary = "One sync job with its per-resource progress",
    params(("businessId" = String, Path, description = "The business (a token must grant it)"), ("jobId" = String, Path, description = "The job")),
    responses(
        (status = 200, description = "The job.", body = JobView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, job_id) = path.into_inner();
    let job = jobs::get(&state.db, &auth.business, &job_id)
        .await?
        .ok_or(ApiError::NotFound("sync job"))?;
    Ok(HttpResponse::Ok().json(JobView::from(job)))
}

/// Cancels the running sync, revokes at Stripe and removes every row of the business but the
/// business itself. `None` when there was no connection.
pub(crate) async fn disconnect_business(
    state: &AppState,
    business: &BusinessId,
) -> Result<Option<HttpResponse>, ApiError> {
    let Some(connection) = access::get(&state.db, business).await? else {
        return Ok(None);
    };
    let now = tributary_persistence::now();
    // Cancel first: the worker's next lease renewal fails and it stops before the purge.
    jobs::fail_active(
        &state.db,
        business,
        "cancelled",
        "the business was disconnected from Stripe",
        now,
    )
    .await?;
    let mut revoke_failed = false;
    if connection.status == access::CONNECTED
        && let Err(e) = state
            .interactive(state.stripe.deauthorize(&connection.stripe_account_id))
            .await
    {
        // The local clear happens regardless; the header tells the caller.
        tracing::warn!(
            business_id = %business,
            account = %connection.stripe_account_id,
            error = %e,
            "revoking the Stripe connection failed"
        );
        revoke_failed = true;
    }
    state.db.purge_business(business).await?;
    tracing::info!(business_id = %business, account = %connection.stripe_account_id, revoke_failed, "Stripe disconnected");
    let mut res = HttpResponse::NoContent();
    if revoke_failed {
        res.insert_header((REVOKE_HEADER, "failed"));
    }
    Ok(Some(res.finish()))
}

/// `DELETE /api/stripe/{businessId}` → `204`; `409 not_connected`.
#[utoipa::path(
    delete,
    path = "/api/stripe/{businessId}",
    tag = "connect",
    summary = "Disconnect: revoke at Stripe and remove every mirrored row of the business",
    params(("businessId" = String, Path, description = "The business (a token must grant it)")),
    responses(
        (status = 204, description = "Disconnected.", headers(("Tributary-Revoke" = String,
            description = "`failed` when revoking at Stripe failed; the local clear happened all the same"))),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "`not_connected`.", body = Error),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn disconnect(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
) -> Result<HttpResponse, ApiError> {
    disconnect_business(&state, &auth.business)
        .await?
        .ok_or_else(ApiError::not_connected)
}

/// `DELETE /api/client/stripe/disconnect`.
#[utoipa::path(
    delete,
    path = "/api/client/stripe/disconnect",
    tag = "connect",
    summary = "The client portal's business: disconnect",
    responses(
        (status = 204, description = "Disconnected.", headers(("Tributary-Revoke" = String,
            description = "`failed` when revoking at Stripe failed; the local clear happened all the same"))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`not_connected`.", body = Error),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn client_disconnect(
    state: web::Data<AppState>,
    auth: ClientBusiness,
) -> Result<HttpResponse, ApiError> {
    disconnect_business(&state, &auth.business)
        .await?
        .ok_or_else(ApiError::not_connected)
}

/// The body of `PUT /api/stripe/{businessId}/webhook-secret`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecret {
    /// The endpoint's signing secret (`whsec_…`), as Stripe shows it.
    #[schema(value_type = String, example = "whsec_…")]
    secret: SecretString,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// `PUT /api/stripe/{businessId}/webhook-secret` `{"secret": "whsec_…"}` → `204`.
#[utoipa::path(
    put,
    path = "/api/stripe/{businessId}/webhook-secret",
    tag = "connect",
    summary = "Save the signing secret of the business's own webhook endpoint",
    params(("businessId" = String, Path, description = "The business (a token must grant it)")),
    request_body = WebhookSecret,
    responses(
        (status = 204, description = "Saved."),
        (status = 400, description = "`invalid_secret`, `invalid_json`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn set_webhook_secret(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    body: web::Json<WebhookSecret>,
) -> Result<HttpResponse, ApiError> {
    let secret = body.secret.expose_secret();
    let valid = secret.starts_with("whsec_")
        && (10..=256).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        // Never echo the value.
        return Err(ApiError::bad_request(
            "invalid_secret",
            "secret must be a Stripe webhook signing secret (whsec_…)",
        ));
    }
    webhooks::set_secret(
        &state.db,
        &auth.business,
        secret,
        tributary_persistence::now(),
    )
    .await?;
    tracing::info!(business_id = %auth.business, "webhook signing secret saved");
    Ok(HttpResponse::NoContent().finish())
}
