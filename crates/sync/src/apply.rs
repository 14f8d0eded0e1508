//! Applying one Stripe event to the mirror: the code path webhooks and the sync's events
//! phase share.
//!
//! Order is not guaranteed and several events share one `created` second, so an event is
//! applied only when it is newer than the stored row's `last_event_at`; on a tie, or when the
//! payload was rendered for another API version than the one we pin, the object is re-fetched
//! from the API instead of guessed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use tributary_domain::BusinessId;
use tributary_persistence::entities::*;
use tributary_persistence::mirror::{self, Text};
use tributary_stripe_connect::{AccountClient, EventEnvelope, STRIPE_VERSION};

use crate::SyncError;
use crate::map::{self, Stamp};

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The payload was written.
    Applied,
    /// The object was re-fetched from the API and written.
    Refetched,
    /// The object was marked deleted.
    Deleted,
    /// The stored row is newer: nothing changed.
    Stale,
    /// A type the mirror does not hold.
    Ignored,
}

impl Outcome {
    /// The outcome as recorded on the webhook event (`applied`, `refetched`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Refetched => "refetched",
            Self::Deleted => "deleted",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
        }
    }

    /// Whether the mirror changed (applied, re-fetched or deleted).
    pub fn changed(self) -> bool {
        matches!(self, Self::Applied | Self::Refetched | Self::Deleted)
    }
}

/// Whether the mirror holds the object `id` of type `object` (deleted or not).
async fn is_stored<C: sea_orm::ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    object: &str,
    id: &str,
) -> Result<bool, SyncError> {
    let mut versions = mirror::StoredVersions::default();
    ask_versions(&mut versions, conn, business, object, &[id])?;
    Ok(!versions.read(conn).await?.is_empty())
}

/// Adds the objects `ids` of one type to `versions`, tagged with the type (nothing for a type
/// the mirror does not hold).
fn ask_versions<C: sea_orm::ConnectionTrait>(
    versions: &mut mirror::StoredVersions,
    conn: &C,
    business: &BusinessId,
    object: &str,
    ids: &[&str],
) -> Result<(), tributary_persistence::PersistenceError> {
    let (v, b, db) = (versions, business, conn.get_database_backend());
    match object {
        "product" => v.ask::<stripe_products::Entity>(db, b, object, ids),
        "price" => v.ask::<stripe_prices::Entity>(db, b, object, ids),
        "customer" => v.ask::<stripe_customers::Entity>(db, b, object, ids),
        "payment_intent" | "charge" => v.ask::<stripe_orders::Entity>(db, b, object, ids),
        "refund" => v.ask::<stripe_refunds::Entity>(db, b, object, ids),
        "invoice" => v.ask::<stripe_invoices::Entity>(db, b, object, ids),
        "invoice_payment" => v.ask::<stripe_invoice_payments::Entity>(db, b, object, ids),
        "checkout.session" => v.ask::<stripe_checkout_sessions::Entity>(db, b, object, ids),
        "subscription" => v.ask::<stripe_subscriptions::Entity>(db, b, object, ids),
        _ => Ok(()),
    }
}

/// Object types stored in one table share one `last_event_at` per id: payment intents and
/// charges are both orders.
fn table_kind(object: &str) -> &str {
    if object == "charge" {
        "payment_intent"
    } else {
        object
    }
}

/// Whether the mirror holds objects of this type.
pub fn mirrored(object: &str) -> bool {
    matches!(
        object,
        "product"
            | "price"
            | "customer"
            | "payment_intent"
            | "charge"
            | "refund"
            | "invoice"
            | "invoice_payment"
            | "checkout.session"
            | "subscription"
    )
}

