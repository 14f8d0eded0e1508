//! sea-orm entities and tenant-scoped repositories of Tributary, on SQLite and PostgreSQL.
//!
//! Every finder and writer takes the business id, so no caller can read or write another
//! tenant's rows by forgetting a filter. Mirror writes are batched upserts keyed by
//! `(business_id, stripe_id)` that keep the newer version (see [`mirror::upsert`]).
//!
//! # Example
//!
//! Another service opens the database, reads a business's mirror and what one person spent:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tributary_domain::{BusinessId, Currency, Email, Money};
//! use tributary_persistence::{Database, entities::stripe_customers, mirror, reads};
//!
//! let db = Database::connect("sqlite://tributary.db?mode=rwc").await?;
//! db.migrate().await?;
//! let business = BusinessId::parse("biz_1")?;
//! let customers = mirror::all::<stripe_customers::Entity, _>(db.conn(), &business).await?;
//! println!("{} customers mirrored", customers.len());
//!
//! // The spend summary (SPEC §7) of one normalised email: one row per currency.
//! let email = Email::parse("Ada@Example.com")?;
//! let spend = reads::spend_of_emails(db.conn(), &business, &[email.into_inner()]).await?;
//! for row in spend.values().flatten() {
//!     let net = Money::new(row.net, Currency::parse(&row.currency)?);
//!     println!("{}: {net} net over {} orders", row.email, row.order_count);
//! }
//! db.close().await?;
//! # Ok(()) }
//! ```

pub mod access;
pub mod billing;
pub mod businesses;
pub mod entities;
pub mod jobs;
pub mod mirror;
pub mod oauth_states;
pub mod reads;
pub mod testing;
pub mod webhooks;

use std::time::Duration;

use sea_orm::{
    AccessMode, ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, IsolationLevel, SqlErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use tributary_domain::BusinessId;
use tributary_migrations::MigratorTrait;

pub use sea_orm;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    /// The database refused or failed a statement (or could not be reached).
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A unique value (named: `"slug"`, `"stripe account"`, …) belongs to another row.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// A write would have touched another business's rows; nothing was written.
    #[error("tenant scope violated: {0}")]
    Scope(String),
    /// The stored rows or schema are not what the code expects (a row vanished mid-operation,
    /// a column is missing).
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
}

impl PersistenceError {
    /// Maps a unique-constraint violation to [`PersistenceError::Conflict`] naming `what`.
    pub(crate) fn unique(err: DbErr, what: &'static str) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => Self::Conflict(what),
            _ => Self::Db(err),
        }
    }
}

/// Whether `err` says the database cannot serve now, rather than that the statement is wrong:
/// no pooled connection within the acquire timeout (the server is down or every connection is
/// busy), the connection was lost or the server is shutting down or starting (PostgreSQL
/// `57P01`–`57P03`, `08xxx`), or SQLite's write lock stayed held past the busy timeout
/// (`SQLITE_BUSY`, `SQLITE_LOCKED`). The same request can succeed later.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    let sqlx_err = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx_err.as_ref() {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Primary result codes 5 (BUSY) and 6 (LOCKED), with their extended codes.
                db.code()
                    .and_then(|c| c.parse::<u32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6))
            } else if let Some(e) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                // Connection exceptions, and the server shutting down or starting up.
                let code = e.code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
            } else {
                false
            }
        }
        _ => false,
    }
}

impl PersistenceError {
    /// [`is_unavailable`] of the underlying database error.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Db(e) if is_unavailable(e))
    }
}

/// Current time as unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Prepared statements kept per pooled SQLite connection (sqlx's default is 100). Page
/// `INSERT`s of up to 100 rows are large statements, one per table and row count; SQLite
/// prepares in process, and 100 of them on each of 8 connections showed as memory growing
/// through a `bench`-scale first sync (peak RSS 255 → 218 MiB with 24). Since the writes have
/// their own two connections ([`Database::writer`]), only those hold them.
const SQLITE_STATEMENT_CACHE: usize = 24;

/// Connections of a SQLite file's pool for everything but writes.
const SQLITE_POOL: u32 = 8;

