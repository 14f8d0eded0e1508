//! Sync jobs and their lease: one run per business at a time, on SQLite and PostgreSQL.
//!
//! A partial unique index allows at most one `queued` or `running` job per business, so a
//! second trigger joins the active job instead of creating another. A worker owns a job
//! through a lease (owner + expiry) taken and renewed with conditional updates; a dead
//! worker's lease expires and another worker takes the job over.

use sea_orm::sea_query::{Expr, ExprTrait, Func, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use tributary_domain::{BusinessId, JobId};

use crate::entities::sync_jobs::{self, Column, Entity, Model};
use crate::{Database, PersistenceError};

/// `status` of a job waiting for a worker.
pub const QUEUED: &str = "queued";
/// `status` of a job a worker holds the lease of.
pub const RUNNING: &str = "running";
/// `status` of a finished job.
pub const SUCCEEDED: &str = "succeeded";
/// `status` of a job that failed (or was cancelled); `error_code` says why.
pub const FAILED: &str = "failed";

fn active() -> Condition {
    Condition::any()
        .add(Column::Status.eq(QUEUED))
        .add(Column::Status.eq(RUNNING))
}

/// The business's queued or running job, if any.
pub async fn active_job(
    db: &Database,
    business: &BusinessId,
) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find()
        .filter(Column::BusinessId.eq(business.as_str()))
        .filter(active())
        .one(db.conn())
        .await?)
}

/// Queues a sync, or joins the one already queued or running. Returns the job and whether it
/// was created by this call.
pub async fn enqueue(
    db: &Database,
    business: &BusinessId,
    trigger: &str,
    full: bool,
    now: i64,
) -> Result<(Model, bool), PersistenceError> {
    // Two attempts: a concurrent enqueue can win the unique index between our read and insert.
    for _ in 0..2 {
        if let Some(job) = active_job(db, business).await? {
            return Ok((job, false));
        }
        let model = sync_jobs::ActiveModel {
            id: Set(JobId::new().to_string()),
            business_id: Set(business.as_str().to_owned()),
            trigger: Set(trigger.to_owned()),
            status: Set(QUEUED.to_owned()),
            full: Set(full),
            created_at: Set(now),
            started_at: Set(None),
            finished_at: Set(None),
            error_code: Set(None),
            error_message: Set(None),
            progress: Set(serde_json::json!({})),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
        };
        match Entity::insert(model.clone())
            .exec_without_returning(db.writer())
            .await
        {
            Ok(_) => {
                let id = model.id.clone().unwrap();
                let job = Entity::find_by_id(id).one(db.conn()).await?;
                return job
                    .map(|j| (j, true))
                    .ok_or_else(|| PersistenceError::Corrupt("job vanished".into()));
            }
            Err(e) => match PersistenceError::unique(e, "active sync job") {
                PersistenceError::Conflict(_) => continue,
                other => return Err(other),
            },
        }
    }
    active_job(db, business)
        .await?
        .map(|j| (j, false))
        .ok_or_else(|| PersistenceError::Corrupt("active job disappeared during enqueue".into()))
}

/// Takes (or re-takes) the lease of a job: succeeds when the job is active and unleased, its
/// lease expired, or `owner` already holds it.
pub async fn claim(
    db: &Database,
    job_id: &str,
    owner: &str,
    now: i64,
    lease_secs: i64,
) -> Result<bool, PersistenceError> {
    let res = Entity::update_many()
        .col_expr(Column::Status, Expr::value(RUNNING))
        .col_expr(Column::LeaseOwner, Expr::value(owner))
        .col_expr(Column::LeaseExpiresAt, Expr::value(now + lease_secs))
        .col_expr(
            Column::StartedAt,
            Expr::from(Func::coalesce([
                Expr::col(Column::StartedAt),
                Expr::value(now),
            ])),
        )
        .filter(Column::Id.eq(job_id))
        .filter(active())
        .filter(
            Condition::any()
                .add(Column::LeaseOwner.is_null())
                .add(Column::LeaseExpiresAt.lt(now))
                .add(Column::LeaseOwner.eq(owner)),
        )
        .exec(db.writer())
        .await?;
    Ok(res.rows_affected == 1)
}

/// Picks the oldest job no live worker holds and leases it to `owner`. On PostgreSQL the pick
/// uses `FOR UPDATE SKIP LOCKED`, so several schedulers never contend for one row; the lease
/// update itself is conditional, so two pickers can never both win.
pub async fn claim_next(
    db: &Database,
    owner: &str,
    now: i64,
    lease_secs: i64,
) -> Result<Option<Model>, PersistenceError> {
    Ok(claim_next_taking_over(db, owner, now, lease_secs)
        .await?
        .map(|(job, _)| job))
}

