//! SQL of the delivery queue: every statement that touches apalis' tables (`apalis.jobs`,
//! `apalis.workers`) lives here, so nobody else knows the queue's name, apalis' status strings or
//! how a job is encoded (`DeliveryJob` as UTF-8 JSON bytes; its `event_id` is read back with
//! `convert_from(job, 'UTF8')::jsonb ->> 'event_id'`).
//!
//! A job is *live* while something will still run it: pending (due or scheduled), claimed
//! (queued in a worker's buffer or running), or failed with attempts left (apalis re-fetches
//! it). A job is *given up* when it failed `max_attempts` times or was killed.
//!
//! Maintenance statements change at most `batch` rows each; callers loop until one changes fewer.

use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db::events::{NewEvents, Written},
    jobs::{DeliveryJob, TASK_MAX_RUNS},
};

/// The apalis queue name. Fixed, so renaming the Rust type never strands queued jobs.
pub const DELIVERY_QUEUE: &str = "triggers_deliveries";

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

/// Enqueue delivery jobs, each due after its delay, with one multi-row INSERT on `conn` (use a
/// transaction's connection so the jobs commit with the rows that caused them).
pub async fn enqueue(conn: &mut PgConnection, jobs: &[(DeliveryJob, Duration)]) -> Result<(), QueueError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let tasks = jobs
        .iter()
        .map(|(job, delay)| job.to_task(*delay))
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

/// A job waiting to be claimed (due now or scheduled later): pending, or failed with runs left
/// (apalis fetches those again). A claimed job is `Queued` (or `Running`) until it finishes.
/// The one definition behind the queue gauges, `queue stats` and the oldest-due age.
const WAITING: &str = "(status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))";

/// Count the live jobs of the delivery queue by state.
pub async fn count_jobs(conn: &mut PgConnection) -> sqlx::Result<JobCounts> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT
             count(*) FILTER (WHERE waiting AND run_at <= now()) AS due,
             count(*) FILTER (WHERE waiting AND run_at > now()) AS scheduled,
             count(*) FILTER (WHERE status IN ('Queued', 'Running')) AS running
         FROM (SELECT status, run_at, {WAITING} AS waiting
               FROM apalis.jobs WHERE job_type = $1) j"
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
         WHERE job_type = $1 AND run_at <= now() AND {WAITING}"
    )))
    .bind(DELIVERY_QUEUE)
    .fetch_one(conn)
    .await?;
    Ok(Duration::try_from_secs_f64(secs).unwrap_or_default())
}

/// The delivery queue at a glance (what the operator command `queue stats` prints).
#[derive(Debug, serde::Serialize)]
pub struct QueueStats {
    /// Jobs whose time has come and that no worker has claimed yet.
    pub due: i64,
    /// Jobs waiting for a later retry.
    pub scheduled: i64,
    /// Jobs claimed by a worker (held for a slot, or being delivered).
    pub running: i64,
    /// Seconds since the oldest due job became due (0 when none is due).
    pub oldest_due_age_seconds: f64,
    /// The 10 organisations with the most waiting (due or scheduled) jobs.
    pub top_organizations: Vec<OrgBacklog>,
}

/// One organisation's waiting jobs.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct OrgBacklog {
    pub organization_id: Uuid,
    pub waiting: i64,
    pub oldest_due_age_seconds: f64,
}

/// Depth by state, oldest due age and the top 10 organisations of the delivery queue: the
/// same counts as the queue gauges ([`count_jobs`], [`oldest_due_age`]).
pub async fn stats(conn: &mut PgConnection) -> sqlx::Result<QueueStats> {
    let counts = count_jobs(&mut *conn).await?;
    let oldest = oldest_due_age(&mut *conn).await?;
    let top_organizations = sqlx::query_as::<_, OrgBacklog>(sqlx::AssertSqlSafe(format!(
        "SELECT (convert_from(job, 'UTF8')::jsonb ->> 'organization_id')::uuid AS organization_id,
                count(*) AS waiting,
                coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8
                    AS oldest_due_age_seconds
         FROM apalis.jobs
         WHERE job_type = $1 AND {WAITING}
         GROUP BY 1
         ORDER BY waiting DESC, organization_id
         LIMIT 10"
    )))
    .bind(DELIVERY_QUEUE)
    .fetch_all(&mut *conn)
    .await?;
    Ok(QueueStats {
        due: counts.due,
        scheduled: counts.scheduled,
        running: counts.running,
        oldest_due_age_seconds: oldest.as_secs_f64(),
        top_organizations,
    })
}

