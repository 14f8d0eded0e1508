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

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_read_paths::Migration),
        ]
    }
}

/// Names of every table the migrations create (besides sea-orm's own bookkeeping table).
pub const TABLES: &[&str] = m20261123_000001_initial::TABLES;

/// Mirror tables: one row per Stripe object, keyed by (business_id, stripe_id).
pub const MIRROR_TABLES: &[&str] = m20261123_000001_initial::MIRROR_TABLES;
