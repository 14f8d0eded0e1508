//! Read-side queries behind the Contacts, Sales and dashboard routes (SPEC §8, §9). Every
//! function takes the business id; every query is served by an index that starts with
//! `business_id` (see `docs/performance.md`, "Read paths").

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Select,
};
use tributary_domain::spend::{self, SpendFacts};
use tributary_domain::{BusinessId, Currency, Email};

use crate::PersistenceError;
use crate::entities::*;

/// Largest `IN (…)` list one statement carries.
const CHUNK: usize = 500;

/// How the customers grid is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpendSort {
    /// Net spend: in the filter currency when one is given, else the primary currency.
    TotalSpent,
    /// The email's latest purchase in any currency.
    LastPurchase,
    /// The normalised email.
    Email,
}

/// One page request of the customers grid.
#[derive(Debug, Clone)]
pub struct SpendQuery {
    /// The page, from 1.
    pub page: u64,
    /// Emails per page.
    pub per_page: u64,
    /// The sort key.
    pub sort: SpendSort,
    /// Whether the sort is descending (ties: email ascending).
    pub descending: bool,
    /// Case-insensitive substring of the email or the name.
    pub search: Option<String>,
    /// Only emails with spend in this currency, sorted by their net in it.
    pub currency: Option<Currency>,
}

impl SpendQuery {
    /// The search text, when there is one (blank is none).
    pub fn search(&self) -> Option<&str> {
        self.search.as_deref().filter(|s| !s.trim().is_empty())
    }
}

/// A page of emails (in grid order) with every `customer_spend` row of each, and the total.
#[derive(Debug, Clone, Default)]
pub struct SpendPage {
    /// The page's emails, in grid order.
    pub emails: Vec<String>,
    /// Every `customer_spend` row of those emails (one per currency), by email.
    pub rows: BTreeMap<String, Vec<customer_spend::Model>>,
    /// Emails matching the query, over all pages.
    pub total: u64,
}

fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The filter of the customers grid: one row per email (its primary-currency row, or its row
/// in the requested currency), optionally searched.
fn grid_condition(business: &BusinessId, q: &SpendQuery) -> Condition {
    use customer_spend::Column as Col;
    let mut cond = Condition::all().add(Col::BusinessId.eq(business.as_str()));
    cond = match &q.currency {
        Some(c) => cond.add(Col::Currency.eq(c.as_str())),
        None => cond.add(Col::IsPrimary.eq(true)),
    };
    if let Some(text) = q.search() {
        let pattern = like_pattern(text);
        cond = cond.add(
            Condition::any()
                .add(Expr::col(Col::Email).like(LikeExpr::new(pattern.clone()).escape('\\')))
                .add(
                    Expr::expr(Func::lower(Expr::col(Col::Name)))
                        .like(LikeExpr::new(pattern).escape('\\')),
                ),
        );
    }
    cond
}

/// The query counting the grid's rows (exposed for the query-plan test).
pub fn grid_count_select(business: &BusinessId, q: &SpendQuery) -> Select<customer_spend::Entity> {
    customer_spend::Entity::find().filter(grid_condition(business, q))
}

/// The query of one grid page, in grid order (exposed for the query-plan test).
pub fn grid_page_select(business: &BusinessId, q: &SpendQuery) -> Select<customer_spend::Entity> {
    use customer_spend::Column as Col;
    let dir = if q.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    let mut select = customer_spend::Entity::find().filter(grid_condition(business, q));
    select = match q.sort {
        SpendSort::TotalSpent => select.order_by(Col::Net, dir.clone()),
        SpendSort::LastPurchase => select.order_by(Col::EmailLastPurchaseAt, dir.clone()),
        SpendSort::Email => select,
    };
    select
        .order_by(
            Col::Email,
            if q.sort == SpendSort::Email {
                dir
            } else {
                Order::Asc
            },
        )
        .offset((q.page.saturating_sub(1)).saturating_mul(q.per_page))
        .limit(q.per_page)
}

/// One page of the customers grid, one row per email: the email's primary-currency row picks
/// the order (or its row in the requested currency), then every currency row of the page's
/// emails is read by primary key.
pub async fn spend_page<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    q: &SpendQuery,
) -> Result<SpendPage, PersistenceError> {
    let total = grid_count_select(business, q).count(conn).await?;
    let leading = grid_page_select(business, q).all(conn).await?;
    let emails: Vec<String> = leading.into_iter().map(|r| r.email).collect();
    let rows = spend_of_emails(conn, business, &emails).await?;
    Ok(SpendPage {
        emails,
        rows,
        total,
    })
}

