//! Per-business webhook signing secrets and the received-events idempotency record.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use tributary_domain::BusinessId;

use crate::entities::{webhook_endpoints, webhook_events};
use crate::{Database, PersistenceError};

/// Saves (or replaces) a business's webhook signing secret.
pub async fn set_secret(
    db: &Database,
    business: &BusinessId,
    secret: &str,
    now: i64,
) -> Result<(), PersistenceError> {
    webhook_endpoints::Entity::insert(webhook_endpoints::ActiveModel {
        business_id: Set(business.as_str().to_owned()),
        secret: Set(secret.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(webhook_endpoints::Column::BusinessId)
            .update_columns([
                webhook_endpoints::Column::Secret,
                webhook_endpoints::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(db.writer())
    .await?;
    Ok(())
}

/// The business's own webhook signing secret, if one is set.
pub async fn secret(
    db: &Database,
    business: &BusinessId,
) -> Result<Option<String>, PersistenceError> {
    Ok(webhook_endpoints::Entity::find_by_id(business.as_str())
        .one(db.conn())
        .await?
        .map(|m| m.secret))
}

/// Records several received events inside the caller's transaction, in one statement; events
/// recorded before are left as they are. Returns how many were new.
pub async fn record_events<C: ConnectionTrait>(
    conn: &C,
    events: Vec<webhook_events::Model>,
) -> Result<u64, PersistenceError> {
    let mut inserted = 0;
    // Well under the bind-parameter limits (11 columns a row).
    for chunk in events.chunks(500) {
        let rows = chunk.iter().cloned().map(webhook_events::ActiveModel::from);
        let res = webhook_events::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([
                webhook_events::Column::Endpoint,
                webhook_events::Column::EventId,
            ])
            .exec_without_returning(conn)
            .await?;
        if let sea_orm::TryInsertResult::Inserted(n) = res {
            inserted += n;
        }
    }
    Ok(inserted)
}

/// Records a received event inside the caller's transaction. `false` when the event was
/// recorded before (a duplicate delivery): the caller then changes nothing.
pub async fn record_event<C: ConnectionTrait>(
    conn: &C,
    event: webhook_events::Model,
) -> Result<bool, PersistenceError> {
    let res = webhook_events::Entity::insert(webhook_events::ActiveModel::from(event))
        .on_conflict_do_nothing_on([
            webhook_events::Column::Endpoint,
            webhook_events::Column::EventId,
        ])
        .exec_without_returning(conn)
        .await?;
    Ok(matches!(res, sea_orm::TryInsertResult::Inserted(n) if n == 1))
}
