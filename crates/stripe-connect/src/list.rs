//! Typed list streams with auto-pagination that keep every object's raw JSON.
//!
//! Pages are fetched as raw JSON through [`AccountClient`] (so retries and the account's budget
//! apply) and each item is then parsed into its async-stripe model on its own: one object
//! async-stripe cannot parse (a field missing in another API version) still comes through as
//! raw JSON instead of failing the whole page.

use std::collections::VecDeque;
use std::marker::PhantomData;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use stripe_client_core::StripeMethod;

use crate::client::{AccountClient, encode_query};
use crate::error::StripeError;

/// Stripe's largest page.
pub const MAX_LIMIT: u32 = 100;

/// Most `types[]` Stripe accepts on `/v1/events`.
pub const MAX_EVENT_TYPES: usize = 20;

/// A model that can be read from one raw Stripe object.
pub trait FromRaw: Sized + Send + 'static {
    /// Parse `raw`; the error is a short reason.
    fn from_raw(raw: &Value) -> Result<Self, String>;
}

macro_rules! miniserde_from_raw {
    ($($t:ty),* $(,)?) => {$(
        impl FromRaw for $t {
            fn from_raw(raw: &Value) -> Result<Self, String> {
                // async-stripe models deserialize with miniserde only (the serde `deserialize`
                // feature is off, see STACK.md), hence the round trip through text.
                miniserde::json::from_str(&raw.to_string())
                    .map_err(|_| format!("{} does not parse as {}", object_label(raw), stringify!($t)))
            }
        }
    )*};
}

fn object_label(raw: &Value) -> String {
    let obj = raw
        .get("object")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let id = raw.get("id").and_then(Value::as_str).unwrap_or("?");
    format!("{obj} {id}")
}

miniserde_from_raw!(
    stripe_shared::Product,
    stripe_shared::Price,
    stripe_shared::Customer,
    stripe_shared::PaymentIntent,
    stripe_shared::Charge,
    stripe_shared::Refund,
    stripe_shared::Invoice,
    stripe_shared::InvoiceLineItem,
    stripe_shared::InvoicePayment,
    stripe_shared::CheckoutSession,
    stripe_shared::CheckoutSessionItem,
    stripe_shared::Subscription,
    stripe_shared::Account,
    stripe_shared::Event,
);

impl FromRaw for Value {
    fn from_raw(raw: &Value) -> Result<Self, String> {
        Ok(raw.clone())
    }
}

/// No typed model at all: for callers that only keep the raw JSON (the sync), so pages are not
/// parsed twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOnly;

impl FromRaw for RawOnly {
    fn from_raw(_: &Value) -> Result<Self, String> {
        Ok(RawOnly)
    }
}

/// One object from Stripe: its typed model when it parses, and always its raw JSON (the
/// `raw` column of SPEC §3).
#[derive(Debug, Clone)]
pub struct Item<T> {
    /// The object's `id` (empty if Stripe sent none).
    pub id: String,
    /// The typed model, or why it did not parse.
    pub typed: Result<T, String>,
    /// The object exactly as Stripe sent it.
    pub raw: Value,
}

impl<T: FromRaw> Item<T> {
    /// Parse one raw object (NUL characters replaced, see [`crate::scrub_nul`]).
    pub fn from_raw(mut raw: Value) -> Self {
        crate::event::scrub_nul(&mut raw);
        Self::from_clean(raw)
    }

    /// Parse one raw object known to hold no NUL character.
    fn from_clean(raw: Value) -> Self {
        let typed = T::from_raw(&raw);
        if let Err(reason) = &typed {
            tracing::debug!(%reason, "typed parse failed; keeping raw JSON");
        }
        Item {
            id: raw
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            typed,
            raw,
        }
    }
}

impl<T> Item<T> {
    /// The typed model, if it parsed.
    pub fn typed(&self) -> Option<&T> {
        self.typed.as_ref().ok()
    }

    /// `created` (unix seconds) from the raw object.
    pub fn created(&self) -> Option<i64> {
        self.raw.get("created").and_then(Value::as_i64)
    }

    /// `livemode` from the raw object.
    pub fn livemode(&self) -> Option<bool> {
        self.raw.get("livemode").and_then(Value::as_bool)
    }