/// Every `customer_spend` row of the given normalised emails, grouped by email, currencies in
/// code order. Emails without spend are absent.
pub async fn spend_of_emails<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    emails: &[String],
) -> Result<BTreeMap<String, Vec<customer_spend::Model>>, PersistenceError> {
    use customer_spend::Column as Col;
    let mut out: BTreeMap<String, Vec<customer_spend::Model>> = BTreeMap::new();
    for chunk in emails.chunks(CHUNK) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let rows = customer_spend::Entity::find()
            .filter(Col::BusinessId.eq(business.as_str()))
            .filter(one_of(conn.get_database_backend(), Col::Email, &chunk))
            .order_by_asc(Col::Email)
            .order_by_asc(Col::Currency)
            .all(conn)
            .await?;
        for r in rows {
            out.entry(r.email.clone()).or_default().push(r);
        }
    }
    Ok(out)
}

/// Every `customer_spend` row of one business in memory, in the database's `(email, currency)`
/// order, answering the customers grid and the spend of given emails exactly as
/// [`spend_page`] and [`spend_of_emails`] answer from the database (the test
/// `spend_snapshot_answers_as_the_database` holds them to it on both databases).
///
/// Emails are ordered by their position in the loaded rows, so the grid's ties and its email
/// sort follow the database's collation, not Rust's byte order. Each grid order (sort,
/// direction, currency) is computed on first use and kept with the snapshot. Searches are not
/// answered here: they stay the database's (`LIKE` and `lower()` as the database defines them).
#[derive(Debug)]
pub struct SpendSnapshot {
    rows: Vec<customer_spend::Model>,
    /// Each email's rows: `rows[start..end]`.
    emails: std::collections::HashMap<String, (usize, usize)>,
    orders: std::sync::Mutex<std::collections::HashMap<OrderKey, std::sync::Arc<[u32]>>>,
}

/// One grid order: sort, descending, currency filter.
type OrderKey = (SpendSort, bool, Option<String>);

impl SpendSnapshot {
    /// Reads every `customer_spend` row of the business in one statement (one consistent
    /// state of the data).
    pub async fn load<C: ConnectionTrait>(
        conn: &C,
        business: &BusinessId,
    ) -> Result<Self, PersistenceError> {
        Ok(Self::from_rows(all_spend(conn, business).await?))
    }

    /// A snapshot of rows already in `(email, currency)` order, as [`all_spend`] returns them.
    pub fn from_rows(rows: Vec<customer_spend::Model>) -> Self {
        let mut emails = std::collections::HashMap::new();
        let mut start = 0;
        for i in 1..=rows.len() {
            if i == rows.len() || rows[i].email != rows[start].email {
                emails.insert(rows[start].email.clone(), (start, i));
                start = i;
            }
        }
        Self {
            rows,
            emails,
            orders: std::sync::Mutex::default(),
        }
    }

    /// The number of rows (one per email and currency).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// `true` when the business has no spend.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every row of one normalised email (one per currency, in code order); empty when the
    /// email has no spend.
    pub fn of_email(&self, email: &str) -> &[customer_spend::Model] {
        self.emails
            .get(email)
            .map_or(&[][..], |&(start, end)| &self.rows[start..end])
    }

    /// Every email with its rows (in no particular order).
    pub fn emails(&self) -> impl Iterator<Item = (&str, &[customer_spend::Model])> {
        self.emails
            .iter()
            .map(|(email, &(start, end))| (email.as_str(), &self.rows[start..end]))
    }

    /// One grid page: its emails in grid order and the number of emails matching, over all
    /// pages. `None` for a search, which only the database answers.
    pub fn page(&self, q: &SpendQuery) -> Option<(Vec<&str>, u64)> {
        if q.search().is_some() {
            return None;
        }
        let order = self.order(q);
        let offset = usize::try_from(q.page.saturating_sub(1).saturating_mul(q.per_page))
            .unwrap_or(usize::MAX)
            .min(order.len());
        let end = offset
            .saturating_add(usize::try_from(q.per_page).unwrap_or(usize::MAX))
            .min(order.len());
        let emails = order[offset..end]
            .iter()
            .map(|&i| self.rows[i as usize].email.as_str())
            .collect();
        Some((emails, order.len() as u64))
    }

    /// The leading row of every email the grid lists, in grid order (see [`grid_page_select`]:
    /// the sort key, then the email ascending, or the email alone in the sort's direction).
    fn order(&self, q: &SpendQuery) -> std::sync::Arc<[u32]> {
        let key = (
            q.sort,
            q.descending,
            q.currency.as_ref().map(|c| c.as_str().to_owned()),
        );
        let mut orders = self
            .orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(order) = orders.get(&key) {
            return order.clone();
        }
        let rows = &self.rows;
        let mut order: Vec<u32> = (0..rows.len() as u32)
            .filter(|&i| match &key.2 {
                Some(c) => rows[i as usize].currency == *c,
                None => rows[i as usize].is_primary,
            })
            .collect();
        let value = |i: u32| {
            let r = &rows[i as usize];
            match q.sort {
                SpendSort::TotalSpent => r.net,
                SpendSort::LastPurchase => r.email_last_purchase_at,
                SpendSort::Email => 0,
            }
        };
        order.sort_unstable_by(|&a, &b| {
            let by_value = value(a).cmp(&value(b));
            let by_value = if q.descending {
                by_value.reverse()
            } else {
                by_value
            };
            // Rows are in email order: the index orders emails as the database does.
            let by_email = if q.descending && q.sort == SpendSort::Email {
                b.cmp(&a)
            } else {
                a.cmp(&b)
            };
            by_value.then(by_email)
        });
        let order: std::sync::Arc<[u32]> = order.into();
        orders.insert(key, order.clone());
        order
    }
}

