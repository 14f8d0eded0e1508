//! Stripe objects (raw JSON, any API version) → mirror rows. Pure functions: the typed columns
//! are read leniently from the raw object, which is stored whole in `raw`.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tributary_domain::mrr::{self, Discount, Interval, RecurringItem};
use tributary_domain::{Currency, Email};
use tributary_persistence::entities::*;

/// The row-independent facts of one write: whose row, when Stripe's state was read.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The business the row is written for.
    pub business_id: &'a str,
    /// `last_event_at`: the event's `created`, or the moment the API read was sent.
    pub at: i64,
    /// `synced_at`: when we wrote it.
    pub now: i64,
}

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn i(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn b(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// An id field that may be a plain id or an expanded object.
pub fn id_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn at_path<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(v, |cur, k| cur.get(*k))
        .filter(|x| !x.is_null())
}

fn email(raw: Option<&str>) -> Option<String> {
    Email::normalise(raw).map(Email::into_inner)
}

fn currency(v: &Value) -> String {
    s(v, "currency")
        .map(|c| c.to_ascii_lowercase())
        .unwrap_or_default()
}

/// A Stripe object handed to a mapper, which stores it whole in the row's `raw`: owned, it is
/// moved there; borrowed, copied (a page's objects are moved: deep copies of every object
/// were a tenth of a first sync's CPU).
pub trait Raw {
    /// The object, to read the typed columns from.
    fn value(&self) -> &Value;
    /// The object for the row's `raw`.
    fn into_value(self) -> Value;
}

impl Raw for Value {
    fn value(&self) -> &Value {
        self
    }

    fn into_value(self) -> Value {
        self
    }
}

impl Raw for &Value {
    fn value(&self) -> &Value {
        self
    }

    fn into_value(self) -> Value {
        self.clone()
    }
}

/// An object's fields that its mapper reads, for a row whose `raw` is written from the
/// object's text ([`tributary_persistence::mirror::Text`]): the row's own `raw` is left `null`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields(pub Value);

impl Raw for Fields {
    fn value(&self) -> &Value {
        &self.0
    }

    fn into_value(self) -> Value {
        Value::Null
    }
}

/// The fields every mapper and [`crate::readmodel::touch`] read.
const COMMON: [&str; 6] = ["id", "object", "livemode", "created", "deleted", "currency"];

/// The top-level fields the mapper of `object` (Stripe's `object`, as the list returns it)
/// and [`crate::readmodel::touch`] read, beside [`COMMON`]; `None` for kinds whose rows need
/// the whole tree (an invoice's or a subscription's children, a session's line items).
fn read_fields(object: &str) -> Option<&'static [&'static str]> {
    Some(match object {
        "product" => &["name", "active", "description"],
        "price" => &[
            "recurring",
            "product",
            "active",
            "unit_amount",
            "type",
            "nickname",
        ],
        "customer" => &["email", "name"],
        "payment_intent" => &[
            "customer",
            "receipt_email",
            "status",
            "amount",
            "amount_received",
            "invoice",
        ],
        "charge" => &[
            "payment_intent",
            "receipt_email",
            "billing_details",
            "status",
            "paid",
            "amount_captured",
            "amount",
            "customer",
            "invoice",
        ],
        "refund" => &["payment_intent", "charge", "status", "amount", "reason"],
        "invoice_payment" => &[
            "payment",
            "invoice",
            "status",
            "amount_paid",
            "amount_requested",
            "status_transitions",
        ],
        _ => return None,
    })
}

/// The fields a mapper of one kind reads ([`fields_of`]).
#[derive(Debug, Clone, Copy)]
pub struct FieldsOf(&'static [&'static str]);

/// The fields the mapper of `object` reads, for kinds whose rows can be written from a few of
/// them and the object's text; `None` for kinds that need the whole tree.
pub fn fields_of(object: &str) -> Option<FieldsOf> {
    read_fields(object).map(FieldsOf)
}

