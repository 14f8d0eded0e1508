//! Liveness and readiness (SPEC §11), for load balancers and orchestrators: no token.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use tributary_persistence::Database;

use crate::error::error_body;

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = Health,
        example = json!({"status": "ok"})))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers.", body = Health,
            example = json!({"status": "ready"})),
        (status = 503, description = "`database_unavailable`: the database does not answer.",
            body = crate::openapi::Error),
    )
)]
pub async fn readyz(db: web::Data<Database>) -> HttpResponse {
    if db.ping().await {
        HttpResponse::Ok().json(Health { status: "ready" })
    } else {
        HttpResponse::ServiceUnavailable().json(error_body(
            "database_unavailable",
            "the database does not answer",
        ))
    }
}