/// The `customer_spend` rows of a business in `(email, currency)` order (verification, and
/// the load of a [`SpendSnapshot`]).
pub async fn all_spend<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<Vec<customer_spend::Model>, PersistenceError> {
    Ok(customer_spend::Entity::find()
        .filter(customer_spend::Column::BusinessId.eq(business.as_str()))
        .order_by_asc(customer_spend::Column::Email)
        .order_by_asc(customer_spend::Column::Currency)
        .all(conn)
        .await?)
}

/// The mirror rows around one email: its customers and everything that can carry or link its
/// money (see [`email_graph`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmailGraph {
    /// Customers, by id.
    pub customers: BTreeMap<String, stripe_customers::Model>,
    /// Payment intents and charges, by id.
    pub orders: BTreeMap<String, stripe_orders::Model>,
    /// Invoices, by id.
    pub invoices: BTreeMap<String, stripe_invoices::Model>,
    /// Invoice payments, by id.
    pub invoice_payments: BTreeMap<String, stripe_invoice_payments::Model>,
    /// Checkout sessions, by id.
    pub checkout_sessions: BTreeMap<String, stripe_checkout_sessions::Model>,
    /// Refunds, by id.
    pub refunds: BTreeMap<String, stripe_refunds::Model>,
}

/// A select of every column but `raw` (read as JSON `null`): the spend rules and the read
/// models need the typed columns only, and rendering each row's whole Stripe object (`jsonb`
/// to text, parsed again here) was most of what reading a link graph cost.
pub fn lean<E: EntityTrait>(backend: sea_orm::DbBackend) -> sea_orm::Select<E> {
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

/// `col` is one of `ids` (public for the query-plan test): on PostgreSQL `col = ANY($1)` with
/// one array bound, so the statement's text is the same however many ids there are and its
/// prepared plan is reused (an `IN ($1, …, $n)` list is a new statement, parsed and planned,
/// for every length); on SQLite, whose statements are prepared in process, an `IN` list.
pub fn one_of<C: ColumnTrait, S: AsRef<str>>(
    backend: sea_orm::DbBackend,
    col: C,
    ids: &[S],
) -> sea_orm::sea_query::Expr {
    if backend == sea_orm::DbBackend::Postgres {
        let ids: Vec<String> = ids.iter().map(|s| s.as_ref().to_owned()).collect();
        col.into_expr()
            .eq(sea_orm::sea_query::extension::postgres::PgFunc::any(
                Expr::val(ids),
            ))
    } else {
        col.is_in(ids.iter().map(AsRef::as_ref))
    }
}

/// The rows of one mirror table of the business (live ones only with `$live`) whose `$col`
/// is one of `$ids`, for each `($col, $ids)` given, without `raw`. On PostgreSQL up to
/// [`CHUNK`] ids in all are asked in one statement (`col1 = ANY(…) OR col2 = ANY(…)`), so a
/// graph round costs one round trip per table, not one per link; more are asked list by list,
/// `CHUNK` at a time. SQLite, which has no round trip to save, is asked list by list: for an
/// `OR` of several lists its planner may read every row of the business instead of each
/// list's index (see `sqlite_walks_the_links_through_their_indexes`). A row
/// matching several lists may come back more than once: callers key rows by id. A future, so
/// the independent reads of a graph round can be joined.
macro_rules! fetch_any {
    ($conn:expr, $b:expr, $entity:ident, $live:expr, [$(($col:ident, $ids:expr)),+ $(,)?]) => {async {
        let lists: Vec<($entity::Column, Vec<&str>)> = vec![$((
            $entity::Column::$col,
            $ids.iter().map(|s: &String| s.as_str()).collect(),
        )),+];
        let lists: Vec<_> = lists.into_iter().filter(|(_, ids)| !ids.is_empty()).collect();
        let select = |any: Condition| {
            let mut sel = lean::<$entity::Entity>($conn.get_database_backend())
                .filter($entity::Column::BusinessId.eq($b.as_str()))
                .filter(any);
            if $live {
                sel = sel.filter($entity::Column::Deleted.eq(false));
            }
            sel
        };
        let backend = $conn.get_database_backend();
        let mut found = Vec::new();
        if backend == sea_orm::DbBackend::Postgres
            && lists.iter().map(|(_, ids)| ids.len()).sum::<usize>() <= CHUNK
        {
            if !lists.is_empty() {
                let any = lists
                    .iter()
                    .fold(Condition::any(), |any, (col, ids)| {
                        any.add(one_of(backend, *col, ids))
                    });
                found.extend(select(any).all($conn).await?);
            }
        } else {
            for (col, ids) in &lists {
                for chunk in ids.chunks(CHUNK) {
                    let any = Condition::any().add(one_of(backend, *col, chunk));
                    found.extend(select(any).all($conn).await?);
                }
            }
        }
        Ok::<_, PersistenceError>(found)
    }};
}

macro_rules! fetch_in {
    ($conn:expr, $b:expr, $entity:ident, $col:ident, $ids:expr, $live:expr) => {
        fetch_any!($conn, $b, $entity, $live, [($col, $ids)])
    };
}

/// Where a [`graph`] starts: emails (their customers and every object naming the email or
/// those customers) and object ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphSeed {
    /// Normalised emails.
    pub emails: BTreeSet<String>,
    /// Customer ids.
    pub customers: BTreeSet<String>,
    /// Payment intents and charges (`stripe_orders`).
    pub orders: BTreeSet<String>,
    /// Invoice ids.
    pub invoices: BTreeSet<String>,
    /// Checkout session ids.
    pub sessions: BTreeSet<String>,
}

