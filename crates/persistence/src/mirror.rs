//! Batched, tenant-scoped upserts into the mirror tables.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, IdenStatic, Iterable, ModelTrait,
    PaginatorTrait, QueryFilter,
};
use serde_json::Value;
use tributary_domain::BusinessId;

use crate::PersistenceError;
use crate::entities::MirrorModel;

/// A mirror table entity (`stripe_customers`, `stripe_invoices`, …).
pub trait Mirror: EntityTrait {
    /// The table's name.
    const TABLE: &'static str;
}

fn column<E: EntityTrait>(name: &str) -> Result<E::Column, PersistenceError> {
    E::Column::iter()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| PersistenceError::Corrupt(format!("entity has no column {name}")))
}

/// A row to write with its `raw` given as JSON text (the row's own `raw` is not written): an
/// object kept as the text Stripe sent is stored without being parsed into a tree and
/// serialised again.
#[derive(Debug, Clone)]
pub struct Text<M> {
    /// The row; its `raw` field is ignored.
    pub row: M,
    /// The object's JSON text, for the `raw` column.
    pub raw: String,
}

impl<M: MirrorModel> From<M> for Text<M> {
    /// A row with its `raw` taken out and serialised: the write copies one string, where the
    /// query builder and the driver each deep-copied the tree of a `raw` bound as JSON.
    fn from(mut row: M) -> Self {
        let raw = row.take_raw().to_string();
        Text { row, raw }
    }
}

/// Writes a page of rows of one business in one statement. A row whose stored version is
/// newer (`last_event_at` greater than the incoming one) is kept; rows never duplicate. When
/// the page names one object twice, its newest version wins. Returns the rows written.
pub async fn upsert<E, C>(
    conn: &C,
    business: &BusinessId,
    rows: Vec<E::Model>,
) -> Result<u64, PersistenceError>
where
    E: Mirror,
    E::Model: MirrorModel,
    C: ConnectionTrait,
{
    let rows = rows.into_iter().map(Text::from).collect();
    upsert_text::<E, C>(conn, business, rows).await
}

/// [`upsert`] of rows whose `raw` is given as text (PostgreSQL casts it to `jsonb`; SQLite
/// stores JSON as text anyway).
pub async fn upsert_text<E, C>(
    conn: &C,
    business: &BusinessId,
    rows: Vec<Text<E::Model>>,
) -> Result<u64, PersistenceError>
where
    E: Mirror,
    E::Model: MirrorModel,
    C: ConnectionTrait,
{
    if let Some(other) = rows
        .iter()
        .find(|r| r.row.business_id() != business.as_str())
    {
        return Err(PersistenceError::Scope(format!(
            "row {} of {} written through business {business}",
            other.row.stripe_id(),
            other.row.business_id()
        )));
    }
    // Keep one version per object: the newest, and on a tie the later one in the page.
    let mut newest: HashMap<String, Text<E::Model>> = HashMap::with_capacity(rows.len());
    let mut order = Vec::with_capacity(rows.len());
    for text in rows {
        let id = text.row.stripe_id();
        match newest.get(id) {
            Some(prev) if prev.row.last_event_at() > text.row.last_event_at() => {}
            Some(_) => {
                newest.insert(id.to_owned(), text);
            }
            None => {
                order.push(id.to_owned());
                newest.insert(id.to_owned(), text);
            }
        }
    }
    if newest.is_empty() {
        return Ok(0);
    }
    let columns: Vec<E::Column> = E::Column::iter().collect();
    let raw_at = columns
        .iter()
        .position(|c| c.as_str() == "raw")
        .ok_or_else(|| PersistenceError::Corrupt(format!("{} has no column raw", E::TABLE)))?;
    let rows = order.iter().filter_map(|id| newest.remove(id));
    let corrupt = |what: String| PersistenceError::Corrupt(format!("{}: {what}", E::TABLE));
    let mut insert = Query::insert();
    insert
        .into_table(E::default())
        .columns(columns.iter().copied());
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        // The page as one JSON array of rows that `jsonb_populate_recordset` reads into the
        // table's row type: one parameter, and one statement per table whatever the page's
        // size. A `VALUES` list of a parameter per cell was a statement per table and row
        // count, each kept in every pooled connection's statement cache with its parameters'
        // types (31 MB of a `bench`-scale first sync's 88 MB heap).
        let page = Func::cust("jsonb_populate_recordset")
            .arg(Expr::cust(format!("NULL::\"{}\"", E::TABLE)))
            .arg(Expr::val(page_json(&columns, raw_at, rows).map_err(corrupt)?).cast_as("jsonb"));
        let mut select = Query::select();
        select
            .columns(columns.iter().copied())
            .from_function(page, Alias::new("page"));
        insert
            .select_from(select)
            .map_err(|e| corrupt(e.to_string()))?;
    } else {
        // SQLite binds in process and stores `raw` as text.
        for Text { row, raw } in rows {
            let mut values: Vec<Expr> = columns
                .iter()
                .enumerate()
                .filter(|(at, _)| *at != raw_at)
                .map(|(_, c)| Expr::val(row.get(*c)))
                .collect();
            values.insert(raw_at, Expr::val(raw));
            insert.values(values).map_err(|e| corrupt(e.to_string()))?;
        }
    }
    let mut on_conflict =
        OnConflict::columns([column::<E>("business_id")?, column::<E>("stripe_id")?]);
    on_conflict.update_columns(
        E::Column::iter().filter(|c| !matches!(c.as_str(), "business_id" | "stripe_id")),
    );
    on_conflict.action_and_where(Expr::cust(format!(
        "{table}.last_event_at <= excluded.last_event_at",
        table = E::TABLE
    )));
    insert.on_conflict(on_conflict);
    Ok(conn.execute(&insert).await?.rows_affected())
}

