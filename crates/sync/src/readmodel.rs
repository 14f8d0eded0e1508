//! Read models kept beside the mirror: `customer_spend` (SPEC §7/§8) and `mrr_snapshots` (§9).

use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use tributary_domain::spend::{self, SpendFacts};
use tributary_domain::{BusinessId, Currency, Email};
use tributary_persistence::entities::*;

use crate::SyncError;

fn cur(c: &str) -> Option<Currency> {
    Currency::parse(c).ok()
}

fn em(e: &Option<String>) -> Option<Email> {
    Email::normalise(e.as_deref())
}

/// Loads the spend facts of one business from the mirror (deleted rows left out, except
/// customers: a deleted customer's email still names who paid).
pub async fn load_facts<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<(SpendFacts, HashMap<String, String>), SyncError> {
    let b = business.as_str();
    let customers = stripe_customers::Entity::find()
        .filter(stripe_customers::Column::BusinessId.eq(b))
        .all(conn)
        .await?;
    let names: HashMap<String, String> = customers
        .iter()
        .filter_map(|c| c.name.clone().map(|n| (c.stripe_id.clone(), n)))
        .collect();
    let orders = stripe_orders::Entity::find()
        .filter(stripe_orders::Column::BusinessId.eq(b))
        .filter(stripe_orders::Column::Deleted.eq(false))
        .all(conn)
        .await?;
    let invoices = stripe_invoices::Entity::find()
        .filter(stripe_invoices::Column::BusinessId.eq(b))
        .filter(stripe_invoices::Column::Deleted.eq(false))
        .all(conn)
        .await?;
    let invoice_payments = stripe_invoice_payments::Entity::find()
        .filter(stripe_invoice_payments::Column::BusinessId.eq(b))
        .filter(stripe_invoice_payments::Column::Deleted.eq(false))
        .all(conn)
        .await?;
    let sessions = stripe_checkout_sessions::Entity::find()
        .filter(stripe_checkout_sessions::Column::BusinessId.eq(b))
        .filter(stripe_checkout_sessions::Column::Deleted.eq(false))
        .all(conn)
        .await?;
    let refunds = stripe_refunds::Entity::find()
        .filter(stripe_refunds::Column::BusinessId.eq(b))
        .filter(stripe_refunds::Column::Deleted.eq(false))
        .all(conn)
        .await?;

    let mut facts = SpendFacts::default();
    facts.customers = customers
        .iter()
        .map(|c| spend::CustomerFact {
            id: c.stripe_id.clone(),
            email: em(&c.email),
        })
        .collect();
    for o in &orders {
        let Some(currency) = cur(&o.currency) else {
            continue;
        };
        if o.stripe_type == "charge" {
            facts.charges.push(spend::ChargeFact {
                id: o.stripe_id.clone(),
                payment_intent: None,
                customer: o.customer.clone(),
                receipt_email: em(&o.email),
                succeeded: o.status == "succeeded" && o.amount_received > 0,
                amount: o.amount_received,
                currency,
                created: o.created,
                invoice: o.invoice.clone(),
            });
        } else {
            facts.payment_intents.push(spend::PaymentIntentFact {
                id: o.stripe_id.clone(),
                customer: o.customer.clone(),
                receipt_email: em(&o.email),
                succeeded: o.status == "succeeded",
                amount_received: o.amount_received,
                currency,
                created: o.created,
                invoice: o.invoice.clone(),
            });
        }
    }
    facts.invoices = invoices
        .iter()
        .filter_map(|i| {
            Some(spend::InvoiceFact {
                id: i.stripe_id.clone(),
                customer: i.customer.clone(),
                customer_email: em(&i.email),
                paid: i.status == "paid",
                amount_paid: i.amount_paid,
                currency: cur(&i.currency)?,
                paid_at: i.paid_at.unwrap_or(i.created),
                payment_intent: i.payment_intent.clone(),
                charge: i.charge.clone(),
            })
        })
        .collect();
    facts.invoice_payments = invoice_payments
        .iter()
        .map(|p| spend::InvoicePaymentFact {
            id: p.stripe_id.clone(),
            invoice: p.invoice.clone(),
            payment_intent: p.payment_intent.clone(),
            charge: p.charge.clone(),
        })
        .collect();
    facts.checkout_sessions = sessions
        .iter()
        .filter_map(|s| {
            Some(spend::CheckoutSessionFact {
                id: s.stripe_id.clone(),
                customer: s.customer.clone(),
                email: em(&s.email),
                paid: s.payment_status == "paid",
                amount_total: s.amount_total.unwrap_or(0),
                currency: cur(s.currency.as_deref()?)?,
                created: s.created,
                payment_intent: s.payment_intent.clone(),
                invoice: s.invoice.clone(),
            })
        })
        .collect();
    facts.refunds = refunds
        .iter()
        .filter_map(|r| {
            Some(spend::RefundFact {
                id: r.stripe_id.clone(),
                payment_intent: r.payment_intent.clone(),
                charge: r.charge.clone(),
                succeeded: r.status == "succeeded",
                amount: r.amount,
                currency: cur(&r.currency)?,
                created: r.created,
            })
        })
        .collect();
    Ok((facts, names))
}