/// Connections of a SQLite file's pool for writes ([`Database::writer`]). SQLite has one writer
/// at a time; the second connection waits for the file's lock, so it begins as soon as the
/// transaction before it commits (with one, each transaction waited for the pool to hand the
/// connection over: a `bench`-scale first sync took 8.6–9.1 s instead of 7.1–7.2).
const SQLITE_WRITERS: u32 = 2;

/// Prepared statements kept per pooled PostgreSQL connection. A small cache costs round trips:
/// with 24 kept, a webhook turn's writes (then a statement per table and row count) evicted the
/// read paths' statements and nearly every statement was parsed and planned again (webhook
/// ingest 104 events/s with 24, 173/s with 400). Mirror pages are now one statement per table
/// whatever their size (`mirror::upsert_text`), which also keeps the cache small: sqlx keeps
/// each statement's parameter types, and a `VALUES` list of a parameter per cell made those
/// 31 MB of a `bench`-scale first sync's heap.
const POSTGRES_STATEMENT_CACHE: usize = 256;

/// A pooled connection idle at least this long is pinged before it is handed out; a busier one
/// is not. sqlx's default pings at every acquire: a round trip (and a wake-up of PostgreSQL's
/// backend) before every statement run on the pool, on top of the one sqlx always makes when
/// the connection comes back. A connection the server dropped while it sat idle (a restart, an
/// idle timeout) is still found out and replaced before use; one that breaks under load fails
/// its statement, as it would have a moment later, and is not returned to the pool.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Connections in a PostgreSQL pool (each of [`Database::conn`] and [`Database::lookups`]).
pub const POSTGRES_POOL: u32 = 16;

/// The tables whose planner statistics [`Database::refresh_statistics`] refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistics {
    /// Every mirror table: after a full run's pages.
    Mirror,
    /// The read models a full run rebuilds, `customer_spend` and `mrr_snapshots`: after it
    /// committed. A webhook turn plans its statements once and deletes the day's snapshots of
    /// its subscriptions by `subscription_id = ANY(…)`; planned against the statistics of the
    /// table before the first sync, that filtered every snapshot of the business's day.
    ReadModels,
}

