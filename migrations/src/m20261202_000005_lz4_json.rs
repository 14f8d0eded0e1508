//! PostgreSQL: the `jsonb` columns that hold Stripe's objects (every mirror table's `raw`, and
//! `webhook_events.payload`) are compressed with lz4 instead of the default pglz.
//!
//! Most objects are over the 2 kB at which PostgreSQL compresses a value, and pglz was the
//! largest single item of PostgreSQL's CPU during a first sync (5 % of the machine's samples,
//! `docs/performance.md`); with lz4 the `bench`-scale first sync took 12.6–12.9 s instead of
//! 14.0–14.6 s. It changes how new values are stored, not what they read as, and a server built
//! without lz4 (or older than PostgreSQL 14) keeps pglz: the migration then only says so.
//! SQLite has nothing to change.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::m20261123_000001_initial::MIRROR_TABLES;

/// Sets lz4 on the object columns (PostgreSQL).
#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000005_lz4_json"
    }
}

/// Sets every object column's compression to `method` (PostgreSQL), or leaves them as they
/// are, with a notice, where the server cannot.
async fn set_compression(manager: &SchemaManager<'_>, method: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let columns = MIRROR_TABLES
        .iter()
        .map(|t| (*t, "raw"))
        .chain([("webhook_events", "payload")]);
    let alters: String = columns
        .map(|(t, c)| {
            format!("EXECUTE 'ALTER TABLE {t} ALTER COLUMN {c} SET COMPRESSION {method}'; ")
        })
        .collect();
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "DO $$ BEGIN {alters}\
             EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN \
             RAISE NOTICE 'jsonb columns keep their compression: %', SQLERRM; END $$"
        ))
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_compression(manager, "lz4").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_compression(manager, "pglz").await
    }
}