impl GraphSeed {
    /// Whether nothing seeds the graph.
    pub fn is_empty(&self) -> bool {
        self.emails.is_empty()
            && self.customers.is_empty()
            && self.orders.is_empty()
            && self.invoices.is_empty()
            && self.sessions.is_empty()
    }

    /// Adds `other`'s emails and ids (the walk from both seeds).
    pub fn extend(&mut self, other: GraphSeed) {
        self.emails.extend(other.emails);
        self.customers.extend(other.customers);
        self.orders.extend(other.orders);
        self.invoices.extend(other.invoices);
        self.sessions.extend(other.sessions);
    }
}

/// Loads the email's customers, the payments, invoices and sessions that name them or the
/// email, and follows every §7 link (session ↔ payment intent / invoice, invoice ↔ invoice
/// payment ↔ payment intent / charge, refunds) until nothing new turns up, so that
/// [`graph_facts`] + `spend::movements` attribute this email's money exactly as the whole
/// business's facts would. Each step is an index lookup; nothing scans the business.
pub async fn email_graph<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    email: &Email,
) -> Result<EmailGraph, PersistenceError> {
    let seed = GraphSeed {
        emails: BTreeSet::from([email.as_str().to_owned()]),
        ..GraphSeed::default()
    };
    graph(conn, business, &seed).await
}

/// The connected part of the link graph around `seed` (see [`email_graph`]): every object
/// whose money could be attributed to the seed's emails, or that the seed's objects link to
/// (or that link to them, deleted or not), with the customers and refunds of what it holds.
///
/// On PostgreSQL the whole walk is one statement ([`graph_in_one_statement`]): round by round a
/// walk was 10–20 round trips. On SQLite, which runs statements in process, it goes round by
/// round ([`graph_in_rounds`]).
pub async fn graph<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    seed: &GraphSeed,
) -> Result<EmailGraph, PersistenceError> {
    if seed.is_empty() {
        return Ok(EmailGraph::default());
    }
    match conn.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            Ok(graph_in_one_statement(conn, business, seed, false).await?.0)
        }
        _ => graph_in_rounds(conn, business, seed).await,
    }
}

/// What a spend refresh from `seed` reads: the [`graph`] of the seed together with the graph
/// of every email the seed's graph meets outside the seed, and the emails whose spend it
/// holds in full — the seed's and those its graph meets (not those only the second walk
/// meets). The union of the two walks is the walk from both seeds, so each of those emails
/// has all its objects in it.
///
/// On PostgreSQL both walks are one statement (the second skips what the first found, whose
/// links it has followed); on SQLite, two walks round by round ([`spend_graph_in_rounds`]).
pub async fn spend_graph<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    seed: &GraphSeed,
) -> Result<(EmailGraph, BTreeSet<String>), PersistenceError> {
    if seed.is_empty() {
        return Ok(Default::default());
    }
    match conn.get_database_backend() {
        sea_orm::DbBackend::Postgres => graph_in_one_statement(conn, business, seed, true).await,
        _ => spend_graph_in_rounds(conn, business, seed).await,
    }
}

/// [`spend_graph`] as two walks round by round ([`graph_in_rounds`]). Any backend;
/// [`spend_graph`] uses it on SQLite.
pub async fn spend_graph_in_rounds<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    seed: &GraphSeed,
) -> Result<(EmailGraph, BTreeSet<String>), PersistenceError> {
    let mut graph = graph_in_rounds(conn, business, seed).await?;
    let mut emails = graph.emails();
    let met = GraphSeed {
        emails: emails.difference(&seed.emails).cloned().collect(),
        ..GraphSeed::default()
    };
    if !met.is_empty() {
        graph.merge(graph_in_rounds(conn, business, &met).await?);
    }
    emails.extend(seed.emails.iter().cloned());
    Ok((graph, emails))
}

