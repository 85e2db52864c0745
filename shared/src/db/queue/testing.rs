//! Direct access to the queue's rows for tests: inspect jobs and put them into states that are
//! slow or impossible to reach for real (given up, long finished, held by a dead worker).
//! Nothing in the binaries calls it.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::DELIVERY_QUEUE;
use crate::jobs::{DeliveryJob, JobId};

/// A state to force a job into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForcedState {
    /// Finished successfully.
    Done,
    /// Aborted.
    Killed,
    /// Failed `max_attempts` times: apalis will not run it again.
    GivenUp,
    /// Failed once, with attempts left: apalis re-fetches it.
    Retryable,
}

/// Ids of the delivery queue's jobs (every state), oldest first.
pub async fn job_ids(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM apalis.jobs WHERE job_type = $1 ORDER BY id")
        .bind(DELIVERY_QUEUE)
        .fetch_all(conn)
        .await
        .expect("job ids")
}

/// Every job of the delivery queue (every state), decoded, oldest first. (Tests decode in Rust,
/// as the worker does; production code finds jobs by key.)
pub async fn decoded_jobs(conn: &mut PgConnection) -> Vec<(String, DeliveryJob)> {
    let raw: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT id, job FROM apalis.jobs WHERE job_type = $1 ORDER BY id")
            .bind(DELIVERY_QUEUE)
            .fetch_all(conn)
            .await
            .expect("jobs");
    decode(raw)
}

/// Ids of the jobs (every state) that deliver event `event_id`, oldest first.
pub async fn jobs_of_event(conn: &mut PgConnection, event_id: Uuid) -> Vec<String> {
    decoded_jobs(conn)
        .await
        .into_iter()
        .filter(|(_, job)| job.event_id == event_id)
        .map(|(id, _)| id)
        .collect()
}

/// The decoded jobs that deliver event `event_id`, oldest first.
pub async fn decoded_jobs_of_event(conn: &mut PgConnection, event_id: Uuid) -> Vec<DeliveryJob> {
    decoded_jobs(conn)
        .await
        .into_iter()
        .filter(|(_, job)| job.event_id == event_id)
        .map(|(_, job)| job)
        .collect()
}

/// Jobs of `queue` in any state.
pub async fn count_in(conn: &mut PgConnection, queue: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1")
        .bind(queue)
        .fetch_one(conn)
        .await
        .expect("count jobs")
}

/// Live jobs of the delivery queue (due, scheduled, claimed or retryable).
pub async fn count_live(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = $1
           AND (status IN ('Pending', 'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))",
    )
    .bind(DELIVERY_QUEUE)
    .fetch_one(conn)
    .await
    .expect("count jobs")
}

/// Jobs claimed by some worker right now (in its buffer or running).
pub async fn count_claimed(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs
         WHERE job_type = $1 AND status IN ('Queued', 'Running') AND lock_by IS NOT NULL",
    )
    .bind(DELIVERY_QUEUE)
    .fetch_one(conn)
    .await
    .expect("count claimed jobs")
}

/// The workers holding claimed jobs right now (finished jobs are deleted, so who delivered
/// what is seen only while it is claimed).
pub async fn claiming_workers(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT lock_by FROM apalis.jobs
         WHERE job_type = $1 AND status IN ('Queued', 'Running') AND lock_by IS NOT NULL",
    )
    .bind(DELIVERY_QUEUE)
    .fetch_all(conn)
    .await
    .expect("list claiming workers")
}

/// Force job `id` into `state`, finished `ago`.
pub async fn force_state(conn: &mut PgConnection, id: &str, state: ForcedState, ago: Duration) {
    force(conn, "id", id, state, ago).await;
}

/// Force every job of `queue` into `state`, finished `ago`.
pub async fn force_state_of_queue(conn: &mut PgConnection, queue: &str, state: ForcedState, ago: Duration) {
    force(conn, "job_type", queue, state, ago).await;
}

async fn force(conn: &mut PgConnection, column: &str, value: &str, state: ForcedState, ago: Duration) {
    let (status, attempts) = match state {
        ForcedState::Done => ("Done", "attempts"),
        ForcedState::Killed => ("Killed", "attempts"),
        ForcedState::GivenUp => ("Failed", "max_attempts"),
        ForcedState::Retryable => ("Failed", "1"),
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs SET status = $2, attempts = {attempts},
                                done_at = now() - make_interval(secs => $3)
         WHERE {column} = $1"
    )))
    .bind(value)
    .bind(status)
    .bind(ago.as_secs_f64())
    .execute(conn)
    .await
    .expect("force job state");
}

