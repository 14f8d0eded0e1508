//! Every route the server answers, in one table. Every route under `/api` but the OAuth
//! callback, the webhooks and the OpenAPI document needs a bearer token; the extractors of
//! [`crate::auth`] enforce it.

pub mod admin;
pub mod connect;
pub mod contacts;
pub mod dashboards;
pub mod health;
pub mod spend_cache;
pub mod stripe;
pub mod webhooks;

use actix_web::http::Method;
use actix_web::web;

/// Declares the route table once: [`ROUTES`] (what [`registered_routes`] and the OpenAPI test
/// read) and the registration [`configure`] does come from the same lines, so neither can
/// list a route the other lacks.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path,)*) => {
        /// Method and path pattern of every route, in registration order.
        pub const ROUTES: &[(Method, &str)] = &[$((Method::$method, $path)),*];

        /// Registers every route of [`ROUTES`].
        ///
        /// Plain routes, not scopes: a scope would answer 404 for every path it does not list,
        /// hiding routes registered after it.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.route($path, web::method(Method::$method).to($handler));)*
        }
    };
}

routes! {
    // Operations (SPEC §11).
    GET "/healthz" => health::healthz,
    GET "/readyz" => health::readyz,
    GET "/metrics" => crate::metrics::render,
    GET "/api/openapi.json" => crate::openapi::openapi_json,
    // Pages (SPEC §12).
    GET "/ui/businesses/{id}/settings/stripe" => crate::pages::settings_page,
    GET "/ui/businesses/{id}/sales" => crate::pages::sales_page,
    GET "/ui/businesses/{id}/dashboard" => crate::pages::dashboard_page,
    GET "/ui/settings" => crate::pages::oauth_return,
    GET "/ui/assets/{name}" => crate::pages::asset,
    // Contacts and Sales (SPEC §8), dashboards (§9).
    GET "/api/contacts/stripe-customers" => contacts::stripe_customers,
    POST "/api/contacts/stripe-customers" => contacts::stripe_customers_matching,
    POST "/api/contacts/stripe-summary-by-emails" => contacts::summary_by_emails,
    GET "/api/contacts/stripe-info" => contacts::stripe_info,
    GET "/api/businesses/{id}/revenue" => dashboards::revenue,
    GET "/api/businesses/{id}/retention" => dashboards::retention,
    GET "/api/businesses/{id}/acquisition" => dashboards::acquisition,
    // Connecting a business (SPEC §4).
    GET "/api/stripe/connect-url" => connect::connect_url,
    GET "/api/stripe/oauth/callback" => connect::oauth_callback,
    GET "/api/stripe/{businessId}/status" => stripe::status,
    POST "/api/stripe/{businessId}/sync" => stripe::sync,
    GET "/api/stripe/{businessId}/sync-jobs" => stripe::list_jobs,
    GET "/api/stripe/{businessId}/sync-jobs/{jobId}" => stripe::get_job,
    PUT "/api/stripe/{businessId}/webhook-secret" => stripe::set_webhook_secret,
    DELETE "/api/stripe/{businessId}" => stripe::disconnect,
    GET "/api/client/stripe/connect-url" => connect::client_connect_url,
    GET "/api/client/stripe/status" => stripe::client_status,
    DELETE "/api/client/stripe/disconnect" => stripe::client_disconnect,
    // Admin (SPEC §10).
    PUT "/api/businesses/{id}" => admin::put_business,
    DELETE "/api/businesses/{id}" => admin::delete_business,
    GET "/api/admin/connections" => admin::connections,
    // Webhooks (SPEC §6): the fixed endpoints before `{slug}`.
    POST "/api/webhooks/stripe" => webhooks::platform,
    POST "/api/webhooks/stripe/connect" => webhooks::connect,
    POST "/api/webhooks/stripe/{slug}" => webhooks::business,
}

/// Method and path pattern of every route the server registers (the table [`configure`]
/// registers), for checks such as "the OpenAPI document lists every route".
pub fn registered_routes() -> Vec<(Method, &'static str)> {
    ROUTES.to_vec()
}
