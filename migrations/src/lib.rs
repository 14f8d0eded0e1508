//! Tributary's database schema as sea-orm migrations, identical in meaning on SQLite and
//! PostgreSQL (`raw` is `jsonb` on PostgreSQL). Times are `BIGINT` unix seconds, ids are text
//! (see `docs/decisions.md`).
//!
//! ```no_run
//! # async fn run() -> Result<(), sea_orm_migration::DbErr> {
//! use sea_orm_migration::MigratorTrait;
//! let db = sea_orm_migration::sea_orm::Database::connect("sqlite::memory:").await?;
//! tributary_migrations::Migrator::up(&db, None).await?;
//! # Ok(()) }
//! ```

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261123_000002_read_paths;
mod m20261201_000003_sync_canaries;
mod m20261201_000004_data_version;
mod m20261202_000005_lz4_json;
mod m20261207_000006_email_graph;
mod m20261208_000007_link_graph;
mod m20261208_000008_sqlite_partial_links;

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_read_paths::Migration),
            Box::new(m20261201_000003_sync_canaries::Migration),
            Box::new(m20261201_000004_data_version::Migration),
            Box::new(m20261202_000005_lz4_json::Migration),
            Box::new(m20261207_000006_email_graph::Migration),
            Box::new(m20261208_000007_link_graph::Migration),
            Box::new(m20261208_000008_sqlite_partial_links::Migration),
        ]
    }
}

/// Names of every table the migrations create (besides sea-orm's own bookkeeping table).
pub const TABLES: &[&str] = &{
    const INITIAL: &[&str] = m20261123_000001_initial::TABLES;
    let mut all = [""; INITIAL.len() + 1];
    let mut i = 0;
    while i < INITIAL.len() {
        all[i] = INITIAL[i];
        i += 1;
    }
    all[i] = m20261201_000003_sync_canaries::TABLE;
    all
};

/// The unlogged table that tells a sync its PostgreSQL server lost recent commits (crash,
/// immediate shutdown, failover) while it ran; see `m20261201_000003_sync_canaries`.
pub const CANARY_TABLE: &str = m20261201_000003_sync_canaries::TABLE;

/// Mirror tables: one row per Stripe object, keyed by (business_id, stripe_id).
pub const MIRROR_TABLES: &[&str] = m20261123_000001_initial::MIRROR_TABLES;