/// Does event `event_id` have a live delivery job?
pub async fn has_live_job(conn: &mut PgConnection, event_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM apalis.jobs
             WHERE job_type = $1
               AND (status IN ('Pending', 'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))
               AND convert_from(job, 'UTF8')::jsonb ->> 'event_id' = $2)",
    )
    .bind(DELIVERY_QUEUE)
    .bind(event_id.to_string())
    .fetch_one(conn)
    .await
}

/// Dead-letter up to `batch` pending events whose delivery job apalis gave up on (its handler
/// failed `max_attempts` times: repeated database errors or a panic, never a webhook failure,
/// which is scheduled as a new job) and that have no other live job (a redelivery). Returns the
/// events changed; each call picks events not changed yet, so a loop makes progress.
pub async fn dead_letter_given_up(conn: &mut PgConnection, batch: i64) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "UPDATE events e
         SET status = 'failed', updated_at = now(),
             last_error = 'delivery abandoned after repeated internal errors; redeliver to try again'
         WHERE e.id IN (
             SELECT ev.id FROM events ev
             WHERE ev.status = 'pending' AND ev.acknowledged_at IS NULL
               AND ev.id IN (
                   SELECT (convert_from(j.job, 'UTF8')::jsonb ->> 'event_id')::uuid FROM apalis.jobs j
                   WHERE j.job_type = $1
                     AND (j.status = 'Killed' OR (j.status = 'Failed' AND j.attempts >= j.max_attempts)))
               AND NOT EXISTS (
                   SELECT 1 FROM apalis.jobs l
                   WHERE l.job_type = $1
                     AND (l.status IN ('Pending', 'Queued', 'Running')
                          OR (l.status = 'Failed' AND l.attempts < l.max_attempts))
                     AND (convert_from(l.job, 'UTF8')::jsonb ->> 'event_id')::uuid = ev.id)
             LIMIT $2
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(DELIVERY_QUEUE)
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete up to `batch` finished jobs finished more than `older_than` ago: `Done` ones (left by
/// versions before workers deleted their jobs on finishing), and given-up ones whose event was
/// handled (no longer a pending, unacknowledged event). A given-up job of a still-pending event
/// is kept: it is what [`dead_letter_given_up`] finds the event by.
pub async fn delete_finished_jobs(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "DELETE FROM apalis.jobs WHERE id IN (
             SELECT j.id FROM apalis.jobs j
             WHERE j.job_type = $1
               AND coalesce(j.done_at, j.run_at) < now() - make_interval(secs => $2)
               AND (j.status = 'Done'
                    OR ((j.status = 'Killed' OR (j.status = 'Failed' AND j.attempts >= j.max_attempts))
                        AND NOT EXISTS (
                            SELECT 1 FROM events e
                            WHERE e.id = (convert_from(j.job, 'UTF8')::jsonb ->> 'event_id')::uuid
                              AND e.status = 'pending' AND e.acknowledged_at IS NULL)))
             LIMIT $3
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(DELIVERY_QUEUE)
    .bind(older_than.as_secs_f64())
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete registrations of delivery workers not seen for `older_than` that hold no job. (A
/// worker row that still holds jobs must stay: orphan recovery finds the jobs through it.)
pub async fn delete_stale_workers(conn: &mut PgConnection, older_than: Duration) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "DELETE FROM apalis.workers w
         WHERE w.worker_type = $1 AND w.last_seen < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT 1 FROM apalis.jobs j
                           WHERE j.lock_by = w.id AND j.status IN ('Queued', 'Running'))",
    )
    .bind(DELIVERY_QUEUE)
    .bind(older_than.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Pending, unacknowledged events of organisations with a webhook, unchanged for `grace`, that
/// have no live delivery job: nothing would ever deliver them. The grace keeps transactions in
/// flight (an event committed a moment before its job's state is visible) out of the count.
/// (`NOT EXISTS`, not `NOT IN`: it plans as one hash anti-join however many jobs there are.)
const WITHOUT_JOB: &str = "
    FROM events e JOIN organizations o ON o.id = e.organization_id
    WHERE e.status = 'pending' AND e.acknowledged_at IS NULL
      AND o.webhook_url IS NOT NULL
      AND e.updated_at < now() - make_interval(secs => $2)
      AND NOT EXISTS (
          SELECT 1 FROM apalis.jobs l
          WHERE l.job_type = $1
            AND (l.status IN ('Pending', 'Queued', 'Running')
                 OR (l.status = 'Failed' AND l.attempts < l.max_attempts))
            AND (convert_from(l.job, 'UTF8')::jsonb ->> 'event_id')::uuid = e.id)";

/// How many events have no live delivery job (see [`WITHOUT_JOB`]); should be zero.
pub async fn count_events_without_job(conn: &mut PgConnection, grace: Duration) -> sqlx::Result<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {WITHOUT_JOB}")))
        .bind(DELIVERY_QUEUE)
        .bind(grace.as_secs_f64())
        .fetch_one(conn)
        .await
}

/// Give up to `batch` events without a live job a fresh delivery job (a new chain of attempts,
/// as a redelivery would). Run it in a transaction: the events stay locked until the jobs commit,
/// so a concurrent redelivery waits and then sees the new job. Returns the events re-enqueued.
pub async fn requeue_events_without_job(
    conn: &mut PgConnection,
    grace: Duration,
    batch: i64,
) -> Result<u64, QueueError> {
    let stranded: Vec<(Uuid, Uuid)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT e.id, e.organization_id {WITHOUT_JOB}
         ORDER BY e.updated_at LIMIT $3 FOR UPDATE OF e SKIP LOCKED"
    )))
    .bind(DELIVERY_QUEUE)
    .bind(grace.as_secs_f64())
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let jobs: Vec<_> = stranded
        .iter()
        .map(|(event, org)| (DeliveryJob::first(*event, *org), Duration::ZERO))
        .collect();
    enqueue(conn, &jobs).await?;
    Ok(jobs.len() as u64)
}

