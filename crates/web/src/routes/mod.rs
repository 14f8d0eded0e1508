//! The JSON API's routes. Every route under `/api` but the OAuth callback needs a bearer
//! token; the extractors of [`crate::auth`] enforce it.

pub mod admin;
pub mod connect;
pub mod contacts;
pub mod dashboards;
pub mod stripe;
pub mod webhooks;

use actix_web::web;

/// Registers the routes of SPEC §4 and §10.
pub fn configure(cfg: &mut web::ServiceConfig) {
    crate::pages::configure(cfg);
    contacts::configure(cfg);
    // Plain routes, not a `/api` scope: a scope would answer 404 for every `/api` path it does
    // not list, hiding routes other modules register.
    cfg.route(
        "/api/stripe/connect-url",
        web::get().to(connect::connect_url),
    )
    .route(
        "/api/stripe/oauth/callback",
        web::get().to(connect::oauth_callback),
    )
    .route(
        "/api/stripe/{businessId}/status",
        web::get().to(stripe::status),
    )
    .route(
        "/api/stripe/{businessId}/sync",
        web::post().to(stripe::sync),
    )
    .route(
        "/api/stripe/{businessId}/sync-jobs",
        web::get().to(stripe::list_jobs),
    )
    .route(
        "/api/stripe/{businessId}/sync-jobs/{jobId}",
        web::get().to(stripe::get_job),
    )
    .route(
        "/api/stripe/{businessId}/webhook-secret",
        web::put().to(stripe::set_webhook_secret),
    )
    .route(
        "/api/stripe/{businessId}",
        web::delete().to(stripe::disconnect),
    )
    .route(
        "/api/client/stripe/connect-url",
        web::get().to(connect::client_connect_url),
    )
    .route(
        "/api/client/stripe/status",
        web::get().to(stripe::client_status),
    )
    .route(
        "/api/client/stripe/disconnect",
        web::delete().to(stripe::client_disconnect),
    )
    .route("/api/businesses/{id}", web::put().to(admin::put_business))
    .route(
        "/api/businesses/{id}",
        web::delete().to(admin::delete_business),
    )
    .route("/api/admin/connections", web::get().to(admin::connections));
    cfg.route("/api/webhooks/stripe", web::post().to(webhooks::platform));
    cfg.route(
        "/api/webhooks/stripe/connect",
        web::post().to(webhooks::connect),
    );
    cfg.route(
        "/api/webhooks/stripe/{slug}",
        web::post().to(webhooks::business),
    );
}
