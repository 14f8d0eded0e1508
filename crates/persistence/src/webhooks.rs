//! Per-business webhook signing secrets and the received-events idempotency record.

use std::collections::HashSet;

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

/// Claims received events inside the caller's transaction: inserts the records of those not
/// recorded before, in one statement, and returns the (endpoint, event id) of the ones it
/// inserted; the others are duplicates (recorded by an earlier delivery, or twice in
/// `events`). The caller then gives each claimed event its outcome with
/// [`settle_events`] before committing.
///
/// The claim is the duplicate check: its conflicts are found through the primary key whatever
/// the planner believes of the table, where a `SELECT` of the ids by `= ANY(…)` planned once
/// (as a webhook turn plans) kept the plan made while the table was nearly empty, a scan of
/// every record of the endpoint, and grew slower with each event recorded.
pub async fn claim_events<C: ConnectionTrait>(
    conn: &C,
    events: &[webhook_events::Model],
) -> Result<HashSet<(String, String)>, PersistenceError> {
    let mut claimed = HashSet::with_capacity(events.len());
    // Well under the bind-parameter limits (10 columns a row).
    for chunk in events.chunks(500) {
        let rows = chunk.iter().cloned().map(webhook_events::ActiveModel::from);
        let res = webhook_events::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([
                webhook_events::Column::Endpoint,
                webhook_events::Column::EventId,
            ])
            .exec_with_returning_keys(conn)
            .await?;
        if let sea_orm::TryInsertResult::Inserted(keys) = res {
            claimed.extend(keys);
        }
    }
    Ok(claimed)
}

/// Writes the outcome of events [`claim_events`] claimed in the same transaction (the rest of
/// each record was written by the claim), in one statement: an upsert on the primary key, for
/// the same reason as the claim.
pub async fn settle_events<C: ConnectionTrait>(
    conn: &C,
    events: &[webhook_events::Model],
) -> Result<(), PersistenceError> {
    for chunk in events.chunks(500) {
        let rows = chunk.iter().cloned().map(webhook_events::ActiveModel::from);
        webhook_events::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    webhook_events::Column::Endpoint,
                    webhook_events::Column::EventId,
                ])
                .update_column(webhook_events::Column::Outcome)
                .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
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
