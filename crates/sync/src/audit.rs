//! Comparing the mirror with the Stripe account, object by object: the check behind the exact
//! mirror guarantee, used by the tests and by `tributary-scheduler audit`.

use serde_json::Value;
use tributary_domain::BusinessId;
use tributary_persistence::entities::*;
use tributary_persistence::mirror;
use tributary_stripe_connect::{AccountClient, Created};

use crate::map::{self, Stamp};
use crate::{SyncContext, SyncError};

/// Objects per table that were compared, and every difference found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Audit {
    /// Objects compared, by table.
    pub compared: std::collections::BTreeMap<&'static str, usize>,
    /// Every difference, one line each.
    pub differences: Vec<String>,
}

impl Audit {
    /// Whether the mirror matched the account exactly.
    pub fn is_exact(&self) -> bool {
        self.differences.is_empty()
    }
}

macro_rules! compare {
    ($audit:expr, $db:expr, $b:expr, $entity:ty, $want:expr, $what:literal) => {{
        let mut want: Vec<_> = $want;
        let mut have: Vec<_> = mirror::all::<$entity, _>($db, $b)
            .await?
            .into_iter()
            .filter(|m| !m.deleted)
            .collect();
        for m in want.iter_mut().chain(have.iter_mut()) {
            m.raw = Value::Null;
            m.last_event_at = 0;
            m.synced_at = 0;
        }
        want.sort_by(|a, b| a.stripe_id.cmp(&b.stripe_id));
        have.sort_by(|a, b| a.stripe_id.cmp(&b.stripe_id));
        let mut hi = have.iter().peekable();
        let mut wi = want.iter().peekable();
        loop {
            match (hi.peek(), wi.peek()) {
                (None, None) => break,
                (Some(h), None) => {
                    $audit.differences.push(format!(
                        "{}: {} is mirrored but not in Stripe",
                        $what, h.stripe_id
                    ));
                    hi.next();
                }
                (None, Some(w)) => {
                    $audit.differences.push(format!(
                        "{}: {} is in Stripe but not mirrored",
                        $what, w.stripe_id
                    ));
                    wi.next();
                }
                (Some(h), Some(w)) => match h.stripe_id.cmp(&w.stripe_id) {
                    std::cmp::Ordering::Less => {
                        $audit.differences.push(format!(
                            "{}: {} is mirrored but not in Stripe",
                            $what, h.stripe_id
                        ));
                        hi.next();
                    }
                    std::cmp::Ordering::Greater => {
                        $audit.differences.push(format!(
                            "{}: {} is in Stripe but not mirrored",
                            $what, w.stripe_id
                        ));
                        wi.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if h != w {
                            $audit.differences.push(format!(
                                "{}: {} differs: mirror {:?} / Stripe {:?}",
                                $what, h.stripe_id, h, w
                            ));
                        }
                        hi.next();
                        wi.next();
                    }
                },
            }
        }
        $audit.compared.insert($what, want.len());
    }};
}

async fn raws(req: tributary_stripe_connect::ListRequest<Value>) -> Result<Vec<Value>, SyncError> {
    Ok(req
        .collect_all()
        .await?
        .into_iter()
        .map(|i| i.raw)
        .collect())
}

