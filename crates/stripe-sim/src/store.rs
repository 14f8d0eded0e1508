//! In-memory state: per account, one collection per resource, each object kept pre-serialized
//! and indexed by `(created, id)` so that a list page is a range walk plus string splicing.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::rng::Rng;

/// Stripe API version stamped on events and echoed in responses.
pub const API_VERSION: &str = "2026-09-30.endive";
pub const EVENT_RETENTION_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Customer,
    Product,
    Price,
    PaymentIntent,
    Charge,
    Refund,
    Invoice,
    InvoicePayment,
    CheckoutSession,
    Subscription,
    Discount,
    Event,
}

pub const ALL_KINDS: [Kind; 12] = [
    Kind::Customer,
    Kind::Product,
    Kind::Price,
    Kind::PaymentIntent,
    Kind::Charge,
    Kind::Refund,
    Kind::Invoice,
    Kind::InvoicePayment,
    Kind::CheckoutSession,
    Kind::Subscription,
    Kind::Discount,
    Kind::Event,
];

impl Kind {
    pub fn idx(self) -> usize {
        self as usize
    }

    /// The `object` value.
    pub fn object(self) -> &'static str {
        match self {
            Kind::Customer => "customer",
            Kind::Product => "product",
            Kind::Price => "price",
            Kind::PaymentIntent => "payment_intent",
            Kind::Charge => "charge",
            Kind::Refund => "refund",
            Kind::Invoice => "invoice",
            Kind::InvoicePayment => "invoice_payment",
            Kind::CheckoutSession => "checkout.session",
            Kind::Subscription => "subscription",
            Kind::Discount => "discount",
            Kind::Event => "event",
        }
    }

    pub fn from_object(object: &str) -> Option<Kind> {
        ALL_KINDS.iter().copied().find(|k| k.object() == object)
    }

    /// The prefix of this kind's event types (`customer.subscription.updated`).
    pub fn event_prefix(self) -> &'static str {
        match self {
            Kind::Subscription => "customer.subscription",
            Kind::Discount => "customer.discount",
            other => other.object(),
        }
    }

    pub fn list_url(self) -> &'static str {
        match self {
            Kind::Customer => "/v1/customers",
            Kind::Product => "/v1/products",
            Kind::Price => "/v1/prices",
            Kind::PaymentIntent => "/v1/payment_intents",
            Kind::Charge => "/v1/charges",
            Kind::Refund => "/v1/refunds",
            Kind::Invoice => "/v1/invoices",
            Kind::InvoicePayment => "/v1/invoice_payments",
            Kind::CheckoutSession => "/v1/checkout/sessions",
            Kind::Subscription => "/v1/subscriptions",
            Kind::Discount => "/v1/discounts",
            Kind::Event => "/v1/events",
        }
    }

    /// Name used in `/_sim/accounts` counts and in "No such …" messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Customer => "customer",
            Kind::Product => "product",
            Kind::Price => "price",
            Kind::PaymentIntent => "payment_intent",
            Kind::Charge => "charge",
            Kind::Refund => "refund",
            Kind::Invoice => "invoice",
            Kind::InvoicePayment => "invoice_payment",
            Kind::CheckoutSession => "checkout.session",
            Kind::Subscription => "subscription",
            Kind::Discount => "discount",
            Kind::Event => "event",
        }
    }

    pub fn from_id(id: &str) -> Option<Kind> {
        let (prefix, _) = id.split_once('_')?;
        Some(match prefix {
            "cus" => Kind::Customer,
            "prod" => Kind::Product,
            "price" | "plan" => Kind::Price,
            "pi" => Kind::PaymentIntent,
            "ch" | "py" => Kind::Charge,
            "re" | "pyr" => Kind::Refund,
            "in" => Kind::Invoice,
            "inpay" => Kind::InvoicePayment,
            "cs" => Kind::CheckoutSession,
            "sub" => Kind::Subscription,
            "di" => Kind::Discount,
            "evt" => Kind::Event,
            _ => return None,
        })
    }

    /// List filters: query parameter and the JSON path it compares with (string equality).
    pub fn filters(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Kind::Customer => &[("email", &["email"])],
            Kind::Product => &[("active", &["active"]), ("type", &["type"])],
            Kind::Price => &[
                ("product", &["product"]),
                ("active", &["active"]),
                ("currency", &["currency"]),
                ("type", &["type"]),
            ],
            Kind::PaymentIntent => &[("customer", &["customer"])],
            Kind::Charge => &[
                ("customer", &["customer"]),
                ("payment_intent", &["payment_intent"]),
            ],
            Kind::Refund => &[
                ("charge", &["charge"]),
                ("payment_intent", &["payment_intent"]),
            ],
            Kind::Invoice => &[
                ("customer", &["customer"]),
                (
                    "subscription",
                    &["parent", "subscription_details", "subscription"],
                ),
                ("status", &["status"]),
                ("collection_method", &["collection_method"]),
            ],
            Kind::InvoicePayment => &[
                ("invoice", &["invoice"]),
                ("payment[type]", &["payment", "type"]),
                ("payment[payment_intent]", &["payment", "payment_intent"]),
                ("status", &["status"]),
            ],
            Kind::CheckoutSession => &[
                ("customer", &["customer"]),
                ("payment_intent", &["payment_intent"]),
                ("subscription", &["subscription"]),
                ("status", &["status"]),
                ("payment_link", &["payment_link"]),
            ],
            Kind::Subscription => &[
                ("customer", &["customer"]),
                ("status", &["status"]),
                ("collection_method", &["collection_method"]),
            ],
            Kind::Discount => &[],
            Kind::Event => &[("type", &["type"])],
        }
    }

    /// The filter (by position in `filters()`) that has a secondary index.
    pub fn indexed_filter(self) -> Option<usize> {
        match self {
            Kind::InvoicePayment | Kind::Refund => Some(0),
            Kind::Charge => Some(1),
            _ => None,
        }
    }
}