/// Writes one object (as the API or an event renders it) and its embedded children, inside the
/// caller's transaction. `client` fetches children the object does not embed in full (invoice
/// lines beyond the first 10, checkout session line items); without it they are left as they
/// are and the next sync fills them in.
pub async fn write_object<C: sea_orm::ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    object: &Value,
    stamp: Stamp<'_>,
    client: Option<&AccountClient>,
) -> Result<u64, SyncError> {
    let kind = object
        .get("object")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let deleted = object
        .get("deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if deleted {
        let n = mark_deleted(conn, business, kind, &id, stamp.at).await?;
        if n > 0 || is_stored(conn, business, kind, &id).await? {
            return Ok(n);
        }
        // Nothing stored yet: the object is written as a tombstone (it says `deleted`), so an
        // older event (a creation delivered late, or read later from the newest-first events
        // list) cannot bring it back.
    }
    object_rows(object, stamp, client)
        .await?
        .commit(conn, business)
        .await
}

/// The rows of one object (as the API or an event renders it) and of its embedded children;
/// `client` fetches what the object does not embed in full (see [`write_object`]).
async fn object_rows(
    object: &Value,
    stamp: Stamp<'_>,
    client: Option<&AccountClient>,
) -> Result<Rows, SyncError> {
    let kind = object
        .get("object")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
    let mut rows = Rows::default();
    match kind {
        "product" => rows.products.push(map::product(stamp, object).into()),
        "price" => rows.prices.push(map::price(stamp, object).into()),
        "customer" => rows.customers.push(map::customer(stamp, object).into()),
        "payment_intent" => rows.orders.push(map::payment_intent(stamp, object).into()),
        "charge" => {
            rows.orders
                .extend(map::charge(stamp, object).map(Text::from));
            // A refunded charge (`charge.refunded`) names its refunds only by amount, and Stripe
            // does not always send a `refund.*` event beside it: read the charge's refunds.
            let refunded = object
                .get("amount_refunded")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0;
            if let Some(client) = client
                && refunded
            {
                let refunds = client
                    .list::<Value>("/v1/refunds")
                    .param("charge", id)
                    .collect_all()
                    .await?;
                rows.refunds
                    .extend(refunds.iter().map(|r| map::refund(stamp, &r.raw).into()));
            }
        }
        "refund" => rows.refunds.push(map::refund(stamp, object).into()),
        "invoice" => {
            let row = map::invoice(stamp, object);
            let lines = invoice_lines(object, client).await?;
            rows.invoice_lines.extend(
                lines
                    .iter()
                    .map(|l| map::invoice_line(stamp, id, row.created, l).into()),
            );
            rows.invoices.push(row.into());
            // A change to an invoice (voided, paid, retried) changes its invoice payments too,
            // and Stripe sends no event of theirs for most of those changes: re-read them.
            if let Some(client) = client {
                let payments = client.invoice_payments_of(id).collect_all().await?;
                rows.invoice_payments.extend(
                    payments
                        .iter()
                        .map(|p| map::invoice_payment(stamp, &p.raw).into()),
                );
            }
        }
        "invoice_payment" => rows
            .invoice_payments
            .push(map::invoice_payment(stamp, object).into()),
        "checkout.session" => {
            let row = map::checkout_session(stamp, object);
            let lines = session_lines(object, client).await?;
            rows.session_lines.extend(
                lines
                    .iter()
                    .map(|l| map::checkout_line(stamp, id, row.created, l).into()),
            );
            rows.sessions.push(row.into());
        }
        "subscription" => {
            rows.subscriptions
                .push(map::subscription(stamp, object).into());
            rows.subscription_items.extend(
                map::subscription_items(stamp, object)
                    .into_iter()
                    .map(Text::from),
            );
        }
        _ => {}
    }
    Ok(rows)
}

/// Mirror rows to write in one transaction: a page of the sync, or one object with its
/// children. The one place rows reach the mirror tables. Each row carries its `raw` as JSON
/// text: serialised from its tree, or the object's text as it was listed
/// ([`map::fields_of`]).
#[derive(Default, Clone)]
pub(crate) struct Rows {
    pub(crate) products: Vec<Text<stripe_products::Model>>,
    pub(crate) prices: Vec<Text<stripe_prices::Model>>,
    pub(crate) customers: Vec<Text<stripe_customers::Model>>,
    pub(crate) orders: Vec<Text<stripe_orders::Model>>,
    pub(crate) refunds: Vec<Text<stripe_refunds::Model>>,
    pub(crate) invoices: Vec<Text<stripe_invoices::Model>>,
    pub(crate) invoice_lines: Vec<Text<stripe_invoice_line_items::Model>>,
    pub(crate) invoice_payments: Vec<Text<stripe_invoice_payments::Model>>,
    pub(crate) sessions: Vec<Text<stripe_checkout_sessions::Model>>,
    pub(crate) session_lines: Vec<Text<stripe_checkout_line_items::Model>>,
    pub(crate) subscriptions: Vec<Text<stripe_subscriptions::Model>>,
    pub(crate) subscription_items: Vec<Text<stripe_subscription_items::Model>>,
}

