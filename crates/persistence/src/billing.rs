//! The platform's own Stripe billing of agencies (`agency_billing`), and the platform-billing
//! webhook events that could not be mapped to an agency yet (kept with their payload so they
//! are applied once a later event links their customer).
//!
//! Every function takes a connection or a transaction, so the webhook's idempotency record and
//! the change it causes commit together.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    sea_query::Expr,
};

use crate::PersistenceError;
use crate::entities::agency_billing::{self, Column, Entity, Model};
use crate::entities::webhook_events;

/// The idempotency-record endpoint name of the platform-billing webhook.
pub const PLATFORM_ENDPOINT: &str = "platform";
/// The outcome of a platform event no agency could be found for (yet).
pub const UNROUTED: &str = "unrouted";

/// The billing row of an agency, if any.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    agency_id: &str,
) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find_by_id(agency_id).one(conn).await?)
}

/// The agency billed through a Stripe customer (`cus_…`) of the platform account.
pub async fn by_customer<C: ConnectionTrait>(
    conn: &C,
    customer: &str,
) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find()
        .filter(Column::Customer.eq(customer))
        .order_by_asc(Column::AgencyId)
        .one(conn)
        .await?)
}

/// The agency whose plan is the subscription (`sub_…`).
pub async fn by_subscription<C: ConnectionTrait>(
    conn: &C,
    subscription: &str,
) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find()
        .filter(Column::Subscription.eq(subscription))
        .order_by_asc(Column::AgencyId)
        .one(conn)
        .await?)
}

/// Writes the agency's row as given (insert or replace every column).
pub async fn save<C: ConnectionTrait>(conn: &C, row: Model) -> Result<(), PersistenceError> {
    Entity::insert(agency_billing::ActiveModel {
        agency_id: Set(row.agency_id),
        customer: Set(row.customer),
        subscription: Set(row.subscription),
        price: Set(row.price),
        status: Set(row.status),
        current_period_end: Set(row.current_period_end),
        seats: Set(row.seats),
        last_event_at: Set(row.last_event_at),
        updated_at: Set(row.updated_at),
    })
    .on_conflict(
        OnConflict::column(Column::AgencyId)
            .update_columns([
                Column::Customer,
                Column::Subscription,
                Column::Price,
                Column::Status,
                Column::CurrentPeriodEnd,
                Column::Seats,
                Column::LastEventAt,
                Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Platform events recorded as unrouted since `since` (unix seconds) that kept their payload,
/// oldest first.
pub async fn unrouted_events<C: ConnectionTrait>(
    conn: &C,
    since: i64,
) -> Result<Vec<webhook_events::Model>, PersistenceError> {
    Ok(webhook_events::Entity::find()
        .filter(webhook_events::Column::Endpoint.eq(PLATFORM_ENDPOINT))
        .filter(webhook_events::Column::Outcome.eq(UNROUTED))
        .filter(webhook_events::Column::ReceivedAt.gte(since))
        .filter(webhook_events::Column::Payload.is_not_null())
        .order_by_asc(webhook_events::Column::ReceivedAt)
        .order_by_asc(webhook_events::Column::EventId)
        .all(conn)
        .await?)
}

/// Sets the outcome of a recorded platform event (an unrouted event applied later); its payload
/// is no longer needed and is dropped.
pub async fn set_event_outcome<C: ConnectionTrait>(
    conn: &C,
    event_id: &str,
    outcome: &str,
    processed_at: i64,
) -> Result<(), PersistenceError> {
    webhook_events::Entity::update_many()
        .col_expr(webhook_events::Column::Outcome, Expr::value(outcome))
        .col_expr(
            webhook_events::Column::ProcessedAt,
            Expr::value(processed_at),
        )
        .col_expr(
            webhook_events::Column::Payload,
            Expr::value(Option::<serde_json::Value>::None),
        )
        .filter(webhook_events::Column::Endpoint.eq(PLATFORM_ENDPOINT))
        .filter(webhook_events::Column::EventId.eq(event_id))
        .exec(conn)
        .await?;
    Ok(())
}
