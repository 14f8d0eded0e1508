//! Read models kept beside the mirror: `customer_spend` (SPEC §7/§8) and `mrr_snapshots` (§9).

use std::collections::{BTreeSet, HashMap};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tributary_domain::BusinessId;
use tributary_domain::spend::{self, SpendFacts};
use tributary_persistence::entities::MirrorModel;
use tributary_persistence::entities::*;
use tributary_persistence::mirror;
use tributary_persistence::reads::{self, EmailGraph};

use crate::SyncError;

/// The spend facts of one business and its customers' names (id → name).
pub type LoadedFacts = (SpendFacts, HashMap<String, String>);

/// Loads the spend facts of one business from the mirror (deleted rows left out, except
/// customers: a deleted customer's email still names who paid), with customer names.
///
/// 2,000 rows at a time, in Stripe id order: each chunk is mapped to facts and
/// dropped before the next is read, so only the facts (a few small fields per object) grow
/// with the account, never its rows (the peak memory of a full run's rebuild).
pub async fn load_facts<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<LoadedFacts, SyncError> {
    load_facts_seen(conn, business, None).await
}

/// [`load_facts`], leaving out too the rows a reconciliation from `seen_since` marks deleted
/// (see [`mirror::unseen_since`]), so that it can read beside the transaction that marks them.
///
/// The six tables are read side by side: on a pool, on as many connections at once (a full
/// run's rebuild is then bound by the largest table, not by their sum); in a transaction one
/// statement after another.
pub async fn load_facts_seen<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    seen_since: Option<i64>,
) -> Result<LoadedFacts, SyncError> {
    let scope = Scope {
        business,
        seen_since,
    };
    let parts = futures::try_join!(
        scope.table::<stripe_customers::Entity, _>(conn, false, |t| EmailGraph {
            customers: t,
            ..EmailGraph::default()
        }),
        scope.table::<stripe_orders::Entity, _>(conn, true, |t| EmailGraph {
            orders: t,
            ..EmailGraph::default()
        }),
        scope.table::<stripe_invoices::Entity, _>(conn, true, |t| EmailGraph {
            invoices: t,
            ..EmailGraph::default()
        }),
        scope.table::<stripe_invoice_payments::Entity, _>(conn, true, |t| EmailGraph {
            invoice_payments: t,
            ..EmailGraph::default()
        }),
        scope.table::<stripe_checkout_sessions::Entity, _>(conn, true, |t| EmailGraph {
            checkout_sessions: t,
            ..EmailGraph::default()
        }),
        scope.table::<stripe_refunds::Entity, _>(conn, true, |t| EmailGraph {
            refunds: t,
            ..EmailGraph::default()
        }),
    )?;
    let mut loaded = LoadedFacts::default();
    for part in [parts.0, parts.1, parts.2, parts.3, parts.4, parts.5] {
        merge(&mut loaded.0, part.0);
        loaded.1.extend(part.1);
    }
    Ok(loaded)
}

/// Mirror rows read per statement while loading a whole business's facts.
const ROWS_AT_ONCE: u64 = 2_000;

/// Appends the facts of one table's rows.
fn merge(into: &mut SpendFacts, from: SpendFacts) {
    into.customers.extend(from.customers);
    into.payment_intents.extend(from.payment_intents);
    into.charges.extend(from.charges);
    into.invoices.extend(from.invoices);
    into.invoice_payments.extend(from.invoice_payments);
    into.checkout_sessions.extend(from.checkout_sessions);
    into.refunds.extend(from.refunds);
}

/// Which rows of the mirror a load of facts reads.
struct Scope<'a> {
    business: &'a BusinessId,
    seen_since: Option<i64>,
}

