//! `GET /api/openapi.json` (SPEC §11): the OpenAPI document of every route, generated from the
//! handlers' `#[utoipa::path]` attributes and the schemas derived on the types they answer.
//!
//! Most answers are typed structs ([`crate::views`], the request bodies and queries of the route
//! modules) that derive their schema. A few routes build their JSON with `json!`; their shapes
//! are described here by schema-only types, and the API test checks real answers against them.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderValue};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

pub use crate::error::Body as Error;

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"the OpenAPI document failed: {e}\"}}"))
});

/// The OpenAPI document of this server: every route, with its parameters, bodies, answers
/// and the security it needs.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1).",
        content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(DOCUMENT.as_str())
}

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "HS256 JWT signed by the host application with `auth.jwt_secret`: claims `sub`, \
             `exp`, `portal` (`agency` | `client`), `businesses` (ids) or `admin: true`."
                .to_owned(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Tributary",
        description = "A Stripe Connect mirror: connect a business's Stripe account, sync it, \
                       and read its customers, spend and dashboards. Errors answer \
                       `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        crate::metrics::render,
        openapi_json,
        crate::pages::settings_page,
        crate::pages::sales_page,
        crate::pages::dashboard_page,
        crate::pages::oauth_return,
        crate::pages::asset,
        crate::routes::contacts::stripe_customers,
        crate::routes::contacts::stripe_customers_matching,
        crate::routes::contacts::summary_by_emails,
        crate::routes::contacts::stripe_info,
        crate::routes::dashboards::revenue,
        crate::routes::dashboards::retention,
        crate::routes::dashboards::acquisition,
        crate::routes::connect::connect_url,
        crate::routes::connect::oauth_callback,
        crate::routes::stripe::status,
        crate::routes::stripe::sync,
        crate::routes::stripe::list_jobs,
        crate::routes::stripe::get_job,
        crate::routes::stripe::set_webhook_secret,
        crate::routes::stripe::disconnect,
        crate::routes::connect::client_connect_url,
        crate::routes::stripe::client_status,
        crate::routes::stripe::client_disconnect,
        crate::routes::admin::put_business,
        crate::routes::admin::delete_business,
        crate::routes::admin::connections,
        crate::routes::webhooks::platform,
        crate::routes::webhooks::connect,
        crate::routes::webhooks::business,
    ),
    components(responses(
        Unauthorized,
        Forbidden,
        NotFound,
        PayloadTooLarge,
        NotConfigured,
        Internal,
    )),
    modifiers(&Security),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document."),
        (name = "pages", description = "HTML shells of the settings panel, sales grid and \
            dashboard (SPEC §12); they need no token and call the API with the one in the URL \
            fragment."),
        (name = "connect", description = "Connecting a business's Stripe account, syncing it \
            and disconnecting it (SPEC §4)."),
        (name = "contacts", description = "Stripe customers and spend by email (SPEC §8)."),
        (name = "dashboards", description = "Revenue, retention and acquisition per month \
            (SPEC §9)."),
        (name = "admin", description = "Registering businesses and watching connections \
            (SPEC §10); admin tokens only."),
        (name = "webhooks", description = "Stripe's deliveries (SPEC §6), authenticated by \
            `Stripe-Signature`."),
    )
)]
pub struct ApiDoc;

// Reusable error answers.

