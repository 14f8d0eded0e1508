//! The Stripe account a business links (`stripe_access`). No token is stored: calls use the
//! platform key with the `Stripe-Account` header.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use tributary_domain::{BusinessId, StripeAccountId};

use crate::entities::stripe_access::{self, Column, Entity, Model};
use crate::{Database, PersistenceError, PurgeScope, purge_business_rows};

/// `status` of a linked account.
pub const CONNECTED: &str = "connected";
/// `status` of an account whose access was revoked (deauthorized, or refused by Stripe).
pub const REVOKED: &str = "revoked";

/// What a successful OAuth exchange tells us about the account.
#[derive(Debug, Clone)]
pub struct NewConnection<'a> {
    /// The connected account (`stripe_user_id`).
    pub account: &'a StripeAccountId,
    /// Its display name, when Stripe gave one.
    pub account_name: Option<&'a str>,
    /// Whether the connection is in live mode.
    pub livemode: bool,
    /// The granted scope (`read_write`).
    pub scope: &'a str,
}

/// The outcome of [`connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connected {
    /// First link, or the same account linked again.
    Linked,
    /// The business now links a different account: the old account's mirrored rows were cleared.
    Relinked {
        /// The account linked before (`acct_…`).
        previous: String,
    },
}

/// The business's account, connected or revoked; `None` when it has none (never linked, or
/// disconnected).
pub async fn get(db: &Database, business: &BusinessId) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find_by_id(business.as_str()).one(db.conn()).await?)
}

/// The business holding an account, if any (webhook routing).
pub async fn by_account(db: &Database, account: &str) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find()
        .filter(Column::StripeAccountId.eq(account))
        .one(db.conn())
        .await?)
}

/// Links the account to the business. `Conflict("stripe account")` when another business holds
/// it. Linking a different account than before first clears every mirrored row of the old one,
/// in the same transaction.
pub async fn connect(
    db: &Database,
    business: &BusinessId,
    conn: NewConnection<'_>,
    now: i64,
) -> Result<Connected, PersistenceError> {
    let txn = db.begin_write().await?;
    if let Some(holder) = Entity::find()
        .filter(Column::StripeAccountId.eq(conn.account.as_str()))
        .one(&txn)
        .await?
        && holder.business_id != business.as_str()
    {
        return Err(PersistenceError::Conflict("stripe account"));
    }
    // Lock the business's connection row (PostgreSQL) so a sync page of the old account in
    // flight finishes before its rows are cleared, and later pages see the new account.
    let mut previous = Entity::find_by_id(business.as_str());
    if sea_orm::ConnectionTrait::get_database_backend(&txn) == sea_orm::DbBackend::Postgres {
        previous = sea_orm::QuerySelect::lock_exclusive(previous);
    }
    let previous = previous.one(&txn).await?;
    let outcome = match &previous {
        Some(p) if p.stripe_account_id != conn.account.as_str() => {
            purge_business_rows(&txn, business, PurgeScope::MirroredData).await?;
            Connected::Relinked {
                previous: p.stripe_account_id.clone(),
            }
        }
        _ => Connected::Linked,
    };
    let model = stripe_access::ActiveModel {
        business_id: Set(business.as_str().to_owned()),
        stripe_account_id: Set(conn.account.as_str().to_owned()),
        account_name: Set(conn.account_name.map(str::to_owned)),
        livemode: Set(conn.livemode),
        scope: Set(conn.scope.to_owned()),
        date_created: Set(now),
        status: Set(CONNECTED.to_owned()),
        revoked_at: Set(None),
        // From the clock, so a later link never reuses a version of an earlier one.
        data_version: Set(fresh_version()),
    };
    if previous.is_some() {
        Entity::update(model)
            .exec(&txn)
            .await
            .map_err(|e| PersistenceError::unique(e, "stripe account"))?;
    } else {
        Entity::insert(model)
            .exec_without_returning(&txn)
            .await
            .map_err(|e| PersistenceError::unique(e, "stripe account"))?;
    }
    txn.commit().await?;
    Ok(outcome)
}

/// Marks the connection revoked (Stripe refused access, or deauthorized the application).
pub async fn mark_revoked(
    db: &Database,
    business: &BusinessId,
    now: i64,
) -> Result<bool, PersistenceError> {
    let res = Entity::update_many()
        .col_expr(Column::Status, Expr::value(REVOKED))
        .col_expr(Column::RevokedAt, Expr::value(now))
        .filter(Column::BusinessId.eq(business.as_str()))
        .filter(Column::Status.eq(CONNECTED))
        .exec(db.writer())
        .await?;
    Ok(res.rows_affected == 1)
}

/// Refreshes the account's display name.
pub async fn set_account_name(
    db: &Database,
    business: &BusinessId,
    name: Option<&str>,
) -> Result<(), PersistenceError> {
    Entity::update_many()
        .col_expr(Column::AccountName, Expr::value(name.map(str::to_owned)))
        .filter(Column::BusinessId.eq(business.as_str()))
        .exec(db.writer())
        .await?;
    Ok(())
}

/// Connections in the given status (admin view; the scheduler's list of what to sync).
pub async fn list_by_status(db: &Database, status: &str) -> Result<Vec<Model>, PersistenceError> {
    Ok(Entity::find()
        .filter(Column::Status.eq(status))
        .all(db.conn())
        .await?)
}

/// Reads the business's connection row inside a write transaction and locks it on
/// PostgreSQL: `exclusive` makes every writer of one business's read models — incremental sync
/// pages, webhook events — take its turn; shared (`FOR SHARE`) lets the pages of a full re-list
/// write concurrently while still holding off a disconnect. SQLite's `BEGIN IMMEDIATE` already
/// serialises writers.
///
/// The exclusive lock is taken by bumping `data_version` (`UPDATE … RETURNING`), in the same
/// round trip: whoever keeps something derived from the business's data knows it changed. A
/// full re-list bumps it once, at its end ([`bump_version`]).
pub async fn lock_for_write<C: sea_orm::ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    exclusive: bool,
) -> Result<Option<Model>, PersistenceError> {
    if exclusive {
        return Ok(bump(business)
            .exec_with_returning(conn)
            .await?
            .into_iter()
            .next());
    }
    let mut query = Entity::find_by_id(business.as_str());
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        query = sea_orm::QuerySelect::lock_shared(query);
    }
    Ok(query.one(conn).await?)
}

/// Marks the business's data changed (see [`lock_for_write`]): at the end of a full re-list,
/// whose pages write under the shared lock, and when any run ends.
pub async fn bump_version<C: sea_orm::ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<(), PersistenceError> {
    bump(business).exec(conn).await?;
    Ok(())
}

/// `data_version + 1` on the business's connection row.
fn bump(business: &BusinessId) -> sea_orm::UpdateMany<Entity> {
    Entity::update_many()
        .col_expr(Column::DataVersion, Expr::col(Column::DataVersion).add(1))
        .filter(Column::BusinessId.eq(business.as_str()))
}

/// The business's `data_version`, `None` when it has no connection row.
pub async fn data_version(
    db: &Database,
    business: &BusinessId,
) -> Result<Option<i64>, PersistenceError> {
    use sea_orm::QuerySelect;
    Ok(Entity::find_by_id(business.as_str())
        .select_only()
        .column(Column::DataVersion)
        .into_tuple::<i64>()
        .one(db.conn())
        .await?)
}

/// A starting `data_version`: the clock in microseconds.
fn fresh_version() -> i64 {
    let micros = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    i64::try_from(micros).unwrap_or(i64::MAX / 2)
}