/// The `customer_spend` rows the mirror implies right now.
pub async fn compute_spend<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    now: i64,
) -> Result<Vec<customer_spend::Model>, SyncError> {
    let (facts, names) = load_facts(conn, business).await?;
    let summary = spend::summarise(&spend::movements(&facts));
    let mut rows = Vec::new();
    for (email, row) in summary {
        let primary = row.primary_total().map(|t| t.currency.clone());
        let name = row
            .customer_ids
            .iter()
            .find_map(|id| names.get(id).cloned());
        let ids = serde_json::json!(row.customer_ids.iter().collect::<Vec<_>>());
        for total in &row.totals {
            rows.push(customer_spend::Model {
                business_id: business.as_str().to_owned(),
                email: email.as_str().to_owned(),
                currency: total.currency.as_str().to_owned(),
                gross: total.gross,
                refunded: total.refunded,
                net: total.net,
                order_count: row.order_count,
                first_purchase_at: row.first_purchase_at,
                last_purchase_at: row.last_purchase_at,
                customer_ids: ids.clone(),
                name: name.clone(),
                is_primary: primary.as_ref() == Some(&total.currency),
                email_order_count: row.order_count,
                email_last_purchase_at: row.last_purchase_at,
                updated_at: now,
            });
        }
    }
    Ok(rows)
}

/// Replaces the business's `customer_spend` rows with what the mirror implies, inside the
/// caller's transaction.
pub async fn rebuild_spend<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    now: i64,
) -> Result<usize, SyncError> {
    let rows = compute_spend(conn, business, now).await?;
    customer_spend::Entity::delete_many()
        .filter(customer_spend::Column::BusinessId.eq(business.as_str()))
        .exec(conn)
        .await?;
    let n = rows.len();
    for chunk in rows.chunks(500) {
        let models: Vec<customer_spend::ActiveModel> =
            chunk.iter().cloned().map(Into::into).collect();
        customer_spend::Entity::insert_many(models)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(n)
}

/// Writes today's MRR of every subscription (SPEC §9), inside the caller's transaction.
pub async fn snapshot_mrr<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    day: &str,
) -> Result<usize, SyncError> {
    let subs = stripe_subscriptions::Entity::find()
        .filter(stripe_subscriptions::Column::BusinessId.eq(business.as_str()))
        .filter(stripe_subscriptions::Column::Deleted.eq(false))
        .all(conn)
        .await?;
    mrr_snapshots::Entity::delete_many()
        .filter(mrr_snapshots::Column::BusinessId.eq(business.as_str()))
        .filter(mrr_snapshots::Column::Day.eq(day))
        .exec(conn)
        .await?;
    let rows: Vec<mrr_snapshots::ActiveModel> = subs
        .iter()
        .map(|s| {
            mrr_snapshots::Model {
                business_id: business.as_str().to_owned(),
                subscription_id: s.stripe_id.clone(),
                day: day.to_owned(),
                customer: s.customer.clone(),
                status: s.status.clone(),
                currency: s.currency.clone(),
                mrr: s.mrr,
            }
            .into()
        })
        .collect();
    let n = rows.len();
    for chunk in rows.chunks(500) {
        mrr_snapshots::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await?;
    }
    Ok(n)
}

/// `YYYY-MM-DD` of a unix time, UTC.
pub fn day_of(unix: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}