    /// `deleted: true` (a deleted customer or product retrieved by id).
    pub fn is_deleted(&self) -> bool {
        self.raw
            .get("deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The page's objects, in Stripe's order (newest first).
    pub items: Vec<Item<T>>,
    /// Whether Stripe has more after this page.
    pub has_more: bool,
}

/// `created[gt|gte|lt|lte]` in unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Created {
    /// `created[gt]`
    pub gt: Option<i64>,
    /// `created[gte]`
    pub gte: Option<i64>,
    /// `created[lt]`
    pub lt: Option<i64>,
    /// `created[lte]`
    pub lte: Option<i64>,
}

impl Created {
    /// No bound: everything.
    pub fn all() -> Self {
        Created::default()
    }

    /// `created[gte] = since`.
    pub fn since(since: i64) -> Self {
        Created {
            gte: Some(since),
            ..Created::default()
        }
    }

    fn push(&self, params: &mut Vec<(String, String)>) {
        for (key, v) in [
            ("created[gt]", self.gt),
            ("created[gte]", self.gte),
            ("created[lt]", self.lt),
            ("created[lte]", self.lte),
        ] {
            if let Some(v) = v {
                params.push((key.to_owned(), v.to_string()));
            }
        }
    }
}

/// A list request: path and parameters, paged with `starting_after` until `has_more` is false.
#[derive(Debug, Clone)]
pub struct ListRequest<T> {
    client: AccountClient,
    path: String,
    params: Vec<(String, String)>,
    _model: PhantomData<fn() -> T>,
}

impl<T: FromRaw> ListRequest<T> {
    /// A list of `path` (e.g. `/v1/customers`) with `limit=100`.
    pub fn new(client: AccountClient, path: impl Into<String>) -> Self {
        ListRequest {
            client,
            path: path.into(),
            params: vec![("limit".to_owned(), MAX_LIMIT.to_string())],
            _model: PhantomData,
        }
    }

    /// Add a parameter, key as Stripe spells it (`status`, `expand[]`, `types[]`, …).
    pub fn param(mut self, key: &str, value: impl Into<String>) -> Self {
        self.params.push((key.to_owned(), value.into()));
        self
    }

    /// The same request, yielding another model type (e.g. [`RawOnly`]).
    pub fn retype<U: FromRaw>(self) -> ListRequest<U> {
        ListRequest {
            client: self.client,
            path: self.path,
            params: self.params,
            _model: PhantomData,
        }
    }

    /// Replace the page size (clamped to 1–100).
    pub fn limit(mut self, limit: u32) -> Self {
        let limit = limit.clamp(1, MAX_LIMIT);
        self.params.retain(|(k, _)| k != "limit");
        self.params.push(("limit".to_owned(), limit.to_string()));
        self
    }

    /// Add `created[…]` bounds.
    pub fn created(mut self, created: Created) -> Self {
        created.push(&mut self.params);
        self
    }

    /// The path listed.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query of the first page (for logs and tests).
    pub fn query(&self) -> String {
        let pairs: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        encode_query(&pairs)
    }

    /// One page's body, after `starting_after`.
    async fn fetch(&self, starting_after: Option<&str>) -> Result<Bytes, StripeError> {
        let mut pairs: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(cursor) = starting_after {
            pairs.push(("starting_after", cursor));
        }
        self.client
            .request(
                StripeMethod::Get,
                &self.path,
                Some(encode_query(&pairs)),
                None,
                self.client.account.clone(),
            )
            .await
    }

    /// Fetch one page after `starting_after`.
    pub async fn page(&self, starting_after: Option<&str>) -> Result<Page<T>, StripeError> {
        parse_page(&self.fetch(starting_after).await?)
    }

    /// Every page, in order; stops after the first error.
    pub fn pages(self) -> BoxStream<'static, Result<Page<T>, StripeError>> {
        self.pages_after(None)
    }