/// Rows as a JSON array of objects keyed by column, each row's `raw` spliced in as its text.
fn page_json<M: ModelTrait>(
    columns: &[<M::Entity as EntityTrait>::Column],
    raw_at: usize,
    rows: impl Iterator<Item = Text<M>>,
) -> Result<String, String> {
    let mut page = String::with_capacity(64 * 1024);
    page.push('[');
    for (n, Text { row, raw }) in rows.enumerate() {
        page.push_str(if n == 0 { "{" } else { ",{" });
        for (at, c) in columns.iter().enumerate() {
            if at > 0 {
                page.push(',');
            }
            page.push('"');
            page.push_str(c.as_str());
            page.push_str("\":");
            if at == raw_at {
                page.push_str(&raw);
                continue;
            }
            // The mirror's columns hold text, integers and booleans besides `raw`.
            match row.get(*c) {
                sea_orm::Value::String(Some(v)) => page.push_str(&Value::String(v).to_string()),
                sea_orm::Value::BigInt(Some(v)) => page.push_str(&v.to_string()),
                sea_orm::Value::Bool(Some(v)) => page.push_str(if v { "true" } else { "false" }),
                v if !v.is_some() => page.push_str("null"),
                other => return Err(format!("column {} holds {other:?}", c.as_str())),
            }
        }
        page.push('}');
    }
    page.push(']');
    Ok(page)
}

