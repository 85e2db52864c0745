//! What the janitor asks of the queue: jobs apalis gave up on (their deliveries are then
//! dead-lettered by `db::deliveries`), deliveries left without a live job, `Done` rows of older
//! versions, and registrations of departed workers. Statements change or return at most `batch`
//! rows; callers loop until one does fewer.

use std::time::Duration;

use sqlx::PgConnection;

use super::{DELIVERY_QUEUE, status};
use crate::{jobs::DeliveryJob, models::DeliveryKey};

/// Up to `batch` jobs apalis gave up on (their handler failed `max_attempts` times: repeated
/// database errors or a panic, never a webhook failure, which is scheduled as a new job), with
/// what each delivers, locked until the transaction ends. A job that does not decode is
/// returned with `None` (nothing can be done for it but deleting it).
pub async fn given_up(
    conn: &mut PgConnection,
    batch: i64,
) -> sqlx::Result<Vec<(String, Option<DeliveryJob>)>> {
    // Spliced: apalis' status predicate is written once (`status`).
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, job FROM apalis.jobs WHERE job_type = $1 AND {}
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        status::GIVEN_UP
    )))
    .bind(DELIVERY_QUEUE)
    .bind(batch)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, job)| (id, serde_json::from_slice(&job).ok()))
        .collect())
}

/// Delete these jobs (whatever their state).
pub async fn delete_jobs(conn: &mut PgConnection, ids: &[String]) -> sqlx::Result<u64> {
    let res = sqlx::query!("DELETE FROM apalis.jobs WHERE id = ANY($1)", ids)
        .execute(conn)
        .await?;
    Ok(res.rows_affected())
}

/// Delete up to `batch` `Done` jobs finished more than `older_than` ago (left by versions
/// before workers deleted their jobs on finishing).
pub async fn delete_done_jobs(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query!(
        "DELETE FROM apalis.jobs WHERE id IN (
             SELECT id FROM apalis.jobs
             WHERE job_type = $1 AND status = 'Done'
               AND coalesce(done_at, run_at) < now() - make_interval(secs => $2)
             LIMIT $3
             FOR UPDATE SKIP LOCKED)",
        DELIVERY_QUEUE,
        older_than.as_secs_f64(),
        batch,
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete registrations of delivery workers not seen for `older_than` that hold no job. (A
/// worker row that still holds jobs must stay: orphan recovery finds the jobs through it.)
pub async fn delete_stale_workers(conn: &mut PgConnection, older_than: Duration) -> sqlx::Result<u64> {
    // Spliced: apalis' status predicate is written once (`status`).
    let res = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM apalis.workers w
         WHERE w.worker_type = $1 AND w.last_seen < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id AND j.{})",
        status::CLAIMED
    )))
    .bind(DELIVERY_QUEUE)
    .bind(older_than.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Pending deliveries unchanged for `grace` whose job (`deliveries.job_id`) is not live:
/// nothing would ever send them. The grace keeps transactions in flight out of the count.
/// Found from the pending events (a partial index), then each delivery's job by its key.
/// (Unqualified columns of the inner query are the job's: it is the innermost scope.) Spliced
/// into the statements below, as apalis' status predicate is into it: each is written once.
fn stranded() -> String {
    format!(
        "FROM events e
         JOIN deliveries d ON d.organization_id = e.organization_id AND d.event_id = e.id
         WHERE e.status = 'pending' AND d.status = 'pending'
           AND d.updated_at < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.id = d.job_id AND j.job_type = $1 AND {})",
        status::LIVE
    )
}

/// How many deliveries are stranded (see [`stranded`]); should be zero.
pub async fn count_stranded(conn: &mut PgConnection, grace: Duration) -> sqlx::Result<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {}", stranded())))
        .bind(DELIVERY_QUEUE)
        .bind(grace.as_secs_f64())
        .fetch_one(conn)
        .await
}

/// Up to `batch` stranded deliveries, oldest first, locked (skipping locked ones) until the
/// transaction ends: give them new chains (`db::deliveries::new_chains`) in it.
pub async fn lock_stranded(
    conn: &mut PgConnection,
    grace: Duration,
    batch: i64,
) -> sqlx::Result<Vec<DeliveryKey>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT d.organization_id, d.event_id, d.endpoint_id {}
         ORDER BY d.organization_id, d.event_id, d.endpoint_id LIMIT $3 FOR UPDATE OF d SKIP LOCKED",
        stranded()
    )))
    .bind(DELIVERY_QUEUE)
    .bind(grace.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// The queue table's row versions, as the statistics collector last counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobRows {
    pub live: i64,
    pub dead: i64,
}

/// Live and dead row versions of `apalis.jobs` (`pg_stat_user_tables`: what backends reported,
/// up to about a second late).
pub async fn job_rows(conn: &mut PgConnection) -> sqlx::Result<JobRows> {
    let rows = sqlx::query_as!(
        JobRows,
        r#"SELECT coalesce(n_live_tup, 0) AS "live!", coalesce(n_dead_tup, 0) AS "dead!"
           FROM pg_stat_user_tables WHERE relid = 'apalis.jobs'::regclass"#,
    )
    .fetch_optional(conn)
    .await?;
    Ok(rows.unwrap_or_default())
}

/// Whether the queue is due a vacuum: at least `min_dead` dead row versions, and at least as
/// many as live rows. Every delivery leaves two (its claimed version and its deletion), and each
/// claim's index scan walks every dead entry ahead of the first pending job until a vacuum
/// removes them, so the cost of a claim grows with the jobs finished since the last vacuum.
/// Vacuuming once the dead outnumber the live keeps that walk at most a backlog long, and the
/// vacuum's own cost (proportional to the table) at a constant per finished job.
pub fn vacuum_due(rows: JobRows, min_dead: i64) -> bool {
    rows.dead >= min_dead.max(rows.live)
}

/// `VACUUM apalis.jobs`, without truncating the table (truncation takes a lock that would stop
/// every claim for its duration; the space is reused by the next jobs). Not in a transaction.
pub async fn vacuum_jobs(conn: &mut PgConnection) -> sqlx::Result<()> {
    // Raw: VACUUM is a utility statement, which cannot be prepared (so not described either).
    sqlx::raw_sql("VACUUM (TRUNCATE false) apalis.jobs")
        .execute(conn)
        .await?;
    Ok(())
}