fn path_str(v: &Value, path: &[&str]) -> Option<Box<str>> {
    let mut cur = v;
    for seg in path {
        cur = cur.get(seg)?;
    }
    match cur {
        Value::String(s) => Some(s.as_str().into()),
        Value::Bool(b) => Some(if *b { "true".into() } else { "false".into() }),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Object(m) => m.get("id").and_then(Value::as_str).map(Into::into),
        _ => None,
    }
}

#[derive(Debug)]
pub struct Entry {
    pub created: i64,
    pub json: Arc<str>,
    pub deleted: bool,
    pub keys: Box<[Option<Box<str>>]>,
}

type Key = (i64, Arc<str>);

#[derive(Debug)]
pub struct Collection {
    kind: Kind,
    map: HashMap<Arc<str>, Entry>,
    order: BTreeSet<Key>,
    index: HashMap<Box<str>, BTreeSet<Key>>,
    live: usize,
}

/// One side of a `created` filter, already combined.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreatedRange {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    Eq(String),
    Not(Vec<String>),
    AnyOf(Vec<String>),
    /// Event types with `*` wildcards.
    Globs(Vec<String>),
}

impl Matcher {
    fn matches(&self, v: Option<&str>) -> bool {
        match self {
            Matcher::Eq(s) => v == Some(s.as_str()),
            Matcher::Not(list) => v.is_none_or(|v| !list.iter().any(|s| s == v)),
            Matcher::AnyOf(list) => v.is_some_and(|v| list.iter().any(|s| s == v)),
            Matcher::Globs(list) => v.is_some_and(|v| list.iter().any(|g| glob(g, v))),
        }
    }
}

pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            if !s.starts_with(head) {
                return false;
            }
            let rest = &s[head.len()..];
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    pub created: CreatedRange,
    pub filters: Vec<(usize, Matcher)>,
}

#[derive(Debug)]
pub enum ListError {
    /// The cursor object does not exist (param name, id).
    MissingCursor(&'static str, String),
}

#[derive(Debug)]
pub struct Page {
    pub items: Vec<Arc<str>>,
    pub has_more: bool,
}

impl Collection {
    pub fn new(kind: Kind) -> Self {
        Collection {
            kind,
            map: HashMap::new(),
            order: BTreeSet::new(),
            index: HashMap::new(),
            live: 0,
        }
    }

    pub fn live(&self) -> usize {
        self.live
    }

    pub fn len_all(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.map.get(id)
    }

    pub fn value(&self, id: &str) -> Option<Value> {
        self.map
            .get(id)
            .and_then(|e| serde_json::from_str(&e.json).ok())
    }

