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
/// The document's definition: every route, schema, shared answer and tag.
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
    /// Objects listed from Stripe.
    pub fetched: u64,
    /// Rows written to the mirror.
    pub written: u64,
    /// Whether the resource finished listing.
    pub done: bool,
}

/// The callback's outcome when no settings page is configured to redirect to.
#[derive(Debug, ToSchema)]
pub struct OAuthOutcome {
    /// `connected`.
    pub stripe: String,
    /// The business that was connected.
    #[schema(rename = "businessId")]
    #[schema(required = true)]
    pub business_id: Option<String>,
}

/// `GET /api/admin/connections`.
#[derive(Debug, ToSchema)]
pub struct Connections {
    /// Connections that are revoked or whose latest sync failed.
    pub items: Vec<crate::views::ConnectionView>,
}

/// Gross, refunded and net of one currency, in minor units.
#[derive(Debug, ToSchema)]
pub struct Total {
    /// Lowercase ISO code.
    pub currency: String,
    /// Gross.
    pub gross: i64,
    /// Refunded.
    pub refunded: i64,
    /// Gross − refunded.
    pub net: i64,
}

/// One row of the customers grid: an email and its spend.
#[derive(Debug, ToSchema)]
pub struct GridItem {
    /// Normalised (trimmed, lowercase).
    pub email: String,
    /// The name of the email's first customer (by id) that has one.
    #[schema(required = true)]
    pub name: Option<String>,
    /// The Stripe customers with this email.
    pub customer_ids: Vec<String>,
    /// One per currency; totals are never added across currencies.
    pub totals: Vec<Total>,
    /// Payments counted (each movement once), in any currency.
    pub order_count: i64,
    /// The latest payment (RFC 3339).
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
    /// The page's rows.
    pub items: Vec<GridItem>,
    /// The page, from 1.
    pub page: u64,
    /// Rows per page.
    pub per_page: u64,
    /// Rows over all pages.
    pub total: u64,
}

/// One email's spend.
#[derive(Debug, ToSchema)]
pub struct Summary {
    /// One per currency.
    pub totals: Vec<Total>,
    /// Payments counted (each movement once), in any currency.
    pub order_count: i64,
    /// The latest payment (RFC 3339).
    #[schema(required = true)]
    pub last_purchase_at: Option<String>,
}

/// Spend by normalised email; unknown emails are absent.
#[derive(Debug, ToSchema)]
pub struct Summaries {
    /// By normalised email.
    pub summaries: BTreeMap<String, Summary>,
}

/// A Stripe customer of the email.
#[derive(Debug, ToSchema)]
pub struct InfoCustomer {
    /// The customer id (`cus_…`).
    pub id: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// `active` or `deleted`.
    pub status: String,
    /// Always `null`: a customer has no amount.
    #[schema(value_type = Option<i64>)]
    #[schema(required = true)]
    pub amount: Option<i64>,
    /// The customer's default currency.
    #[schema(required = true)]
    pub currency: Option<String>,
    /// The customer's email, normalised.
    #[schema(required = true)]
    pub email: Option<String>,
    /// The customer's name.
    #[schema(required = true)]
    pub name: Option<String>,
}