/// What the stored rows of `seed`'s objects link to: the emails of its customers; the
/// customers, emails, invoices, payment intents and charges its payments, invoices and
/// sessions name; the payments of its invoices' invoice payments. Deleted rows included.
///
/// Read before a write of those objects (and of their invoices' payments, which a write of an
/// invoice reads again), and added to the seed of the walk after it, these lead that walk to
/// everything a walk from the objects before the write reached: a link between two objects
/// the write leaves alone is still there, and any other was named by a row the write changed
/// (read here) or leads to one of its objects (which the walk follows from a seeded id, live
/// or deleted). So one walk, after the write, finds every email the write may take money from
/// as well as those it gives money to.
pub async fn stored_links<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    seed: &GraphSeed,
) -> Result<GraphSeed, PersistenceError> {
    let b = business;
    let (customers, orders, invoices, sessions, payments) = futures::try_join!(
        fetch_in!(conn, b, stripe_customers, StripeId, seed.customers, false),
        fetch_in!(conn, b, stripe_orders, StripeId, seed.orders, false),
        fetch_in!(conn, b, stripe_invoices, StripeId, seed.invoices, false),
        fetch_in!(
            conn,
            b,
            stripe_checkout_sessions,
            StripeId,
            seed.sessions,
            false
        ),
        fetch_in!(
            conn,
            b,
            stripe_invoice_payments,
            Invoice,
            seed.invoices,
            false
        ),
    )?;
    let mut out = GraphSeed::default();
    out.emails
        .extend(customers.into_iter().filter_map(|c| c.email));
    for o in orders {
        out.customers.extend(o.customer);
        out.emails.extend(o.email);
        out.invoices.extend(o.invoice);
    }
    for i in invoices {
        out.customers.extend(i.customer);
        out.emails.extend(i.email);
        out.orders.extend(i.payment_intent);
        out.orders.extend(i.charge);
    }
    for s in sessions {
        out.customers.extend(s.customer);
        out.emails.extend(s.email);
        out.orders.extend(s.payment_intent);
        out.invoices.extend(s.invoice);
    }
    for p in payments {
        out.orders.extend(p.payment_intent);
        out.orders.extend(p.charge);
    }
    Ok(out)
}

