//! Admin routes (SPEC §10): register, rename and remove businesses; list connections that
//! need attention. Every route needs a token with `admin: true`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use tributary_domain::{AgencyId, BusinessId, Slug};
use tributary_persistence::{PersistenceError, access, businesses, jobs};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::ApiError;
use crate::openapi::{
    Connections, Error, Forbidden, Internal, NotFound, PayloadTooLarge, Unauthorized,
};
use crate::state::AppState;
use crate::views::{BusinessView, ConnectionView, JobView, rfc3339};

/// Longest business name accepted.
pub const MAX_NAME_CHARS: usize = 200;

/// The body of `PUT /api/businesses/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessBody {
    /// 1 to 200 characters.
    name: String,
    /// Names the business's own webhook endpoint, `/api/webhooks/stripe/{slug}`.
    slug: String,
    #[serde(default)]
    agency_id: Option<String>,
}

fn business_id(raw: &str) -> Result<BusinessId, ApiError> {
    BusinessId::parse(raw).map_err(|e| ApiError::bad_request("invalid_business_id", e.to_string()))
}

/// `PUT /api/businesses/{id}` `{"name", "slug", "agency_id"}` → `200 {business}`.
#[utoipa::path(
    put,
    path = "/api/businesses/{id}",
    tag = "admin",
    summary = "Register or rename a business",
    params(("id" = String, Path, description = "The business")),
    request_body = BusinessBody,
    responses(
        (status = 200, description = "The business as saved.", body = BusinessView),
        (status = 400, description = "`invalid_business_id`, `invalid_slug`, `invalid_name`, \
            `invalid_agency_id`, `invalid_json`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "`slug_taken`: another business uses the slug.",
            body = Error),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn put_business(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<BusinessBody>,
) -> Result<HttpResponse, ApiError> {
    let id = business_id(&path)?;
    let BusinessBody {
        name,
        slug,
        agency_id,
    } = body.into_inner();
    let slug =
        Slug::parse(&slug).map_err(|e| ApiError::bad_request("invalid_slug", e.to_string()))?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    // Control characters have no place in a name, and PostgreSQL refuses NUL outright.
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "name must not contain control characters",
        ));
    }
    let agency = agency_id
        .as_deref()
        .map(AgencyId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_agency_id", e.to_string()))?;
    let saved = businesses::upsert(
        &state.db,
        &id,
        &slug,
        name,
        agency.as_ref(),
        tributary_persistence::now(),
    )
    .await
    .map_err(|e| match e {
        PersistenceError::Conflict(_) => ApiError::conflict(
            "slug_taken",
            format!("the slug {slug} is used by another business"),
        ),
        other => other.into(),
    })?;
    Ok(HttpResponse::Ok().json(BusinessView::from(saved)))
}

/// `DELETE /api/businesses/{id}` → `204`: disconnects (revoking at Stripe) and removes the
/// business and every row it has. `404` when there is neither a business nor a connection.
#[utoipa::path(
    delete,
    path = "/api/businesses/{id}",
    tag = "admin",
    summary = "Disconnect and remove a business",
    params(("id" = String, Path, description = "The business")),
    responses(
        (status = 204, description = "Removed.", headers(("Tributary-Revoke" = String,
            description = "`failed` when revoking at Stripe failed; the local clear happened all the same"))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn delete_business(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = BusinessId::parse(&path).map_err(|_| ApiError::NotFound("business"))?;
    let disconnected = crate::routes::stripe::disconnect_business(&state, &id).await?;
    let removed = businesses::delete(&state.db, &id).await?;
    match disconnected {
        Some(res) => Ok(res),
        None if removed => Ok(HttpResponse::NoContent().finish()),
        None => Err(ApiError::NotFound("business")),
    }
}

/// The query of `GET /api/admin/connections`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectionsQuery {
    /// `revoked` or `failing`; both when absent.
    #[serde(default)]
    #[param(pattern = "^(revoked|failing)$")]
    status: Option<String>,
}

/// `GET /api/admin/connections?status=revoked|failing` → `{"items": [connection]}`; without
/// `status`, both kinds.
#[utoipa::path(
    get,
    path = "/api/admin/connections",
    tag = "admin",
    summary = "Connections needing attention: revoked, or whose latest sync failed",
    params(ConnectionsQuery),
    responses(
        (status = 200, description = "The connections, by business id.", body = Connections),
        (status = 400, description = "`invalid_status`, `invalid_query`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn connections(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<ConnectionsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (revoked, failing) = match query.status.as_deref() {
        None => (true, true),
        Some("revoked") => (true, false),
        Some("failing") => (false, true),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                "status must be revoked or failing",
            ));
        }
    };
    let mut items = Vec::new();
    if revoked {
        for c in access::list_by_status(&state.db, access::REVOKED).await? {
            items.push(view(&state, c, "revoked").await?);
        }
    }
    if failing {
        for c in access::list_by_status(&state.db, access::CONNECTED).await? {
            let business = BusinessId::parse(&c.business_id)
                .map_err(|e| ApiError::internal(PersistenceError::Corrupt(e.to_string())))?;
            let (latest, _) = jobs::list(&state.db, &business, 1, 0).await?;
            if latest.first().is_some_and(|j| j.status == jobs::FAILED) {
                items.push(view(&state, c, "failing").await?);
            }
        }
    }
    items.sort_by(|a, b| a.business_id.cmp(&b.business_id));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

async fn view(
    state: &AppState,
    c: tributary_persistence::entities::stripe_access::Model,
    attention: &'static str,
) -> Result<ConnectionView, ApiError> {
    let last_sync = match BusinessId::parse(&c.business_id) {
        Ok(b) => jobs::list(&state.db, &b, 1, 0)
            .await?
            .0
            .into_iter()
            .next()
            .map(JobView::from),
        Err(_) => None,
    };
    Ok(ConnectionView {
        business_id: c.business_id,
        account_id: c.stripe_account_id,
        account_name: c.account_name,
        attention,
        status: c.status,
        connected_at: rfc3339(c.date_created),
        revoked_at: c.revoked_at.map(rfc3339),
        last_sync,
    })
}