impl Rows {
    /// Adds `other`'s rows to these (an object twice keeps its newest version when written).
    fn append(&mut self, mut other: Rows) {
        self.products.append(&mut other.products);
        self.prices.append(&mut other.prices);
        self.customers.append(&mut other.customers);
        self.orders.append(&mut other.orders);
        self.refunds.append(&mut other.refunds);
        self.invoices.append(&mut other.invoices);
        self.invoice_lines.append(&mut other.invoice_lines);
        self.invoice_payments.append(&mut other.invoice_payments);
        self.sessions.append(&mut other.sessions);
        self.session_lines.append(&mut other.session_lines);
        self.subscriptions.append(&mut other.subscriptions);
        self.subscription_items
            .append(&mut other.subscription_items);
    }

    /// Upserts every row; returns the parent rows written (line items are not counted).
    pub(crate) async fn commit<C: sea_orm::ConnectionTrait>(
        self,
        txn: &C,
        b: &BusinessId,
    ) -> Result<u64, SyncError> {
        let mut n = 0;
        n += mirror::upsert_text::<stripe_products::Entity, _>(txn, b, self.products).await?;
        n += mirror::upsert_text::<stripe_prices::Entity, _>(txn, b, self.prices).await?;
        n += mirror::upsert_text::<stripe_customers::Entity, _>(txn, b, self.customers).await?;
        n += mirror::upsert_text::<stripe_orders::Entity, _>(txn, b, self.orders).await?;
        n += mirror::upsert_text::<stripe_refunds::Entity, _>(txn, b, self.refunds).await?;
        n += mirror::upsert_text::<stripe_invoices::Entity, _>(txn, b, self.invoices).await?;
        mirror::upsert_text::<stripe_invoice_line_items::Entity, _>(txn, b, self.invoice_lines)
            .await?;
        n += mirror::upsert_text::<stripe_invoice_payments::Entity, _>(
            txn,
            b,
            self.invoice_payments,
        )
        .await?;
        n += mirror::upsert_text::<stripe_checkout_sessions::Entity, _>(txn, b, self.sessions)
            .await?;
        mirror::upsert_text::<stripe_checkout_line_items::Entity, _>(txn, b, self.session_lines)
            .await?;
        n += mirror::upsert_text::<stripe_subscriptions::Entity, _>(txn, b, self.subscriptions)
            .await?;
        mirror::upsert_text::<stripe_subscription_items::Entity, _>(
            txn,
            b,
            self.subscription_items,
        )
        .await?;
        Ok(n)
    }
}

