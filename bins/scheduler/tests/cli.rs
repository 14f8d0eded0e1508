//! The `tributary-scheduler` binary as an operator runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use sea_orm::{ConnectionTrait, Statement};
use tributary_persistence::testing::{Backend, run_unmigrated};

async fn migrate_applies_the_schema(backend: Backend) {
    run_unmigrated(backend, |t| async move {
        let out = Command::new(env!("CARGO_BIN_EXE_tributary-scheduler"))
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", &t.url)
            .output()
            .expect("run tributary-scheduler");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every table exists: counting rows in each succeeds.
        let backend = t.db.conn().get_database_backend();
        for table in tributary_migrations::TABLES {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            t.db.conn()
                .query_one_raw(Statement::from_string(backend, sql))
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"));
        }
    })
    .await;
}

mod migrate {
    #[tokio::test]
    async fn sqlite() {
        super::migrate_applies_the_schema(super::Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        super::migrate_applies_the_schema(super::Backend::Postgres).await;
    }
}

#[test]
fn help_lists_migrate() {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary-scheduler"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrate"));
}
