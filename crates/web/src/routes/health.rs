//! Liveness and readiness (SPEC §11), for load balancers and orchestrators: no token.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use tributary_persistence::Database;

use crate::error::error_body;

/// How long `/readyz` waits for the database.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

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
        (status = 503, description = "`database_unavailable`: the database does not answer \
            (within 2 s).",
            body = crate::openapi::Error),
    )
)]
pub async fn readyz(db: web::Data<Database>) -> HttpResponse {
    // Bounded: with the server down the pool would retry connecting for its whole acquire
    // timeout (30 s), and a probe that hangs tells the orchestrator nothing.
    let answered = tokio::time::timeout(READY_TIMEOUT, db.ping()).await;
    if answered.unwrap_or(false) {
        HttpResponse::Ok().json(Health { status: "ready" })
    } else {
        HttpResponse::ServiceUnavailable().json(error_body(
            "database_unavailable",
            "the database does not answer",
        ))
    }
}