/// An invoice's lines: the embedded ten, and with a `client` the rest when there are more.
pub(crate) async fn invoice_lines(
    invoice: &Value,
    client: Option<&AccountClient>,
) -> Result<Vec<Value>, SyncError> {
    let embedded = invoice.get("lines").filter(|l| l.is_object());
    let has_more = embedded
        .and_then(|l| l.get("has_more"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match (embedded, client) {
        (Some(_), Some(client)) if has_more => Ok(client.all_invoice_lines_raw(invoice).await?),
        (Some(lines), _) => Ok(lines
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()),
        (None, _) => Ok(Vec::new()),
    }
}

/// A checkout session's line items: the embedded page when complete, else (with a `client`)
/// all of them.
pub(crate) async fn session_lines(
    session: &Value,
    client: Option<&AccountClient>,
) -> Result<Vec<Value>, SyncError> {
    let embedded = session.get("line_items").filter(|l| l.is_object());
    let complete =
        embedded.is_some_and(|l| !l.get("has_more").and_then(Value::as_bool).unwrap_or(false));
    match (embedded, client) {
        (Some(lines), _) if complete => Ok(lines
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()),
        (_, Some(client)) => Ok(client.all_checkout_session_line_items_raw(session).await?),
        (Some(lines), None) => Ok(lines
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()),
        (None, None) => Ok(Vec::new()),
    }
}

async fn mark_deleted<C: sea_orm::ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    kind: &str,
    id: &str,
    at: i64,
) -> Result<u64, SyncError> {
    let ids = [id.to_owned()];
    let n = match kind {
        "product" => {
            mirror::mark_deleted::<stripe_products::Entity, _>(conn, business, &ids, at).await?
        }
        "price" => {
            mirror::mark_deleted::<stripe_prices::Entity, _>(conn, business, &ids, at).await?
        }
        "customer" => {
            mirror::mark_deleted::<stripe_customers::Entity, _>(conn, business, &ids, at).await?
        }
        "invoice" => {
            mirror::mark_deleted::<stripe_invoices::Entity, _>(conn, business, &ids, at).await?
        }
        "subscription" => {
            mirror::mark_deleted::<stripe_subscriptions::Entity, _>(conn, business, &ids, at)
                .await?
        }
        _ => 0,
    };
    Ok(n)
}

/// Whether the event deletes its object (written as deleted, not from its payload).
fn deletes(event: &EventEnvelope, kind: &str) -> bool {
    let deleted_event = event.event_type.ends_with(".deleted")
        && matches!(kind, "product" | "price" | "customer" | "invoice");
    deleted_event || event.object.get("deleted").and_then(Value::as_bool) == Some(true)
}

/// Whether the payload can be written as it is (rendered in our API version, nothing left
/// unexpanded): otherwise, with a client, the object is re-fetched.
fn payload_complete(event: &EventEnvelope, kind: &str) -> bool {
    let foreign_version = event
        .api_version
        .as_deref()
        .is_some_and(|v| v != STRIPE_VERSION);
    !foreign_version && !incomplete(kind, &event.object)
}

/// Whether an event payload lacks what the mirror needs: subscriptions list with their
/// discounts expanded (MRR subtracts them), event payloads name them by id only.
fn incomplete(kind: &str, object: &Value) -> bool {
    kind == "subscription"
        && object
            .get("discounts")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(Value::is_string))
}

/// Reads the current state of an object, rendered as the sync's lists render it.
pub async fn refetch(
    client: &AccountClient,
    kind: &str,
    id: &str,
) -> Result<Option<tributary_stripe_connect::Item<Value>>, tributary_stripe_connect::StripeError> {
    match (kind, tributary_stripe_connect::retrieve_path(kind, id)) {
        ("subscription", Some(path)) => client
            .retrieve(&path, &[("expand[]", "discounts")])
            .await
            .map(Some),
        _ => client.retrieve_object(kind, id).await,
    }
}

/// Applies one event of `business`, inside the caller's transaction, and brings the
/// `customer_spend` rows of every email the change touches (before and after it) and the
/// subscription's MRR snapshot of the day up to date in the same transaction. `client`, when
/// given, re-fetches on ties, foreign API versions and incomplete payloads (and fetches
/// children); without it the payload is applied when it is not older than the stored row.
pub async fn apply_event<C: sea_orm::ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    event: &EventEnvelope,
    now: i64,
    client: Option<&AccountClient>,
) -> Result<Outcome, SyncError> {
    let (mut batch, _) = EventBatch::begin(conn, business, [event]).await?;
    let outcomes = batch
        .apply(conn, &[(event, now)], &[], client)
        .await
        .map_err(|f| *f.error)?;
    batch.finish(conn, now).await?;
    Ok(outcomes.first().copied().unwrap_or(Outcome::Ignored))
}

/// How many Stripe reads (re-fetches, and children: invoice payments, long invoices' lines,
/// refunds of refunded charges) a batch of events makes at once. The account's rate budget
/// still paces them.
pub(crate) const STRIPE_READS_AT_ONCE: usize = 8;