    /// The pages after the object `starting_after` (resume a list that failed half-way from
    /// the last id written, or continue an embedded list such as an invoice's `lines`).
    pub fn pages_after(
        self,
        starting_after: Option<String>,
    ) -> BoxStream<'static, Result<Page<T>, StripeError>> {
        self.paged(starting_after, parse_page, |page| {
            (page.has_more, page.items.last().map(|i| i.id.clone()))
        })
    }

    /// Every page with its objects kept as text ([`TextPage`]), in order; stops after the
    /// first error.
    pub fn text_pages(self) -> BoxStream<'static, Result<TextPage, StripeError>> {
        self.paged(None, parse_text_page, |page| {
            (page.has_more, page.objects.last().and_then(|o| text_id(o)))
        })
    }

    /// Pages read by `parse`, each after the last id `next` finds in the one before, until
    /// `next` says there are no more.
    fn paged<P: Send + 'static>(
        self,
        starting_after: Option<String>,
        parse: fn(&[u8]) -> Result<P, StripeError>,
        next: fn(&P) -> (bool, Option<String>),
    ) -> BoxStream<'static, Result<P, StripeError>> {
        struct State<T> {
            req: ListRequest<T>,
            cursor: Option<String>,
            done: bool,
        }
        let state = State {
            req: self,
            cursor: starting_after,
            done: false,
        };
        stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            let page = match st.req.fetch(st.cursor.as_deref()).await {
                Ok(bytes) => parse(&bytes),
                Err(e) => Err(e),
            };
            match page {
                Ok(page) => {
                    // The cursor is the last object's id; without one, stop rather than loop.
                    let (has_more, last) = next(&page);
                    let last = last.filter(|id| !id.is_empty());
                    st.done = !has_more || last.is_none();
                    st.cursor = last;
                    Some((Ok(page), st))
                }
                Err(e) => {
                    st.done = true;
                    Some((Err(e), st))
                }
            }
        })
        .boxed()
    }

    /// Every object, page after page.
    pub fn items(self) -> BoxStream<'static, Result<Item<T>, StripeError>> {
        self.pages()
            .map_ok(|page| stream::iter(page.items.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Every object in memory (small lists: invoice or session line items).
    pub async fn collect_all(self) -> Result<Vec<Item<T>>, StripeError> {
        self.items().try_collect().await
    }
}

/// Read a list body: `{"object": "list", "data": [...], "has_more": bool}`.
pub fn parse_page<T: FromRaw>(bytes: &[u8]) -> Result<Page<T>, StripeError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| StripeError::Deserialize(format!("list page: {e}")))?;
    page_of(value, !crate::event::may_hold_nul(bytes))
}

/// [`parse_page`] from an already parsed list (an embedded `lines` or `line_items` list too).
pub fn page_from_value<T: FromRaw>(value: Value) -> Result<Page<T>, StripeError> {
    page_of(value, false)
}

/// A list's page; its objects are scrubbed of NUL characters unless `clean` says they hold none.
fn page_of<T: FromRaw>(mut value: Value, clean: bool) -> Result<Page<T>, StripeError> {
    let has_more = value
        .get("has_more")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let data = match value.get_mut("data").map(Value::take) {
        Some(Value::Array(data)) => data,
        _ => {
            return Err(StripeError::Deserialize(
                "list page without a data array".into(),
            ));
        }
    };
    let item = if clean {
        Item::from_clean
    } else {
        Item::from_raw
    };
    let items: VecDeque<Item<T>> = data.into_iter().map(item).collect();
    Ok(Page {
        items: items.into(),
        has_more,
    })
}

/// One page of a list with its objects kept as text: each exactly as Stripe sent it (NUL
/// characters replaced), not parsed into a tree. A caller that stores objects whole and reads
/// a few fields of each (the sync) parses those fields alone.
#[derive(Debug)]
pub struct TextPage {
    /// The page's objects, in Stripe's order (newest first).
    pub objects: Vec<Box<RawValue>>,
    /// Whether Stripe has more after this page.
    pub has_more: bool,
}

/// Read a list body into a [`TextPage`]: the objects are cut out of it, not parsed.
pub fn parse_text_page(bytes: &[u8]) -> Result<TextPage, StripeError> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        data: Option<Vec<&'a RawValue>>,
        #[serde(default)]
        has_more: bool,
    }
    if crate::event::may_hold_nul(bytes) {
        // Rare: scrubbed as a tree, then written back as text.
        let page = parse_page::<RawOnly>(bytes)?;
        let objects = page
            .items
            .into_iter()
            .map(|i| serde_json::value::to_raw_value(&i.raw))
            .collect::<Result<_, _>>()
            .map_err(|e| StripeError::Deserialize(format!("list page: {e}")))?;
        return Ok(TextPage {
            objects,
            has_more: page.has_more,
        });
    }
    let body: Body<'_> = serde_json::from_slice(bytes)
        .map_err(|e| StripeError::Deserialize(format!("list page: {e}")))?;
    let data = body
        .data
        .ok_or_else(|| StripeError::Deserialize("list page without a data array".into()))?;
    Ok(TextPage {
        objects: data.into_iter().map(RawValue::to_owned).collect(),
        has_more: body.has_more,
    })
}

