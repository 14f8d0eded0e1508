//! Platform billing (SPEC §6): the platform's own Stripe account bills agencies, and its
//! `checkout.session.completed`, `customer.subscription.*` and `invoice.*` events keep
//! `agency_billing` current.
//!
//! Mapping an event to an agency: `metadata.agency_id` on the object (for invoices also the
//! subscription's metadata the invoice carries), else the checkout session's
//! `client_reference_id`; later events map by customer id, then by subscription id. An event
//! that maps to no agency is reported [`BillingOutcome::Unrouted`]: the caller keeps it (with
//! its payload), and it is applied when a later checkout links its customer to an agency —
//! Stripe commonly sends `customer.subscription.created` before `checkout.session.completed`.
//!
//! Ordering: the plan state (status, price, seats, current period end) comes from the
//! subscription events and follows the `last_event_at` rule (an event older than the row is
//! stale); a cancelled subscription stays cancelled whatever arrives after it in the same
//! second (cancellation is final at Stripe). Checkout and invoice events only fill in the
//! links (customer, subscription), which do not depend on order, and never move
//! `last_event_at`, so they cannot make a subscription event look stale.

use serde_json::Value;
use tributary_persistence::billing;
use tributary_persistence::entities::agency_billing::Model;
use tributary_stripe_connect::EventEnvelope;

use crate::SyncError;
use crate::map::id_of;

/// How long unrouted platform events are kept waiting for a checkout that links them (Stripe
/// itself retries for three days).
pub const UNROUTED_WINDOW_SECS: i64 = 7 * 24 * 3600;

/// What applying a platform-billing event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingOutcome {
    /// The agency's row changed (or was confirmed).
    Applied,
    /// The row holds a newer state: nothing changed.
    Stale,
    /// No agency could be found for the event (yet).
    Unrouted,
    /// A type platform billing does not use.
    Ignored,
}

impl BillingOutcome {
    /// The outcome as recorded on the webhook event (`applied`, `stale`, `unrouted`, `ignored`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Unrouted => billing::UNROUTED,
            Self::Ignored => "ignored",
        }
    }
}