/// Store a batch of new events in ONE statement (one round trip, committed on its own or with
/// the caller's transaction): claim the dedup keys (an existing, unexpired key is a duplicate; an
/// expired one is taken over), insert the events whose key was claimed or who have none, and
/// enqueue one delivery job for each inserted event of an organisation with a webhook. Returns
/// one [`Written`] per row, in no particular order.
///
/// It lives here because it writes the first delivery jobs: the job rows mirror `apalis_postgres::queries::push_tasks` (same columns, the same encoding
/// through [`DeliveryJob::to_task`]); the job id is the event id read as a ULID (both are a
/// millisecond timestamp followed by random bits), so an event's first job is unique to it.
pub async fn insert_batch(
    conn: &mut PgConnection,
    rows: &NewEvents<'_>,
    dedup_window: Duration,
) -> sqlx::Result<Vec<Written>> {
    if rows.ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut job_ids = Vec::with_capacity(rows.ids.len());
    let mut jobs = Vec::with_capacity(rows.ids.len());
    for (id, org) in rows.ids.iter().zip(&rows.organization_ids) {
        let task = DeliveryJob::first(*id, *org)
            .to_task(Duration::ZERO)
            .map_err(|e| sqlx::Error::Encode(e.into()))?;
        job_ids.push(ulid::Ulid::from(id.as_u128()).to_string());
        jobs.push(task.args);
    }
    let written = sqlx::query_as::<_, (Uuid, Option<DateTime<Utc>>, Option<Uuid>)>(
        "WITH e AS MATERIALIZED (
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::bytea[])
                 WITH ORDINALITY AS e(id, org, type, dedup, payload, job_id, job, n)
         ),
         claimed AS (
             INSERT INTO dedup_keys (organization_id, dedup_id, event_id, expires_at)
             SELECT org, dedup, id, now() + make_interval(secs => $8) FROM e
             WHERE dedup IS NOT NULL
             ORDER BY n
             ON CONFLICT (organization_id, dedup_id) DO UPDATE
                 SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
                 WHERE dedup_keys.expires_at <= now()
             RETURNING event_id
         ),
         inserted AS (
             INSERT INTO events (id, organization_id, type, dedup_id, payload)
             SELECT id, org, type, dedup, payload::jsonb FROM e
             WHERE dedup IS NULL OR id IN (SELECT event_id FROM claimed)
             ORDER BY n
             RETURNING id, organization_id, created_at
         ),
         queued AS (
             INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
                                      priority, metadata)
             SELECT e.job_id, $9, e.job, 'Pending', 0, $10, now(), 0, ''::hstore
             FROM inserted i
             JOIN e ON e.id = i.id
             JOIN organizations o ON o.id = i.organization_id AND o.webhook_url IS NOT NULL
             ORDER BY e.n
             RETURNING 1
         )
         SELECT id, created_at, NULL::uuid FROM inserted
         UNION ALL
         SELECT e.id, NULL, d.event_id FROM e
         LEFT JOIN dedup_keys d ON d.organization_id = e.org AND d.dedup_id = e.dedup
         WHERE e.dedup IS NOT NULL AND e.id NOT IN (SELECT event_id FROM claimed)",
    )
    .bind(&rows.ids)
    .bind(&rows.organization_ids)
    .bind(&rows.types)
    .bind(&rows.dedup_ids)
    .bind(&rows.payloads)
    .bind(&job_ids)
    .bind(&jobs)
    .bind(dedup_window.as_secs_f64())
    .bind(DELIVERY_QUEUE)
    .bind(TASK_MAX_RUNS as i32)
    .fetch_all(conn)
    .await?;
    Ok(written
        .into_iter()
        .map(|(id, created_at, owner)| match created_at {
            Some(created_at) => Written::Inserted { id, created_at },
            None => Written::Duplicate { id, owner },
        })
        .collect())
}