/// The `id` of an object kept as text (`None` when it has none).
fn text_id(object: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_str::<Id>(object.get()).ok()?.id
}

/// The per-resource lists of SPEC §5 for one connected account.
impl AccountClient {
    /// Any list path (`/v1/…`), typed as `T`.
    pub fn list<T: FromRaw>(&self, path: &str) -> ListRequest<T> {
        ListRequest::new(self.clone(), path)
    }

    /// `GET /v1/products`.
    pub fn products(&self, created: Created) -> ListRequest<stripe_shared::Product> {
        self.list("/v1/products").created(created)
    }

    /// `GET /v1/prices`.
    pub fn prices(&self, created: Created) -> ListRequest<stripe_shared::Price> {
        self.list("/v1/prices").created(created)
    }

    /// `GET /v1/customers`.
    pub fn customers(&self, created: Created) -> ListRequest<stripe_shared::Customer> {
        self.list("/v1/customers").created(created)
    }

    /// `GET /v1/payment_intents`.
    pub fn payment_intents(&self, created: Created) -> ListRequest<stripe_shared::PaymentIntent> {
        self.list("/v1/payment_intents").created(created)
    }

    /// `GET /v1/charges` (the sync keeps those without a payment intent).
    pub fn charges(&self, created: Created) -> ListRequest<stripe_shared::Charge> {
        self.list("/v1/charges").created(created)
    }

    /// `GET /v1/refunds`.
    pub fn refunds(&self, created: Created) -> ListRequest<stripe_shared::Refund> {
        self.list("/v1/refunds").created(created)
    }

    /// `GET /v1/invoices` (each embeds its first 10 `lines`; see [`AccountClient::invoice_lines`]).
    pub fn invoices(&self, created: Created) -> ListRequest<stripe_shared::Invoice> {
        self.list("/v1/invoices").created(created)
    }

    /// `GET /v1/invoices/{id}/lines`: every line of one invoice.
    pub fn invoice_lines(&self, invoice_id: &str) -> ListRequest<stripe_shared::InvoiceLineItem> {
        self.list(&format!("/v1/invoices/{}/lines", path_segment(invoice_id)))
    }

    /// `GET /v1/invoice_payments`, all of the account's.
    pub fn invoice_payments(&self, created: Created) -> ListRequest<stripe_shared::InvoicePayment> {
        self.list("/v1/invoice_payments").created(created)
    }

    /// `GET /v1/invoice_payments?invoice=…`: one invoice's payments.
    pub fn invoice_payments_of(
        &self,
        invoice_id: &str,
    ) -> ListRequest<stripe_shared::InvoicePayment> {
        self.list("/v1/invoice_payments")
            .param("invoice", invoice_id)
    }

    /// `GET /v1/checkout/sessions` with `expand[]=data.line_items` (the first page of each
    /// session's lines is embedded; see [`AccountClient::checkout_session_line_items`]).
    pub fn checkout_sessions(
        &self,
        created: Created,
    ) -> ListRequest<stripe_shared::CheckoutSession> {
        self.list("/v1/checkout/sessions")
            .created(created)
            .param("expand[]", "data.line_items")
    }

    /// `GET /v1/checkout/sessions/{id}/line_items`.
    pub fn checkout_session_line_items(
        &self,
        session_id: &str,
    ) -> ListRequest<stripe_shared::CheckoutSessionItem> {
        self.list(&format!(
            "/v1/checkout/sessions/{}/line_items",
            path_segment(session_id)
        ))
    }

    /// `GET /v1/subscriptions?status=all&expand[]=data.discounts` (cancelled ones included;
    /// discounts expanded for MRR).
    pub fn subscriptions(&self, created: Created) -> ListRequest<stripe_shared::Subscription> {
        self.list("/v1/subscriptions")
            .created(created)
            .param("status", "all")
            .param("expand[]", "data.discounts")
    }