impl Scope<'_> {
    /// The facts (and, for customers, the names) of one table, read chunk by chunk into
    /// graphs of their own (`graph` puts a chunk in its place).
    async fn table<E, C>(
        &self,
        conn: &C,
        live_only: bool,
        graph: impl Fn(std::collections::BTreeMap<String, E::Model>) -> EmailGraph,
    ) -> Result<LoadedFacts, SyncError>
    where
        E: mirror::Mirror,
        E::Model: MirrorModel,
        C: ConnectionTrait,
    {
        let mut loaded = LoadedFacts::default();
        let mut after: Option<String> = None;
        loop {
            let chunk = self.rows::<E, _>(conn, live_only, after.as_deref()).await?;
            let Some(last) = chunk.keys().next_back().cloned() else {
                break;
            };
            let full = chunk.len() == ROWS_AT_ONCE as usize;
            let g = graph(chunk);
            merge(&mut loaded.0, reads::graph_facts(&g));
            loaded.1.extend(g.names());
            if !full {
                break;
            }
            after = Some(last);
        }
        Ok(loaded)
    }

    /// The next [`ROWS_AT_ONCE`] rows of one mirror table of the business after the Stripe
    /// id `after` (only live ones with `live_only`), without `raw`, keyed by Stripe id.
    async fn rows<E, C>(
        &self,
        conn: &C,
        live_only: bool,
        after: Option<&str>,
    ) -> Result<std::collections::BTreeMap<String, E::Model>, SyncError>
    where
        E: mirror::Mirror,
        E::Model: MirrorModel,
        C: ConnectionTrait,
    {
        use sea_orm::{IdenStatic, Iterable};
        let column = |name: &str| E::Column::iter().find(|c| c.as_str() == name);
        let mut query = reads::lean::<E>(conn.get_database_backend());
        if let Some(b) = column("business_id") {
            query = query.filter(b.eq(self.business.as_str()));
        }
        if live_only {
            if let Some(d) = column("deleted") {
                query = query.filter(d.eq(false));
            }
            if let Some(since) = self.seen_since {
                query = query.filter(mirror::unseen_since::<E>(since)?.not());
            }
        }
        let id = column("stripe_id").ok_or_else(|| {
            SyncError::Database(tributary_persistence::PersistenceError::Corrupt(
                "mirror table without stripe_id".into(),
            ))
        })?;
        if let Some(after) = after {
            query = query.filter(id.gt(after));
        }
        Ok(query
            .order_by_asc(id)
            .limit(ROWS_AT_ONCE)
            .all(conn)
            .await?
            .into_iter()
            .map(|m| (m.stripe_id().to_owned(), m))
            .collect())
    }
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

/// Replaces the business's `customer_spend` rows with what `loaded` (the whole business's
/// facts) implies, inside the caller's transaction.
pub async fn rebuild_spend_from<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    loaded: &LoadedFacts,
    now: i64,
) -> Result<usize, SyncError> {
    let rows = spend_rows(business, &loaded.0, &loaded.1, now);
    customer_spend::Entity::delete_many()
        .filter(customer_spend::Column::BusinessId.eq(business.as_str()))
        .exec(conn)
        .await?;
    insert_spend(conn, rows).await
}

/// Inserts `customer_spend` rows, 500 a statement; returns how many.
async fn insert_spend<C: ConnectionTrait>(
    conn: &C,
    rows: Vec<customer_spend::Model>,
) -> Result<usize, SyncError> {
    let n = rows.len();
    let mut rows = rows.into_iter().map(customer_spend::ActiveModel::from);
    loop {
        let chunk: Vec<_> = rows.by_ref().take(500).collect();
        if chunk.is_empty() {
            return Ok(n);
        }
        customer_spend::Entity::insert_many(chunk)
            .exec_without_returning(conn)
            .await?;
    }
}