    /// Stores `v` (replacing an object with the same id); `deleted: true` marks it deleted but
    /// keeps the last full object so cursors and events still work.
    pub fn put(&mut self, v: &Value) {
        let Some(id) = v.get("id").and_then(Value::as_str) else {
            return;
        };
        let deleted = v.get("deleted").and_then(Value::as_bool).unwrap_or(false);
        let created = v.get("created").and_then(Value::as_i64);
        let old = self.map.get(id);
        let created = created.or_else(|| old.map(|e| e.created)).unwrap_or(0);
        let json: Arc<str> = if deleted {
            // A deletion stub replaces nothing of the object itself.
            match old {
                Some(e) => e.json.clone(),
                None => Arc::from(v.to_string()),
            }
        } else {
            Arc::from(v.to_string())
        };
        let src: Value;
        let keys_from = if deleted {
            match old {
                Some(e) => {
                    src = serde_json::from_str(&e.json).unwrap_or(Value::Null);
                    &src
                }
                None => v,
            }
        } else {
            v
        };
        let keys: Box<[Option<Box<str>>]> = self
            .kind
            .filters()
            .iter()
            .map(|(_, path)| path_str(keys_from, path))
            .collect();
        self.remove(id);
        let id: Arc<str> = Arc::from(id);
        let key = (created, id.clone());
        self.order.insert(key.clone());
        if let Some(i) = self.kind.indexed_filter()
            && let Some(Some(k)) = keys.get(i)
        {
            self.index.entry(k.clone()).or_default().insert(key);
        }
        if !deleted {
            self.live += 1;
        }
        self.map.insert(
            id,
            Entry {
                created,
                json,
                deleted,
                keys,
            },
        );
    }

    fn remove(&mut self, id: &str) {
        if let Some((id, e)) = self.map.remove_entry(id) {
            let key = (e.created, id);
            self.order.remove(&key);
            if let Some(i) = self.kind.indexed_filter()
                && let Some(Some(k)) = e.keys.get(i)
                && let Some(set) = self.index.get_mut(k)
            {
                set.remove(&key);
            }
            if !e.deleted {
                self.live -= 1;
            }
        }
    }

    /// Ids of live objects whose filter `i` equals `value`, newest first.
    pub fn ids_where(&self, i: usize, value: &str) -> Vec<Arc<str>> {
        let walk: Box<dyn Iterator<Item = &Key>> = if self.kind.indexed_filter() == Some(i) {
            match self.index.get(value) {
                Some(set) => Box::new(set.iter().rev()),
                None => return Vec::new(),
            }
        } else {
            Box::new(self.order.iter().rev())
        };
        walk.filter_map(|(_, id)| {
            let e = self.map.get(id)?;
            (!e.deleted && e.keys.get(i).and_then(|k| k.as_deref()) == Some(value))
                .then(|| id.clone())
        })
        .collect()
    }

    /// All live ids, newest first.
    pub fn live_ids(&self) -> Vec<Arc<str>> {
        self.order
            .iter()
            .rev()
            .filter(|(_, id)| self.map.get(id).is_some_and(|e| !e.deleted))
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub fn list(&self, q: &ListQuery) -> Result<Page, ListError> {
        let limit = q.limit.max(1);
        let cursor = |param: &'static str, id: &String| -> Result<Key, ListError> {
            self.map
                .get_key_value(id.as_str())
                .map(|(k, e)| (e.created, k.clone()))
                .ok_or_else(|| ListError::MissingCursor(param, id.clone()))
        };
        // An equality filter on the indexed field walks the secondary index instead.
        let mut set = &self.order;
        if let Some(ix) = self.kind.indexed_filter() {
            for (i, m) in &q.filters {
                if *i == ix
                    && let Matcher::Eq(v) = m
                {
                    match self.index.get(v.as_str()) {
                        Some(s) => set = s,
                        None => {
                            return Ok(Page {
                                items: Vec::new(),
                                has_more: false,
                            });
                        }
                    }
                }
            }
        }
        let min = q.created.min.unwrap_or(i64::MIN);
        let max = q.created.max.unwrap_or(i64::MAX);
        let accept = |id: &Arc<str>| -> Option<Arc<str>> {
            let e = self.map.get(id)?;
            if e.deleted {
                return None;
            }
            for (i, m) in &q.filters {
                if !m.matches(e.keys.get(*i).and_then(|k| k.as_deref())) {
                    return None;
                }
            }
            Some(e.json.clone())
        };
        let mut items = Vec::with_capacity(limit.min(100) + 1);
        if let Some(before) = &q.ending_before {
            let c = cursor("ending_before", before)?;
            for (created, id) in set.range((Bound::Excluded(c), Bound::Unbounded)) {
                if *created < min {
                    continue;
                }
                if *created > max {
                    break;
                }
                if let Some(j) = accept(id) {
                    items.push(j);
                    if items.len() > limit {
                        break;
                    }
                }
            }
            let has_more = items.len() > limit;
            items.truncate(limit);
            items.reverse();
            return Ok(Page { items, has_more });
        }
        let mut upper: Bound<Key> = match max {
            i64::MAX => Bound::Unbounded,
            m => Bound::Excluded((m + 1, Arc::from(""))),
        };
        if let Some(after) = &q.starting_after {
            let c = cursor("starting_after", after)?;
            let tighter = match &upper {
                Bound::Excluded(u) => c < *u,
                _ => true,
            };
            if tighter {
                upper = Bound::Excluded(c);
            }
        }
        for (created, id) in set.range((Bound::Unbounded, upper)).rev() {
            if *created < min {
                break;
            }
            if let Some(j) = accept(id) {
                items.push(j);
                if items.len() > limit {
                    break;
                }
            }
        }
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }
}

/// A child list kept in insertion order (invoice lines, checkout line items).
pub type Children = HashMap<Arc<str>, Vec<(Arc<str>, Arc<str>)>>;

#[derive(Debug)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub revoked: bool,
    /// The `account` object.
    pub object: Value,
    pub cols: Vec<Collection>,
    pub invoice_lines: Children,
    pub session_lines: Children,
    pub coupons: HashMap<String, Value>,
    /// Ids for objects and events minted at run time.
    pub rng: Rng,
    /// Event ids start with a sequence number, so events of one second list in the order
    /// they happened (ids break `created` ties).
    pub event_seq: u64,
}