/// Finish claimed jobs by deleting them, in the transaction that recorded what they did: the
/// worker acknowledges its jobs itself instead of apalis' per-batch result statement. A finished
/// job has nothing left to tell (the attempt and the event's new state are recorded in that
/// transaction), and a delete writes no new row version and no index entries, where marking it
/// `Done` wrote both and left the row for the janitor.
pub async fn finish_jobs(conn: &mut PgConnection, task_ids: &[String]) -> sqlx::Result<u64> {
    if task_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query("DELETE FROM apalis.jobs WHERE id = ANY($1) AND status IN ('Queued', 'Running')")
        .bind(task_ids)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Put claimed jobs back in the queue, each due after its delay in seconds (0: at once): a
/// job its worker did not start (over its organisation's share, or the worker is stopping).
/// The same row, so no insert, no NOTIFY and no attempt is counted.
pub async fn release_jobs(
    conn: &mut PgConnection,
    task_ids: &[String],
    delays_secs: &[f64],
) -> sqlx::Result<u64> {
    if task_ids.is_empty() {
        return Ok(0);
    }
    let released = sqlx::query(
        "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL,
                run_at = now() + make_interval(secs => r.delay)
         FROM unnest($1::text[], $2::float8[]) AS r(id, delay)
         WHERE j.id = r.id AND j.status IN ('Queued', 'Running')",
    )
    .bind(task_ids)
    .bind(delays_secs)
    .execute(conn)
    .await?;
    Ok(released.rows_affected())
}

/// A job whose handler failed (database trouble, a panic): counted as a failed run, so apalis
/// fetches it again until `max_attempts`, and the janitor dead-letters its event after that.
pub async fn fail_job(conn: &mut PgConnection, task_id: &str, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = attempts + 1, done_at = now(),
                last_result = jsonb_build_object('Err', $2::text)
         WHERE id = $1 AND status IN ('Queued', 'Running')",
    )
    .bind(task_id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Direct access to the queue's rows for tests: inspect jobs and put them into states that are
/// slow or impossible to reach for real (given up, long finished, held by a dead worker).
#[cfg(feature = "testing")]
pub mod testing;