/// [`claim_next`], also naming the worker whose expired lease the claim took over (`None` when
/// the job was unleased or already `owner`'s).
pub async fn claim_next_taking_over(
    db: &Database,
    owner: &str,
    now: i64,
    lease_secs: i64,
) -> Result<Option<(Model, Option<String>)>, PersistenceError> {
    let claimable = Condition::any()
        .add(Column::Status.eq(QUEUED).and(Column::LeaseOwner.is_null()))
        .add(
            Column::Status
                .eq(QUEUED)
                .and(Column::LeaseExpiresAt.lt(now)),
        )
        .add(
            Column::Status
                .eq(RUNNING)
                .and(Column::LeaseExpiresAt.lt(now)),
        );
    let txn = db.begin_write().await?;
    let mut query = Entity::find()
        .filter(claimable)
        .order_by_asc(Column::CreatedAt)
        .limit(8);
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let candidates = query.all(&txn).await?;
    let mut picked = None;
    for job in candidates {
        let res = Entity::update_many()
            .col_expr(Column::Status, Expr::value(RUNNING))
            .col_expr(Column::LeaseOwner, Expr::value(owner))
            .col_expr(Column::LeaseExpiresAt, Expr::value(now + lease_secs))
            .col_expr(
                Column::StartedAt,
                Expr::value(job.started_at.unwrap_or(now)),
            )
            .filter(Column::Id.eq(job.id.as_str()))
            .filter(Column::Status.eq(job.status.as_str()))
            .filter(match &job.lease_owner {
                Some(o) => Column::LeaseOwner.eq(o.as_str()),
                None => Column::LeaseOwner.is_null(),
            })
            .exec(&txn)
            .await?;
        if res.rows_affected == 1 {
            let previous = job.lease_owner.filter(|o| o != owner);
            picked = Some((job.id, previous));
            break;
        }
    }
    txn.commit().await?;
    match picked {
        Some((id, previous)) => Ok(Entity::find_by_id(id)
            .one(db.conn())
            .await?
            .map(|job| (job, previous))),
        None => Ok(None),
    }
}

/// An update of the job `owner` runs (it still holds the lease). Such an update touching no
/// row means the owner lost the job.
fn held(job_id: &str, owner: &str) -> sea_orm::UpdateMany<Entity> {
    Entity::update_many()
        .filter(Column::Id.eq(job_id))
        .filter(Column::Status.eq(RUNNING))
        .filter(Column::LeaseOwner.eq(owner))
}