/// Lists every object of the account (as the sync lists them) and compares the typed columns
/// of every live mirror row with them. Costs about as many requests as a full sync.
pub async fn audit(
    ctx: &SyncContext,
    business: &BusinessId,
    client: &AccountClient,
) -> Result<Audit, SyncError> {
    let st = Stamp {
        business_id: business.as_str(),
        at: 0,
        now: 0,
    };
    let db = ctx.db().conn();
    let b = business;
    let mut a = Audit::default();

    let customers = raws(client.list("/v1/customers")).await?;
    compare!(
        a,
        db,
        b,
        stripe_customers::Entity,
        customers.iter().map(|r| map::customer(st, r)).collect(),
        "customers"
    );
    let products = raws(client.list("/v1/products")).await?;
    compare!(
        a,
        db,
        b,
        stripe_products::Entity,
        products.iter().map(|r| map::product(st, r)).collect(),
        "products"
    );
    let prices = raws(client.list("/v1/prices")).await?;
    compare!(
        a,
        db,
        b,
        stripe_prices::Entity,
        prices.iter().map(|r| map::price(st, r)).collect(),
        "prices"
    );
    let mut orders: Vec<_> = raws(client.list("/v1/payment_intents"))
        .await?
        .iter()
        .map(|r| map::payment_intent(st, r))
        .collect();
    orders.extend(
        raws(client.list("/v1/charges"))
            .await?
            .iter()
            .filter_map(|r| map::charge(st, r)),
    );
    compare!(a, db, b, stripe_orders::Entity, orders, "orders");
    let refunds = raws(client.list("/v1/refunds")).await?;
    compare!(
        a,
        db,
        b,
        stripe_refunds::Entity,
        refunds.iter().map(|r| map::refund(st, r)).collect(),
        "refunds"
    );
    let invoices = raws(client.list("/v1/invoices")).await?;
    compare!(
        a,
        db,
        b,
        stripe_invoices::Entity,
        invoices.iter().map(|r| map::invoice(st, r)).collect(),
        "invoices"
    );
    let mut lines = Vec::new();
    for inv in &invoices {
        let id = inv.get("id").and_then(Value::as_str).unwrap_or_default();
        let created = inv.get("created").and_then(Value::as_i64).unwrap_or(0);
        for l in client.all_invoice_lines(inv).await? {
            lines.push(map::invoice_line(st, id, created, &l.raw));
        }
    }
    compare!(
        a,
        db,
        b,
        stripe_invoice_line_items::Entity,
        lines,
        "invoice_line_items"
    );
    let payments = raws(client.list("/v1/invoice_payments")).await?;
    compare!(
        a,
        db,
        b,
        stripe_invoice_payments::Entity,
        payments
            .iter()
            .map(|r| map::invoice_payment(st, r))
            .collect(),
        "invoice_payments"
    );
    let sessions: Vec<Value> = client
        .checkout_sessions(Created::all())
        .collect_all()
        .await?
        .into_iter()
        .map(|i| i.raw)
        .collect();
    compare!(
        a,
        db,
        b,
        stripe_checkout_sessions::Entity,
        sessions
            .iter()
            .map(|r| map::checkout_session(st, r))
            .collect(),
        "checkout_sessions"
    );
    let mut slines = Vec::new();
    for s in &sessions {
        let id = s.get("id").and_then(Value::as_str).unwrap_or_default();
        let created = s.get("created").and_then(Value::as_i64).unwrap_or(0);
        for l in client.all_checkout_session_line_items(s).await? {
            slines.push(map::checkout_line(st, id, created, &l.raw));
        }
    }
    compare!(
        a,
        db,
        b,
        stripe_checkout_line_items::Entity,
        slines,
        "checkout_line_items"
    );
    let subs: Vec<Value> = client
        .subscriptions(Created::all())
        .collect_all()
        .await?
        .into_iter()
        .map(|i| i.raw)
        .collect();
    compare!(
        a,
        db,
        b,
        stripe_subscriptions::Entity,
        subs.iter().map(|r| map::subscription(st, r)).collect(),
        "subscriptions"
    );
    compare!(
        a,
        db,
        b,
        stripe_subscription_items::Entity,
        subs.iter()
            .flat_map(|r| map::subscription_items(st, r))
            .collect(),
        "subscription_items"
    );
    Ok(a)
}

/// Live (not deleted) rows per mirror table of one business.
pub async fn live_counts(
    ctx: &SyncContext,
    business: &BusinessId,
) -> Result<std::collections::BTreeMap<&'static str, u64>, SyncError> {
    let db = ctx.db().conn();
    macro_rules! live {
        ($($name:literal => $entity:ty),* $(,)?) => {{
            let mut out = std::collections::BTreeMap::new();
            $(out.insert($name, mirror::count_live::<$entity, _>(db, business).await?);)*
            out
        }};
    }
    let out = live!(
        "customers" => stripe_customers::Entity,
        "products" => stripe_products::Entity,
        "prices" => stripe_prices::Entity,
        "orders" => stripe_orders::Entity,
        "refunds" => stripe_refunds::Entity,
        "invoices" => stripe_invoices::Entity,
        "invoice_payments" => stripe_invoice_payments::Entity,
        "checkout_sessions" => stripe_checkout_sessions::Entity,
        "subscriptions" => stripe_subscriptions::Entity,
    );
    Ok(out)
}

/// The backfill summary: per table, rows written (`<table>_upserted`) and rows that did not
/// exist before (`<table>_created`).
pub fn backfill_counts(
    report: &crate::SyncReport,
    before: &std::collections::BTreeMap<&'static str, u64>,
    after: &std::collections::BTreeMap<&'static str, u64>,
) -> serde_json::Map<String, Value> {
    let written = |keys: &[&str]| {
        keys.iter()
            .filter_map(|k| report.progress.get(*k))
            .map(|p| p.written)
            .sum::<u64>()
    };
    let mut out = serde_json::Map::new();
    for (table, after_n) in after {
        let sources: &[&str] = match *table {
            "orders" => &["payment_intents", "charges"],
            other => std::slice::from_ref(match other {
                "customers" => &"customers",
                "products" => &"products",
                "prices" => &"prices",
                "refunds" => &"refunds",
                "invoices" => &"invoices",
                "invoice_payments" => &"invoice_payments",
                "checkout_sessions" => &"checkout_sessions",
                _ => &"subscriptions",
            }),
        };
        out.insert(format!("{table}_upserted"), written(sources).into());
        out.insert(
            format!("{table}_created"),
            after_n
                .saturating_sub(before.get(table).copied().unwrap_or(0))
                .into(),
        );
    }
    out.insert("status".into(), report.status.clone().into());
    out
}
