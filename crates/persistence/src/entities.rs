//! sea-orm entities, one module per table. Times are unix seconds; `raw` is the Stripe object
//! exactly as received.
//!
//! Each module holds what `DeriveEntityModel` generates (`Entity`, `Model`, `Column`,
//! `ActiveModel`, …). Those items and the per-table columns are not documented one by one: a
//! mirror column holds the Stripe field of the same name (ids for expandable fields, emails
//! normalised), and SPEC §3 and `docs/architecture.md` ("Data") describe the tables.

/// The columns every mirror table shares, so code can treat the twelve tables alike.
pub trait MirrorModel {
    /// The business (tenant) the row belongs to.
    fn business_id(&self) -> &str;
    /// The Stripe object's id.
    fn stripe_id(&self) -> &str;
    /// When the newest applied change happened (unix): an event's `created`, or the moment
    /// the API read that returned the object was sent.
    fn last_event_at(&self) -> i64;
    /// Whether Stripe deleted the object.
    fn deleted(&self) -> bool;
    /// The object exactly as Stripe sent it.
    fn raw(&self) -> &serde_json::Value;
    /// Takes the object out of the row (leaving `null`): a write binds it as JSON text,
    /// serialised once, instead of copying the tree into the statement and its parameters.
    fn take_raw(&mut self) -> serde_json::Value;
}