/// `update` also clears the lease.
fn unleased(update: sea_orm::UpdateMany<Entity>) -> sea_orm::UpdateMany<Entity> {
    update
        .col_expr(Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(Column::LeaseExpiresAt, Expr::value(Option::<i64>::None))
}

/// Extends the lease; `false` when the owner lost it (cancelled, failed by a deauthorization,
/// or taken over after expiry) — the worker must stop writing.
pub async fn renew(
    db: &Database,
    job_id: &str,
    owner: &str,
    now: i64,
    lease_secs: i64,
) -> Result<bool, PersistenceError> {
    let res = held(job_id, owner)
        .col_expr(Column::LeaseExpiresAt, Expr::value(now + lease_secs))
        .exec(db.writer())
        .await?;
    Ok(res.rows_affected == 1)
}

/// Writes per-resource progress while the owner holds the lease.
pub async fn set_progress(
    db: &Database,
    job_id: &str,
    owner: &str,
    progress: serde_json::Value,
) -> Result<bool, PersistenceError> {
    let res = Entity::update_many()
        .col_expr(Column::Progress, Expr::value(progress))
        .filter(Column::Id.eq(job_id))
        .filter(Column::LeaseOwner.eq(owner))
        .exec(db.writer())
        .await?;
    Ok(res.rows_affected == 1)
}

/// Ends a job the owner holds with `succeeded` or `failed` (and an error code and message).
pub async fn finish(
    db: &Database,
    job_id: &str,
    owner: &str,
    status: &str,
    error: Option<(&str, &str)>,
    now: i64,
) -> Result<bool, PersistenceError> {
    let res = unleased(held(job_id, owner))
        .col_expr(Column::Status, Expr::value(status))
        .col_expr(Column::FinishedAt, Expr::value(now))
        .col_expr(
            Column::ErrorCode,
            Expr::value(error.map(|e| e.0.to_owned())),
        )
        .col_expr(
            Column::ErrorMessage,
            Expr::value(error.map(|e| e.1.to_owned())),
        )
        .exec(db.writer())
        .await?;
    Ok(res.rows_affected == 1)
}

/// Hands a job the owner holds back to the queue (its worker is shutting down): `queued`,
/// unleased and unstarted, so the next worker claims it at once instead of waiting for the
/// lease to expire. Progress is kept; the next run starts its counts afresh.
pub async fn release(db: &Database, job_id: &str, owner: &str) -> Result<bool, PersistenceError> {
    let res = unleased(held(job_id, owner))
        .col_expr(Column::Status, Expr::value(QUEUED))
        .col_expr(Column::StartedAt, Expr::value(Option::<i64>::None))
        .exec(db.writer())
        .await?;
    Ok(res.rows_affected == 1)
}

/// Plants the canary of a run that starts (PostgreSQL; a no-op on SQLite): a row of the
/// unlogged `sync_canaries`, which the server empties when it loses recent commits (crash,
/// immediate shutdown, failover). [`canary_alive`] in the run's last transaction tells whether
/// everything the run committed is still there. Replaces the business's older canaries.
pub async fn plant_canary(
    db: &Database,
    business: &BusinessId,
    job_id: &str,
    owner: &str,
    now: i64,
) -> Result<(), PersistenceError> {
    if db.conn().get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    let txn = db.begin_write().await?;
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        format!("DELETE FROM {CANARIES} WHERE business_id = $1 OR job_id = $2"),
        [business.as_str().into(), job_id.into()],
    ))
    .await?;
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        format!(
            "INSERT INTO {CANARIES} (job_id, business_id, owner, created_at) VALUES ($1, $2, $3, $4)"
        ),
        [job_id.into(), business.as_str().into(), owner.into(), now.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Whether the canary `owner` planted for `job_id` is still there (always on SQLite). `false`
/// after the PostgreSQL server crashed, was shut down immediately or failed over since: pages
/// committed before that may be lost, and the run must not count.
pub async fn canary_alive<C: ConnectionTrait>(
    conn: &C,
    job_id: &str,
    owner: &str,
) -> Result<bool, PersistenceError> {
    if conn.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(true);
    }
    let row = conn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            format!("SELECT 1 AS alive FROM {CANARIES} WHERE job_id = $1 AND owner = $2"),
            [job_id.into(), owner.into()],
        ))
        .await?;
    Ok(row.is_some())
}

const CANARIES: &str = tributary_migrations::CANARY_TABLE;

/// Fails the business's active job from outside its worker (deauthorization, disconnect): the
/// worker's next lease renewal fails and it stops.
pub async fn fail_active(
    db: &Database,
    business: &BusinessId,
    code: &str,
    message: &str,
    now: i64,
) -> Result<u64, PersistenceError> {
    let res = unleased(Entity::update_many())
        .col_expr(Column::Status, Expr::value(FAILED))
        .col_expr(Column::FinishedAt, Expr::value(now))
        .col_expr(Column::ErrorCode, Expr::value(code))
        .col_expr(Column::ErrorMessage, Expr::value(message))
        .filter(Column::BusinessId.eq(business.as_str()))
        .filter(active())
        .exec(db.writer())
        .await?;
    Ok(res.rows_affected)
}

/// One job of the business, if it exists.
pub async fn get(
    db: &Database,
    business: &BusinessId,
    job_id: &str,
) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find_by_id(job_id)
        .filter(Column::BusinessId.eq(business.as_str()))
        .one(db.conn())
        .await?)
}

/// The business's jobs, newest first, and how many there are.
pub async fn list(
    db: &Database,
    business: &BusinessId,
    limit: u64,
    offset: u64,
) -> Result<(Vec<Model>, u64), PersistenceError> {
    let base = Entity::find().filter(Column::BusinessId.eq(business.as_str()));
    let total = base.clone().count(db.conn()).await?;
    let jobs = base
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .limit(limit)
        .offset(offset)
        .all(db.conn())
        .await?;
    Ok((jobs, total))
}

/// The newest job with the given status.
pub async fn latest_with_status(
    db: &Database,
    business: &BusinessId,
    status: &str,
) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find()
        .filter(Column::BusinessId.eq(business.as_str()))
        .filter(Column::Status.eq(status))
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .one(db.conn())
        .await?)
}