/// Runs `reads` [`STRIPE_READS_AT_ONCE`] at a time; their results in order. Boxed, and made
/// before they are streamed: a stream holding the closure that makes them would not be `Send`
/// (the compiler cannot prove it for a closure over borrowed arguments), and unboxed their
/// types nest too deep for callers that spawn the sync.
pub(crate) async fn at_once<'a, T>(
    reads: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'a>,
) -> Vec<T> {
    use futures::{FutureExt, StreamExt};
    let reads: Vec<_> = reads.map(FutureExt::boxed).collect();
    futures::stream::iter(reads)
        .buffered(STRIPE_READS_AT_ONCE)
        .collect()
        .await
}

/// Several events of one business applied in one transaction (webhook deliveries that
/// arrived together, a page of the sync's events), with the read models brought up to date
/// once for all of them: [`EventBatch::begin`] locks the business and notes what the events'
/// objects link to before them, [`EventBatch::apply`] applies them (a caller whose event fails
/// on Stripe rolls the transaction back and starts again without it), [`EventBatch::finish`]
/// recomputes the spend of every email touched before or after, and the MRR snapshots of the
/// changed subscriptions.
///
/// The emails linked to the touched objects before the first event and after the last are
/// all whose spend can differ between the two states, as for a page of objects: one walk
/// after the last event, seeded with the objects and what they linked to before the first,
/// finds both ([`crate::readmodel::refresh_after`]).
#[derive(Debug)]
pub struct EventBatch<'a> {
    business: &'a BusinessId,
    touched: crate::readmodel::Touched,
    before: crate::readmodel::Touched,
    changed: bool,
    subscriptions: std::collections::BTreeSet<String>,
}

/// An event of a batch that could not be applied. A [`SyncError::Stripe`] is that event's own
/// (the caller may apply the others again without it); any other error is the database's and
/// fails the batch (`index` is then the event being written, or the first).
#[derive(Debug)]
pub struct Failed {
    /// The event's position in the slice given to [`EventBatch::apply`].
    pub index: usize,
    /// What failed.
    pub error: Box<SyncError>,
}

/// How one event of a batch is applied, decided from the stored versions and the events
/// before it in the batch.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Nothing to write.
    Done(Outcome),
    /// Mark the object deleted as of `at`.
    Delete { at: i64 },
    /// Write the payload (or, with `refetch`, the object read again from the API) as of `at`.
    Write { refetch: bool, at: i64 },
}

/// What a [`Step::Write`] read and built before anything is written.
enum Built {
    /// The rows of the object and its children.
    Rows(Box<Rows>, Outcome),
    /// The re-fetched object, to write through [`write_object`] in order (it came back
    /// deleted).
    Object(Value),
    /// Stripe does not know the object (`refetched`: the re-fetch itself said so) or its
    /// children.
    Gone { refetched: bool },
}

/// An event's rows as [`EventBatch::apply`] would build them from its payload (with the
/// children it reads from Stripe: a refunded charge's refunds, a session's line items, an
/// invoice's payments and long lists of lines), made by [`prefetch`] before the event's turn.
/// The batch uses them when it writes the event from its payload (a stale event's are
/// dropped; an event tied with the stored version is re-fetched in its turn as ever).
#[derive(Clone)]
pub struct Prefetched(Ahead);

#[derive(Clone)]
enum Ahead {
    Rows(Box<Rows>),
    /// Stripe answered `404` for the object's children (see [`Built::Gone`]).
    Gone,
}

impl std::fmt::Debug for Prefetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Ahead::Rows(_) => "Prefetched(rows)",
            Ahead::Gone => "Prefetched(gone)",
        })
    }
}