impl FieldsOf {
    /// The fields parsed out of the object's text into a tree of those alone: the rest of the
    /// object is scanned, not built (a first sync reads a handful of the hundreds of fields
    /// of each object).
    pub fn read(self, text: &RawValue) -> Result<Fields, serde_json::Error> {
        let wanted = self.0;
        let only = Only(|key: &str| COMMON.contains(&key) || wanted.contains(&key));
        let mut de = serde_json::Deserializer::from_str(text.get());
        let map = only.deserialize(&mut de)?;
        de.end()?;
        Ok(Fields(Value::Object(map)))
    }
}

/// Reads a JSON object keeping the members whose key `.0` wants.
struct Only<F>(F);

impl<'de, F: Fn(&str) -> bool> DeserializeSeed<'de> for Only<F> {
    type Value = Map<String, Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: Fn(&str) -> bool> Visitor<'de> for Only<F> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Stripe object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key(&self.0))? {
            match key {
                Some(key) => {
                    out.insert(key, map.next_value()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A member's key: owned when wanted, not copied otherwise.
struct Key<'f, F>(&'f F);

impl<'de, F: Fn(&str) -> bool> DeserializeSeed<'de> for Key<'_, F> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, F: Fn(&str) -> bool> Visitor<'de> for Key<'_, F> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok((self.0)(key).then(|| key.to_owned()))
    }
}

macro_rules! common {
    ($stamp:expr, $raw:expr) => {{
        let raw: &Value = $raw;
        (
            $stamp.business_id.to_owned(),
            s(raw, "id").unwrap_or_default(),
            b(raw, "livemode"),
            i(raw, "created").unwrap_or(0),
            b(raw, "deleted"),
            $stamp.at,
            $stamp.now,
        )
    }};
}

/// A `stripe_products` row.
pub fn product(st: Stamp<'_>, input: impl Raw) -> stripe_products::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    stripe_products::Model {
        business_id,
        stripe_id,
        name: s(raw, "name"),
        active: b(raw, "active"),
        description: s(raw, "description"),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A `stripe_prices` row.
pub fn price(st: Stamp<'_>, input: impl Raw) -> stripe_prices::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    let recurring = raw.get("recurring").filter(|r| r.is_object());
    stripe_prices::Model {
        business_id,
        stripe_id,
        product: id_of(raw, "product"),
        active: b(raw, "active"),
        currency: currency(raw),
        unit_amount: i(raw, "unit_amount"),
        price_type: s(raw, "type").unwrap_or_else(|| {
            if recurring.is_some() {
                "recurring"
            } else {
                "one_time"
            }
            .into()
        }),
        recurring_interval: recurring.and_then(|r| s(r, "interval")),
        recurring_interval_count: recurring.and_then(|r| i(r, "interval_count")),
        recurring_usage_type: recurring.and_then(|r| s(r, "usage_type")),
        nickname: s(raw, "nickname"),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A `stripe_customers` row.
pub fn customer(st: Stamp<'_>, input: impl Raw) -> stripe_customers::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    stripe_customers::Model {
        business_id,
        stripe_id,
        email: email(raw.get("email").and_then(Value::as_str)),
        name: s(raw, "name"),
        currency: s(raw, "currency"),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A `stripe_orders` row of a payment intent.
pub fn payment_intent(st: Stamp<'_>, input: impl Raw) -> stripe_orders::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    stripe_orders::Model {
        business_id,
        stripe_id,
        stripe_type: "payment_intent".into(),
        customer: id_of(raw, "customer"),
        email: email(raw.get("receipt_email").and_then(Value::as_str)),
        status: s(raw, "status").unwrap_or_default(),
        amount: i(raw, "amount").unwrap_or(0),
        amount_received: i(raw, "amount_received").unwrap_or(0),
        currency: currency(raw),
        invoice: id_of(raw, "invoice"),
        payment_intent: None,
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A charge is an order of its own only when it has no payment intent (SPEC §3).
pub fn charge(st: Stamp<'_>, input: impl Raw) -> Option<stripe_orders::Model> {
    let raw = input.value();
    if id_of(raw, "payment_intent").is_some() {
        return None;
    }
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    let receipt = raw
        .get("receipt_email")
        .and_then(Value::as_str)
        .or_else(|| at_path(raw, &["billing_details", "email"]).and_then(Value::as_str));
    let succeeded = s(raw, "status").as_deref() == Some("succeeded") && b(raw, "paid");
    let captured = i(raw, "amount_captured").unwrap_or_else(|| i(raw, "amount").unwrap_or(0));
    Some(stripe_orders::Model {
        business_id,
        stripe_id,
        stripe_type: "charge".into(),
        customer: id_of(raw, "customer"),
        email: email(receipt),
        status: s(raw, "status").unwrap_or_default(),
        amount: i(raw, "amount").unwrap_or(0),
        amount_received: if succeeded { captured } else { 0 },
        currency: currency(raw),
        invoice: id_of(raw, "invoice"),
        payment_intent: None,
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    })
}

/// A `stripe_refunds` row.
pub fn refund(st: Stamp<'_>, input: impl Raw) -> stripe_refunds::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    stripe_refunds::Model {
        business_id,
        stripe_id,
        payment_intent: id_of(raw, "payment_intent"),
        charge: id_of(raw, "charge"),
        status: s(raw, "status").unwrap_or_default(),
        amount: i(raw, "amount").unwrap_or(0),
        currency: currency(raw),
        reason: s(raw, "reason"),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// The subscription an invoice belongs to: `parent.subscription_details.subscription` in the
/// current API, top-level `subscription` in older versions.
pub fn invoice_subscription(raw: &Value) -> Option<String> {
    at_path(raw, &["parent", "subscription_details"])
        .and_then(|d| id_of(d, "subscription"))
        .or_else(|| id_of(raw, "subscription"))
}

/// A `stripe_invoices` row.
pub fn invoice(st: Stamp<'_>, input: impl Raw) -> stripe_invoices::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    stripe_invoices::Model {
        business_id,
        stripe_id,
        customer: id_of(raw, "customer"),
        email: email(raw.get("customer_email").and_then(Value::as_str)),
        status: s(raw, "status").unwrap_or_default(),
        currency: currency(raw),
        amount_due: i(raw, "amount_due").unwrap_or(0),
        amount_paid: i(raw, "amount_paid").unwrap_or(0),
        amount_remaining: i(raw, "amount_remaining").unwrap_or(0),
        total: i(raw, "total").unwrap_or(0),
        subscription: invoice_subscription(raw),
        payment_intent: id_of(raw, "payment_intent"),
        charge: id_of(raw, "charge"),
        paid_at: at_path(raw, &["status_transitions", "paid_at"]).and_then(Value::as_i64),
        number: s(raw, "number"),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// One invoice line. Lines carry no `created`: they take their invoice's.
pub fn invoice_line(
    st: Stamp<'_>,
    invoice_id: &str,
    invoice_created: i64,
    input: impl Raw,
) -> stripe_invoice_line_items::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, _, deleted, last_event_at, synced_at) = common!(st, raw);
    let price = at_path(raw, &["pricing", "price_details"])
        .and_then(|p| id_of(p, "price"))
        .or_else(|| id_of(raw, "price"));
    let subscription = at_path(raw, &["parent", "subscription_item_details"])
        .and_then(|d| id_of(d, "subscription"))
        .or_else(|| id_of(raw, "subscription"));
    stripe_invoice_line_items::Model {
        business_id,
        stripe_id,
        invoice: invoice_id.to_owned(),
        amount: i(raw, "amount").unwrap_or(0),
        currency: currency(raw),
        description: s(raw, "description"),
        price,
        quantity: i(raw, "quantity"),
        subscription,
        period_start: at_path(raw, &["period", "start"]).and_then(Value::as_i64),
        period_end: at_path(raw, &["period", "end"]).and_then(Value::as_i64),
        raw: input.into_value(),
        livemode,
        created: invoice_created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A `stripe_invoice_payments` row.
pub fn invoice_payment(st: Stamp<'_>, input: impl Raw) -> stripe_invoice_payments::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    let payment = raw.get("payment").cloned().unwrap_or(Value::Null);
    stripe_invoice_payments::Model {
        business_id,
        stripe_id,
        invoice: id_of(raw, "invoice").unwrap_or_default(),
        payment_type: s(&payment, "type"),
        payment_intent: id_of(&payment, "payment_intent"),
        charge: id_of(&payment, "charge"),
        status: s(raw, "status").unwrap_or_default(),
        amount_paid: i(raw, "amount_paid").unwrap_or(0),
        amount_requested: i(raw, "amount_requested").unwrap_or(0),
        currency: currency(raw),
        paid_at: at_path(raw, &["status_transitions", "paid_at"]).and_then(Value::as_i64),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A `stripe_checkout_sessions` row (`line_items` left out of `raw`).
pub fn checkout_session(st: Stamp<'_>, input: impl Raw) -> stripe_checkout_sessions::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    let details_email = at_path(raw, &["customer_details", "email"]).and_then(Value::as_str);
    stripe_checkout_sessions::Model {
        business_id,
        stripe_id,
        customer: id_of(raw, "customer"),
        email: email(details_email.or_else(|| raw.get("customer_email").and_then(Value::as_str))),
        mode: s(raw, "mode").unwrap_or_default(),
        status: s(raw, "status"),
        payment_status: s(raw, "payment_status").unwrap_or_default(),
        amount_total: i(raw, "amount_total"),
        amount_subtotal: i(raw, "amount_subtotal"),
        currency: s(raw, "currency").map(|c| c.to_ascii_lowercase()),
        payment_intent: id_of(raw, "payment_intent"),
        invoice: id_of(raw, "invoice"),
        subscription: id_of(raw, "subscription"),
        client_reference_id: s(raw, "client_reference_id"),
        // Line items are mirrored in their own table; keep the session's raw without the
        // expanded list so the two never disagree.
        raw: {
            let mut raw = input.into_value();
            if let Some(o) = raw.as_object_mut() {
                o.remove("line_items");
            }
            raw
        },
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A `stripe_checkout_line_items` row of one session's line item.
pub fn checkout_line(
    st: Stamp<'_>,
    session_id: &str,
    session_created: i64,
    input: impl Raw,
) -> stripe_checkout_line_items::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, _, deleted, last_event_at, synced_at) = common!(st, raw);
    let price = raw.get("price").cloned().unwrap_or(Value::Null);
    stripe_checkout_line_items::Model {
        business_id,
        stripe_id,
        checkout_session: session_id.to_owned(),
        price: id_of(raw, "price"),
        product: id_of(&price, "product"),
        quantity: i(raw, "quantity"),
        amount_total: i(raw, "amount_total").unwrap_or(0),
        amount_subtotal: i(raw, "amount_subtotal").unwrap_or(0),
        currency: currency(raw),
        description: s(raw, "description"),
        raw: input.into_value(),
        livemode,
        created: session_created,
        deleted,
        last_event_at,
        synced_at,
    }
}

fn recurring_item(item: &Value, fallback_currency: &str) -> Option<RecurringItem> {
    let price = item
        .get("price")
        .filter(|p| p.is_object())
        .or_else(|| item.get("plan"))?;
    let recurring = price.get("recurring").filter(|r| r.is_object());
    let interval = recurring
        .and_then(|r| s(r, "interval"))
        .or_else(|| s(price, "interval"))
        .and_then(|x| Interval::parse(&x))?;
    let count = recurring
        .and_then(|r| i(r, "interval_count"))
        .or_else(|| i(price, "interval_count"))
        .unwrap_or(1);
    let usage = recurring
        .and_then(|r| s(r, "usage_type"))
        .or_else(|| s(price, "usage_type"));
    let cur = s(price, "currency").unwrap_or_else(|| fallback_currency.to_owned());
    Some(RecurringItem {
        unit_amount: i(price, "unit_amount")
            .or_else(|| i(price, "amount"))
            .unwrap_or(0),
        quantity: i(item, "quantity").unwrap_or(1),
        interval,
        interval_count: count,
        currency: Currency::parse(&cur).ok()?,
        metered: usage.as_deref() == Some("metered"),
    })
}

fn discount_of(d: &Value) -> Option<Discount> {
    // `discounts` holds ids unless expanded; `discount` (older) is the object.
    let coupon = d
        .get("coupon")
        .or_else(|| at_path(d, &["source", "coupon"]))?;
    if let Some(p) = coupon.get("percent_off").and_then(Value::as_f64) {
        return Some(Discount::PercentOff {
            basis_points: (p * 100.0).round() as i64,
        });
    }
    let currency = Currency::parse(&s(coupon, "currency")?).ok()?;
    Some(Discount::AmountOff {
        amount: i(coupon, "amount_off")?,
        currency,
    })
}

fn discounts(raw: &Value) -> Vec<Discount> {
    let out: Vec<Discount> = raw
        .get("discounts")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|d| d.is_object())
                .filter_map(discount_of)
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        return raw
            .get("discount")
            .filter(|d| d.is_object())
            .and_then(discount_of)
            .into_iter()
            .collect();
    }
    out
}

/// The subscription's normalised monthly amount in its own currency (0 when it does not count).
pub fn subscription_mrr(raw: &Value) -> i64 {
    let status = s(raw, "status").unwrap_or_default();
    let cur = currency(raw);
    let items: Vec<RecurringItem> = at_path(raw, &["items", "data"])
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|it| recurring_item(it, &cur)).collect())
        .unwrap_or_default();
    let Ok(currency) = Currency::parse(if cur.is_empty() { "usd" } else { &cur }) else {
        return 0;
    };
    mrr::subscription_mrr(&status, &items, &discounts(raw), &currency).unwrap_or(0)
}

/// A `stripe_subscriptions` row, with its normalised MRR.
pub fn subscription(st: Stamp<'_>, input: impl Raw) -> stripe_subscriptions::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    let first_item = at_path(raw, &["items", "data"])
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let period = |key: &str| i(raw, key).or_else(|| first_item.and_then(|it| i(it, key)));
    stripe_subscriptions::Model {
        business_id,
        stripe_id,
        customer: id_of(raw, "customer"),
        status: s(raw, "status").unwrap_or_default(),
        currency: currency(raw),
        cancel_at_period_end: b(raw, "cancel_at_period_end"),
        canceled_at: i(raw, "canceled_at"),
        ended_at: i(raw, "ended_at"),
        start_date: i(raw, "start_date"),
        trial_start: i(raw, "trial_start"),
        trial_end: i(raw, "trial_end"),
        current_period_start: period("current_period_start"),
        current_period_end: period("current_period_end"),
        mrr: subscription_mrr(raw),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// A `stripe_subscription_items` row of one subscription's item.
pub fn subscription_item(
    st: Stamp<'_>,
    subscription_id: &str,
    input: impl Raw,
) -> stripe_subscription_items::Model {
    let raw = input.value();
    let (business_id, stripe_id, livemode, created, deleted, last_event_at, synced_at) =
        common!(st, raw);
    let price = raw.get("price").cloned().unwrap_or(Value::Null);
    let recurring = price.get("recurring").cloned().unwrap_or(Value::Null);
    stripe_subscription_items::Model {
        business_id,
        stripe_id,
        subscription: subscription_id.to_owned(),
        price: id_of(raw, "price"),
        product: id_of(&price, "product"),
        quantity: i(raw, "quantity").unwrap_or(1),
        unit_amount: i(&price, "unit_amount"),
        currency: s(&price, "currency"),
        recurring_interval: s(&recurring, "interval"),
        recurring_interval_count: i(&recurring, "interval_count"),
        recurring_usage_type: s(&recurring, "usage_type"),
        raw: input.into_value(),
        livemode,
        created,
        deleted,
        last_event_at,
        synced_at,
    }
}

/// The subscription's embedded items (`items.data`).
pub fn subscription_items(st: Stamp<'_>, raw: &Value) -> Vec<stripe_subscription_items::Model> {
    let id = s(raw, "id").unwrap_or_default();
    at_path(raw, &["items", "data"])
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|it| subscription_item(st, &id, it)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