/// No bearer token, or one that is malformed, forged, expired or of another algorithm
/// (`unauthorized`).
#[derive(Debug, ToResponse)]
#[response(headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
pub struct Unauthorized(pub Error<'static>);

/// The token is valid but not for this route: admin routes need `admin: true`, client routes
/// a client-portal token (`forbidden`).
#[derive(Debug, ToResponse)]
pub struct Forbidden(pub Error<'static>);

/// Unknown, or outside the token's claims: the two are indistinguishable on purpose
/// (`not_found`).
#[derive(Debug, ToResponse)]
pub struct NotFound(pub Error<'static>);

/// The body is larger than the route reads (`payload_too_large`).
#[derive(Debug, ToResponse)]
pub struct PayloadTooLarge(pub Error<'static>);

/// A setting the route needs is not set on this server (`not_configured`).
#[derive(Debug, ToResponse)]
pub struct NotConfigured(pub Error<'static>);

/// Something failed on the server's side; logged there, nothing internal in the body
/// (`internal_error`).
#[derive(Debug, ToResponse)]
pub struct Internal(pub Error<'static>);

// Shapes of the answers built with `json!`.

/// Objects fetched and written for one resource of a sync job.
#[derive(Debug, ToSchema)]
pub struct ResourceProgress {
    pub fetched: u64,
    pub written: u64,
    pub done: bool,
}

/// The callback's outcome when no settings page is configured to redirect to.
#[derive(Debug, ToSchema)]
pub struct OAuthOutcome {
    /// `connected`.
    pub stripe: String,
    #[schema(rename = "businessId")]
    #[schema(required = true)]
    pub business_id: Option<String>,
}

/// `GET /api/admin/connections`.
#[derive(Debug, ToSchema)]
pub struct Connections {
    pub items: Vec<crate::views::ConnectionView>,
}

/// Gross, refunded and net of one currency, in minor units.
#[derive(Debug, ToSchema)]
pub struct Total {
    pub currency: String,
    pub gross: i64,
    pub refunded: i64,
    pub net: i64,
}

/// One row of the customers grid: an email and its spend.
#[derive(Debug, ToSchema)]
pub struct GridItem {
    /// Normalised (trimmed, lowercase).
    pub email: String,
    #[schema(required = true)]
    pub name: Option<String>,
    pub customer_ids: Vec<String>,
    /// One per currency; totals are never added across currencies.
    pub totals: Vec<Total>,
    pub order_count: i64,
    #[schema(required = true)]
    pub last_purchase_at: Option<String>,
    /// The currency of the row's largest net total.
    #[schema(required = true)]
    pub currency: Option<String>,
    /// Whether the email is one of the `contact_emails` posted; `null` on `GET`.
    #[schema(required = true)]
    pub contact_match: Option<bool>,
}

/// A page of the customers grid.
#[derive(Debug, ToSchema)]
pub struct CustomerGrid {
    pub items: Vec<GridItem>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

/// One email's spend.
#[derive(Debug, ToSchema)]
pub struct Summary {
    pub totals: Vec<Total>,
    pub order_count: i64,
    #[schema(required = true)]
    pub last_purchase_at: Option<String>,
}

/// Spend by normalised email; unknown emails are absent.
#[derive(Debug, ToSchema)]
pub struct Summaries {
    pub summaries: BTreeMap<String, Summary>,
}

/// A Stripe customer of the email.
#[derive(Debug, ToSchema)]
pub struct InfoCustomer {
    pub id: String,
    pub created: String,
    /// `active` or `deleted`.
    pub status: String,
    /// Always `null`: a customer has no amount.
    #[schema(value_type = Option<i64>)]
    #[schema(required = true)]
    pub amount: Option<i64>,
    #[schema(required = true)]
    pub currency: Option<String>,
    #[schema(required = true)]
    pub email: Option<String>,
    #[schema(required = true)]
    pub name: Option<String>,
}

/// A refund of a payment.
#[derive(Debug, ToSchema)]
pub struct InfoRefund {
    pub id: String,
    pub amount: i64,
    pub created: String,
}

/// A payment counted for the email: each movement once, with its refunds.
#[derive(Debug, ToSchema)]
pub struct InfoPayment {
    pub id: String,
    /// `payment_intent`, `charge`, `invoice` or `checkout_session`.
    pub source: String,
    pub created: String,
    /// `succeeded` (payment intents, charges) or `paid` (invoices, sessions).
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub refunded: i64,
    pub net: i64,
    pub refunds: Vec<InfoRefund>,
    #[schema(required = true)]
    pub invoice: Option<String>,
    #[schema(required = true)]
    pub checkout_session: Option<String>,
    #[schema(required = true)]
    pub customer: Option<String>,
}

/// An invoice of the email.
#[derive(Debug, ToSchema)]
pub struct InfoInvoice {
    pub id: String,
    pub created: String,
    pub status: String,
    /// The invoice's total.
    pub amount: i64,
    pub currency: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    #[schema(required = true)]
    pub number: Option<String>,
    #[schema(required = true)]
    pub customer: Option<String>,
    #[schema(required = true)]
    pub subscription: Option<String>,
    #[schema(required = true)]
    pub paid_at: Option<String>,
}

/// A checkout session of the email.
#[derive(Debug, ToSchema)]
pub struct InfoCheckoutSession {
    pub id: String,
    pub created: String,
    #[schema(required = true)]
    pub status: Option<String>,
    /// The session's `amount_total`.
    #[schema(required = true)]
    pub amount: Option<i64>,
    #[schema(required = true)]
    pub currency: Option<String>,
    pub mode: String,
    pub payment_status: String,
    #[schema(required = true)]
    pub customer: Option<String>,
    #[schema(required = true)]
    pub payment_intent: Option<String>,
    #[schema(required = true)]
    pub invoice: Option<String>,
    #[schema(required = true)]
    pub subscription: Option<String>,
}

/// An item of a subscription.
#[derive(Debug, ToSchema)]
pub struct InfoSubscriptionItem {
    pub id: String,
    #[schema(required = true)]
    pub price: Option<String>,
    #[schema(required = true)]
    pub product: Option<String>,
    pub quantity: i64,
    #[schema(required = true)]
    pub unit_amount: Option<i64>,
    #[schema(required = true)]
    pub currency: Option<String>,
    #[schema(required = true)]
    pub interval: Option<String>,
    #[schema(required = true)]
    pub interval_count: Option<i64>,
    #[schema(required = true)]
    pub usage_type: Option<String>,
}

/// A subscription of the email's customers.
#[derive(Debug, ToSchema)]
pub struct InfoSubscription {
    pub id: String,
    pub created: String,
    pub status: String,
    /// The items' unit amounts × quantities, per billing period.
    pub amount: i64,
    pub currency: String,
    /// Normalised to a month, in minor units.
    pub mrr: i64,
    #[schema(required = true)]
    pub customer: Option<String>,
    pub items: Vec<InfoSubscriptionItem>,
    #[schema(required = true)]
    pub start_date: Option<String>,
    #[schema(required = true)]
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    #[schema(required = true)]
    pub canceled_at: Option<String>,
    #[schema(required = true)]
    pub ended_at: Option<String>,
    #[schema(required = true)]
    pub trial_end: Option<String>,
}

/// Everything Stripe knows about one email.
#[derive(Debug, ToSchema)]
pub struct StripeInfo {
    pub email: String,
    pub customers: Vec<InfoCustomer>,
    pub payments: Vec<InfoPayment>,
    pub invoices: Vec<InfoInvoice>,
    pub checkout_sessions: Vec<InfoCheckoutSession>,
    pub subscriptions: Vec<InfoSubscription>,
    pub summary: Summary,
}

/// Revenue per month, in minor units of `currency`.
#[derive(Debug, ToSchema)]
pub struct Revenue {
    pub currency: String,
    pub months: Vec<tributary_domain::metrics::RevenueMonth>,
}

/// Churn and retention per month, and the cohort table. Rates are fractions.
#[derive(Debug, ToSchema)]
pub struct Retention {
    pub currency: String,
    pub months: Vec<tributary_domain::metrics::RetentionMonth>,
    pub cohorts: Vec<tributary_domain::metrics::Cohort>,
}

/// New customers, new subscriptions and ARPU per month.
#[derive(Debug, ToSchema)]
pub struct Acquisition {
    pub currency: String,
    pub months: Vec<tributary_domain::metrics::AcquisitionMonth>,
}

/// The answer to every accepted webhook delivery.
#[derive(Debug, ToSchema)]
pub struct WebhookReceived {
    /// Always `true`.
    pub received: bool,
    /// The event's id (`evt_…`).
    pub id: String,
    /// What the event did: `applied`, `ignored`, `unrouted`, `other_mode`, `revoked`,
    /// `duplicate`, ….
    pub outcome: String,
    /// The event was delivered before; nothing changed.
    pub duplicate: bool,
}
