//! The delivery job: what ingest enqueues (inside its own transaction) and the worker consumes.
//!
//! A job carries ids only (a delivery's key, [`DeliveryKey`]); the worker reloads the delivery,
//! its event and its endpoint, so an acknowledged, cancelled or superseded delivery is simply
//! dropped. Each delivery attempt is its own apalis task: a retry is a new task whose `run_at`
//! lies in the future, so a backoff survives any crash. Enqueueing, like every statement on
//! apalis' tables, is `db::queue`'s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis::prelude::{TaskBuilder, TaskId};
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::models::DeliveryKey;

/// How often apalis itself may run a task whose handler failed (a database error in the handler,
/// not a webhook failure: those are scheduled as new tasks). apalis calls these runs `attempts`
/// (`apalis.jobs.attempts`, `max_attempts`).
pub const TASK_MAX_RUNS: usize = 5;

/// Deliver event `event_id` to endpoint `endpoint_id`: the delivery whose key is
/// `(organization_id, event_id, endpoint_id)`. Its row names the job of its current chain
/// (`deliveries.job_id`); a job it does not name sends nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub organization_id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    /// The job's place in its chain of retries, from 1: what the retry schedule counts. Not the
    /// delivery's attempt number (`deliveries.attempts`, which a resend keeps counting while it
    /// starts a new chain at 1), and not apalis' own runs of one task ([`TASK_MAX_RUNS`]).
    /// Encoded as `attempt`, its name in jobs already queued.
    #[serde(rename = "attempt")]
    pub try_number: u32,
}

impl DeliveryJob {
    pub fn first(organization_id: Uuid, event_id: Uuid, endpoint_id: Uuid) -> Self {
        Self {
            organization_id,
            event_id,
            endpoint_id,
            try_number: 1,
        }
    }

    /// The next job of the same chain.
    pub fn following(&self) -> Self {
        Self {
            try_number: self.try_number + 1,
            ..self.clone()
        }
    }

    /// The apalis task for this job with id `id`, due after `delay` (rounded up to whole
    /// seconds: apalis stores `run_at` in seconds).
    pub fn to_task(&self, id: &JobId, delay: Duration) -> Result<PgTask, serde_json::Error> {
        let bytes = serde_json::to_vec(self)?;
        let mut builder = TaskBuilder::new(bytes)
            .max_attempts(TASK_MAX_RUNS)
            .task_id(TaskId::from(id.to_string()));
        if !delay.is_zero() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let due = now + delay;
            let secs = due.as_secs() + u64::from(due.subsec_nanos() > 0);
            builder = builder.run_at_timestamp(secs);
        }
        Ok(builder.build())
    }
}

/// The id of a queued job (`apalis.jobs.id`, a ULID as text), chosen before it is enqueued so
/// the delivery can name it in the same transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobId(ulid::Ulid);

impl JobId {
    /// A fresh id: a UUID v7 read as a ULID (both are a millisecond timestamp followed by
    /// random bits), so ids sort by creation time.
    pub fn new() -> Self {
        Self(ulid::Ulid::from(Uuid::now_v7().as_u128()))
    }
}

impl From<&DeliveryJob> for DeliveryKey {
    fn from(job: &DeliveryJob) -> Self {
        Self {
            organization_id: job.organization_id,
            event_id: job.event_id,
            endpoint_id: job.endpoint_id,
        }
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_keeps_the_json_encoding_of_jobs_already_queued() -> Result<(), serde_json::Error> {
        let (event_id, organization_id, endpoint_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let queued = format!(
            r#"{{"organization_id":"{organization_id}","event_id":"{event_id}","endpoint_id":"{endpoint_id}","attempt":3}}"#
        );
        let job: DeliveryJob = serde_json::from_str(&queued)?;
        assert_eq!(job.try_number, 3);
        assert_eq!(serde_json::to_string(&job)?, queued);
        Ok(())
    }
}
