//! Group commit of what deliveries write: the attempts of many deliveries (one multi-row
//! statement that updates the deliveries and inserts their attempt rows; a trigger sums their
//! events up), their follow-up retry jobs, the deliveries closed unsent, and the claimed jobs
//! they finish or put back, all in ONE transaction. Each delivery
//! waits for that commit before its handler returns, so "an attempt is recorded before its job
//! is done" holds batch by batch: the job is finished (deleted) in the very transaction that
//! records its attempt.
//!
//! The same statement keeps each endpoint's failure record and disables an endpoint that has
//! only failed for long enough (`deliveries::record_attempts`). Once that commits, each
//! disabled endpoint's change is announced as a PATCH announces it (`endpoints_version` bumped,
//! `NOTIFY`), in a short transaction of its own: taking the organisation's row lock inside the
//! record transaction, after its delivery and endpoint locks, would invert the order a PATCH
//! takes them in. Until the announcement lands, an event ingest fans out from its cache gets a
//! pending delivery that the worker closes as `skipped` when it finds the endpoint disabled.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use triggers_shared::{
    db::{
        deliveries::{self, AttemptRecord, DisablePolicy, Recorded},
        endpoints, queue,
    },
    jobs::DeliveryJob,
    metrics::ENDPOINTS_AUTO_DISABLED_TOTAL,
    models::{DeliveryKey, DeliveryStatus},
};

use crate::{coalesce::Coalescer, retry::Next};

/// How often a batch is tried before its deliveries fail back to apalis. The requests have been
/// made: retrying the write is better than letting a retry of the job send them again.
const TRIES: usize = 4;

/// The largest batch one transaction writes.
pub const MAX_BATCH: usize = 512;

/// One thing a delivery hands over for the next commit.
#[derive(Debug)]
pub enum Write {
    /// An attempt was made: record it, move the delivery on, schedule the retry `next` asks
    /// for (the job `record.retry` names), and finish the job `record.task_id`.
    Attempt {
        job: DeliveryJob,
        record: AttemptRecord,
        next: Next,
    },
    /// Not sent and never will be (its endpoint is disabled or gone): close the delivery with
    /// `status` and finish the job.
    Close {
        task: String,
        key: DeliveryKey,
        status: DeliveryStatus,
    },
    /// Nothing to send (delivery gone, closed or resent): finish the job.
    Finish { task: String },
    /// Not started here: put the job back, due after `delay`.
    Release { task: String, delay: Duration },
}

/// What the commit did for one [`Write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The attempt is recorded (`None`: the event was deleted during the attempt).
    Attempt(Option<Recorded>),
    Done,
}

/// Start the group-commit task on `pool`; endpoints are disabled by `policy`.
pub fn spawn(pool: PgPool, policy: DisablePolicy) -> Coalescer<Write, Written> {
    Coalescer::spawn(MAX_BATCH, move |writes| {
        let pool = pool.clone();
        async move {
            let (written, disabled) = commit_with_retries(&pool, &writes, policy).await?;
            announce_disabled(&pool, &disabled).await;
            Ok(written)
        }
    })
}

/// Announce the endpoints the last commit disabled (see the module's comment) and count them.
/// A failed announcement is logged, not retried: the endpoint is disabled either way, and the
/// worker skips what ingest still fans out to it.
async fn announce_disabled(pool: &PgPool, disabled: &[(uuid::Uuid, uuid::Uuid)]) {
    for &(organization_id, endpoint_id) in disabled {
        metrics::counter!(ENDPOINTS_AUTO_DISABLED_TOTAL).increment(1);
        tracing::warn!(org_id = %organization_id, %endpoint_id, "endpoint disabled: its attempts have only failed");
        let announced = async {
            let mut tx = pool.begin().await?;
            endpoints::announce_change(&mut tx, organization_id).await?;
            tx.commit().await
        };
        if let Err(e) = announced.await {
            tracing::error!(org_id = %organization_id, error = %e, "announcing a disabled endpoint");
        }
    }
}

/// The commit's answers and the endpoints it disabled.
type Committed = (Vec<Written>, Vec<(uuid::Uuid, uuid::Uuid)>);

async fn commit_with_retries(
    pool: &PgPool,
    writes: &[Write],
    policy: DisablePolicy,
) -> anyhow::Result<Committed> {
    let mut pause = Duration::from_millis(250);
    for _ in 0..TRIES - 1 {
        match commit(pool, writes, policy).await {
            Ok(committed) => return Ok(committed),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                batch = writes.len(),
                "recording deliveries failed; retrying"
            ),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    commit(pool, writes, policy).await
}

/// One transaction for the whole batch.
async fn commit(pool: &PgPool, writes: &[Write], policy: DisablePolicy) -> anyhow::Result<Committed> {
    let mut written: Vec<Written> = vec![Written::Done; writes.len()];
    let mut finished = Vec::new();
    let mut released = (Vec::new(), Vec::new());
    let mut attempts: Vec<usize> = Vec::new();
    let mut closing = Vec::new();
    for (i, write) in writes.iter().enumerate() {
        match write {
            Write::Attempt { record, .. } => {
                attempts.push(i);
                finished.push(record.task_id.clone());
            }
            Write::Close { task, key, status } => {
                closing.push((*key, task.clone(), *status));
                finished.push(task.clone());
            }
            Write::Finish { task } => finished.push(task.clone()),
            Write::Release { task, delay } => {
                released.0.push(task.clone());
                released.1.push(delay.as_secs_f64());
            }
        }
    }

    let mut tx = pool.begin().await.context("starting the record transaction")?;
    let mut retries = Vec::new();
    let mut disabled = Vec::new();
    // One statement per round; a round holds each delivery at most once (the same row twice in
    // one UPDATE would be counted once), so duplicates wait for the next round.
    while !attempts.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = attempts.iter().partition(|&&i| match &writes[i] {
            Write::Attempt { record, .. } => seen.insert(record.key),
            _ => true,
        });
        attempts = later;
        let batch: Vec<AttemptRecord> = round
            .iter()
            .filter_map(|&i| match &writes[i] {
                Write::Attempt { record, .. } => Some(record.clone()),
                _ => None,
            })
            .collect();
        let recorded = deliveries::record_attempts(&mut tx, &batch, policy)
            .await
            .context("recording attempts")?;
        disabled.extend(recorded.disabled);
        for (&i, recorded) in round.iter().zip(recorded.attempts) {
            written[i] = Written::Attempt(recorded);
            if let (
                Write::Attempt {
                    job,
                    record,
                    next: Next::RetryAfter(delay),
                },
                Some(r),
            ) = (&writes[i], recorded)
                && r.status_applied
                && let Some((id, _)) = record.retry
            {
                retries.push((id, job.following(), *delay));
            }
        }
    }
    queue::enqueue(&mut tx, &retries)
        .await
        .context("enqueueing retries")?;
    deliveries::close(&mut tx, &closing)
        .await
        .context("closing deliveries")?;
    queue::finish_jobs(&mut tx, &finished)
        .await
        .context("finishing jobs")?;
    queue::release_jobs(&mut tx, &released.0, &released.1)
        .await
        .context("releasing jobs")?;
    tx.commit().await.context("committing the record transaction")?;
    Ok((written, disabled))
}