/// Make every due job of the delivery queue due since `ago` (as if it had waited that long).
pub async fn backdate_due_jobs(conn: &mut PgConnection, ago: Duration) {
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() - make_interval(secs => $2)
         WHERE job_type = $1 AND status = 'Pending' AND run_at <= now()",
    )
    .bind(DELIVERY_QUEUE)
    .bind(ago.as_secs_f64())
    .execute(conn)
    .await
    .expect("backdate jobs");
}

/// Make job `id` due `secs` from now (negative: due for that long already).
pub async fn set_due_in(conn: &mut PgConnection, id: &str, secs: f64) {
    sqlx::query("UPDATE apalis.jobs SET run_at = now() + make_interval(secs => $2) WHERE id = $1")
        .bind(id)
        .bind(secs)
        .execute(conn)
        .await
        .expect("reschedule job");
}

/// Delete every job of these events (stranding their deliveries).
pub async fn delete_jobs_of_events(conn: &mut PgConnection, event_ids: &[Uuid]) {
    let ids: Vec<String> = decoded_jobs(&mut *conn)
        .await
        .into_iter()
        .filter(|(_, job)| event_ids.contains(&job.event_id))
        .map(|(id, _)| id)
        .collect();
    delete_jobs(conn, &ids).await;
}

/// Delete these jobs (in any state), as a worker deletes the jobs it finished.
pub async fn delete_jobs(conn: &mut PgConnection, ids: &[String]) {
    sqlx::query("DELETE FROM apalis.jobs WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .expect("delete jobs");
}

/// Mark job `id` as claimed and running by worker `worker`.
pub async fn hold_by(conn: &mut PgConnection, id: &str, worker: &str) {
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_by = $2, lock_at = now() WHERE id = $1")
        .bind(id)
        .bind(worker)
        .execute(conn)
        .await
        .expect("hold job");
}

/// Push one job of `job` onto another queue than ours.
pub async fn push_to(conn: &mut PgConnection, queue: &str, job: &DeliveryJob) {
    let task = job.to_task(&JobId::new(), Duration::ZERO).expect("task");
    apalis_postgres::queries::push_tasks(conn, queue, vec![task])
        .await
        .expect("push");
}

/// Register a delivery worker `id` last seen `ago`.
pub async fn register_worker(conn: &mut PgConnection, id: &str, ago: Duration) {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen)
         VALUES ($1, $2, 'PgStorage', now() - make_interval(secs => $3))",
    )
    .bind(id)
    .bind(DELIVERY_QUEUE)
    .bind(ago.as_secs_f64())
    .execute(conn)
    .await
    .expect("worker row");
}

/// Ids of the registered workers (any queue), sorted.
pub async fn worker_ids(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM apalis.workers ORDER BY id")
        .fetch_all(conn)
        .await
        .expect("workers")
}

/// Claim up to `limit` due jobs of the delivery queue for worker `worker` (registered here if
/// new) by apalis' own fetch function, as a consumer claims them: (task id, job), in the order
/// apalis hands them out.
pub async fn claim_due(conn: &mut PgConnection, worker: &str, limit: i32) -> Vec<(String, DeliveryJob)> {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen)
         VALUES ($1, $2, 'PgStorage', now()) ON CONFLICT (id) DO UPDATE SET last_seen = now()",
    )
    .bind(worker)
    .bind(DELIVERY_QUEUE)
    .execute(&mut *conn)
    .await
    .expect("register the test worker");
    let raw: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT id, job FROM apalis.get_jobs($1, $2, $3)")
        .bind(worker)
        .bind(DELIVERY_QUEUE)
        .bind(limit)
        .fetch_all(conn)
        .await
        .expect("claim due jobs");
    decode(raw)
}

/// Make every scheduled job of the delivery queue (a retry, a deferred or paced job) due now,
/// as if its time had come: how many were moved. Tests move `run_at` instead of sleeping
/// through a retry's delay.
pub async fn make_scheduled_due(conn: &mut PgConnection) -> u64 {
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() - interval '1 second'
         WHERE job_type = $1 AND status = 'Pending' AND run_at >= now() - interval '1 second'",
    )
    .bind(DELIVERY_QUEUE)
    .execute(conn)
    .await
    .expect("make scheduled jobs due")
    .rows_affected()
}

/// Jobs as (id, the delivery job its bytes encode).
fn decode(raw: Vec<(String, Vec<u8>)>) -> Vec<(String, DeliveryJob)> {
    raw.into_iter()
        .map(|(id, bytes)| (id, serde_json::from_slice(&bytes).expect("a delivery job")))
        .collect()
}