/// Marks objects deleted (a `*.deleted` event, or gone from Stripe) unless a newer version is
/// stored.
pub async fn mark_deleted<E: Mirror, C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    stripe_ids: &[String],
    at: i64,
) -> Result<u64, PersistenceError> {
    if stripe_ids.is_empty() {
        return Ok(0);
    }
    let res = E::update_many()
        .col_expr(column::<E>("deleted")?, Expr::value(true))
        .col_expr(column::<E>("last_event_at")?, Expr::value(at))
        .filter(column::<E>("business_id")?.eq(business.as_str()))
        .filter(column::<E>("last_event_at")?.lte(at))
        .filter(crate::reads::one_of(
            conn.get_database_backend(),
            column::<E>("stripe_id")?,
            stripe_ids,
        ))
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

/// Reconciliation: marks every live row of the business that was not written since `since`
/// (the start of a full re-list) as deleted, unless an event touched it since.
pub async fn mark_unseen_deleted<E: Mirror, C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    since: i64,
) -> Result<u64, PersistenceError> {
    let res = E::update_many()
        .col_expr(column::<E>("deleted")?, Expr::value(true))
        .filter(column::<E>("business_id")?.eq(business.as_str()))
        .filter(column::<E>("deleted")?.eq(false))
        .filter(unseen_since::<E>(since)?)
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

/// The rows a reconciliation from `since` takes for gone (see [`mark_unseen_deleted`]):
/// neither written nor touched by an event since then.
pub fn unseen_since<E: Mirror>(since: i64) -> Result<Condition, PersistenceError> {
    Ok(Condition::all()
        .add(column::<E>("synced_at")?.lt(since))
        .add(column::<E>("last_event_at")?.lt(since)))
}

/// One object of one business, deleted or not.
pub async fn find<E, C>(
    conn: &C,
    business: &BusinessId,
    stripe_id: &str,
) -> Result<Option<E::Model>, PersistenceError>
where
    E: Mirror,
    C: ConnectionTrait,
{
    Ok(E::find()
        .filter(column::<E>("business_id")?.eq(business.as_str()))
        .filter(column::<E>("stripe_id")?.eq(stripe_id))
        .one(conn)
        .await?)
}

/// The stored `last_event_at` of objects of several tables, read in one statement (the
/// `UNION ALL` of one select per table): an event batch's versions cost one round trip, not
/// one per table. Objects not stored are absent.
#[derive(Debug, Default)]
pub struct StoredVersions(Option<sea_orm::sea_query::SelectStatement>);

impl StoredVersions {
    /// Adds the objects `stripe_ids` of `E`'s table, their versions keyed by `(tag, id)`.
    pub fn ask<E: Mirror>(
        &mut self,
        backend: sea_orm::DbBackend,
        business: &BusinessId,
        tag: &str,
        stripe_ids: &[&str],
    ) -> Result<(), PersistenceError> {
        if stripe_ids.is_empty() {
            return Ok(());
        }
        let id = column::<E>("stripe_id")?;
        let mut select = Query::select();
        select
            .expr_as(Expr::val(tag), Alias::new("tag"))
            .column(id)
            .column(column::<E>("last_event_at")?)
            .from(E::default())
            .and_where(column::<E>("business_id")?.eq(business.as_str()))
            .and_where(crate::reads::one_of(backend, id, stripe_ids));
        match &mut self.0 {
            Some(all) => {
                all.union(sea_orm::sea_query::UnionType::All, select);
            }
            None => self.0 = Some(select),
        }
        Ok(())
    }

    /// Reads every version asked for: `(tag, id)` → `last_event_at`.
    pub async fn read<C: ConnectionTrait>(
        self,
        conn: &C,
    ) -> Result<HashMap<(String, String), i64>, PersistenceError> {
        let Some(select) = self.0 else {
            return Ok(HashMap::new());
        };
        let rows = conn
            .query_all_raw(conn.get_database_backend().build(&select))
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    (row.try_get_by_index(0)?, row.try_get_by_index(1)?),
                    row.try_get_by_index(2)?,
                ))
            })
            .collect()
    }
}

/// Every row of one business (tests, verification and small reads).
pub async fn all<E: Mirror, C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<Vec<E::Model>, PersistenceError> {
    Ok(E::find()
        .filter(column::<E>("business_id")?.eq(business.as_str()))
        .all(conn)
        .await?)
}

/// Rows of one business, not counting deleted ones.
pub async fn count_live<E, C>(conn: &C, business: &BusinessId) -> Result<u64, PersistenceError>
where
    E: Mirror,
    E::Model: Send + Sync,
    C: ConnectionTrait,
{
    Ok(E::find()
        .filter(column::<E>("business_id")?.eq(business.as_str()))
        .filter(column::<E>("deleted")?.eq(false))
        .count(conn)
        .await?)
}