/// A refund of a payment.
#[derive(Debug, ToSchema)]
pub struct InfoRefund {
    /// The refund id (`re_…`).
    pub id: String,
    /// Refunded, in minor units.
    pub amount: i64,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// A payment counted for the email: each movement once, with its refunds.
#[derive(Debug, ToSchema)]
pub struct InfoPayment {
    /// The id of the object that carries the payment (`pi_…`, `ch_…`, `in_…`, `cs_…`).
    pub id: String,
    /// `payment_intent`, `charge`, `invoice` or `checkout_session`.
    pub source: String,
    /// When it happened (RFC 3339; an invoice's payment time).
    pub created: String,
    /// `succeeded` (payment intents, charges) or `paid` (invoices, sessions).
    pub status: String,
    /// Gross, in minor units.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// Refunded, in minor units.
    pub refunded: i64,
    /// Gross − refunded.
    pub net: i64,
    /// The refunds applied to it.
    pub refunds: Vec<InfoRefund>,
    /// The invoice it settles, when known.
    #[schema(required = true)]
    pub invoice: Option<String>,
    /// The checkout session it settles, when known.
    #[schema(required = true)]
    pub checkout_session: Option<String>,
    /// The Stripe customer, if any.
    #[schema(required = true)]
    pub customer: Option<String>,
}

/// An invoice of the email.
#[derive(Debug, ToSchema)]
pub struct InfoInvoice {
    /// The invoice id (`in_…`).
    pub id: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Stripe's status (`draft`, `open`, `paid`, `uncollectible`, `void`).
    pub status: String,
    /// The invoice's total.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// Stripe's `amount_due`.
    pub amount_due: i64,
    /// Stripe's `amount_paid`.
    pub amount_paid: i64,
    /// Stripe's `amount_remaining`.
    pub amount_remaining: i64,
    /// The invoice number.
    #[schema(required = true)]
    pub number: Option<String>,
    /// The Stripe customer.
    #[schema(required = true)]
    pub customer: Option<String>,
    /// The subscription it bills.
    #[schema(required = true)]
    pub subscription: Option<String>,
    /// When it was paid (RFC 3339).
    #[schema(required = true)]
    pub paid_at: Option<String>,
}

/// A checkout session of the email.
#[derive(Debug, ToSchema)]
pub struct InfoCheckoutSession {
    /// The session id (`cs_…`).
    pub id: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Stripe's status (`open`, `complete`, `expired`).
    #[schema(required = true)]
    pub status: Option<String>,
    /// The session's `amount_total`.
    #[schema(required = true)]
    pub amount: Option<i64>,
    /// Lowercase ISO code.
    #[schema(required = true)]
    pub currency: Option<String>,
    /// `payment`, `subscription` or `setup`.
    pub mode: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    /// The Stripe customer.
    #[schema(required = true)]
    pub customer: Option<String>,
    /// The payment intent it created.
    #[schema(required = true)]
    pub payment_intent: Option<String>,
    /// The invoice it created.
    #[schema(required = true)]
    pub invoice: Option<String>,
    /// The subscription it created.
    #[schema(required = true)]
    pub subscription: Option<String>,
}

/// An item of a subscription.
#[derive(Debug, ToSchema)]
pub struct InfoSubscriptionItem {
    /// The item id (`si_…`).
    pub id: String,
    /// The price id.
    #[schema(required = true)]
    pub price: Option<String>,
    /// The product id.
    #[schema(required = true)]
    pub product: Option<String>,
    /// The quantity.
    pub quantity: i64,
    /// The price's unit amount, in minor units.
    #[schema(required = true)]
    pub unit_amount: Option<i64>,
    /// Lowercase ISO code.
    #[schema(required = true)]
    pub currency: Option<String>,
    /// The price's interval: `day`, `week`, `month` or `year`.
    #[schema(required = true)]
    pub interval: Option<String>,
    /// Intervals per billing period.
    #[schema(required = true)]
    pub interval_count: Option<i64>,
    /// The price's usage type: `licensed` or `metered`.
    #[schema(required = true)]
    pub usage_type: Option<String>,
}

/// A subscription of the email's customers.
#[derive(Debug, ToSchema)]
pub struct InfoSubscription {
    /// The subscription id (`sub_…`).
    pub id: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Stripe's status (`active`, `trialing`, `past_due`, `canceled`, …).
    pub status: String,
    /// The items' unit amounts × quantities, per billing period.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// Normalised to a month, in minor units.
    pub mrr: i64,
    /// The Stripe customer.
    #[schema(required = true)]
    pub customer: Option<String>,
    /// Its items.
    pub items: Vec<InfoSubscriptionItem>,
    /// Stripe's `start_date` (RFC 3339).
    #[schema(required = true)]
    pub start_date: Option<String>,
    /// The end of the current period (RFC 3339).
    #[schema(required = true)]
    pub current_period_end: Option<String>,
    /// Whether it cancels at the end of the period.
    pub cancel_at_period_end: bool,
    /// When it was cancelled (RFC 3339).
    #[schema(required = true)]
    pub canceled_at: Option<String>,
    /// When it ended (RFC 3339).
    #[schema(required = true)]
    pub ended_at: Option<String>,
    /// When its trial ends or ended (RFC 3339).
    #[schema(required = true)]
    pub trial_end: Option<String>,
}

/// Everything Stripe knows about one email.
#[derive(Debug, ToSchema)]
pub struct StripeInfo {
    /// The normalised email.
    pub email: String,
    /// Its Stripe customers.
    pub customers: Vec<InfoCustomer>,
    /// Its payments, newest first.
    pub payments: Vec<InfoPayment>,
    /// Its invoices.
    pub invoices: Vec<InfoInvoice>,
    /// Its checkout sessions.
    pub checkout_sessions: Vec<InfoCheckoutSession>,
    /// Its customers' subscriptions.
    pub subscriptions: Vec<InfoSubscription>,
    /// Its spend.
    pub summary: Summary,
}

/// Revenue per month, in minor units of `currency`.
#[derive(Debug, ToSchema)]
pub struct Revenue {
    /// The currency of the amounts.
    pub currency: String,
    /// One entry per month of the range.
    pub months: Vec<tributary_domain::metrics::RevenueMonth>,
}

/// Churn and retention per month, and the cohort table. Rates are fractions.
#[derive(Debug, ToSchema)]
pub struct Retention {
    /// The currency of the amounts.
    pub currency: String,
    /// One entry per month of the range.
    pub months: Vec<tributary_domain::metrics::RetentionMonth>,
    /// One cohort per month of the range.
    pub cohorts: Vec<tributary_domain::metrics::Cohort>,
}

/// New customers, new subscriptions and ARPU per month.
#[derive(Debug, ToSchema)]
pub struct Acquisition {
    /// The currency of ARPU and new subscriptions.
    pub currency: String,
    /// One entry per month of the range.
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
