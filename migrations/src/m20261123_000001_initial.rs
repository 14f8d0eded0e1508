use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000001_initial"
    }
}

pub const MIRROR_TABLES: &[&str] = &[
    "stripe_products",
    "stripe_prices",
    "stripe_customers",
    "stripe_orders",
    "stripe_refunds",
    "stripe_invoices",
    "stripe_invoice_line_items",
    "stripe_invoice_payments",
    "stripe_checkout_sessions",
    "stripe_checkout_line_items",
    "stripe_subscriptions",
    "stripe_subscription_items",
];

pub const TABLES: &[&str] = &[
    "businesses",
    "stripe_access",
    "oauth_states",
    "sync_jobs",
    "sync_cursors",
    "stripe_products",
    "stripe_prices",
    "stripe_customers",
    "stripe_orders",
    "stripe_refunds",
    "stripe_invoices",
    "stripe_invoice_line_items",
    "stripe_invoice_payments",
    "stripe_checkout_sessions",
    "stripe_checkout_line_items",
    "stripe_subscriptions",
    "stripe_subscription_items",
    "customer_spend",
    "mrr_snapshots",
    "webhook_endpoints",
    "agency_billing",
    "webhook_events",
];

fn text(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).text().not_null().to_owned()
}
fn text_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).text().null().to_owned()
}
fn int(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).big_integer().not_null().to_owned()
}
fn int_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).big_integer().null().to_owned()
}
fn flag(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .boolean()
        .not_null()
        .default(false)
        .to_owned()
}
fn json(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).json_binary().not_null().to_owned()
}
fn json_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).json_binary().null().to_owned()
}

fn table(name: &'static str, cols: Vec<ColumnDef>, pk: &[&'static str]) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(name).if_not_exists();
    for mut c in cols {
        t.col(&mut c);
    }
    let mut key = Index::create();
    for col in pk {
        key.col(*col);
    }
    t.primary_key(&mut key);
    t.to_owned()
}

/// A mirror table: the common columns of SPEC §3 plus the typed columns the features read.
fn mirror(name: &'static str, typed: Vec<ColumnDef>) -> TableCreateStatement {
    let mut cols = vec![text("business_id"), text("stripe_id")];
    cols.extend(typed);
    cols.extend([
        json("raw"),
        flag("livemode"),
        int("created"),
        flag("deleted"),
        int("last_event_at"),
        int("synced_at"),
    ]);
    table(name, cols, &["business_id", "stripe_id"])
}

fn index(
    table: &'static str,
    name: impl Into<String>,
    cols: &[&'static str],
) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table).if_not_exists();
    for c in cols {
        i.col(*c);
    }
    i.to_owned()
}

