//! One-time CSRF nonces for the Connect OAuth flow.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use tributary_domain::BusinessId;

use crate::entities::oauth_states::{self, Column, Entity, Model};
use crate::{Database, PersistenceError};

/// Stores a fresh nonce bound to business, portal and user, valid `ttl_secs`.
pub async fn create(
    db: &Database,
    nonce: &str,
    business: &BusinessId,
    portal: &str,
    user: &str,
    now: i64,
    ttl_secs: i64,
) -> Result<(), PersistenceError> {
    Entity::insert(oauth_states::ActiveModel {
        nonce: Set(nonce.to_owned()),
        business_id: Set(business.as_str().to_owned()),
        portal: Set(portal.to_owned()),
        user_sub: Set(user.to_owned()),
        created_at: Set(now),
        expires_at: Set(now + ttl_secs),
        used_at: Set(None),
    })
    .exec_without_returning(db.writer())
    .await?;
    Ok(())
}

/// Uses a nonce: `Some` exactly once while it is unexpired; `None` when unknown, used or
/// expired. The conditional update makes two concurrent callbacks race safely.
pub async fn consume(
    db: &Database,
    nonce: &str,
    now: i64,
) -> Result<Option<Model>, PersistenceError> {
    let res = Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(now))
        .filter(Column::Nonce.eq(nonce))
        .filter(Column::UsedAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
        .exec(db.writer())
        .await?;
    if res.rows_affected != 1 {
        return Ok(None);
    }
    Ok(Entity::find_by_id(nonce).one(db.conn()).await?)
}

/// Removes states that expired before `before` (housekeeping).
pub async fn prune(db: &Database, before: i64) -> Result<u64, PersistenceError> {
    Ok(Entity::delete_many()
        .filter(Column::ExpiresAt.lt(before))
        .exec(db.writer())
        .await?
        .rows_affected)
}