/// [`graph`] round by round, a few index lookups a round (the reads of a round side by side
/// on a pool): the customers of the seed's emails and ids; the payments, invoices, sessions
/// and invoice payments naming those emails or customers, seeded by id, or naming a seeded
/// payment or invoice (mirrored or not, deleted or not); then each round follows every §7 link from what the last one found,
/// until a round finds nothing new; last, the refunds of the payments found and the customers
/// the found objects name. Any backend; [`graph`] uses it on SQLite.
pub async fn graph_in_rounds<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    seed: &GraphSeed,
) -> Result<EmailGraph, PersistenceError> {
    let b = business;
    let mut g = EmailGraph::default();
    let e: Vec<String> = seed.emails.iter().cloned().collect();
    for c in fetch_any!(
        conn,
        b,
        stripe_customers,
        false,
        [(Email, e), (StripeId, seed.customers)]
    )
    .await?
    {
        g.customers.insert(c.stripe_id.clone(), c);
    }
    let cus: Vec<String> = g.customers.keys().cloned().collect();
    // The three tables that name customers and emails, read side by side (on a pool, three
    // connections at once; in a transaction, one after another on its connection).
    let (orders, invoices, sessions) = futures::try_join!(
        fetch_any!(
            conn,
            b,
            stripe_orders,
            true,
            [
                (Email, e),
                (Customer, cus),
                (StripeId, seed.orders),
                (Invoice, seed.invoices)
            ]
        ),
        fetch_any!(
            conn,
            b,
            stripe_invoices,
            true,
            [
                (Email, e),
                (Customer, cus),
                (StripeId, seed.invoices),
                (PaymentIntent, seed.orders),
                (Charge, seed.orders)
            ]
        ),
        fetch_any!(
            conn,
            b,
            stripe_checkout_sessions,
            true,
            [
                (Email, e),
                (Customer, cus),
                (StripeId, seed.sessions),
                (PaymentIntent, seed.orders),
                (Invoice, seed.invoices)
            ]
        ),
    )?;
    for o in orders {
        g.orders.insert(o.stripe_id.clone(), o);
    }
    for i in invoices {
        g.invoices.insert(i.stripe_id.clone(), i);
    }
    for s in sessions {
        g.checkout_sessions.insert(s.stripe_id.clone(), s);
    }
    for p in fetch_any!(
        conn,
        b,
        stripe_invoice_payments,
        true,
        [
            (PaymentIntent, seed.orders),
            (Charge, seed.orders),
            (Invoice, seed.invoices)
        ]
    )
    .await?
    {
        g.invoice_payments.insert(p.stripe_id.clone(), p);
    }

    // Follow links from what is new in each round.
    let mut seen_orders = BTreeSet::new();
    let mut seen_invoices = BTreeSet::new();
    let mut seen_sessions = BTreeSet::new();
    let mut seen_ips = BTreeSet::new();
    // Each round finds something new or ends the walk: at most one round per object.
    loop {
        let new_orders: Vec<String> = g
            .orders
            .keys()
            .filter(|k| !seen_orders.contains(*k))
            .cloned()
            .collect();
        let new_invoices: Vec<String> = g
            .invoices
            .keys()
            .filter(|k| !seen_invoices.contains(*k))
            .cloned()
            .collect();
        let new_sessions: Vec<String> = g
            .checkout_sessions
            .keys()
            .filter(|k| !seen_sessions.contains(*k))
            .cloned()
            .collect();
        let new_ips: Vec<String> = g
            .invoice_payments
            .keys()
            .filter(|k| !seen_ips.contains(*k))
            .cloned()
            .collect();
        if new_orders.is_empty()
            && new_invoices.is_empty()
            && new_sessions.is_empty()
            && new_ips.is_empty()
        {
            break;
        }
        seen_orders.extend(new_orders.iter().cloned());
        seen_invoices.extend(new_invoices.iter().cloned());
        seen_sessions.extend(new_sessions.iter().cloned());
        seen_ips.extend(new_ips.iter().cloned());

        let mut want_orders = BTreeSet::new();
        let mut want_invoices = BTreeSet::new();
        for id in &new_sessions {
            let s = &g.checkout_sessions[id];
            want_orders.extend(s.payment_intent.clone());
            want_invoices.extend(s.invoice.clone());
        }
        for id in &new_invoices {
            let i = &g.invoices[id];
            want_orders.extend(i.payment_intent.clone());
            want_orders.extend(i.charge.clone());
        }
        for id in &new_orders {
            want_invoices.extend(g.orders[id].invoice.clone());
        }
        for id in &new_ips {
            let p = &g.invoice_payments[id];
            want_invoices.insert(p.invoice.clone());
            want_orders.extend(p.payment_intent.clone());
            want_orders.extend(p.charge.clone());
        }
        let want_orders: Vec<String> = want_orders
            .into_iter()
            .filter(|k| !g.orders.contains_key(k))
            .collect();
        let want_invoices: Vec<String> = want_invoices
            .into_iter()
            .filter(|k| !g.invoices.contains_key(k))
            .collect();

        // This round's four reads depend only on the last round: side by side.
        let (orders, invoices, ips, sessions) = futures::try_join!(
            fetch_any!(
                conn,
                b,
                stripe_orders,
                true,
                [(StripeId, want_orders), (Invoice, new_invoices)]
            ),
            fetch_any!(
                conn,
                b,
                stripe_invoices,
                true,
                [
                    (StripeId, want_invoices),
                    (PaymentIntent, new_orders),
                    (Charge, new_orders)
                ]
            ),
            fetch_any!(
                conn,
                b,
                stripe_invoice_payments,
                true,
                [
                    (Invoice, new_invoices),
                    (PaymentIntent, new_orders),
                    (Charge, new_orders)
                ]
            ),
            fetch_any!(
                conn,
                b,
                stripe_checkout_sessions,
                true,
                [(PaymentIntent, new_orders), (Invoice, new_invoices)]
            ),
        )?;
        for o in orders {
            g.orders.entry(o.stripe_id.clone()).or_insert(o);
        }
        for i in invoices {
            g.invoices.entry(i.stripe_id.clone()).or_insert(i);
        }
        for p in ips {
            g.invoice_payments.entry(p.stripe_id.clone()).or_insert(p);
        }
        for s in sessions {
            g.checkout_sessions.entry(s.stripe_id.clone()).or_insert(s);
        }
    }
    let order_ids: Vec<String> = g.orders.keys().cloned().collect();
    // The customers every loaded object names: attribution starts from their emails.
    let named: BTreeSet<String> = g
        .orders
        .values()
        .filter_map(|o| o.customer.clone())
        .chain(g.invoices.values().filter_map(|i| i.customer.clone()))
        .chain(
            g.checkout_sessions
                .values()
                .filter_map(|s| s.customer.clone()),
        )
        .filter(|c| !g.customers.contains_key(c))
        .collect();
    let named: Vec<String> = named.into_iter().collect();
    let (refunds, customers) = futures::try_join!(
        fetch_any!(
            conn,
            b,
            stripe_refunds,
            true,
            [(PaymentIntent, order_ids), (Charge, order_ids)]
        ),
        fetch_in!(conn, b, stripe_customers, StripeId, named, false),
    )?;
    for r in refunds {
        g.refunds.insert(r.stripe_id.clone(), r);
    }
    for c in customers {
        g.customers.insert(c.stripe_id.clone(), c);
    }
    Ok(g)
}

