//! Read models kept beside the mirror: `customer_spend` (SPEC §7/§8) and `mrr_snapshots` (§9).

use std::collections::{BTreeSet, HashMap};

use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter};
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
/// customers: a deleted customer's email still names who paid), with customer names.
pub async fn load_facts<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<(SpendFacts, HashMap<String, String>), SyncError> {
    let b = business.as_str();
    let backend = conn.get_database_backend();
    Ok(facts_of(
        lean::<stripe_customers::Entity>(backend)
            .filter(stripe_customers::Column::BusinessId.eq(b))
            .all(conn)
            .await?,
        lean::<stripe_orders::Entity>(backend)
            .filter(stripe_orders::Column::BusinessId.eq(b))
            .filter(stripe_orders::Column::Deleted.eq(false))
            .all(conn)
            .await?,
        lean::<stripe_invoices::Entity>(backend)
            .filter(stripe_invoices::Column::BusinessId.eq(b))
            .filter(stripe_invoices::Column::Deleted.eq(false))
            .all(conn)
            .await?,
        lean::<stripe_invoice_payments::Entity>(backend)
            .filter(stripe_invoice_payments::Column::BusinessId.eq(b))
            .filter(stripe_invoice_payments::Column::Deleted.eq(false))
            .all(conn)
            .await?,
        lean::<stripe_checkout_sessions::Entity>(backend)
            .filter(stripe_checkout_sessions::Column::BusinessId.eq(b))
            .filter(stripe_checkout_sessions::Column::Deleted.eq(false))
            .all(conn)
            .await?,
        lean::<stripe_refunds::Entity>(backend)
            .filter(stripe_refunds::Column::BusinessId.eq(b))
            .filter(stripe_refunds::Column::Deleted.eq(false))
            .all(conn)
            .await?,
    ))
}

/// A select of every column but `raw` (read as JSON `null`): the read models need the typed
/// columns only, and a whole account's raw JSON would not fit the memory budget.
fn lean<E: EntityTrait>(backend: sea_orm::DbBackend) -> sea_orm::Select<E> {
    use sea_orm::{IdenStatic, Iterable, QuerySelect};
    let null_json = if backend == sea_orm::DbBackend::Postgres {
        "'null'::jsonb"
    } else {
        "'null'"
    };
    let mut query = E::find().select_only();
    for column in E::Column::iter() {
        query = if column.as_str() == "raw" {
            query.column_as(sea_orm::sea_query::Expr::cust(null_json), "raw")
        } else {
            query.column(column)
        };
    }
    query
}

/// Mirror rows → the plain facts the spend rules take, and customer names by id.
fn facts_of(
    customers: Vec<stripe_customers::Model>,
    orders: Vec<stripe_orders::Model>,
    invoices: Vec<stripe_invoices::Model>,
    invoice_payments: Vec<stripe_invoice_payments::Model>,
    sessions: Vec<stripe_checkout_sessions::Model>,
    refunds: Vec<stripe_refunds::Model>,
) -> (SpendFacts, HashMap<String, String>) {
    let names: HashMap<String, String> = customers
        .iter()
        .filter_map(|c| c.name.clone().map(|n| (c.stripe_id.clone(), n)))
        .collect();
    let mut facts = SpendFacts {
        customers: customers
            .iter()
            .map(|c| spend::CustomerFact {
                id: c.stripe_id.clone(),
                email: em(&c.email),
            })
            .collect(),
        ..SpendFacts::default()
    };
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
    (facts, names)
}

/// The `customer_spend` rows implied by `facts`.
fn spend_rows(
    business: &BusinessId,
    facts: &SpendFacts,
    names: &HashMap<String, String>,
    now: i64,
) -> Vec<customer_spend::Model> {
    let summary = spend::summarise(&spend::movements(facts));
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
    rows
}