impl Account {
    pub fn new(id: String, name: String, object: Value, seed: u64) -> Self {
        let rng = Rng::derive(seed, &format!("runtime:{id}"));
        Account {
            id,
            name,
            revoked: false,
            object,
            cols: ALL_KINDS.iter().map(|k| Collection::new(*k)).collect(),
            invoice_lines: HashMap::new(),
            session_lines: HashMap::new(),
            coupons: HashMap::new(),
            rng,
            event_seq: 0,
        }
    }

    pub fn event_id(&mut self) -> String {
        const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        self.event_seq += 1;
        let mut n = self.event_seq;
        let mut seq = [b'0'; 7];
        for d in seq.iter_mut().rev() {
            *d = DIGITS[(n % 62) as usize];
            n /= 62;
        }
        format!(
            "evt_1{}{}",
            String::from_utf8_lossy(&seq),
            self.rng.alnum(16)
        )
    }

    pub fn col(&self, k: Kind) -> &Collection {
        &self.cols[k.idx()]
    }

    pub fn put(&mut self, k: Kind, v: &Value) {
        self.cols[k.idx()].put(v);
    }

    /// The object with this id in whichever collection its prefix names.
    pub fn find(&self, id: &str) -> Option<(Kind, &Entry)> {
        let k = Kind::from_id(id)?;
        self.col(k).get(id).map(|e| (k, e))
    }

    /// Stored lines of an invoice, or items of a checkout session.
    pub fn children(&self, k: Kind, parent: &str) -> Option<&Vec<(Arc<str>, Arc<str>)>> {
        match k {
            Kind::Invoice => self.invoice_lines.get(parent),
            Kind::CheckoutSession => self.session_lines.get(parent),
            _ => None,
        }
    }

    pub fn set_children(&mut self, k: Kind, parent: &str, items: Vec<Value>) {
        let list: Vec<(Arc<str>, Arc<str>)> = items
            .iter()
            .map(|v| {
                let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
                (Arc::from(id), Arc::from(v.to_string()))
            })
            .collect();
        let map = match k {
            Kind::Invoice => &mut self.invoice_lines,
            _ => &mut self.session_lines,
        };
        map.insert(Arc::from(parent), list);
    }

    pub fn counts(&self) -> Value {
        let live_children = |k: Kind, map: &Children| -> usize {
            map.iter()
                .filter(|(p, _)| self.col(k).get(p).is_some_and(|e| !e.deleted))
                .map(|(_, v)| v.len())
                .sum()
        };
        json!({
            "customers": self.col(Kind::Customer).live(),
            "products": self.col(Kind::Product).live(),
            "prices": self.col(Kind::Price).live(),
            "payment_intents": self.col(Kind::PaymentIntent).live(),
            "charges": self.col(Kind::Charge).live(),
            "refunds": self.col(Kind::Refund).live(),
            "invoices": self.col(Kind::Invoice).live(),
            "invoice_line_items": live_children(Kind::Invoice, &self.invoice_lines),
            "invoice_payments": self.col(Kind::InvoicePayment).live(),
            "checkout_sessions": self.col(Kind::CheckoutSession).live(),
            "checkout_line_items": live_children(Kind::CheckoutSession, &self.session_lines),
            "subscriptions": self.col(Kind::Subscription).live(),
        })
    }

