//! `sync_canaries`: one row per running sync, in an **unlogged** table on PostgreSQL.
//!
//! PostgreSQL empties unlogged tables after a crash, an immediate shutdown or a failover, and
//! keeps them across a clean restart. A sync plants its row when it starts and checks it in its
//! last transaction: a missing row means the server lost its recent history while the run went
//! on (page transactions commit without waiting for their WAL flush, and a promoted replica may
//! lag), so pages the run wrote may be gone and it must not advance its cursors. On SQLite the
//! table is ordinary and unused: a committed SQLite transaction survives a process crash.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Creates `sync_canaries` (unlogged on PostgreSQL).
#[derive(Debug)]
pub struct Migration;

/// The table's name.
pub const TABLE: &str = "sync_canaries";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000003_sync_canaries"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let unlogged = match manager.get_database_backend() {
            DbBackend::Postgres => "UNLOGGED ",
            _ => "",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE {unlogged}TABLE IF NOT EXISTS {TABLE} (\
                 job_id TEXT NOT NULL PRIMARY KEY, \
                 business_id TEXT NOT NULL, \
                 owner TEXT NOT NULL, \
                 created_at BIGINT NOT NULL)"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP TABLE IF EXISTS {TABLE}"))
            .await?;
        Ok(())
    }
}
