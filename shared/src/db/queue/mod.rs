//! SQL of the delivery queue: every statement that touches apalis' tables (`apalis.jobs`,
//! `apalis.workers`) lives in this module and its children, so nobody else knows the queue's
//! name, apalis' status strings or columns. A job is a [`DeliveryJob`] as UTF-8 JSON bytes;
//! what it delivers is found by key (the delivery's key it carries, and `deliveries.job_id`
//! back), never by decoding job bytes in SQL. The columns these statements were written against
//! are pinned by a test (`apalis_schema_is_the_one_the_queue_statements_were_written_for`).
//!
//! A job is *live* while something will still run it: pending (due or scheduled), claimed
//! (queued in a worker's buffer or running), or failed with runs left (apalis re-fetches it).
//! It is *given up* when it failed `max_attempts` times or was killed.
//!
//! - [`event_batch`]: the ingest statement (events, dedup keys, deliveries and their first jobs).
//! - [`maintenance`]: what the janitor runs (given-up jobs, stranded deliveries, old workers).
//! - [`stats`]: the queue at a glance for operators.
//! - [`recovered`]: recovered deliveries' first jobs, below every other job.

pub mod event_batch;
pub mod maintenance;
pub mod recovered;
pub mod stats;

use std::time::Duration;

use sqlx::PgConnection;

use crate::jobs::{DeliveryJob, JobId, TASK_MAX_RUNS};

/// The apalis queue name. Fixed, so renaming the Rust type never strands queued jobs.
pub const DELIVERY_QUEUE: &str = "triggers_deliveries";

/// apalis' status strings, as its fetch function and its result statement write them. The
/// statements that use these predicates splice them in (so they are the runtime-checked ones of
/// `db`): each predicate is written once, and `WAITING` must stay the predicate of apalis' partial
/// fetch index for the counts to use it.
mod status {
    /// A job is live (see the module header).
    pub(super) const LIVE: &str =
        "(status IN ('Pending', 'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))";
    /// A job waiting to be claimed (due now or scheduled later): pending, or failed with runs
    /// left. A claimed job is `Queued` (or `Running`) until it finishes. The one definition
    /// behind the queue gauges, `queue stats` and the oldest-due age.
    pub(super) const WAITING: &str =
        "(status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))";
    /// A job apalis will not run again.
    pub(super) const GIVEN_UP: &str =
        "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))";
    /// A job claimed by a worker.
    pub(super) const CLAIMED: &str = "status IN ('Queued', 'Running')";
}

/// Why writing to the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("encoding a delivery job")]
    Encode(#[from] serde_json::Error),
    #[error("writing delivery jobs")]
    Database(#[from] sqlx::Error),
    #[error("writing delivery jobs")]
    Storage(#[source] apalis_postgres::Error),
}

impl QueueError {
    /// Is the cause the database being unreachable (rather than a bug)?
    pub fn is_unavailable(&self) -> bool {
        matches!(self, QueueError::Database(e) if super::is_unavailable(e))
    }
}

impl From<apalis_postgres::Error> for QueueError {
    fn from(err: apalis_postgres::Error) -> Self {
        match err {
            apalis_postgres::Error::Database(e) => QueueError::Database(e),
            other => QueueError::Storage(other),
        }
    }
}

/// One job to enqueue: its id (which its delivery names), what it delivers, and its delay.
pub type NewJob = (JobId, DeliveryJob, Duration);

/// Enqueue delivery jobs, each due after its delay, with one multi-row INSERT on `conn` (use a
/// transaction's connection so the jobs commit with the delivery rows that name them).
pub async fn enqueue(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<(), QueueError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let tasks = jobs
        .iter()
        .map(|(id, job, delay)| job.to_task(id, *delay))
        .collect::<Result<Vec<_>, _>>()?;
    apalis_postgres::queries::push_tasks(conn, DELIVERY_QUEUE, tasks).await?;
    Ok(())
}

/// Delivery jobs by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct JobCounts {
    /// Waiting to be claimed, `run_at` reached (including failed jobs apalis will re-fetch).
    pub due: i64,
    /// Waiting for a `run_at` in the future (scheduled retries, deferrals).
    pub scheduled: i64,
    /// Claimed by a worker (in its buffer or being delivered).
    pub running: i64,
}

impl JobCounts {
    /// Jobs not claimed yet: the queue's depth.
    pub fn depth(&self) -> i64 {
        self.due + self.scheduled
    }
}

/// Count the live jobs of the delivery queue by state.
pub async fn count_jobs(conn: &mut PgConnection) -> sqlx::Result<JobCounts> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT
             count(*) FILTER (WHERE waiting AND run_at <= now()) AS due,
             count(*) FILTER (WHERE waiting AND run_at > now()) AS scheduled,
             count(*) FILTER (WHERE claimed) AS running
         FROM (SELECT run_at, {} AS waiting, {} AS claimed
               FROM apalis.jobs WHERE job_type = $1) j",
        status::WAITING,
        status::CLAIMED,
    )))
    .bind(DELIVERY_QUEUE)
    .fetch_one(conn)
    .await
}

