//! The delivery job: what ingest enqueues (inside its own transaction) and the worker consumes.
//!
//! A job carries ids only; the worker reloads the event, so an acknowledged or deleted event is
//! simply dropped. Each delivery attempt is its own apalis task: a retry is a new task whose
//! `run_at` lies in the future, so a backoff survives any crash.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis::prelude::TaskBuilder;
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Enqueueing lives with the rest of the queue's SQL.
pub use crate::db::queue::{DELIVERY_QUEUE, QueueError, enqueue};

/// How often apalis itself may run a task whose handler failed (a database error in the handler,
/// not a webhook failure: those are scheduled as new tasks). apalis calls these runs `attempts`
/// (`apalis.jobs.attempts`, `max_attempts`).
pub const TASK_MAX_RUNS: usize = 5;

/// Deliver event `event_id` of `organization_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub event_id: Uuid,
    pub organization_id: Uuid,
    /// The job's place in its chain of retries, from 1: what the retry schedule counts. Not the
    /// event's attempt number (`events.attempts`, which a redelivery keeps counting while it
    /// starts a new chain at 1), and not apalis' own runs of one task ([`TASK_MAX_RUNS`]).
    /// Encoded as `attempt`, its name in jobs already queued.
    #[serde(rename = "attempt")]
    pub try_number: u32,
}

impl DeliveryJob {
    pub fn first(event_id: Uuid, organization_id: Uuid) -> Self {
        Self {
            event_id,
            organization_id,
            try_number: 1,
        }
    }

    /// The apalis task for this job, due after `delay` (rounded up to whole seconds: apalis
    /// stores `run_at` in seconds).
    pub fn to_task(&self, delay: Duration) -> Result<PgTask, serde_json::Error> {
        let bytes = serde_json::to_vec(self)?;
        let mut builder = TaskBuilder::new(bytes).max_attempts(TASK_MAX_RUNS);
        if !delay.is_zero() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let due = now + delay;
            let secs = due.as_secs() + u64::from(due.subsec_nanos() > 0);
            builder = builder.run_at_timestamp(secs);
        }
        Ok(builder.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_keeps_the_json_encoding_of_jobs_already_queued() -> Result<(), serde_json::Error> {
        let (event_id, organization_id) = (Uuid::now_v7(), Uuid::now_v7());
        let queued =
            format!(r#"{{"event_id":"{event_id}","organization_id":"{organization_id}","attempt":3}}"#);
        let job: DeliveryJob = serde_json::from_str(&queued)?;
        assert_eq!(job.try_number, 3);
        assert_eq!(serde_json::to_string(&job)?, queued);
        Ok(())
    }
}