/// The `customer_spend` rows the whole mirror implies right now.
pub async fn compute_spend<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    now: i64,
) -> Result<Vec<customer_spend::Model>, SyncError> {
    let (facts, names) = load_facts(conn, business).await?;
    Ok(spend_rows(business, &facts, &names, now))
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

/// Writes (or rewrites) one subscription's MRR snapshot of `day`, inside the caller's
/// transaction. A deleted subscription's snapshot is removed.
pub async fn snapshot_subscription<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    subscription_id: &str,
    day: &str,
) -> Result<(), SyncError> {
    mrr_snapshots::Entity::delete_many()
        .filter(mrr_snapshots::Column::BusinessId.eq(business.as_str()))
        .filter(mrr_snapshots::Column::SubscriptionId.eq(subscription_id))
        .filter(mrr_snapshots::Column::Day.eq(day))
        .exec(conn)
        .await?;
    let sub = stripe_subscriptions::Entity::find()
        .filter(stripe_subscriptions::Column::BusinessId.eq(business.as_str()))
        .filter(stripe_subscriptions::Column::StripeId.eq(subscription_id))
        .filter(stripe_subscriptions::Column::Deleted.eq(false))
        .one(conn)
        .await?;
    if let Some(s) = sub {
        let row: mrr_snapshots::ActiveModel = mrr_snapshots::Model {
            business_id: business.as_str().to_owned(),
            subscription_id: s.stripe_id,
            day: day.to_owned(),
            customer: s.customer,
            status: s.status,
            currency: s.currency,
            mrr: s.mrr,
        }
        .into();
        mrr_snapshots::Entity::insert(row)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
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

/// Ids of mirrored objects whose change may move money between emails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Payment intents and charges (`stripe_orders`).
    pub orders: BTreeSet<String>,
    pub invoices: BTreeSet<String>,
    pub sessions: BTreeSet<String>,
    pub customers: BTreeSet<String>,
    /// Invoice payments and refunds name the objects above; their own ids are not needed.
    pub emails: BTreeSet<String>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.invoices.is_empty()
            && self.sessions.is_empty()
            && self.customers.is_empty()
            && self.emails.is_empty()
    }

    /// Adds an object as its `object` type and raw JSON name it.
    pub fn add_object(&mut self, object: &serde_json::Value) {
        let kind = object
            .get("object")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let id = |k: &str| crate::map::id_of(object, k);
        match kind {
            "customer" => self.customers.extend(id("id")),
            "payment_intent" | "charge" => {
                self.orders.extend(id("id"));
                self.orders.extend(id("payment_intent"));
            }
            "refund" => {
                self.orders.extend(id("payment_intent"));
                self.orders.extend(id("charge"));
            }
            "invoice" => self.invoices.extend(id("id")),
            "invoice_payment" => {
                self.invoices.extend(id("invoice"));
                if let Some(p) = object.get("payment") {
                    self.orders.extend(crate::map::id_of(p, "payment_intent"));
                    self.orders.extend(crate::map::id_of(p, "charge"));
                }
            }
            "checkout.session" => self.sessions.extend(id("id")),
            _ => {}
        }
    }
}

/// Mirror rows of one connected part of the link graph.
#[derive(Default)]
struct Component {
    customers: HashMap<String, stripe_customers::Model>,
    orders: HashMap<String, stripe_orders::Model>,
    invoices: HashMap<String, stripe_invoices::Model>,
    payments: HashMap<String, stripe_invoice_payments::Model>,
    sessions: HashMap<String, stripe_checkout_sessions::Model>,
    refunds: HashMap<String, stripe_refunds::Model>,
}

fn ids(set: &BTreeSet<String>) -> Vec<&str> {
    set.iter().map(String::as_str).collect()
}

