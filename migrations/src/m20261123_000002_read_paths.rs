//! Indexes for the per-email Stripe detail (SPEC §8 `stripe-info`): following the older
//! `invoice.payment_intent` / `invoice.charge` links and invoice payments by charge from the
//! payment side, so no read path scans a business's invoices.

use sea_orm_migration::prelude::*;

#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_read_paths"
    }
}

const INDEXES: &[(&str, &str, &str)] = &[
    (
        "stripe_invoices",
        "idx_stripe_invoices_payment_intent",
        "payment_intent",
    ),
    ("stripe_invoices", "idx_stripe_invoices_charge", "charge"),
    (
        "stripe_invoice_payments",
        "idx_stripe_invoice_payments_charge",
        "charge",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, name, col) in INDEXES {
            manager
                .create_index(
                    Index::create()
                        .name(*name)
                        .table(*table)
                        .col("business_id")
                        .col(*col)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, name, _) in INDEXES {
            manager
                .drop_index(Index::drop().name(*name).table(*table).to_owned())
                .await?;
        }
        Ok(())
    }
}