/// Reads from Stripe what writing `event` (received at `now`) from its payload needs, and
/// builds its rows, writing nothing and holding no lock: a webhook delivery does it while it
/// waits for its turn, so the turn that holds the business's lock neither waits on Stripe nor
/// maps payloads for it. `None` when the event is not written from its payload (a deletion, a
/// foreign API version, an incomplete payload: the turn decides) or Stripe failed (the turn
/// reads again, and answers that failure as it would have).
pub async fn prefetch(
    business: &BusinessId,
    event: &EventEnvelope,
    now: i64,
    client: Option<&AccountClient>,
) -> Option<Prefetched> {
    let kind = event.object_type().filter(|k| mirrored(k))?;
    if deletes(event, kind) || !payload_complete(event, kind) {
        return None;
    }
    let stamp = Stamp {
        business_id: business.as_str(),
        at: event.created,
        now,
    };
    match object_rows(&event.object, stamp, client).await {
        Ok(rows) => Some(Prefetched(Ahead::Rows(Box::new(rows)))),
        Err(SyncError::Stripe(tributary_stripe_connect::StripeError::NotFound { .. })) => {
            Some(Prefetched(Ahead::Gone))
        }
        Err(_) => None,
    }
}

impl<'a> EventBatch<'a> {
    /// Locks the business for writing (exclusively: bumping its data version) and notes what
    /// the objects of the `events` link to now. Returns the connection row the lock read
    /// (`None`: the business has none).
    pub async fn begin<'e, C: sea_orm::ConnectionTrait>(
        conn: &C,
        business: &'a BusinessId,
        events: impl IntoIterator<Item = &'e EventEnvelope>,
    ) -> Result<(Self, Option<stripe_access::Model>), SyncError> {
        let (mut batch, connection) = Self::lock(conn, business, events).await?;
        batch.before = crate::readmodel::linked_before(conn, business, &batch.touched).await?;
        Ok((batch, connection))
    }

    /// [`EventBatch::begin`] without noting the links. The rest of the transaction plans
    /// each statement once ([`tributary_persistence::plan_once`]): a batch is many small
    /// lookups by arrays of ids (stored versions, the link-graph walk, the spend refresh). The
    /// caller reads the links with
    /// [`crate::readmodel::linked_before`] of [`EventBatch::touched`] and hands them to
    /// [`EventBatch::before`] before [`EventBatch::finish`]. While the lock is held no other
    /// writer of the business commits, so that read may run on another connection, beside
    /// this transaction's own work, and still see the state before the first event (what
    /// this transaction writes stays invisible to it until the commit).
    pub async fn lock<'e, C: sea_orm::ConnectionTrait>(
        conn: &C,
        business: &'a BusinessId,
        events: impl IntoIterator<Item = &'e EventEnvelope>,
    ) -> Result<(Self, Option<stripe_access::Model>), SyncError> {
        tributary_persistence::plan_once(conn).await?;
        // Writers of one business take turns (PostgreSQL; SQLite serialises writers anyway).
        let connection =
            tributary_persistence::access::lock_for_write(conn, business, true).await?;
        let mut touched = crate::readmodel::Touched::default();
        for event in events {
            crate::readmodel::touch(&mut touched, &event.object);
        }
        let batch = Self {
            business,
            touched,
            before: Default::default(),
            changed: false,
            subscriptions: Default::default(),
        };
        Ok((batch, connection))
    }

    /// The objects the batch's events name (whose links [`EventBatch::lock`] did not read).
    pub fn touched(&self) -> &crate::readmodel::Touched {
        &self.touched
    }

    /// Adds what the touched objects linked to before the first event.
    pub fn before(&mut self, links: crate::readmodel::Touched) {
        self.before.extend(links);
    }

    /// Applies `events` (each with the time it was received; all of them given to
    /// [`EventBatch::begin`]) in order, as if one after another: the stored versions of their
    /// objects are read in one statement ([`mirror::StoredVersions`]), the Stripe reads they
    /// need run eight at a time before anything is written, and the rows of all of them are
    /// written in one statement per table (deletions in their place in the order). `ahead`
    /// holds, by position, what [`prefetch`] made of events before their turn (it may be
    /// shorter than `events`): their Stripe reads are not made again.
    /// Returns each event's outcome.
    pub async fn apply<C: sea_orm::ConnectionTrait>(
        &mut self,
        conn: &C,
        events: &[(&EventEnvelope, i64)],
        ahead: &[Option<&Prefetched>],
        client: Option<&AccountClient>,
    ) -> Result<Vec<Outcome>, Failed> {
        let business = self.business;
        let steps = plan(conn, business, events, client)
            .await
            .map_err(|error| Failed {
                index: 0,
                error: Box::new(error),
            })?;
        let built = at_once(events.iter().zip(&steps).enumerate().map(
            |(i, (&(event, now), step))| async move {
                let Step::Write { refetch, at } = *step else {
                    return None;
                };
                Some(match ahead.get(i).copied().flatten() {
                    // Built from the payload, stamped with the event's `created`, as here.
                    Some(Prefetched(made)) if !refetch => Ok(match made {
                        Ahead::Rows(rows) => Built::Rows(rows.clone(), Outcome::Applied),
                        Ahead::Gone => Built::Gone { refetched: false },
                    }),
                    _ => build(business, event, now, refetch, at, client).await,
                })
            },
        ))
        .await;
        // A Stripe failure is answered before anything of the batch is written.
        let mut built: Vec<Option<Built>> = built
            .into_iter()
            .enumerate()
            .map(|(index, b)| {
                b.transpose().map_err(|error| Failed {
                    index,
                    error: Box::new(error),
                })
            })
            .collect::<Result<_, _>>()?;

        let mut rows = Rows::default();
        let mut outcomes = Vec::with_capacity(events.len());
        for (index, (&(event, now), step)) in events.iter().zip(steps).enumerate() {
            let fail = |error| Failed {
                index,
                error: Box::new(error),
            };
            let kind = event.object_type().unwrap_or_default();
            let id = event.object_id().unwrap_or_default();
            let stamp = |at| Stamp {
                business_id: business.as_str(),
                at,
                now,
            };
            let outcome = match (step, built[index].take()) {
                (Step::Done(outcome), _) => outcome,
                (Step::Write { .. }, None) => Outcome::Ignored,
                (Step::Write { .. }, Some(Built::Rows(r, outcome))) => {
                    rows.append(*r);
                    outcome
                }
                // The rest write in their place in the order: what came before first.
                (Step::Delete { at }, _) => {
                    std::mem::take(&mut rows)
                        .commit(conn, business)
                        .await
                        .map_err(fail)?;
                    let mut object = event.object.clone();
                    if let Some(o) = object.as_object_mut() {
                        o.insert("deleted".into(), Value::Bool(true));
                    }
                    write_object(conn, business, &object, stamp(at), None)
                        .await
                        .map_err(fail)?;
                    Outcome::Deleted
                }
                (Step::Write { at, .. }, Some(Built::Object(object))) => {
                    std::mem::take(&mut rows)
                        .commit(conn, business)
                        .await
                        .map_err(fail)?;
                    write_object(conn, business, &object, stamp(at), None)
                        .await
                        .map_err(fail)?;
                    Outcome::Refetched
                }
                (Step::Write { .. }, Some(Built::Gone { refetched })) => {
                    std::mem::take(&mut rows)
                        .commit(conn, business)
                        .await
                        .map_err(fail)?;
                    let n = mark_deleted(conn, business, kind, id, now)
                        .await
                        .map_err(fail)?;
                    if refetched || n > 0 {
                        Outcome::Deleted
                    } else {
                        tracing::info!(business_id = %business, object = kind, id, "Stripe does not know the event's object; not applied");
                        Outcome::Ignored
                    }
                }
            };
            if outcome.changed() {
                self.changed = true;
                if kind == "subscription" {
                    self.subscriptions.insert(id.to_owned());
                }
            }
            outcomes.push(outcome);
        }
        rows.commit(conn, business).await.map_err(|error| Failed {
            index: events.len().saturating_sub(1),
            error: Box::new(error),
        })?;
        Ok(outcomes)
    }

    /// Recomputes the spend of the emails the applied events touched and the day's MRR
    /// snapshot of their subscriptions.
    pub async fn finish<C: sea_orm::ConnectionTrait>(
        mut self,
        conn: &C,
        now: i64,
    ) -> Result<(), SyncError> {
        if !self.changed {
            return Ok(());
        }
        let business = self.business;
        let before = std::mem::take(&mut self.before);
        crate::readmodel::refresh_after(conn, business, &self.touched, before, now).await?;
        let day = crate::readmodel::day_of(now);
        let subscriptions: Vec<&str> = self.subscriptions.iter().map(String::as_str).collect();
        crate::readmodel::snapshot_subscriptions(conn, business, &subscriptions, &day).await?;
        Ok(())
    }
}