/// Writes today's MRR of every subscription (SPEC §9), inside the caller's transaction.
pub async fn snapshot_mrr<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    day: &str,
) -> Result<usize, SyncError> {
    let subs = reads::lean::<stripe_subscriptions::Entity>(conn.get_database_backend())
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

/// Writes (or rewrites) the MRR snapshots of `day` of some subscriptions, inside the caller's
/// transaction, in three statements whatever their number. A deleted subscription's snapshot
/// is removed.
pub async fn snapshot_subscriptions<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    subscription_ids: &[&str],
    day: &str,
) -> Result<(), SyncError> {
    if subscription_ids.is_empty() {
        return Ok(());
    }
    let backend = conn.get_database_backend();
    mrr_snapshots::Entity::delete_many()
        .filter(mrr_snapshots::Column::BusinessId.eq(business.as_str()))
        .filter(mrr_snapshots::Column::Day.eq(day))
        .filter(reads::one_of(
            backend,
            mrr_snapshots::Column::SubscriptionId,
            subscription_ids,
        ))
        .exec(conn)
        .await?;
    let subs = reads::lean::<stripe_subscriptions::Entity>(backend)
        .filter(stripe_subscriptions::Column::BusinessId.eq(business.as_str()))
        .filter(reads::one_of(
            backend,
            stripe_subscriptions::Column::StripeId,
            subscription_ids,
        ))
        .filter(stripe_subscriptions::Column::Deleted.eq(false))
        .all(conn)
        .await?;
    if subs.is_empty() {
        return Ok(());
    }
    let rows: Vec<mrr_snapshots::ActiveModel> = subs
        .into_iter()
        .map(|s| {
            mrr_snapshots::Model {
                business_id: business.as_str().to_owned(),
                subscription_id: s.stripe_id,
                day: day.to_owned(),
                customer: s.customer,
                status: s.status,
                currency: s.currency,
                mrr: s.mrr,
            }
            .into()
        })
        .collect();
    mrr_snapshots::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
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

/// Ids of mirrored objects whose change may move money between emails (and emails).
pub type Touched = reads::GraphSeed;

/// Adds an object, as its `object` type and raw JSON name it, to `touched`.
pub fn touch(touched: &mut Touched, object: &serde_json::Value) {
    let kind = object
        .get("object")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let id = |k: &str| crate::map::id_of(object, k);
    match kind {
        "customer" => touched.customers.extend(id("id")),
        "payment_intent" | "charge" => {
            touched.orders.extend(id("id"));
            touched.orders.extend(id("payment_intent"));
        }
        "refund" => {
            touched.orders.extend(id("payment_intent"));
            touched.orders.extend(id("charge"));
        }
        "invoice" => touched.invoices.extend(id("id")),
        "invoice_payment" => {
            touched.invoices.extend(id("invoice"));
            if let Some(p) = object.get("payment") {
                touched
                    .orders
                    .extend(crate::map::id_of(p, "payment_intent"));
                touched.orders.extend(crate::map::id_of(p, "charge"));
            }
        }
        "checkout.session" => touched.sessions.extend(id("id")),
        _ => {}
    }
}

/// What the `touched` objects link to as the mirror stands now ([`reads::stored_links`]): read
/// before a write of them and handed to [`refresh_after`], it leads the walk after the write
/// to the emails the write may take money away from.
pub async fn linked_before<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    touched: &Touched,
) -> Result<Touched, SyncError> {
    if touched.is_empty() {
        return Ok(Touched::default());
    }
    Ok(reads::stored_links(conn, business, touched).await?)
}

/// After a write of the `touched` objects, inside its transaction: recomputes the spend of
/// every email they may have taken money from or given money to. `before` is what they
/// linked to before the write ([`linked_before`]): seeded with both, one walk of the link
/// graph, on from the emails it meets ([`reads::spend_graph`]), finds the emails and all
/// their facts.
pub async fn refresh_after<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    touched: &Touched,
    before: Touched,
    now: i64,
) -> Result<usize, SyncError> {
    let mut seed = before;
    seed.extend(touched.clone());
    if seed.is_empty() {
        return Ok(0);
    }
    let (graph, emails) = reads::spend_graph(conn, business, &seed).await?;
    replace_spend(conn, business, &graph, &emails, now).await
}

/// Replaces the `customer_spend` rows of `emails` with those `graph` gives them (it holds
/// every fact of each of them).
async fn replace_spend<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    graph: &reads::EmailGraph,
    emails: &BTreeSet<String>,
    now: i64,
) -> Result<usize, SyncError> {
    let b = business.as_str();
    let mut rows = spend_rows(business, &reads::graph_facts(graph), &graph.names(), now);
    rows.retain(|r| emails.contains(&r.email));
    let list: Vec<&str> = emails.iter().map(String::as_str).collect();
    for chunk in list.chunks(500) {
        customer_spend::Entity::delete_many()
            .filter(customer_spend::Column::BusinessId.eq(b))
            .filter(reads::one_of(
                conn.get_database_backend(),
                customer_spend::Column::Email,
                chunk,
            ))
            .exec(conn)
            .await?;
    }
    insert_spend(conn, rows).await
}