impl Component {
    /// Loads every object linked (through payment intent, charge, invoice, invoice payment and
    /// checkout session links) to the seeds, plus the customers and refunds of what it holds.
    async fn load<C: ConnectionTrait>(
        conn: &C,
        business: &BusinessId,
        seed: &Touched,
    ) -> Result<Self, SyncError> {
        let b = business.as_str();
        let mut c = Component::default();
        let mut front = seed.clone();
        for _ in 0..6 {
            let mut next = Touched::default();
            let fresh = |set: &BTreeSet<String>, have: &dyn Fn(&str) -> bool| {
                set.iter()
                    .filter(|id| !have(id))
                    .cloned()
                    .collect::<BTreeSet<_>>()
            };
            let orders = fresh(&front.orders, &|id| c.orders.contains_key(id));
            let invoices = fresh(&front.invoices, &|id| c.invoices.contains_key(id));
            let sessions = fresh(&front.sessions, &|id| c.sessions.contains_key(id));
            if orders.is_empty() && invoices.is_empty() && sessions.is_empty() {
                break;
            }
            let mut found_orders = Vec::new();
            let mut found_invoices = Vec::new();
            let mut found_payments = Vec::new();
            let mut found_sessions = Vec::new();
            if !orders.is_empty() {
                found_orders.extend(
                    stripe_orders::Entity::find()
                        .filter(stripe_orders::Column::BusinessId.eq(b))
                        .filter(stripe_orders::Column::StripeId.is_in(ids(&orders)))
                        .all(conn)
                        .await?,
                );
                found_invoices.extend(
                    stripe_invoices::Entity::find()
                        .filter(stripe_invoices::Column::BusinessId.eq(b))
                        .filter(
                            Condition::any()
                                .add(stripe_invoices::Column::PaymentIntent.is_in(ids(&orders)))
                                .add(stripe_invoices::Column::Charge.is_in(ids(&orders))),
                        )
                        .all(conn)
                        .await?,
                );
                found_payments.extend(
                    stripe_invoice_payments::Entity::find()
                        .filter(stripe_invoice_payments::Column::BusinessId.eq(b))
                        .filter(
                            Condition::any()
                                .add(
                                    stripe_invoice_payments::Column::PaymentIntent
                                        .is_in(ids(&orders)),
                                )
                                .add(stripe_invoice_payments::Column::Charge.is_in(ids(&orders))),
                        )
                        .all(conn)
                        .await?,
                );
                found_sessions.extend(
                    stripe_checkout_sessions::Entity::find()
                        .filter(stripe_checkout_sessions::Column::BusinessId.eq(b))
                        .filter(stripe_checkout_sessions::Column::PaymentIntent.is_in(ids(&orders)))
                        .all(conn)
                        .await?,
                );
            }
            if !invoices.is_empty() {
                found_invoices.extend(
                    stripe_invoices::Entity::find()
                        .filter(stripe_invoices::Column::BusinessId.eq(b))
                        .filter(stripe_invoices::Column::StripeId.is_in(ids(&invoices)))
                        .all(conn)
                        .await?,
                );
                found_orders.extend(
                    stripe_orders::Entity::find()
                        .filter(stripe_orders::Column::BusinessId.eq(b))
                        .filter(stripe_orders::Column::Invoice.is_in(ids(&invoices)))
                        .all(conn)
                        .await?,
                );
                found_payments.extend(
                    stripe_invoice_payments::Entity::find()
                        .filter(stripe_invoice_payments::Column::BusinessId.eq(b))
                        .filter(stripe_invoice_payments::Column::Invoice.is_in(ids(&invoices)))
                        .all(conn)
                        .await?,
                );
                found_sessions.extend(
                    stripe_checkout_sessions::Entity::find()
                        .filter(stripe_checkout_sessions::Column::BusinessId.eq(b))
                        .filter(stripe_checkout_sessions::Column::Invoice.is_in(ids(&invoices)))
                        .all(conn)
                        .await?,
                );
            }
            if !sessions.is_empty() {
                found_sessions.extend(
                    stripe_checkout_sessions::Entity::find()
                        .filter(stripe_checkout_sessions::Column::BusinessId.eq(b))
                        .filter(stripe_checkout_sessions::Column::StripeId.is_in(ids(&sessions)))
                        .all(conn)
                        .await?,
                );
            }
            // Mark what this round asked for as visited even when absent from the mirror.
            for id in &orders {
                c.orders
                    .entry(id.clone())
                    .or_insert_with(|| placeholder_order(id));
            }
            for o in found_orders.into_iter().filter(|o| !o.deleted) {
                next.invoices.extend(o.invoice.clone());
                next.customers.extend(o.customer.clone());
                c.orders.insert(o.stripe_id.clone(), o);
            }
            for id in &invoices {
                c.invoices
                    .entry(id.clone())
                    .or_insert_with(|| placeholder_invoice(id));
            }
            for i in found_invoices.into_iter().filter(|i| !i.deleted) {
                next.orders.extend(i.payment_intent.clone());
                next.orders.extend(i.charge.clone());
                next.customers.extend(i.customer.clone());
                next.invoices.insert(i.stripe_id.clone());
                c.invoices.insert(i.stripe_id.clone(), i);
            }
            for p in found_payments.into_iter().filter(|p| !p.deleted) {
                next.invoices.insert(p.invoice.clone());
                next.orders.extend(p.payment_intent.clone());
                next.orders.extend(p.charge.clone());
                c.payments.insert(p.stripe_id.clone(), p);
            }
            for id in &sessions {
                c.sessions
                    .entry(id.clone())
                    .or_insert_with(|| placeholder_session(id));
            }
            for s in found_sessions.into_iter().filter(|s| !s.deleted) {
                next.orders.extend(s.payment_intent.clone());
                next.invoices.extend(s.invoice.clone());
                next.customers.extend(s.customer.clone());
                next.sessions.insert(s.stripe_id.clone());
                c.sessions.insert(s.stripe_id.clone(), s);
            }
            front = next;
        }
        // Placeholders only marked ids as visited: drop them.
        c.orders.retain(|_, o| !o.stripe_type.is_empty());
        c.invoices.retain(|_, i| !i.status.is_empty());
        c.sessions.retain(|_, s| !s.mode.is_empty());
        let order_ids: BTreeSet<String> = c.orders.keys().cloned().collect();
        if !order_ids.is_empty() {
            for r in stripe_refunds::Entity::find()
                .filter(stripe_refunds::Column::BusinessId.eq(b))
                .filter(stripe_refunds::Column::Deleted.eq(false))
                .filter(
                    Condition::any()
                        .add(stripe_refunds::Column::PaymentIntent.is_in(ids(&order_ids)))
                        .add(stripe_refunds::Column::Charge.is_in(ids(&order_ids))),
                )
                .all(conn)
                .await?
            {
                c.refunds.insert(r.stripe_id.clone(), r);
            }
        }
        let customer_ids: BTreeSet<String> = c
            .orders
            .values()
            .filter_map(|o| o.customer.clone())
            .chain(c.invoices.values().filter_map(|i| i.customer.clone()))
            .chain(c.sessions.values().filter_map(|s| s.customer.clone()))
            .chain(seed.customers.iter().cloned())
            .collect();
        if !customer_ids.is_empty() {
            for cu in stripe_customers::Entity::find()
                .filter(stripe_customers::Column::BusinessId.eq(b))
                .filter(stripe_customers::Column::StripeId.is_in(ids(&customer_ids)))
                .all(conn)
                .await?
            {
                c.customers.insert(cu.stripe_id.clone(), cu);
            }
        }
        Ok(c)
    }