    /// `GET /v1/events` with `types[]` (empty for all types). Stripe takes at most 20 types:
    /// with more, no type filter is sent and every event comes back (the caller filters), so
    /// nothing is silently left out. Items are parsed leniently into [`crate::EventEnvelope`],
    /// which accepts any type and any API version's object shape.
    pub fn events(&self, created: Created, types: &[&str]) -> ListRequest<crate::EventEnvelope> {
        let mut req = self.list("/v1/events").created(created);
        if types.len() <= MAX_EVENT_TYPES {
            for t in types {
                req = req.param("types[]", *t);
            }
        }
        req
    }

    /// Every line of an invoice: the embedded `lines` of `invoice` (raw), then
    /// `/v1/invoices/{id}/lines` after the last embedded one when `lines.has_more`.
    pub async fn all_invoice_lines(
        &self,
        invoice: &Value,
    ) -> Result<Vec<Item<stripe_shared::InvoiceLineItem>>, StripeError> {
        let id = invoice
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let embedded = invoice.get("lines").filter(|v| v.is_object()).cloned();
        self.embedded_then_rest(embedded, self.invoice_lines(id))
            .await
    }

    /// Every line item of a checkout session: the embedded (expanded) `line_items` of
    /// `session` (raw), then `/v1/checkout/sessions/{id}/line_items` for the rest; all of them
    /// from the API when the session was not expanded.
    pub async fn all_checkout_session_line_items(
        &self,
        session: &Value,
    ) -> Result<Vec<Item<stripe_shared::CheckoutSessionItem>>, StripeError> {
        let id = session
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let embedded = session.get("line_items").filter(|v| v.is_object()).cloned();
        self.embedded_then_rest(embedded, self.checkout_session_line_items(id))
            .await
    }

    /// [`AccountClient::all_invoice_lines`] as raw JSON only (no typed parse).
    pub async fn all_invoice_lines_raw(&self, invoice: &Value) -> Result<Vec<Value>, StripeError> {
        let id = invoice
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let embedded = invoice.get("lines").filter(|v| v.is_object()).cloned();
        let items = self
            .embedded_then_rest(embedded, self.invoice_lines(id).retype::<RawOnly>())
            .await?;
        Ok(items.into_iter().map(|i| i.raw).collect())
    }

    /// [`AccountClient::all_checkout_session_line_items`] as raw JSON only (no typed parse).
    pub async fn all_checkout_session_line_items_raw(
        &self,
        session: &Value,
    ) -> Result<Vec<Value>, StripeError> {
        let id = session
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let embedded = session.get("line_items").filter(|v| v.is_object()).cloned();
        let rest = self.checkout_session_line_items(id).retype::<RawOnly>();
        let items = self.embedded_then_rest(embedded, rest).await?;
        Ok(items.into_iter().map(|i| i.raw).collect())
    }

    async fn embedded_then_rest<T: FromRaw>(
        &self,
        embedded: Option<Value>,
        rest: ListRequest<T>,
    ) -> Result<Vec<Item<T>>, StripeError> {
        let Some(embedded) = embedded else {
            return rest.collect_all().await;
        };
        let page: Page<T> = page_from_value(embedded)?;
        let mut items = page.items;
        let last = items
            .last()
            .map(|i| i.id.clone())
            .filter(|id| !id.is_empty());
        if page.has_more {
            let more: Vec<Page<T>> = rest.pages_after(last).try_collect().await?;
            items.extend(more.into_iter().flat_map(|p| p.items));
        }
        Ok(items)
    }
}