fn tables() -> Vec<TableCreateStatement> {
    vec![
        table(
            "businesses",
            vec![
                text("id"),
                ColumnDef::new("slug")
                    .text()
                    .not_null()
                    .unique_key()
                    .to_owned(),
                text("name"),
                text_null("agency_id"),
                int("created_at"),
                int("updated_at"),
            ],
            &["id"],
        ),
        table(
            "stripe_access",
            vec![
                text("business_id"),
                ColumnDef::new("stripe_account_id")
                    .text()
                    .not_null()
                    .unique_key()
                    .to_owned(),
                text_null("account_name"),
                flag("livemode"),
                text("scope"),
                int("date_created"),
                text("status"),
                int_null("revoked_at"),
            ],
            &["business_id"],
        ),
        table(
            "oauth_states",
            vec![
                text("nonce"),
                text("business_id"),
                text("portal"),
                text("user_sub"),
                int("created_at"),
                int("expires_at"),
                int_null("used_at"),
            ],
            &["nonce"],
        ),
        table(
            "sync_jobs",
            vec![
                text("id"),
                text("business_id"),
                text("trigger"),
                text("status"),
                flag("full"),
                int("created_at"),
                int_null("started_at"),
                int_null("finished_at"),
                text_null("error_code"),
                text_null("error_message"),
                json("progress"),
                text_null("lease_owner"),
                int_null("lease_expires_at"),
            ],
            &["id"],
        ),
        table(
            "sync_cursors",
            vec![
                text("business_id"),
                text("resource"),
                int_null("last_successful_date"),
                int_null("events_cursor"),
                int_null("last_reconciled_at"),
            ],
            &["business_id", "resource"],
        ),
        mirror(
            "stripe_products",
            vec![text_null("name"), flag("active"), text_null("description")],
        ),
        mirror(
            "stripe_prices",
            vec![
                text_null("product"),
                flag("active"),
                text("currency"),
                int_null("unit_amount"),
                text("price_type"),
                text_null("recurring_interval"),
                int_null("recurring_interval_count"),
                text_null("recurring_usage_type"),
                text_null("nickname"),
            ],
        ),
        mirror(
            "stripe_customers",
            vec![text_null("email"), text_null("name"), text_null("currency")],
        ),
        mirror(
            "stripe_orders",
            vec![
                text("stripe_type"),
                text_null("customer"),
                text_null("email"),
                text("status"),
                int("amount"),
                int("amount_received"),
                text("currency"),
                text_null("invoice"),
                text_null("payment_intent"),
            ],
        ),
        mirror(
            "stripe_refunds",
            vec![
                text_null("payment_intent"),
                text_null("charge"),
                text("status"),
                int("amount"),
                text("currency"),
                text_null("reason"),
            ],
        ),
        mirror(
            "stripe_invoices",
            vec![
                text_null("customer"),
                text_null("email"),
                text("status"),
                text("currency"),
                int("amount_due"),
                int("amount_paid"),
                int("amount_remaining"),
                int("total"),
                text_null("subscription"),
                text_null("payment_intent"),
                text_null("charge"),
                int_null("paid_at"),
                text_null("number"),
            ],
        ),
        mirror(
            "stripe_invoice_line_items",
            vec![
                text("invoice"),
                int("amount"),
                text("currency"),
                text_null("description"),
                text_null("price"),
                int_null("quantity"),
                text_null("subscription"),
                int_null("period_start"),
                int_null("period_end"),
            ],
        ),
        mirror(
            "stripe_invoice_payments",
            vec![
                text("invoice"),
                text_null("payment_type"),
                text_null("payment_intent"),
                text_null("charge"),
                text("status"),
                int("amount_paid"),
                int("amount_requested"),
                text("currency"),
                int_null("paid_at"),
            ],
        ),
        mirror(
            "stripe_checkout_sessions",
            vec![
                text_null("customer"),
                text_null("email"),
                text("mode"),
                text_null("status"),
                text("payment_status"),
                int_null("amount_total"),
                int_null("amount_subtotal"),
                text_null("currency"),
                text_null("payment_intent"),
                text_null("invoice"),
                text_null("subscription"),
                text_null("client_reference_id"),
            ],
        ),
        mirror(
            "stripe_checkout_line_items",
            vec![
                text("checkout_session"),
                text_null("price"),
                text_null("product"),
                int_null("quantity"),
                int("amount_total"),
                int("amount_subtotal"),
                text("currency"),
                text_null("description"),
            ],
        ),
        mirror(
            "stripe_subscriptions",
            vec![
                text_null("customer"),
                text("status"),
                text("currency"),
                flag("cancel_at_period_end"),
                int_null("canceled_at"),
                int_null("ended_at"),
                int_null("start_date"),
                int_null("trial_start"),
                int_null("trial_end"),
                int_null("current_period_start"),
                int_null("current_period_end"),
                int("mrr"),
            ],
        ),
        mirror(
            "stripe_subscription_items",
            vec![
                text("subscription"),
                text_null("price"),
                text_null("product"),
                int("quantity"),
                int_null("unit_amount"),
                text_null("currency"),
                text_null("recurring_interval"),
                int_null("recurring_interval_count"),
                text_null("recurring_usage_type"),
            ],
        ),
        table(
            "customer_spend",
            vec![
                text("business_id"),
                text("email"),
                text("currency"),
                int("gross"),
                int("refunded"),
                int("net"),
                int("order_count"),
                int("first_purchase_at"),
                int("last_purchase_at"),
                json("customer_ids"),
                text_null("name"),
                flag("is_primary"),
                int("email_order_count"),
                int("email_last_purchase_at"),
                int("updated_at"),
            ],
            &["business_id", "email", "currency"],
        ),
        table(
            "mrr_snapshots",
            vec![
                text("business_id"),
                text("subscription_id"),
                text("day"),
                text_null("customer"),
                text("status"),
                text("currency"),
                int("mrr"),
            ],
            &["business_id", "subscription_id", "day"],
        ),
        table(
            "webhook_endpoints",
            vec![
                text("business_id"),
                text("secret"),
                int("created_at"),
                int("updated_at"),
            ],
            &["business_id"],
        ),
        table(
            "agency_billing",
            vec![
                text("agency_id"),
                text_null("customer"),
                text_null("subscription"),
                text_null("price"),
                text_null("status"),
                int_null("current_period_end"),
                int_null("seats"),
                int("last_event_at"),
                int("updated_at"),
            ],
            &["agency_id"],
        ),
        table(
            "webhook_events",
            vec![
                text("endpoint"),
                text("event_id"),
                text_null("business_id"),
                text("event_type"),
                text_null("account"),
                flag("livemode"),
                int("received_at"),
                int_null("processed_at"),
                text("outcome"),
                json_null("payload"),
            ],
            &["endpoint", "event_id"],
        ),
    ]
}