    /// Every email that money in this component could be attributed to.
    fn emails(&self) -> BTreeSet<String> {
        self.customers
            .values()
            .filter_map(|c| c.email.clone())
            .chain(self.orders.values().filter_map(|o| o.email.clone()))
            .chain(self.invoices.values().filter_map(|i| i.email.clone()))
            .chain(self.sessions.values().filter_map(|s| s.email.clone()))
            .collect()
    }
}

fn placeholder_order(id: &str) -> stripe_orders::Model {
    stripe_orders::Model {
        business_id: String::new(),
        stripe_id: id.to_owned(),
        stripe_type: String::new(),
        customer: None,
        email: None,
        status: String::new(),
        amount: 0,
        amount_received: 0,
        currency: String::new(),
        invoice: None,
        payment_intent: None,
        raw: serde_json::Value::Null,
        livemode: false,
        created: 0,
        deleted: false,
        last_event_at: 0,
        synced_at: 0,
    }
}

fn placeholder_invoice(id: &str) -> stripe_invoices::Model {
    stripe_invoices::Model {
        business_id: String::new(),
        stripe_id: id.to_owned(),
        customer: None,
        email: None,
        status: String::new(),
        currency: String::new(),
        amount_due: 0,
        amount_paid: 0,
        amount_remaining: 0,
        total: 0,
        subscription: None,
        payment_intent: None,
        charge: None,
        paid_at: None,
        number: None,
        raw: serde_json::Value::Null,
        livemode: false,
        created: 0,
        deleted: false,
        last_event_at: 0,
        synced_at: 0,
    }
}