macro_rules! mirror_entity {
    ($(#[$doc:meta])* $module:ident, $table:literal, { $($(#[$fattr:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[allow(missing_docs)] // generated items and Stripe's own fields: see the module doc
        pub mod $module {
            use sea_orm::entity::prelude::*;

            /// One row: one Stripe object of one business.
            #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                /// The business (tenant) the object was mirrored for.
                #[sea_orm(primary_key, auto_increment = false)]
                pub business_id: String,
                /// The Stripe object's id.
                #[sea_orm(primary_key, auto_increment = false)]
                pub stripe_id: String,
                $($(#[$fattr])* pub $field: $ty,)*
                /// The object exactly as Stripe sent it.
                #[sea_orm(column_type = "JsonBinary")]
                pub raw: Json,
                /// Stripe's `livemode`.
                pub livemode: bool,
                /// Stripe's `created` (unix).
                pub created: i64,
                /// Whether Stripe deleted the object.
                pub deleted: bool,
                /// When the newest applied change happened (unix).
                pub last_event_at: i64,
                /// When the row was last written (unix).
                pub synced_at: i64,
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}

            impl super::MirrorModel for Model {
                fn business_id(&self) -> &str { &self.business_id }
                fn stripe_id(&self) -> &str { &self.stripe_id }
                fn last_event_at(&self) -> i64 { self.last_event_at }
                fn deleted(&self) -> bool { self.deleted }
                fn raw(&self) -> &Json { &self.raw }
                fn take_raw(&mut self) -> Json { std::mem::take(&mut self.raw) }
            }

            impl super::super::mirror::Mirror for Entity {
                const TABLE: &'static str = $table;
            }
        }
    };
}

mirror_entity!(
    /// Products.
    stripe_products, "stripe_products", {
    name: Option<String>,
    active: bool,
    description: Option<String>,
});
mirror_entity!(
    /// Prices (`price_type`: `one_time` or `recurring`).
    stripe_prices, "stripe_prices", {
    product: Option<String>,
    active: bool,
    currency: String,
    unit_amount: Option<i64>,
    price_type: String,
    recurring_interval: Option<String>,
    recurring_interval_count: Option<i64>,
    recurring_usage_type: Option<String>,
    nickname: Option<String>,
});
mirror_entity!(
    /// Customers.
    stripe_customers, "stripe_customers", {
    email: Option<String>,
    name: Option<String>,
    currency: Option<String>,
});
mirror_entity!(
    /// Payment intents, and charges that have no payment intent (`stripe_type`).
    stripe_orders, "stripe_orders", {
    stripe_type: String,
    customer: Option<String>,
    email: Option<String>,
    status: String,
    amount: i64,
    amount_received: i64,
    currency: String,
    invoice: Option<String>,
    payment_intent: Option<String>,
});
mirror_entity!(
    /// Refunds.
    stripe_refunds, "stripe_refunds", {
    payment_intent: Option<String>,
    charge: Option<String>,
    status: String,
    amount: i64,
    currency: String,
    reason: Option<String>,
});
mirror_entity!(
    /// Invoices.
    stripe_invoices, "stripe_invoices", {
    customer: Option<String>,
    email: Option<String>,
    status: String,
    currency: String,
    amount_due: i64,
    amount_paid: i64,
    amount_remaining: i64,
    total: i64,
    subscription: Option<String>,
    payment_intent: Option<String>,
    charge: Option<String>,
    paid_at: Option<i64>,
    number: Option<String>,
});
mirror_entity!(
    /// Invoice line items (`invoice` names their invoice).
    stripe_invoice_line_items, "stripe_invoice_line_items", {
    invoice: String,
    amount: i64,
    currency: String,
    description: Option<String>,
    price: Option<String>,
    quantity: Option<i64>,
    subscription: Option<String>,
    period_start: Option<i64>,
    period_end: Option<i64>,
});
mirror_entity!(
    /// Invoice payments: what paid an invoice.
    stripe_invoice_payments, "stripe_invoice_payments", {
    invoice: String,
    payment_type: Option<String>,
    payment_intent: Option<String>,
    charge: Option<String>,
    status: String,
    amount_paid: i64,
    amount_requested: i64,
    currency: String,
    paid_at: Option<i64>,
});
mirror_entity!(
    /// Checkout sessions (`email`: `customer_details.email`, else `customer_email`).
    stripe_checkout_sessions, "stripe_checkout_sessions", {
    customer: Option<String>,
    email: Option<String>,
    mode: String,
    status: Option<String>,
    payment_status: String,
    amount_total: Option<i64>,
    amount_subtotal: Option<i64>,
    currency: Option<String>,
    payment_intent: Option<String>,
    invoice: Option<String>,
    subscription: Option<String>,
    client_reference_id: Option<String>,
});
mirror_entity!(
    /// Checkout session line items (`checkout_session` names their session).
    stripe_checkout_line_items, "stripe_checkout_line_items", {
    checkout_session: String,
    price: Option<String>,
    product: Option<String>,
    quantity: Option<i64>,
    amount_total: i64,
    amount_subtotal: i64,
    currency: String,
    description: Option<String>,
});
mirror_entity!(
    /// Subscriptions (`mrr`: the normalised monthly amount, minor units).
    stripe_subscriptions, "stripe_subscriptions", {
    customer: Option<String>,
    status: String,
    currency: String,
    cancel_at_period_end: bool,
    canceled_at: Option<i64>,
    ended_at: Option<i64>,
    start_date: Option<i64>,
    trial_start: Option<i64>,
    trial_end: Option<i64>,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
    mrr: i64,
});
mirror_entity!(
    /// Subscription items (`subscription` names their subscription).
    stripe_subscription_items, "stripe_subscription_items", {
    subscription: String,
    price: Option<String>,
    product: Option<String>,
    quantity: i64,
    unit_amount: Option<i64>,
    currency: Option<String>,
    recurring_interval: Option<String>,
    recurring_interval_count: Option<i64>,
    recurring_usage_type: Option<String>,
});

macro_rules! entity {
    ($(#[$doc:meta])* $module:ident, $table:literal, { $($(#[$fattr:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[allow(missing_docs)] // generated items; the columns are described in SPEC §3
        pub mod $module {
            use sea_orm::entity::prelude::*;

            /// One row of the table.
            #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                $($(#[$fattr])* pub $field: $ty,)*
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}
        }
    };
}

entity!(
    /// Businesses (tenants), keyed by the host application's id.
    businesses, "businesses", {
    #[sea_orm(primary_key, auto_increment = false)]
    id: String,
    slug: String,
    name: String,
    agency_id: Option<String>,
    created_at: i64,
    updated_at: i64,
});
entity!(
    /// The one Stripe account a business links. No token is stored.
    stripe_access, "stripe_access", {
    #[sea_orm(primary_key, auto_increment = false)]
    business_id: String,
    stripe_account_id: String,
    account_name: Option<String>,
    livemode: bool,
    scope: String,
    date_created: i64,
    status: String,
    revoked_at: Option<i64>,
    /// Changes whenever the business's mirror or read models change (see
    /// [`crate::access::lock_for_write`]).
    data_version: i64,
});
entity!(
    /// One-time CSRF nonces of the OAuth flow.
    oauth_states, "oauth_states", {
    #[sea_orm(primary_key, auto_increment = false)]
    nonce: String,
    business_id: String,
    portal: String,
    user_sub: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
});
entity!(
    /// Sync runs with their lease and per-resource progress.
    sync_jobs, "sync_jobs", {
    #[sea_orm(primary_key, auto_increment = false)]
    id: String,
    business_id: String,
    trigger: String,
    status: String,
    full: bool,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    error_code: Option<String>,
    error_message: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    progress: Json,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
});
entity!(
    /// Per business and resource: where the next incremental sync starts.
    sync_cursors, "sync_cursors", {
    #[sea_orm(primary_key, auto_increment = false)]
    business_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    resource: String,
    last_successful_date: Option<i64>,
    events_cursor: Option<i64>,
    last_reconciled_at: Option<i64>,
});
entity!(
    /// The spend read model of SPEC §7/§8: one row per business, normalised email and currency.
    customer_spend, "customer_spend", {
    #[sea_orm(primary_key, auto_increment = false)]
    business_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    email: String,
    #[sea_orm(primary_key, auto_increment = false)]
    currency: String,
    gross: i64,
    refunded: i64,
    net: i64,
    order_count: i64,
    first_purchase_at: i64,
    last_purchase_at: i64,
    #[sea_orm(column_type = "JsonBinary")]
    customer_ids: Json,
    name: Option<String>,
    is_primary: bool,
    email_order_count: i64,
    email_last_purchase_at: i64,
    updated_at: i64,
});
entity!(
    /// Per business, subscription and day: the normalised monthly amount.
    mrr_snapshots, "mrr_snapshots", {
    #[sea_orm(primary_key, auto_increment = false)]
    business_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    subscription_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    day: String,
    customer: Option<String>,
    status: String,
    currency: String,
    mrr: i64,
});
entity!(
    /// A business's own webhook endpoint signing secret.
    webhook_endpoints, "webhook_endpoints", {
    #[sea_orm(primary_key, auto_increment = false)]
    business_id: String,
    secret: String,
    created_at: i64,
    updated_at: i64,
});
entity!(
    /// The platform's own Stripe billing of agencies.
    agency_billing, "agency_billing", {
    #[sea_orm(primary_key, auto_increment = false)]
    agency_id: String,
    customer: Option<String>,
    subscription: Option<String>,
    price: Option<String>,
    status: Option<String>,
    current_period_end: Option<i64>,
    seats: Option<i64>,
    last_event_at: i64,
    updated_at: i64,
});
entity!(
    /// The idempotency record of received webhook events.
    webhook_events, "webhook_events", {
    #[sea_orm(primary_key, auto_increment = false)]
    endpoint: String,
    #[sea_orm(primary_key, auto_increment = false)]
    event_id: String,
    business_id: Option<String>,
    event_type: String,
    account: Option<String>,
    livemode: bool,
    received_at: i64,
    processed_at: Option<i64>,
    outcome: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    payload: Option<Json>,
});