fn indexes() -> Vec<IndexCreateStatement> {
    let mut out = vec![
        index(
            "sync_jobs",
            "idx_sync_jobs_business_created",
            &["business_id", "created_at"],
        ),
        index(
            "sync_jobs",
            "idx_sync_jobs_status_lease",
            &["status", "lease_expires_at"],
        ),
        index("oauth_states", "idx_oauth_states_expires", &["expires_at"]),
        index("stripe_access", "idx_stripe_access_status", &["status"]),
        index(
            "customer_spend",
            "idx_customer_spend_primary_net",
            &["business_id", "is_primary", "net"],
        ),
        index(
            "customer_spend",
            "idx_customer_spend_currency_net",
            &["business_id", "currency", "net"],
        ),
        index(
            "customer_spend",
            "idx_customer_spend_last_purchase",
            &["business_id", "is_primary", "email_last_purchase_at"],
        ),
        index(
            "mrr_snapshots",
            "idx_mrr_snapshots_day",
            &["business_id", "day"],
        ),
        index(
            "webhook_events",
            "idx_webhook_events_business",
            &["business_id", "received_at"],
        ),
        index(
            "webhook_events",
            "idx_webhook_events_pending",
            &["processed_at"],
        ),
        index(
            "agency_billing",
            "idx_agency_billing_customer",
            &["customer"],
        ),
    ];
    for t in MIRROR_TABLES {
        out.push(index(
            t,
            format!("idx_{t}_created"),
            &["business_id", "created"],
        ));
    }
    let with_customer = [
        "stripe_orders",
        "stripe_invoices",
        "stripe_checkout_sessions",
        "stripe_subscriptions",
    ];
    for t in with_customer {
        out.push(index(
            t,
            format!("idx_{t}_customer"),
            &["business_id", "customer"],
        ));
    }
    // Emails are stored normalised (trimmed, lowercase), so a plain index serves lower(email).
    for t in [
        "stripe_customers",
        "stripe_orders",
        "stripe_invoices",
        "stripe_checkout_sessions",
    ] {
        out.push(index(
            t,
            format!("idx_{t}_email"),
            &["business_id", "email"],
        ));
    }
    let links: &[(&'static str, &'static str)] = &[
        ("stripe_orders", "invoice"),
        ("stripe_refunds", "payment_intent"),
        ("stripe_refunds", "charge"),
        ("stripe_invoice_line_items", "invoice"),
        ("stripe_invoice_payments", "invoice"),
        ("stripe_invoice_payments", "payment_intent"),
        ("stripe_checkout_sessions", "payment_intent"),
        ("stripe_checkout_sessions", "invoice"),
        ("stripe_checkout_line_items", "checkout_session"),
        ("stripe_subscription_items", "subscription"),
        ("stripe_invoices", "subscription"),
    ];
    for (t, c) in links {
        out.push(index(t, format!("idx_{t}_{c}"), &["business_id", c]));
    }
    out
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in tables() {
            manager.create_table(t).await?;
        }
        for i in indexes() {
            manager.create_index(i).await?;
        }
        // At most one queued or running sync per business: a second trigger joins it. Partial
        // indexes read the same on SQLite and PostgreSQL.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS uq_sync_jobs_active ON sync_jobs (business_id) \
                 WHERE status IN ('queued', 'running')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in TABLES.iter().rev() {
            manager
                .drop_table(Table::drop().table(*t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
