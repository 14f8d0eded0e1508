//! Stripe HTTP client for Tributary: Connect OAuth, per-account requests, lists, retries,
//! webhook verification.
//!
//! One [`Stripe`] handle per process holds one pooled HTTP client (connections are reused),
//! the platform key, and a request budget per connected account
//! (`stripe.max_requests_per_second`, shared by every task that touches the account). Every
//! request sends `Authorization: Bearer <platform key>`, `Stripe-Version:`
//! [`STRIPE_VERSION`] and, for a connected account, `Stripe-Account`. `429`, `5xx`, timeouts
//! and resets are retried with exponential backoff and jitter, honouring `Retry-After` and
//! `Stripe-Should-Retry`; what is left surfaces as a [`StripeError`] that tells
//! [`StripeError::AccessRevoked`], [`StripeError::RateLimited`], [`StripeError::Unavailable`],
//! [`StripeError::BadRequest`] and [`StripeError::NotFound`] apart.
//!
//! Lists yield each object as an [`Item`]: the async-stripe model when it parses, and always
//! the raw JSON, so nothing Stripe sent is ever dropped.
//!
//! # Paging one connected account
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use secrecy::SecretString;
//! use tributary_stripe_connect::{Created, Stripe, StripeConfig, StripeError};
//!
//! # async fn run() -> Result<(), StripeError> {
//! let stripe = Stripe::new(StripeConfig {
//!     max_requests_per_second: 25,
//!     ..StripeConfig::new(SecretString::from("sk_test_…"))
//! })?;
//! let account = stripe.account("acct_1Example")?;
//! println!("syncing {:?}", account.display_name().await?);
//!
//! // Customers created in the last 30 days, 100 per request, every page.
//! let since = time::OffsetDateTime::now_utc().unix_timestamp() - 30 * 86_400;
//! let mut pages = account.customers(Created::since(since)).pages();
//! while let Some(page) = pages.try_next().await? {
//!     for item in page.items {
//!         // `item.raw` is the object as Stripe sent it; `item.typed` the parsed model.
//!         let email = item.typed().and_then(|c| c.email.clone());
//!         println!("{} {email:?}", item.id);
//!     }
//! }
//!
//! // Or one object at a time; the other resources work the same way.
//! let mut invoices = account.invoices(Created::all()).items();
//! while let Some(invoice) = invoices.try_next().await? {
//!     let lines = account.invoice_lines(&invoice.id).collect_all().await?;
//!     println!("{} has {} lines", invoice.id, lines.len());
//! }
//!
//! // Revoked access is a distinct error the caller acts on.
//! match account.retrieve_customer("cus_123").await {
//!     Err(StripeError::AccessRevoked { .. }) => { /* mark the connection revoked */ }
//!     other => { let _ = other?; }
//! }
//! # Ok(()) }
//! ```
//!
//! Any typed async-stripe request can be sent through an [`AccountClient`] as well, since it
//! implements `stripe_client_core::StripeClient`.

mod account;
mod client;
mod config;
mod error;
mod event;
mod list;
pub mod metrics;
mod oauth;
pub mod rate;
pub mod retry;
mod webhook;

pub use account::account_display_name;
pub use client::{
    AccountClient, STRIPE_VERSION, StatsSnapshot, Stripe, StripeConnect, encode_query,
};
pub use config::{DEFAULT_API_BASE, DEFAULT_CONNECT_BASE, StripeConfig};
pub use error::{ApiError, StripeError, classify_status, redact_keys};
pub use event::{EventEnvelope, EventParseError, parse_event, retrieve_path, scrub_nul};
pub use list::{
    Created, FromRaw, Item, ListRequest, MAX_EVENT_TYPES, MAX_LIMIT, Page, RawOnly, TextPage,
    page_from_value, parse_page, parse_text_page,
};
pub use oauth::{OAuthGrant, authorize_url};
pub use webhook::{
    DEFAULT_TOLERANCE, SignatureError, SigningSecret, WebhookError, compute_signature,
    construct_event, sign_payload, verify_signature, verify_signature_now,
};

/// The async-stripe models the typed items use.
pub use stripe_shared as models;

#[cfg(test)]
mod version_tests {
    #[test]
    fn pinned_version_matches_async_stripe() {
        assert_eq!(crate::STRIPE_VERSION, stripe_client_core::VERSION.as_str());
    }
}