/// [`graph`] on PostgreSQL in one statement ([`graph_sql`]): the same walk as
/// [`graph_in_rounds`], run inside PostgreSQL, whose rows come back as JSON text (the lean
/// columns, `raw` as `null`), each tagged with its table. With `second_level`, [`spend_graph`]
/// (as [`spend_graph_in_rounds`]): the walk goes on from the emails it meets, and the emails
/// come back too (empty without).
pub async fn graph_in_one_statement<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    seed: &GraphSeed,
    second_level: bool,
) -> Result<(EmailGraph, BTreeSet<String>), PersistenceError> {
    let list =
        |ids: &BTreeSet<String>| sea_orm::Value::from(ids.iter().cloned().collect::<Vec<_>>());
    let statement = sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        graph_sql(),
        [
            business.as_str().into(),
            list(&seed.emails),
            list(&seed.customers),
            list(&seed.orders),
            list(&seed.invoices),
            list(&seed.sessions),
            second_level.into(),
        ],
    );
    /// Adds a row given as JSON text to `into`, by its Stripe id.
    fn put<M>(into: &mut BTreeMap<String, M>, obj: &str) -> Result<(), PersistenceError>
    where
        M: serde::de::DeserializeOwned + MirrorModel,
    {
        let m: M = serde_json::from_str(obj).map_err(|e| {
            PersistenceError::Corrupt(format!("a link-graph row did not parse: {e}"))
        })?;
        into.insert(m.stripe_id().to_owned(), m);
        Ok(())
    }
    let mut g = EmailGraph::default();
    let mut emails = BTreeSet::new();
    for row in conn.query_all_raw(statement).await? {
        let kind: String = row.try_get("", "kind")?;
        let obj: String = row.try_get("", "obj")?;
        match kind.as_str() {
            "c" => put(&mut g.customers, &obj)?,
            "o" => put(&mut g.orders, &obj)?,
            "i" => put(&mut g.invoices, &obj)?,
            "p" => put(&mut g.invoice_payments, &obj)?,
            "s" => put(&mut g.checkout_sessions, &obj)?,
            "r" => put(&mut g.refunds, &obj)?,
            "e" => {
                emails = serde_json::from_str(&obj).map_err(|e| {
                    PersistenceError::Corrupt(format!("a link-graph email list did not parse: {e}"))
                })?;
            }
            other => {
                return Err(PersistenceError::Corrupt(format!(
                    "a link-graph row of unknown kind {other:?}"
                )));
            }
        }
    }
    Ok((g, emails))
}

/// The text of [`graph_in_one_statement`]'s statement, built once from [`lean`] selects.
/// Parameters: `$1` the business, `$2`–`$6` the seed's emails, customers, orders, invoices and
/// sessions (text arrays), `$7` whether to walk the second level ([`spend_graph`]).
///
/// The walk itself is the function `tributary_link_graph` (migration
/// `m20261208_000007_link_graph`): the steps of [`graph_in_rounds`] in PL/pgSQL, each a
/// statement per table with array parameters, returning the ids reached (and, with the second
/// level, the emails of [`spend_graph`]); this statement calls it once and reads each table's
/// rows by those ids, as JSON text tagged with the table (`e`: the emails, a JSON array).
pub fn graph_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        // Each table's lean columns ([`lean`]) of the rows whose ids the function returned
        // under `ids`, as JSON text tagged with `kind`.
        fn rows<E: EntityTrait>(kind: &str, ids: &str) -> String {
            use sea_orm::QueryTrait;
            let table = E::default().table_name().to_owned();
            let lean = lean::<E>(sea_orm::DbBackend::Postgres)
                .filter(Expr::cust(format!(
                    "\"{table}\".\"business_id\" = $1 \
                     AND \"{table}\".\"stripe_id\" = ANY((SELECT {ids} FROM g)::text[])"
                )))
                .build(sea_orm::DbBackend::Postgres)
                .sql;
            format!("SELECT '{kind}' AS kind, row_to_json(x)::text AS obj FROM ({lean}) x")
        }
        let out = [
            rows::<stripe_customers::Entity>("c", "customers"),
            rows::<stripe_orders::Entity>("o", "orders"),
            rows::<stripe_invoices::Entity>("i", "invoices"),
            rows::<stripe_checkout_sessions::Entity>("s", "sessions"),
            rows::<stripe_invoice_payments::Entity>("p", "invoice_payments"),
            rows::<stripe_refunds::Entity>("r", "refunds"),
        ]
        .join("\nUNION ALL\n");
        format!(
            "WITH g AS (SELECT * FROM tributary_link_graph($1, $2, $3, $4, $5, $6, $7))\n{out}\n\
             UNION ALL\nSELECT 'e' AS kind, to_json(emails)::text AS obj FROM g \
             WHERE emails IS NOT NULL"
        )
    })
}

impl EmailGraph {
    /// Adds `other`'s rows (the union of two walks is the walk from both seeds).
    pub fn merge(&mut self, other: EmailGraph) {
        self.customers.extend(other.customers);
        self.orders.extend(other.orders);
        self.invoices.extend(other.invoices);
        self.invoice_payments.extend(other.invoice_payments);
        self.checkout_sessions.extend(other.checkout_sessions);
        self.refunds.extend(other.refunds);
    }