/// Ids go into paths: percent-encode anything that could change the path.
pub(crate) fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn client() -> AccountClient {
        crate::Stripe::new(crate::StripeConfig::new(SecretString::from("sk_test_x")))
            .expect("stripe")
            .account("acct_1")
            .expect("acct")
    }

    #[test]
    fn pages_are_scrubbed_of_nul_only_where_the_body_has_one() {
        let body = br#"{"object": "list", "has_more": false, "data": [
            {"id": "cus_1", "name": "a\u0000b", "metadata": {"k\u0000": "v"}},
            {"id": "cus_2", "name": "back\\u0000slash"}]}"#;
        let page = parse_page::<RawOnly>(body).expect("page");
        assert_eq!(page.items[0].raw["name"], "a\u{FFFD}b");
        assert_eq!(page.items[0].raw["metadata"]["k\u{FFFD}"], "v");
        // An escaped backslash before `u0000` is text, not a NUL: it stays as sent.
        assert_eq!(page.items[1].raw["name"], "back\\u0000slash");
        let clean = br#"{"object": "list", "has_more": true, "data": [{"id": "cus_3"}]}"#;
        let page = parse_page::<RawOnly>(clean).expect("page");
        assert_eq!(page.items[0].id, "cus_3");
        assert!(page.has_more);
    }

    #[test]
    fn text_pages_keep_each_object_as_sent_scrubbed_of_nul() {
        let body = br#"{"object": "list", "has_more": true, "data": [
            {"id": "cus_1", "name": "a b",  "n": 1.50},
            {"id": "cus_2", "email": "x@y.z"}]}"#;
        let page = parse_text_page(body).expect("page");
        assert!(page.has_more);
        // Each object is its own text, exactly as in the body.
        assert_eq!(
            page.objects[0].get(),
            r#"{"id": "cus_1", "name": "a b",  "n": 1.50}"#
        );
        assert_eq!(
            page.objects[1].get(),
            r#"{"id": "cus_2", "email": "x@y.z"}"#
        );
        assert_eq!(text_id(&page.objects[1]).as_deref(), Some("cus_2"));
        // A body with a NUL character is scrubbed as the tree pages are.
        let body = br#"{"object": "list", "data": [{"id": "cus_3", "name": "a\u0000b"}]}"#;
        let page = parse_text_page(body).expect("page");
        assert!(!page.has_more);
        let object: Value = serde_json::from_str(page.objects[0].get()).expect("json");
        assert_eq!(object["name"], "a\u{FFFD}b");
        // A page without data, or not JSON, is a clear error.
        for bad in [&br#"{"object": "list"}"#[..], b"<html>"] {
            let err = parse_text_page(bad).expect_err("not a page");
            assert!(matches!(err, StripeError::Deserialize(_)), "{err:?}");
        }
        let none = RawValue::from_string(r#"{"name": "no id"}"#.into()).expect("raw");
        assert_eq!(text_id(&none), None);
    }

    #[test]
    fn list_queries() {
        let c = client();
        assert_eq!(c.customers(Created::all()).query(), "limit=100");
        assert_eq!(
            c.customers(Created {
                gt: Some(1),
                gte: Some(2),
                lt: Some(3),
                lte: Some(4)
            })
            .query(),
            "limit=100&created%5Bgt%5D=1&created%5Bgte%5D=2&created%5Blt%5D=3&created%5Blte%5D=4"
        );
        assert_eq!(
            c.subscriptions(Created::since(5)).query(),
            "limit=100&created%5Bgte%5D=5&status=all&expand%5B%5D=data.discounts"
        );
        assert_eq!(
            c.checkout_sessions(Created::all()).query(),
            "limit=100&expand%5B%5D=data.line_items"
        );
        assert_eq!(
            c.invoice_payments_of("in_1").query(),
            "limit=100&invoice=in_1"
        );
        assert_eq!(c.invoice_lines("in_1").path(), "/v1/invoices/in_1/lines");
        assert_eq!(
            c.invoice_lines("in_1/../x").path(),
            "/v1/invoices/in_1%2F..%2Fx/lines"
        );
        assert_eq!(
            c.checkout_session_line_items("cs_1").path(),
            "/v1/checkout/sessions/cs_1/line_items"
        );
        assert_eq!(
            c.events(Created::since(9), &["invoice.paid", "customer.*"])
                .query(),
            "limit=100&created%5Bgte%5D=9&types%5B%5D=invoice.paid&types%5B%5D=customer.*"
        );
        assert_eq!(c.products(Created::all()).limit(500).query(), "limit=100");
        let many: Vec<String> = (0..21).map(|i| format!("t{i}.x")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            c.events(Created::all(), &many).query(),
            "limit=100",
            "more than 20 types: no filter, nothing dropped"
        );
    }

    #[test]
    fn page_keeps_raw_when_typed_fails() {
        let body = br#"{"object":"list","url":"/v1/customers","has_more":true,"data":[
            {"id":"cus_broken","object":"customer","surprise":true},
            {"id":"cus_2","object":"customer","created":5}
        ]}"#;
        let page: Page<stripe_shared::Customer> = parse_page(body).expect("page");
        assert!(page.has_more);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].id, "cus_broken");
        assert!(page.items[0].typed.is_err());
        assert_eq!(page.items[0].raw["surprise"], true);
        assert_eq!(page.items[1].created(), Some(5));
        assert!(parse_page::<Value>(b"{\"data\": 1}").is_err());
    }
}
