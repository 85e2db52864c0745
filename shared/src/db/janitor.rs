//! SQL of the worker: janitor.
//!
//! apalis-postgres never deletes finished job rows, dedup keys expire but stay, and delivered
//! events are kept only for the retention period. Each statement deletes at most `batch` rows
//! so a run never holds many row locks or bloats one transaction; callers loop until a
//! statement deletes fewer than `batch`.

use std::time::Duration;

use sqlx::{PgConnection, postgres::types::PgInterval};

/// The advisory-lock key that makes at most one janitor run at a time across the fleet.
pub const JANITOR_LOCK_KEY: i64 = 0x7472_6967_6a61_6e69; // "trigjani"

/// Take the fleet-wide janitor lock for this session (`false`: another run holds it). Use a
/// connection of its own and close it afterwards: closing releases the lock whatever happened.
pub async fn try_lock(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(JANITOR_LOCK_KEY)
        .fetch_one(conn)
        .await
}

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

/// Dead-letter events whose delivery job apalis gave up on (its handler failed `max_attempts`
/// times: repeated database errors or a panic, never a webhook failure, which is scheduled as a
/// new job). Without this such an event would stay `pending` with nothing left to deliver it.
/// Events with another live job (a redelivery) are left alone. Returns the events changed.
pub async fn dead_letter_abandoned_jobs(
    conn: &mut PgConnection,
    queue: &str,
    batch: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "UPDATE events e
         SET status = 'failed', updated_at = now(),
             last_error = 'delivery abandoned after repeated internal errors; redeliver to try again'
         FROM (
             SELECT DISTINCT (convert_from(j.job, 'UTF8')::jsonb ->> 'event_id')::uuid AS event_id
             FROM apalis.jobs j
             WHERE j.job_type = $1 AND j.status = 'Failed' AND j.attempts >= j.max_attempts
             LIMIT $2
         ) dead
         WHERE e.id = dead.event_id
           AND e.status = 'pending'
           AND e.acknowledged_at IS NULL
           AND NOT EXISTS (
               SELECT 1 FROM apalis.jobs live
               WHERE live.job_type = $1
                 AND live.status IN ('Pending', 'Queued', 'Running')
                 AND convert_from(live.job, 'UTF8')::jsonb ->> 'event_id' = e.id::text)",
    )
    .bind(queue)
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete finished job rows of `queue` (done, killed, or failed for good) finished more than
/// `older_than` ago.
pub async fn delete_finished_jobs(
    conn: &mut PgConnection,
    queue: &str,
    older_than: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "DELETE FROM apalis.jobs WHERE id IN (
             SELECT id FROM apalis.jobs
             WHERE job_type = $1
               AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
               AND coalesce(done_at, run_at) < now() - $2::interval
             LIMIT $3
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(queue)
    .bind(interval(older_than))
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete expired dedup keys.
pub async fn delete_expired_dedup_keys(conn: &mut PgConnection, batch: i64) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "DELETE FROM dedup_keys WHERE ctid IN (
             SELECT ctid FROM dedup_keys WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete delivered events whose delivery (or acknowledgement) is older than `retention`. Their
/// attempt rows go with them (`ON DELETE CASCADE`).
pub async fn purge_delivered_events(
    conn: &mut PgConnection,
    retention: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "DELETE FROM events WHERE id IN (
             SELECT id FROM events
             WHERE status = 'delivered'
               AND (delivered_at < now() - $1::interval
                    OR (delivered_at IS NULL
                        AND coalesce(acknowledged_at, updated_at) < now() - $1::interval))
             LIMIT $2
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(interval(retention))
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete registrations of workers of `queue` not seen for `older_than` that hold no job. (A
/// worker row that still holds jobs must stay: orphan recovery finds the jobs through it.)
pub async fn delete_stale_workers(
    conn: &mut PgConnection,
    queue: &str,
    older_than: Duration,
) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "DELETE FROM apalis.workers w
         WHERE w.worker_type = $1 AND w.last_seen < now() - $2::interval
           AND NOT EXISTS (SELECT 1 FROM apalis.jobs j
                           WHERE j.lock_by = w.id AND j.status IN ('Queued', 'Running'))",
    )
    .bind(queue)
    .bind(interval(older_than))
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}