/// Decides each event's [`Step`], in order, as if the events before it had been written:
/// an event is applied only when it is not older than the stored row's `last_event_at` (or
/// an earlier event's of the batch); on a tie, a foreign API version or an incomplete payload
/// the object is re-fetched when a `client` is given.
async fn plan<C: sea_orm::ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    events: &[(&EventEnvelope, i64)],
    client: Option<&AccountClient>,
) -> Result<Vec<Step>, SyncError> {
    fn objects(event: &EventEnvelope) -> Option<(&str, &str)> {
        Some((
            event.object_type().filter(|k| mirrored(k))?,
            event.object_id()?,
        ))
    }
    let mut ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (kind, id) in events.iter().filter_map(|(e, _)| objects(e)) {
        ids.entry(table_kind(kind)).or_default().push(id);
    }
    // One statement for every table's stored versions.
    let mut versions = mirror::StoredVersions::default();
    for (kind, list) in &ids {
        ask_versions(&mut versions, conn, business, kind, list)?;
    }
    // Keyed by (table kind, id), as asked.
    let mut known = versions.read(conn).await?;
    Ok(events
        .iter()
        .map(|&(event, now)| {
            let Some((kind, id)) = objects(event) else {
                return Step::Done(Outcome::Ignored);
            };
            let key = (table_kind(kind).to_owned(), id.to_owned());
            let stored = known.get(&key).copied();
            if stored.is_some_and(|at| at > event.created) {
                return Step::Done(Outcome::Stale);
            }
            if deletes(event, kind) {
                known.insert(key, event.created);
                return Step::Delete { at: event.created };
            }
            let tie = stored == Some(event.created);
            let refetch = client.is_some() && (tie || !payload_complete(event, kind));
            // A re-fetched object is stamped with the moment the read was sent.
            let at = if refetch { now } else { event.created };
            known.insert(key, stored.map_or(at, |s| s.max(at)));
            Step::Write { refetch, at }
        })
        .collect())
}