/// A connection pool to the Tributary database.
#[derive(Debug, Clone)]
pub struct Database {
    conn: DatabaseConnection,
    /// The pool of [`Database::lookups`]: its own on PostgreSQL, `conn` again on SQLite.
    lookups: DatabaseConnection,
    /// [`Database::writer`] when not `conn`: on a SQLite file, a pool of its own.
    writer: Option<DatabaseConnection>,
    /// Permits of transactions that read on other pooled connections while they are open
    /// (see [`Database::reading_beside`]): half the pool (PostgreSQL).
    beside: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Database {
    /// Connects to `sqlite://…` or `postgres://…`. SQLite gets WAL and a busy timeout so the
    /// API and the scheduler can share one file.
    pub async fn connect(url: &str) -> Result<Self, PersistenceError> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire_if_idle_for(PING_AFTER_IDLE);
        if url.starts_with("sqlite:") {
            // Every pooled connection gets WAL and a busy timeout, so the API and the
            // scheduler can share one file.
            opts.map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
                    .statement_cache_capacity(SQLITE_STATEMENT_CACHE)
            });
            if url.contains(":memory:") {
                // Each connection would be a database of its own.
                opts.max_connections(1);
                let conn = sea_orm::Database::connect(opts).await?;
                return Ok(Self::with_pools(conn.clone(), conn, None, 1));
            }
            // The writes get a pool of their own (see `Database::writer`).
            let mut writer = opts.clone();
            writer.max_connections(SQLITE_WRITERS);
            opts.max_connections(SQLITE_POOL);
            let conn = sea_orm::Database::connect(opts).await?;
            let writer = sea_orm::Database::connect(writer).await?;
            return Ok(Self::with_pools(
                conn.clone(),
                conn,
                Some(writer),
                SQLITE_POOL,
            ));
        }
        opts.max_connections(POSTGRES_POOL);
        let mut lookups = opts.clone();
        // No JIT compilation: the statements here are short, and the generic plans the
        // lookups and `plan_once` keep are costed without their values. A plan guessed costly
        // is compiled again at every execution: a recursive walk of the link graph (tried,
        // not kept: docs/performance.md) compiled for 3.1 s to run for 1 ms.
        opts.map_sqlx_postgres_opts(|o| {
            o.statement_cache_capacity(POSTGRES_STATEMENT_CACHE)
                .options([("jit", "off")])
        });
        lookups.map_sqlx_postgres_opts(|o| {
            o.statement_cache_capacity(POSTGRES_STATEMENT_CACHE)
                .options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")])
        });
        let conn = sea_orm::Database::connect(opts).await?;
        let lookups = sea_orm::Database::connect(lookups).await?;
        Ok(Self::with_pools(conn, lookups, None, POSTGRES_POOL))
    }

    fn with_pools(
        conn: DatabaseConnection,
        lookups: DatabaseConnection,
        writer: Option<DatabaseConnection>,
        pool: u32,
    ) -> Self {
        Self {
            conn,
            lookups,
            writer,
            beside: std::sync::Arc::new(tokio::sync::Semaphore::new((pool as usize / 2).max(1))),
        }
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), PersistenceError> {
        tributary_migrations::Migrator::up(&self.conn, None).await?;
        Ok(())
    }

    /// Whether a write transaction about to begin may read on other pooled connections while
    /// it is open (a webhook turn's emails before, a full run's facts: the state before the
    /// transaction's own writes): on PostgreSQL a permit to hold until it ends, `None` on
    /// SQLite, whose writer reads in its transaction (an in-memory database has one
    /// connection, which the transaction holds).
    ///
    /// At most half the pool's connections are held by such transactions at once, so their
    /// reads beside always find a free connection; without the limit, a burst of them could
    /// hold every connection and each wait for another until the acquire timeout.
    pub async fn reading_beside(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.conn.get_database_backend() != DbBackend::Postgres {
            return None;
        }
        let permit = self.beside.clone().acquire_owned().await;
        Some(permit.expect("the semaphore is never closed"))
    }

    /// The underlying sea-orm connection, for queries of crates above this one.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// A pool for reads made outside a transaction of many statements of a few shapes, each
    /// along an index (`stripe-info`'s and a webhook turn's link-graph walks, a full run's facts
    /// in 2,000-row chunks). On PostgreSQL its connections plan each statement once and keep the
    /// plan (`plan_cache_mode = force_generic_plan`): by default a statement whose parameters are
    /// arrays is planned again at every execution, a large part of PostgreSQL's work for such a
    /// read (`stripe-info` at 16 connections: p95 30.6–31.3 → 22.4–24.5 ms). The writes keep the
    /// default: a first sync measured 20 % slower with every statement planned generically, its
    /// reads planned without their values against the statistics of empty tables. A kept plan
    /// is made again when `ANALYZE` changes its tables' statistics. On SQLite,
    /// [`Database::conn`].
    pub fn lookups(&self) -> &DatabaseConnection {
        &self.lookups
    }

    /// The pool for writes: [`Database::begin_write`]'s transactions, and the statements that
    /// write outside one (a job's progress and lease, a record, a setting). On a SQLite file it
    /// is a pool of its own of two connections: writers waiting for the file's one write lock
    /// wait there, never on connections the reads need, and only its connections keep the
    /// pages' large prepared `INSERT`s (a `bench`-scale first sync peaked at 170–189 MiB when
    /// they were spread over the eight, 121–129 with two). Otherwise [`Database::conn`].
    pub fn writer(&self) -> &DatabaseConnection {
        self.writer.as_ref().unwrap_or(&self.conn)
    }

    /// `true` when the database answers a trivial query (readiness).
    pub async fn ping(&self) -> bool {
        self.conn.ping().await.is_ok()
    }

    /// Closes the pools, waiting for their connections to close.
    pub async fn close(self) -> Result<(), PersistenceError> {
        if self.conn.get_database_backend() == DbBackend::Postgres {
            self.lookups.close().await?;
        }
        if let Some(writer) = self.writer {
            writer.close().await?;
        }
        self.conn.close().await?;
        Ok(())
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at `BEGIN`
    /// (`BEGIN IMMEDIATE`), so it waits on the busy timeout instead of failing when it later
    /// upgrades from reading to writing, on a connection of [`Database::writer`]; on PostgreSQL
    /// it is an ordinary transaction.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        begin_write(self.writer()).await
    }

    /// Begins a read-only transaction whose statements all see one snapshot, for a reader
    /// that gathers one view over several statements (the dashboards' inputs). On PostgreSQL
    /// it is `REPEATABLE READ, READ ONLY`; on SQLite (WAL) every transaction already reads one
    /// snapshot, taken at its first read, and sea-orm refuses isolation settings there.
    pub async fn begin_snapshot(&self) -> Result<DatabaseTransaction, DbErr> {
        match self.conn.get_database_backend() {
            DbBackend::Postgres => {
                self.conn
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await
            }
            _ => self.conn.begin().await,
        }
    }

    /// Refreshes the planner's statistics of the mirror tables or of `customer_spend`, after
    /// a bulk load (a full sync) changed them by more than autovacuum has caught up with.
    ///
    /// Without it the plans made after a first sync's pages are made for the tables as they
    /// were before it: PostgreSQL then believes a business has a few hundred rows and answers
    /// a graph walk's `stripe_id = ANY(…)` by filtering every row of the business (seen with
    /// `auto_explain` during webhook ingest: 5–140 ms statements that take under a millisecond
    /// with fresh statistics).
    /// PostgreSQL's `ANALYZE` samples a fixed number of rows per table (3,000 here), so its
    /// cost does not grow with the tables. SQLite's reads every entry of each index (0.1 s for
    /// a `bench`-scale account's mirror): a bounded analysis reads the first entries of each
    /// index only, which all belong to one business, and the planner then took a business for
    /// a thousand rows and read all of its rows rather than look a walk's few links up
    /// (`sqlite_walks_the_links_through_their_indexes`).
    pub async fn refresh_statistics(&self, tables: Statistics) -> Result<(), PersistenceError> {
        let tables = match tables {
            Statistics::Mirror => tributary_migrations::MIRROR_TABLES.to_vec(),
            Statistics::ReadModels => vec!["customer_spend", "mrr_snapshots"],
        };
        match self.conn.get_database_backend() {
            DbBackend::Postgres => {
                let tables = tables.join(", ");
                // A tenth of the default sample: row counts and distinct values for choosing
                // an index are what matters here, and the default sample took 2 s at `bench`
                // scale (autovacuum later analyses with the server's setting).
                let txn = self.conn.begin().await?;
                txn.execute_unprepared("SET LOCAL default_statistics_target = 10")
                    .await?;
                txn.execute_unprepared(&format!("ANALYZE {tables}")).await?;
                txn.commit().await?;
            }
            _ => {
                let analyse: Vec<String> =
                    tables.iter().map(|t| format!("ANALYZE \"{t}\"")).collect();
                self.writer()
                    .execute_unprepared(&format!(
                        "PRAGMA analysis_limit = 0; {}",
                        analyse.join("; ")
                    ))
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes every row the business has in every table except `businesses` itself, in one
    /// transaction (SPEC §4, disconnect).
    pub async fn purge_business(&self, business: &BusinessId) -> Result<(), PersistenceError> {
        let txn = self.begin_write().await?;
        purge_business_rows(&txn, business, PurgeScope::Everything).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// Makes the rest of a transaction plan each statement once, as [`Database::lookups`] does:
/// for a transaction of many small lookups whose parameters are arrays (a webhook turn's or an
/// event page's stored versions, link-graph walk and spend refresh), which PostgreSQL would
/// otherwise plan again at every execution (webhook ingest measured 13 % faster), and for a
/// sync page's upserts (one plan fits every page). Only for the rest of the transaction
/// (`SET LOCAL`); nothing on SQLite, which has no such setting.
pub async fn plan_once<C: ConnectionTrait>(txn: &C) -> Result<(), DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan")
            .await?;
    }
    Ok(())
}

/// [`Database::begin_write`] for any connection or transaction.
pub async fn begin_write<C: TransactionTrait>(conn: &C) -> Result<C::Transaction, DbErr> {
    conn.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// What [`purge_business_rows`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeScope {
    /// Every row but the business itself (disconnect).
    Everything,
    /// The mirrored data of the old account only (relinking to another account).
    MirroredData,
}

/// Tables that hold mirrored data derived from one Stripe account.
const DERIVED_TABLES: &[&str] = &["customer_spend", "mrr_snapshots", "sync_cursors"];
/// Tables that hold the business's connection state.
const CONNECTION_TABLES: &[&str] = &[
    "stripe_access",
    "oauth_states",
    "sync_jobs",
    tributary_migrations::CANARY_TABLE,
    "webhook_endpoints",
    "webhook_events",
];

/// Deletes the business's rows inside the caller's transaction.
pub async fn purge_business_rows<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
    scope: PurgeScope,
) -> Result<(), PersistenceError> {
    // `stripe_access` goes first: a sync page holds that row `FOR SHARE` while it writes, so
    // deleting it waits for any page in flight, and every later statement here sees (and
    // deletes) what that page wrote; the next page then finds no connection and stops.
    let mut tables: Vec<&str> = Vec::new();
    if scope == PurgeScope::Everything {
        tables.extend(CONNECTION_TABLES);
    }
    tables.extend(tributary_migrations::MIRROR_TABLES);
    tables.extend(DERIVED_TABLES);
    let backend = conn.get_database_backend();
    let placeholder = if backend == sea_orm::DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    for table in tables {
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            format!("DELETE FROM {table} WHERE business_id = {placeholder}"),
            [business.as_str().into()],
        ))
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a SQLite file, writers waiting for the write lock wait on the writer pool's
    /// connections, so the reads still find theirs: with a write transaction open and more
    /// writes waiting than the read pool has connections, a read answers at once.
    #[tokio::test]
    async fn sqlite_writers_waiting_leave_the_reads_their_connections() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = std::sync::Arc::new(Database::connect(&url).await.unwrap());
        db.conn()
            .execute_unprepared("CREATE TABLE t (n INTEGER)")
            .await
            .unwrap();
        let held = db.begin_write().await.unwrap();
        held.execute_unprepared("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        let waiting: Vec<_> = (0..2 * SQLITE_POOL)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.writer()
                        .execute_unprepared("INSERT INTO t VALUES (2)")
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            db.conn().query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "SELECT count(*) FROM t",
            )),
        )
        .await
        .expect("a read waited behind the writers")
        .unwrap()
        .unwrap();
        // The open transaction's row is not visible yet.
        assert_eq!(read.try_get_by_index::<i64>(0).unwrap(), 0);
        held.commit().await.unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        let n = db
            .conn()
            .query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "SELECT count(*) FROM t",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n.try_get_by_index::<i64>(0).unwrap(),
            1 + 2 * i64::from(SQLITE_POOL)
        );
    }

    /// A lock held past the busy timeout and an exhausted pool are "unavailable" (a retry may
    /// succeed); a broken statement is not.
    #[tokio::test]
    async fn unavailable_database_errors() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let holder = Database::connect(&url).await.unwrap();
        let lock = holder.begin_write().await.unwrap();
        let mut opts = ConnectOptions::new(url);
        opts.map_sqlx_sqlite_opts(|o| o.busy_timeout(Duration::ZERO));
        let other = sea_orm::Database::connect(opts).await.unwrap();
        let busy = begin_write(&other).await.unwrap_err();
        assert!(is_unavailable(&busy), "{busy:?}");
        let syntax = other.execute_unprepared("SELEC 1").await.unwrap_err();
        assert!(!is_unavailable(&syntax), "{syntax:?}");
        assert!(is_unavailable(&DbErr::ConnectionAcquire(
            sea_orm::ConnAcquireErr::Timeout
        )));
        assert!(!is_unavailable(&DbErr::RecordNotFound("x".into())));
        lock.rollback().await.unwrap();
        // A statement PostgreSQL refuses is not unavailability, whatever its SQLSTATE's digits
        // (22021 would read as SQLite's BUSY if codes were compared as numbers).
        if let Some(url) = testing::postgres_admin_url() {
            let pg = Database::connect(&url).await.unwrap();
            let nul = pg
                .conn()
                .query_one_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "SELECT $1::text",
                    ["a\0b".into()],
                ))
                .await
                .unwrap_err();
            assert!(!is_unavailable(&nul), "{nul:?}");
        }
    }
}
