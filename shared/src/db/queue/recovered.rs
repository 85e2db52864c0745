//! The queue side of recoveries (`db::recoveries`): the first jobs of recovered deliveries go
//! in below every other job, and how many of them wait is what paces a recovery.
//!
//! apalis claims due jobs by `priority DESC, run_at ASC` (its fetch index is `(job_type,
//! priority DESC, run_at)` over waiting jobs). Every other job has priority 0 (ingest's first
//! jobs, retries, resends, redeliveries, repairs), so a live job due now is claimed before any
//! recovered one, however many recovered jobs wait: a recovery only takes the capacity the
//! live traffic leaves. A recovered delivery's retries are ordinary jobs again.

use sqlx::PgConnection;

use super::{DELIVERY_QUEUE, NewJob, QueueError, max_runs, status};

/// The priority of a recovered delivery's first job: below the 0 of every other job. (apalis'
/// own `TaskBuilder` takes an unsigned priority, so these rows are written here.)
pub const RECOVERED_PRIORITY: i32 = -1;

/// Enqueue recovered deliveries' first jobs, due now, at [`RECOVERED_PRIORITY`], with one
/// multi-row INSERT on `conn` (the transaction that names them on their deliveries). The rows
/// mirror `apalis_postgres::queries::push_tasks` (the encoding of [`crate::jobs::DeliveryJob`]).
pub async fn enqueue(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<(), QueueError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(jobs.len());
    let mut args = Vec::with_capacity(jobs.len());
    for (id, job, delay) in jobs {
        let task = job.to_task(id, *delay)?;
        ids.push(id.to_string());
        args.push(task.args);
    }
    sqlx::query!(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata)
         SELECT id, $3, job, 'Pending', 0, $4, now(), $5, ''::hstore
         FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(id, job, n)
         ORDER BY n",
        &ids,
        &args as &[Vec<u8>],
        DELIVERY_QUEUE,
        max_runs(),
        RECOVERED_PRIORITY,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How many recovered first jobs wait to be claimed (due or deferred), counting up to `cap`:
/// a range of the fetch index, so it costs at most `cap` index entries.
pub async fn waiting(conn: &mut PgConnection, cap: i64) -> sqlx::Result<i64> {
    // Spliced: apalis' status predicate is written once (`status`), and must match the predicate
    // of apalis' partial fetch index.
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (
             SELECT 1 FROM apalis.jobs
             WHERE job_type = $1 AND priority < 0 AND {}
             LIMIT $2
         ) w",
        status::WAITING
    )))
    .bind(DELIVERY_QUEUE)
    .bind(cap)
    .fetch_one(conn)
    .await
}
