//! Test support: a fresh, migrated database per test on SQLite and on PostgreSQL.
//!
//! PostgreSQL tests use the server named by `TRIBUTARY_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`): each test creates its own database there and
//! drops it afterwards. When the variable is unset the PostgreSQL variant prints a notice and
//! passes, unless `CI=true`, where it fails: CI must never skip them silently.
//!
//! ```ignore
//! tributary_persistence::db_test!(stores_a_business, |db| {
//!     // `db` is a migrated `tributary_persistence::Database`
//! });
//! ```

use std::io::Write as _;
use std::sync::Once;

use futures::FutureExt as _;
use sea_orm::ConnectionTrait;

use crate::Database;

pub mod cluster;

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "TRIBUTARY_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh database on the server named by [`POSTGRES_URL_VAR`].
    Postgres,
}

/// A migrated database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    /// The connected database.
    pub db: Database,
    /// Its URL, for other processes.
    pub url: String,
    backend: Backend,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

static SKIP_NOTICE: Once = Once::new();

/// Writes straight to the process's stderr: libtest captures `eprintln!`, and a skip must be
/// visible in the test output.
pub fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The PostgreSQL admin URL, or `None` (after a one-time notice) when tests should skip.
/// Panics under `CI=true` when it is missing.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if ci() => {
            panic!("{POSTGRES_URL_VAR} is not set, and CI=true requires the PostgreSQL tests")
        }
        _ => {
            SKIP_NOTICE.call_once(|| {
                notice(&format!(
                    "NOTICE: PostgreSQL tests SKIPPED ({POSTGRES_URL_VAR} is not set); only SQLite was tested"
                ))
            });
            None
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = match base.find("://").map(|i| i + 3) {
        Some(start) => match base[start..].find('/') {
            Some(slash) => &base[..start + slash],
            None => base,
        },
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

impl TestDb {
    /// A migrated SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        Self::sqlite_with(true).await
    }

    async fn sqlite_with(migrate: bool) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        let db = Database::connect(&url).await.expect("open sqlite");
        if migrate {
            db.migrate().await.expect("migrate sqlite");
        }
        TestDb {
            db,
            url,
            backend: Backend::Sqlite,
            admin_url: None,
            name: None,
            _dir: Some(dir),
        }
    }

    /// A fresh, migrated PostgreSQL database, or `None` when PostgreSQL tests are skipped.
    pub async fn postgres() -> Option<TestDb> {
        Self::postgres_with(true).await
    }

    async fn postgres_with(migrate: bool) -> Option<TestDb> {
        let admin_url = postgres_admin_url()?;
        Some(Self::postgres_at(&admin_url, migrate).await)
    }

    /// A fresh PostgreSQL database on the server of `admin_url` (benchmarks pass their own).
    pub async fn postgres_at(admin_url: &str, migrate: bool) -> TestDb {
        let admin_url = admin_url.to_owned();
        let name = format!("trib_test_{}", uuid::Uuid::now_v7().simple());
        let admin = sea_orm::Database::connect(&admin_url)
            .await
            .expect("connect to PostgreSQL admin url");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        let db = Database::connect(&url)
            .await
            .expect("open postgres test db");
        if migrate {
            db.migrate().await.expect("migrate postgres");
        }
        TestDb {
            db,
            url,
            backend: Backend::Postgres,
            admin_url: Some(admin_url),
            name: Some(name),
            _dir: None,
        }
    }

    /// A fresh migrated database of `backend` (`None`: PostgreSQL skipped).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        Self::create(backend, true).await
    }

    /// A fresh database of `backend`, migrated or left empty.
    pub async fn create(backend: Backend, migrate: bool) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite_with(migrate).await),
            Backend::Postgres => Self::postgres_with(migrate).await,
        }
    }

    /// The database's backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool and drops a PostgreSQL test database.
    pub async fn cleanup(self) {
        let TestDb {
            db,
            admin_url,
            name,
            ..
        } = self;
        db.close().await.ok();
        if let (Some(admin_url), Some(name)) = (admin_url, name)
            && let Ok(admin) = sea_orm::Database::connect(&admin_url).await
        {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok();
            admin.close().await.ok();
        }
    }
}

/// Runs `body` against a fresh database of `backend`, dropping it afterwards even when the
/// body panics (the panic is then resumed).
pub async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(TestDbRef) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run_with(backend, true, body).await
}

/// Like [`run`], on a database that is created but not migrated.
pub async fn run_unmigrated<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(TestDbRef) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run_with(backend, false, body).await
}

async fn run_with<F, Fut>(backend: Backend, migrate: bool, body: F)
where
    F: FnOnce(TestDbRef) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(test_db) = TestDb::create(backend, migrate).await else {
        return;
    };
    let handle = TestDbRef {
        db: test_db.db.clone(),
        url: test_db.url.clone(),
        backend,
    };
    let outcome = std::panic::AssertUnwindSafe(body(handle))
        .catch_unwind()
        .await;
    test_db.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// What a test body receives: the database, its URL (for other processes) and the backend.
#[derive(Debug, Clone)]
pub struct TestDbRef {
    /// The connected database.
    pub db: Database,
    /// Its URL, for other processes (binaries under test).
    pub url: String,
    /// Its backend.
    pub backend: Backend,
}

/// Declares a test that runs twice: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! db_test {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::testing::run($crate::testing::Backend::Sqlite, |$db| async move $body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::testing::run($crate::testing::Backend::Postgres, |$db| async move $body).await;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn swaps_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