    /// Every (normalised) email money in this graph could be attributed to.
    pub fn emails(&self) -> BTreeSet<String> {
        self.customers
            .values()
            .filter_map(|c| c.email.clone())
            .chain(self.orders.values().filter_map(|o| o.email.clone()))
            .chain(self.invoices.values().filter_map(|i| i.email.clone()))
            .chain(
                self.checkout_sessions
                    .values()
                    .filter_map(|s| s.email.clone()),
            )
            .collect()
    }

    /// Customer names by customer id.
    pub fn names(&self) -> std::collections::HashMap<String, String> {
        self.customers
            .values()
            .filter_map(|c| c.name.clone().map(|n| (c.stripe_id.clone(), n)))
            .collect()
    }
}

fn cur(c: &str) -> Option<Currency> {
    Currency::parse(c).ok()
}

fn em(e: &Option<String>) -> Option<Email> {
    Email::normalise(e.as_deref())
}

/// The spend facts of mirror rows: the one mapping from rows to §7 facts, used for one email's
/// graph and (by `tributary_sync::readmodel`) for a whole business.
pub fn graph_facts(g: &EmailGraph) -> SpendFacts {
    let mut facts = SpendFacts {
        customers: g
            .customers
            .values()
            .map(|c| spend::CustomerFact {
                id: c.stripe_id.clone(),
                email: em(&c.email),
            })
            .collect(),
        ..SpendFacts::default()
    };
    for o in g.orders.values() {
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
    facts.invoices = g
        .invoices
        .values()
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
    facts.invoice_payments = g
        .invoice_payments
        .values()
        .map(|p| spend::InvoicePaymentFact {
            id: p.stripe_id.clone(),
            invoice: p.invoice.clone(),
            payment_intent: p.payment_intent.clone(),
            charge: p.charge.clone(),
        })
        .collect();
    facts.checkout_sessions = g
        .checkout_sessions
        .values()
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
    facts.refunds = g
        .refunds
        .values()
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
    facts
}

/// Live subscriptions of the given customers, newest first.
pub async fn subscriptions_of_customers<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    customers: &[String],
) -> Result<Vec<stripe_subscriptions::Model>, PersistenceError> {
    let b = business;
    let mut subs = fetch_in!(conn, b, stripe_subscriptions, Customer, customers, true).await?;
    subs.sort_by(|a, b| (b.created, &b.stripe_id).cmp(&(a.created, &a.stripe_id)));
    Ok(subs)
}

/// Live items of the given subscriptions.
pub async fn subscription_items<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    subscriptions: &[String],
) -> Result<Vec<stripe_subscription_items::Model>, PersistenceError> {
    let b = business;
    let mut items = fetch_in!(
        conn,
        b,
        stripe_subscription_items,
        Subscription,
        subscriptions,
        true
    )
    .await?;
    items.sort_by(|a, b| (&a.subscription, &a.stripe_id).cmp(&(&b.subscription, &b.stripe_id)));
    Ok(items)
}

/// Every live subscription of a business (dashboards: MRR reconstruction before the first sync).
pub async fn all_subscriptions<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<Vec<stripe_subscriptions::Model>, PersistenceError> {
    Ok(stripe_subscriptions::Entity::find()
        .filter(stripe_subscriptions::Column::BusinessId.eq(business.as_str()))
        .filter(stripe_subscriptions::Column::Deleted.eq(false))
        .all(conn)
        .await?)
}

/// The business's MRR snapshots of days in `[from_day, to_day]` (`YYYY-MM-DD`), plus the
/// newest day before `from_day` so a month with no sync of its own carries the last state.
pub async fn mrr_snapshots_between<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    from_day: &str,
    to_day: &str,
) -> Result<Vec<mrr_snapshots::Model>, PersistenceError> {
    use mrr_snapshots::Column as Col;
    let before = mrr_snapshots::Entity::find()
        .filter(Col::BusinessId.eq(business.as_str()))
        .filter(Col::Day.lt(from_day))
        .order_by_desc(Col::Day)
        .one(conn)
        .await?
        .map(|r| r.day);
    let start = before.as_deref().unwrap_or(from_day);
    Ok(mrr_snapshots::Entity::find()
        .filter(Col::BusinessId.eq(business.as_str()))
        .filter(Col::Day.gte(start))
        .filter(Col::Day.lte(to_day))
        .all(conn)
        .await?)
}

/// The first day the business has an MRR snapshot (its first sync), if any.
pub async fn first_snapshot_day<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<Option<String>, PersistenceError> {
    Ok(mrr_snapshots::Entity::find()
        .filter(mrr_snapshots::Column::BusinessId.eq(business.as_str()))
        .order_by_asc(mrr_snapshots::Column::Day)
        .select_only()
        .column(mrr_snapshots::Column::Day)
        .into_tuple::<String>()
        .one(conn)
        .await?)
}