/// Reads what a [`Step::Write`] needs from Stripe and builds its rows, writing nothing.
async fn build(
    business: &BusinessId,
    event: &EventEnvelope,
    now: i64,
    refetch: bool,
    at: i64,
    client: Option<&AccountClient>,
) -> Result<Built, SyncError> {
    let kind = event.object_type().unwrap_or_default();
    let id = event.object_id().unwrap_or_default();
    let (object, outcome) = match client {
        Some(client) if refetch => match self::refetch(client, kind, id).await {
            Ok(Some(item)) => (Cow::Owned(item.raw), Outcome::Refetched),
            Ok(None) => return Ok(Built::Rows(Box::default(), Outcome::Ignored)),
            Err(tributary_stripe_connect::StripeError::NotFound { .. }) => {
                return Ok(Built::Gone { refetched: true });
            }
            Err(e) => return Err(e.into()),
        },
        _ => (Cow::Borrowed(&event.object), Outcome::Applied),
    };
    if object.get("deleted").and_then(Value::as_bool) == Some(true) {
        return Ok(Built::Object(object.into_owned()));
    }
    let stamp = Stamp {
        business_id: business.as_str(),
        at,
        now,
    };
    match object_rows(&object, stamp, client).await {
        Ok(rows) => Ok(Built::Rows(Box::new(rows), outcome)),
        // Stripe answered `404` for the children of the event's object (an invoice's lines, a
        // session's line items): the object is gone, or never existed (a forged event on a
        // business's own endpoint). Nothing of the payload is written; a stored row is marked
        // deleted. Answering an error instead would have Stripe deliver the event again for
        // three days.
        Err(SyncError::Stripe(tributary_stripe_connect::StripeError::NotFound { .. })) => {
            Ok(Built::Gone { refetched: false })
        }
        Err(e) => Err(e),
    }
}
