//! `stripe_access.data_version`: a number that changes whenever the business's mirror or read
//! models change, so the API can keep what it derives from a whole business (the dashboards'
//! movements and subscriptions) until the data under it changes.
//!
//! Writers that lock the business exclusively (webhooks, Stripe events, incremental sync
//! pages) bump it in the statement that takes the lock; a full re-list bumps it once, in its
//! final transaction, and every run bumps it when it ends (its pages were written). A new link
//! starts it from the clock in microseconds, so a disconnect and a reconnect never reuse a
//! version.

use sea_orm_migration::prelude::*;

/// Adds `stripe_access.data_version`.
#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000004_data_version"
    }
}

#[derive(DeriveIden)]
enum StripeAccess {
    Table,
    DataVersion,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(StripeAccess::Table)
                    .add_column(
                        ColumnDef::new(StripeAccess::DataVersion)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(StripeAccess::Table)
                    .drop_column(StripeAccess::DataVersion)
                    .to_owned(),
            )
            .await
    }
}
