//! Recoveries (`POST /api/endpoints/{id}/recover`), carried out: every worker runs this loop,
//! and each batch is one transaction of `db::recoveries::run_batch`, which holds the
//! recovery's row lock (one worker at a time per recovery; the others take another one or
//! wait) and commits the restarted deliveries with the cursor they reached. A worker killed
//! mid-batch rolls nothing forward: the next batch, by any worker, starts from the last cursor.
//!
//! Pacing: recovered deliveries' first jobs are queued below live ones (`queue::recovered`),
//! and a worker adds a batch only while fewer than `recovery_backlog` of them wait, so a
//! recovery of 100,000 deliveries never puts 100,000 jobs in the queue at once, and live jobs
//! are claimed first all along. And a worker restarts at most `recovery_rate` deliveries a
//! second (a batch and the wait after it together last the batch's share of a second):
//! claimed first or not, recovered deliveries share the database and the CPU with live ones,
//! and unpaced (3,400/s on 2 cores) they made another organisation's live end-to-end p99 10
//! times slower. Small batches (`recovery_batch`, 100 by default: one every 100 ms at the
//! default rate) keep that load even; batches of 500 every half second came as bursts that
//! live events queued behind (BENCHMARKS.md).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use triggers_shared::{
    config::WorkerConfig,
    db::{queue::recovered, recoveries},
    metrics::RECOVERED_DELIVERIES_TOTAL,
};

/// How often an idle worker looks for a running recovery.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// How soon a worker looks again when the recovered backlog was full.
pub const PACED_POLL: Duration = Duration::from_millis(200);

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A batch was committed: there may be more at once.
    Batch(recoveries::BatchDone),
    /// Enough recovered jobs wait already.
    Paced,
    /// No running recovery is free.
    Idle,
}

/// Process one batch of some running recovery, unless the recovered backlog is full.
pub async fn step(pool: &PgPool, config: &WorkerConfig) -> anyhow::Result<Step> {
    let mut conn = pool.acquire().await?;
    let backlog = i64::try_from(config.recovery_backlog).unwrap_or(i64::MAX);
    if recovered::waiting(&mut conn, backlog).await? >= backlog {
        return Ok(Step::Paced);
    }
    let batch = i64::try_from(config.recovery_batch).unwrap_or(i64::MAX);
    Ok(match recoveries::run_batch(&mut conn, batch).await? {
        Some(done) => Step::Batch(done),
        None => Step::Idle,
    })
}

/// The wait after a batch that restarted `enqueued` deliveries and took `took` that keeps a
/// worker at `rate` a second: the batch's share of a second, less the time the batch itself took.
pub fn paced(enqueued: u64, rate: u32, took: Duration) -> Duration {
    Duration::from_secs_f64(enqueued as f64 / f64::from(rate.max(1))).saturating_sub(took)
}

/// Run recoveries until `stop` is cancelled (a batch in progress is finished first).
pub async fn run(pool: PgPool, config: Arc<WorkerConfig>, stop: CancellationToken) {
    loop {
        let started = Instant::now();
        let wait = match step(&pool, &config).await {
            Ok(Step::Batch(done)) => {
                metrics::counter!(RECOVERED_DELIVERIES_TOTAL).increment(done.enqueued);
                if done.finished {
                    tracing::info!(org_id = %done.organization_id, recovery_id = %done.recovery_id, "recovery done");
                }
                paced(done.enqueued, config.recovery_rate, started.elapsed())
            }
            Ok(Step::Paced) => PACED_POLL,
            Ok(Step::Idle) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "recovery batch failed; trying again");
                IDLE_POLL
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_and_its_wait_last_its_share_of_a_second() {
        let instant = Duration::ZERO;
        assert_eq!(paced(500, 1000, instant), Duration::from_millis(500));
        assert_eq!(paced(50, 100, instant), Duration::from_millis(500));
        assert_eq!(paced(0, 1000, instant), Duration::ZERO);
        assert_eq!(
            paced(10, 0, instant),
            Duration::from_secs(10),
            "a rate of 0 counts as 1"
        );
        assert_eq!(
            paced(100, 1000, Duration::from_millis(30)),
            Duration::from_millis(70)
        );
        assert_eq!(
            paced(100, 1000, Duration::from_millis(300)),
            Duration::ZERO,
            "a slow batch waits nothing"
        );
    }
}