fn placeholder_session(id: &str) -> stripe_checkout_sessions::Model {
    stripe_checkout_sessions::Model {
        business_id: String::new(),
        stripe_id: id.to_owned(),
        customer: None,
        email: None,
        mode: String::new(),
        status: None,
        payment_status: String::new(),
        amount_total: None,
        amount_subtotal: None,
        currency: None,
        payment_intent: None,
        invoice: None,
        subscription: None,
        client_reference_id: None,
        raw: serde_json::Value::Null,
        livemode: false,
        created: 0,
        deleted: false,
        last_event_at: 0,
        synced_at: 0,
    }
}

/// The emails whose spend a change of `touched` may affect (as the mirror stands now). Call
/// it before a write to catch emails the change takes money away from.
pub async fn affected_emails<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    touched: &Touched,
) -> Result<BTreeSet<String>, SyncError> {
    if touched.is_empty() {
        return Ok(BTreeSet::new());
    }
    let component = Component::load(conn, business, touched).await?;
    let mut emails = component.emails();
    emails.extend(touched.emails.iter().cloned());
    Ok(emails)
}

/// Recomputes the `customer_spend` rows of `emails` from the mirror, inside the caller's
/// transaction: loads every object attributable to those emails (and what they link to),
/// applies the spend rules, and replaces the emails' rows.
pub async fn refresh_emails<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    emails: &BTreeSet<String>,
    now: i64,
) -> Result<usize, SyncError> {
    if emails.is_empty() {
        return Ok(0);
    }
    let b = business.as_str();
    let list: Vec<&str> = emails.iter().map(String::as_str).collect();
    let mut seed = Touched::default();
    for chunk in list.chunks(500) {
        let customers = stripe_customers::Entity::find()
            .filter(stripe_customers::Column::BusinessId.eq(b))
            .filter(stripe_customers::Column::Email.is_in(chunk.to_vec()))
            .all(conn)
            .await?;
        seed.customers
            .extend(customers.iter().map(|c| c.stripe_id.clone()));
        let cids: Vec<String> = customers.into_iter().map(|c| c.stripe_id).collect();
        let orders = stripe_orders::Entity::find()
            .filter(stripe_orders::Column::BusinessId.eq(b))
            .filter(
                Condition::any()
                    .add(stripe_orders::Column::Email.is_in(chunk.to_vec()))
                    .add(stripe_orders::Column::Customer.is_in(cids.clone())),
            )
            .all(conn)
            .await?;
        seed.orders.extend(orders.into_iter().map(|o| o.stripe_id));
        let invoices = stripe_invoices::Entity::find()
            .filter(stripe_invoices::Column::BusinessId.eq(b))
            .filter(
                Condition::any()
                    .add(stripe_invoices::Column::Email.is_in(chunk.to_vec()))
                    .add(stripe_invoices::Column::Customer.is_in(cids.clone())),
            )
            .all(conn)
            .await?;
        seed.invoices
            .extend(invoices.into_iter().map(|i| i.stripe_id));
        let sessions = stripe_checkout_sessions::Entity::find()
            .filter(stripe_checkout_sessions::Column::BusinessId.eq(b))
            .filter(
                Condition::any()
                    .add(stripe_checkout_sessions::Column::Email.is_in(chunk.to_vec()))
                    .add(stripe_checkout_sessions::Column::Customer.is_in(cids.clone())),
            )
            .all(conn)
            .await?;
        seed.sessions
            .extend(sessions.into_iter().map(|s| s.stripe_id));
    }
    let component = Component::load(conn, business, &seed).await?;
    let facts = facts_of(
        component.customers.into_values().collect(),
        component.orders.into_values().collect(),
        component.invoices.into_values().collect(),
        component.payments.into_values().collect(),
        component.sessions.into_values().collect(),
        component.refunds.into_values().collect(),
    );
    let mut rows = spend_rows(business, &facts.0, &facts.1, now);
    rows.retain(|r| emails.contains(&r.email));
    for chunk in list.chunks(500) {
        customer_spend::Entity::delete_many()
            .filter(customer_spend::Column::BusinessId.eq(b))
            .filter(customer_spend::Column::Email.is_in(chunk.to_vec()))
            .exec(conn)
            .await?;
    }
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