/// Statuses after which a subscription never changes again.
fn terminal(status: Option<&str>) -> bool {
    matches!(status, Some("canceled" | "incomplete_expired"))
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn agency_in_metadata(object: &Value) -> Option<String> {
    str_at(object, &["metadata", "agency_id"]).map(str::to_owned)
}

/// The subscription an invoice belongs to: `parent.subscription_details.subscription` in the
/// current API, top-level `subscription` in older versions.
fn invoice_subscription(invoice: &Value) -> Option<String> {
    invoice
        .get("parent")
        .and_then(|p| p.get("subscription_details"))
        .and_then(|d| id_of(d, "subscription"))
        .or_else(|| id_of(invoice, "subscription"))
}

/// The agency named by the event's object, else the one its customer or subscription maps to.
async fn find_agency<C: sea_orm::ConnectionTrait>(
    conn: &C,
    named: Option<String>,
    customer: Option<&str>,
    subscription: Option<&str>,
) -> Result<Option<Model>, SyncError> {
    if let Some(agency) = named {
        return Ok(Some(
            billing::get(conn, &agency)
                .await?
                .unwrap_or_else(|| empty_row(agency)),
        ));
    }
    if let Some(c) = customer
        && let Some(row) = billing::by_customer(conn, c).await?
    {
        return Ok(Some(row));
    }
    if let Some(s) = subscription
        && let Some(row) = billing::by_subscription(conn, s).await?
    {
        return Ok(Some(row));
    }
    Ok(None)
}

fn empty_row(agency_id: String) -> Model {
    Model {
        agency_id,
        customer: None,
        subscription: None,
        price: None,
        status: None,
        current_period_end: None,
        seats: None,
        last_event_at: 0,
        updated_at: 0,
    }
}

/// The customer an event's object belongs to (`customer` on sessions, subscriptions and
/// invoices).
fn customer_of(event: &EventEnvelope) -> Option<String> {
    id_of(&event.object, "customer")
}

/// Applies one platform-billing event inside the caller's transaction. Returns the outcome and
/// the agency it applied to.
pub async fn apply_event<C: sea_orm::ConnectionTrait>(
    conn: &C,
    event: &EventEnvelope,
    now: i64,
) -> Result<(BillingOutcome, Option<String>), SyncError> {
    let (outcome, agency) = apply_one(conn, event, now).await?;
    if event.event_type == "checkout.session.completed"
        && outcome == BillingOutcome::Applied
        && let Some(customer) = customer_of(event)
    {
        apply_waiting(conn, &customer, now).await?;
    }
    Ok((outcome, agency))
}

async fn apply_one<C: sea_orm::ConnectionTrait>(
    conn: &C,
    event: &EventEnvelope,
    now: i64,
) -> Result<(BillingOutcome, Option<String>), SyncError> {
    let t = event.event_type.as_str();
    if t == "checkout.session.completed" {
        checkout_completed(conn, event, now).await
    } else if t.starts_with("customer.subscription.") && event.object_type() == Some("subscription")
    {
        subscription_event(conn, event, now).await
    } else if t.starts_with("invoice.") && event.object_type() == Some("invoice") {
        invoice_event(conn, event, now).await
    } else {
        Ok((BillingOutcome::Ignored, None))
    }
}

async fn checkout_completed<C: sea_orm::ConnectionTrait>(
    conn: &C,
    event: &EventEnvelope,
    now: i64,
) -> Result<(BillingOutcome, Option<String>), SyncError> {
    let session = &event.object;
    let named = agency_in_metadata(session)
        .or_else(|| str_at(session, &["client_reference_id"]).map(str::to_owned));
    let customer = customer_of(event);
    let subscription = id_of(session, "subscription");
    let Some(mut row) =
        find_agency(conn, named, customer.as_deref(), subscription.as_deref()).await?
    else {
        return Ok((BillingOutcome::Unrouted, None));
    };
    // A checkout newer than the plan state starts a new subscription (an agency subscribing
    // again): its links replace the old ones, and the old plan state goes with them. An older
    // checkout only fills in what is missing.
    let newer = event.created >= row.last_event_at;
    if newer && subscription.is_some() && subscription != row.subscription {
        row.subscription.clone_from(&subscription);
        row.price = None;
        row.status = None;
        row.current_period_end = None;
        row.seats = None;
    }
    if customer.is_some() && (newer || row.customer.is_none()) {
        row.customer = customer;
    }
    if row.subscription.is_none() {
        row.subscription = subscription;
    }
    row.updated_at = now;
    let agency = row.agency_id.clone();
    billing::save(conn, row).await?;
    Ok((BillingOutcome::Applied, Some(agency)))
}

async fn subscription_event<C: sea_orm::ConnectionTrait>(
    conn: &C,
    event: &EventEnvelope,
    now: i64,
) -> Result<(BillingOutcome, Option<String>), SyncError> {
    let sub = &event.object;
    let Some(sub_id) = event.object_id().map(str::to_owned) else {
        return Ok((BillingOutcome::Ignored, None));
    };
    let customer = customer_of(event);
    let Some(mut row) = find_agency(
        conn,
        agency_in_metadata(sub),
        customer.as_deref(),
        Some(&sub_id),
    )
    .await?
    else {
        return Ok((BillingOutcome::Unrouted, None));
    };
    let agency = row.agency_id.clone();
    let mut status = str_at(sub, &["status"]).map(str::to_owned);
    if event.event_type == "customer.subscription.deleted" && status.is_none() {
        status = Some("canceled".into());
    }
    let same = row.subscription.as_deref() == Some(sub_id.as_str());
    let stale = event.created < row.last_event_at
        // Cancellation is final: nothing about that subscription reopens it.
        || (same && terminal(row.status.as_deref()) && !terminal(status.as_deref()))
        // The end of another subscription does not replace the agency's current one.
        || (!same && row.subscription.is_some() && terminal(status.as_deref())
            && !terminal(row.status.as_deref()));
    if stale {
        return Ok((BillingOutcome::Stale, Some(agency)));
    }
    let items: Vec<&Value> = sub
        .get("items")
        .and_then(|i| i.get("data"))
        .and_then(Value::as_array)
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    let first = items.first().copied();
    row.subscription = Some(sub_id);
    if customer.is_some() {
        row.customer = customer;
    }
    row.status = status;
    row.price = first.and_then(|i| id_of(i, "price").or_else(|| id_of(i, "plan")));
    row.seats = if items.is_empty() {
        sub.get("quantity").and_then(Value::as_i64)
    } else {
        Some(
            items
                .iter()
                .map(|i| i.get("quantity").and_then(Value::as_i64).unwrap_or(1))
                .sum(),
        )
    };
    // Current API versions keep the period on the items; older ones on the subscription.
    row.current_period_end = sub
        .get("current_period_end")
        .and_then(Value::as_i64)
        .or_else(|| first.and_then(|i| i.get("current_period_end").and_then(Value::as_i64)));
    row.last_event_at = event.created;
    row.updated_at = now;
    billing::save(conn, row).await?;
    Ok((BillingOutcome::Applied, Some(agency)))
}

async fn invoice_event<C: sea_orm::ConnectionTrait>(
    conn: &C,
    event: &EventEnvelope,
    now: i64,
) -> Result<(BillingOutcome, Option<String>), SyncError> {
    let invoice = &event.object;
    let subscription = invoice_subscription(invoice);
    let named = agency_in_metadata(invoice).or_else(|| {
        str_at(
            invoice,
            &["parent", "subscription_details", "metadata", "agency_id"],
        )
        .or_else(|| str_at(invoice, &["subscription_details", "metadata", "agency_id"]))
        .map(str::to_owned)
    });
    let customer = customer_of(event);
    let Some(mut row) =
        find_agency(conn, named, customer.as_deref(), subscription.as_deref()).await?
    else {
        return Ok((BillingOutcome::Unrouted, None));
    };
    let agency = row.agency_id.clone();
    if row.customer.is_none() {
        row.customer = customer;
    }
    if row.subscription.is_none() {
        row.subscription.clone_from(&subscription);
    }
    // A paid invoice of the current subscription proves its period runs at least to the end
    // of what it paid for: the period end only moves forward, so arrival order does not matter.
    if matches!(
        event.event_type.as_str(),
        "invoice.paid" | "invoice.payment_succeeded"
    ) && subscription.is_some()
        && row.subscription == subscription
        && let Some(end) = invoice
            .get("lines")
            .and_then(|l| l.get("data"))
            .and_then(Value::as_array)
            .and_then(|lines| {
                lines
                    .iter()
                    .filter_map(|l| l.get("period")?.get("end")?.as_i64())
                    .max()
            })
    {
        row.current_period_end = Some(row.current_period_end.map_or(end, |c| c.max(end)));
    }
    row.updated_at = now;
    billing::save(conn, row).await?;
    Ok((BillingOutcome::Applied, Some(agency)))
}

/// Applies the waiting (unrouted) platform events of `customer`, oldest first, and records
/// their outcome.
async fn apply_waiting<C: sea_orm::ConnectionTrait>(
    conn: &C,
    customer: &str,
    now: i64,
) -> Result<(), SyncError> {
    let waiting = billing::unrouted_events(conn, now - UNROUTED_WINDOW_SECS).await?;
    let mut events: Vec<EventEnvelope> = waiting
        .iter()
        .filter_map(|r| r.payload.as_ref())
        .filter_map(|p| EventEnvelope::from_value(p).ok())
        .filter(|e| customer_of(e).as_deref() == Some(customer))
        .collect();
    events.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    for event in events {
        let (outcome, _) = Box::pin(apply_one(conn, &event, now)).await?;
        if outcome != BillingOutcome::Unrouted {
            billing::set_event_outcome(conn, &event.id, outcome.as_str(), now).await?;
        }
    }
    Ok(())
}