    /// Records an event on this account and returns it. `previous` is the object before an
    /// update: the changed top-level keys become `data.previous_attributes`.
    pub fn record_event(
        &mut self,
        typ: &str,
        obj: &Value,
        previous: Option<&Value>,
        created: i64,
    ) -> Value {
        let id = self.event_id();
        let event = make_event(&id, &self.id, typ, obj, previous, created);
        self.put(Kind::Event, &event);
        event
    }
}

pub fn make_event(
    id: &str,
    account: &str,
    typ: &str,
    obj: &Value,
    previous: Option<&Value>,
    created: i64,
) -> Value {
    let mut data = Map::new();
    data.insert("object".into(), obj.clone());
    if let Some(prev) = previous {
        data.insert("previous_attributes".into(), Value::Object(diff(prev, obj)));
    }
    json!({
        "id": id,
        "object": "event",
        "account": account,
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 0,
        "request": {"id": null, "idempotency_key": null},
        "type": typ,
    })
}

/// Top-level keys whose value differs, with their old value (`null` when newly added).
pub fn diff(old: &Value, new: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return out;
    };
    for (k, nv) in n {
        match o.get(k) {
            Some(ov) if ov == nv => {}
            Some(ov) => {
                out.insert(k.clone(), ov.clone());
            }
            None => {
                out.insert(k.clone(), Value::Null);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(id: &str, created: i64) -> Value {
        json!({"id": id, "object": "customer", "created": created, "email": format!("{id}@x.test")})
    }

    fn ids(p: &Page) -> Vec<String> {
        p.items
            .iter()
            .map(|j| {
                serde_json::from_str::<Value>(j).expect("json")["id"]
                    .as_str()
                    .expect("id")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn newest_first_with_tiebreak_and_cursors() {
        let mut c = Collection::new(Kind::Customer);
        for (id, t) in [
            ("cus_a", 10),
            ("cus_b", 20),
            ("cus_c", 20),
            ("cus_d", 30),
            ("cus_e", 5),
        ] {
            c.put(&obj(id, t));
        }
        let q = ListQuery {
            limit: 2,
            ..Default::default()
        };
        let p = c.list(&q).expect("list");
        assert_eq!(ids(&p), ["cus_d", "cus_c"]);
        assert!(p.has_more);
        let p2 = c
            .list(&ListQuery {
                limit: 2,
                starting_after: Some("cus_c".into()),
                ..Default::default()
            })
            .expect("l");
        assert_eq!(ids(&p2), ["cus_b", "cus_a"]);
        assert!(p2.has_more);
        let p3 = c
            .list(&ListQuery {
                limit: 2,
                ending_before: Some("cus_a".into()),
                ..Default::default()
            })
            .expect("l");
        assert_eq!(ids(&p3), ["cus_c", "cus_b"]);
        assert!(p3.has_more);
        let q = ListQuery {
            limit: 10,
            created: CreatedRange {
                min: Some(10),
                max: Some(20),
            },
            ..Default::default()
        };
        assert_eq!(ids(&c.list(&q).expect("l")), ["cus_c", "cus_b", "cus_a"]);
        c.put(&json!({"id": "cus_c", "object": "customer", "deleted": true}));
        assert_eq!(c.live(), 4);
        let q = ListQuery {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(&c.list(&q).expect("l")),
            ["cus_d", "cus_b", "cus_a", "cus_e"]
        );
        // A deleted object still works as a cursor.
        let q = ListQuery {
            limit: 10,
            starting_after: Some("cus_c".into()),
            ..Default::default()
        };
        assert_eq!(ids(&c.list(&q).expect("l")), ["cus_b", "cus_a", "cus_e"]);
    }

    #[test]
    fn globs() {
        assert!(glob("customer.*", "customer.subscription.updated"));
        assert!(glob("*.created", "customer.created"));
        assert!(!glob("invoice.*", "customer.created"));
        assert!(glob("charge.refunded", "charge.refunded"));
    }

    #[test]
    fn previous_attributes() {
        let d = diff(&json!({"a": 1, "b": 2}), &json!({"a": 1, "b": 3, "c": 4}));
        assert_eq!(Value::Object(d), json!({"b": 2, "c": null}));
    }
}

#[cfg(test)]
mod event_id_tests {
    use super::*;

    #[test]
    fn event_ids_sort_in_creation_order() {
        let mut a = Account::new("acct_x".into(), "X".into(), json!({}), 1);
        let ids: Vec<String> = (0..200).map(|_| a.event_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(ids[0].len(), "evt_1".len() + 7 + 16);
    }
}