/// How long the oldest due, unclaimed job has been due (zero when none is).
pub async fn oldest_due_age(conn: &mut PgConnection) -> sqlx::Result<Duration> {
    let secs: f64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(extract(epoch FROM now() - min(run_at))::float8, 0)
         FROM apalis.jobs
         WHERE job_type = $1 AND run_at <= now() AND {}",
        status::WAITING
    )))
    .bind(DELIVERY_QUEUE)
    .fetch_one(conn)
    .await?;
    Ok(Duration::try_from_secs_f64(secs).unwrap_or_default())
}

/// Finish claimed jobs by deleting them, in the transaction that recorded what they did: the
/// worker acknowledges its jobs itself instead of apalis' per-batch result statement. A finished
/// job has nothing left to tell (the attempt and the delivery's new state are recorded in that
/// transaction), and a delete writes no new row version and no index entries.
pub async fn finish_jobs(conn: &mut PgConnection, task_ids: &[String]) -> sqlx::Result<u64> {
    if task_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM apalis.jobs WHERE id = ANY($1) AND {}",
        status::CLAIMED
    )))
    .bind(task_ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Put claimed jobs back in the queue, each due after its delay in seconds (0: at once): a
/// job its worker did not start (over its share, or the worker is stopping). The same row, so
/// no insert, no NOTIFY and no attempt is counted.
pub async fn release_jobs(
    conn: &mut PgConnection,
    task_ids: &[String],
    delays_secs: &[f64],
) -> sqlx::Result<u64> {
    if task_ids.is_empty() {
        return Ok(0);
    }
    let released = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL,
                run_at = now() + make_interval(secs => r.delay)
         FROM unnest($1::text[], $2::float8[]) AS r(id, delay)
         WHERE j.id = r.id AND j.{}",
        status::CLAIMED
    )))
    .bind(task_ids)
    .bind(delays_secs)
    .execute(conn)
    .await?;
    Ok(released.rows_affected())
}

/// A job whose handler failed (database trouble, a panic): counted as a failed run, so apalis
/// fetches it again until `max_attempts`, and the janitor dead-letters its delivery after that.
pub async fn fail_job(conn: &mut PgConnection, task_id: &str, error: &str) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = attempts + 1, done_at = now(),
                last_result = jsonb_build_object('Err', $2::text)
         WHERE id = $1 AND {}",
        status::CLAIMED
    )))
    .bind(task_id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The jobs that are live, of these ids: the check behind "is this delivery's chain still
/// running?" (a primary-key lookup per id).
pub async fn live_of(conn: &mut PgConnection, job_ids: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM apalis.jobs WHERE id = ANY($1) AND job_type = $2 AND {}",
        status::LIVE
    )))
    .bind(job_ids)
    .bind(DELIVERY_QUEUE)
    .fetch_all(conn)
    .await
}

/// How many runs apalis gives one job: what the ingest statement writes for first jobs.
fn max_runs() -> i32 {
    i32::try_from(TASK_MAX_RUNS).unwrap_or(i32::MAX)
}

/// Direct access to the queue's rows for tests: inspect jobs and put them into states that are
/// slow or impossible to reach for real (given up, long finished, held by a dead worker).
#[cfg(feature = "testing")]
pub mod testing;
