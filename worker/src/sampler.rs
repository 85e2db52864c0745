//! The queue sampler: the gauges that answer "how far behind is delivery?" (`QUEUE_JOBS` by
//! state, `QUEUE_DEPTH`, `QUEUE_OLDEST_PENDING_AGE_SECONDS`) and "is anything stranded?"
//! (`DELIVERIES_WITHOUT_JOB`), read from the database, and the fleet's endpoints by state
//! (`ENDPOINTS`: enabled, disabled by a client, disabled for failing).
//!
//! The numbers are the fleet's, not this worker's, so one worker at a time samples them: the one
//! holding a session advisory lock ([`SAMPLER_LOCK_KEY`]) on a connection it keeps. Every other
//! worker exports zero for these series, so both `sum` and `max` across the fleet give the value.
//! When the leader dies or loses its connection the lock is released and another worker takes
//! over on its next tick.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use triggers_shared::{
    config::WorkerConfig,
    db::{
        endpoints::{self, StateCounts},
        locks::{SAMPLER_LOCK_KEY, try_lock, unlock},
        queue::{self, JobCounts},
    },
    metrics::{DELIVERIES_WITHOUT_JOB, ENDPOINTS, QUEUE_DEPTH, QUEUE_JOBS, QUEUE_OLDEST_PENDING_AGE_SECONDS},
};

/// One reading of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueSample {
    pub jobs: JobCounts,
    /// How long the oldest due job has waited to be claimed.
    pub oldest_due: Duration,
    /// Pending events with a webhook but no live job (past the janitor's grace), counted at
    /// most once a minute.
    pub deliveries_without_job: i64,
    /// Every organisation's endpoints by state.
    pub endpoints: StateCounts,
}

/// The stranded-event count checks every pending event against every live job (about 1 s with
/// 100,000 of each on the 2-core test machine), so it is refreshed at most this often.
const STRANDED_INTERVAL: Duration = Duration::from_secs(60);

/// Export `s` as the gauges.
pub fn publish(s: &QueueSample) {
    metrics::gauge!(QUEUE_JOBS, "state" => "due").set(s.jobs.due as f64);
    metrics::gauge!(QUEUE_JOBS, "state" => "scheduled").set(s.jobs.scheduled as f64);
    metrics::gauge!(QUEUE_JOBS, "state" => "running").set(s.jobs.running as f64);
    metrics::gauge!(QUEUE_DEPTH).set(s.jobs.depth() as f64);
    metrics::gauge!(QUEUE_OLDEST_PENDING_AGE_SECONDS).set(s.oldest_due.as_secs_f64());
    metrics::gauge!(DELIVERIES_WITHOUT_JOB).set(s.deliveries_without_job as f64);
    let e = &s.endpoints;
    metrics::gauge!(ENDPOINTS, "state" => "enabled").set(e.enabled as f64);
    metrics::gauge!(ENDPOINTS, "state" => "disabled_manual").set(e.disabled_manual as f64);
    metrics::gauge!(ENDPOINTS, "state" => "disabled_failing").set(e.disabled_failing as f64);
}

/// Samples while it leads the fleet.
pub struct Sampler {
    pool: PgPool,
    stranded_grace: Duration,
    /// The connection holding the leader lock, while this worker leads.
    leader: Option<PgConnection>,
    /// The last stranded-event count and when it was taken.
    stranded: Option<(Instant, i64)>,
}

impl Sampler {
    pub fn new(pool: PgPool, stranded_grace: Duration) -> Self {
        Self {
            pool,
            stranded_grace,
            leader: None,
            stranded: None,
        }
    }

    /// Take the lead if it is free, and sample if leading. `Ok(None)`: another worker leads.
    pub async fn tick(&mut self) -> anyhow::Result<Option<QueueSample>> {
        let mut conn = match self.leader.take() {
            Some(conn) => conn,
            None => {
                let mut conn = self.pool.acquire().await?.detach();
                if !try_lock(&mut conn, SAMPLER_LOCK_KEY).await? {
                    let _ = conn.close().await;
                    return Ok(None);
                }
                conn
            }
        };
        // On an error the connection is dropped, which releases the lock for another worker.
        let jobs = queue::count_jobs(&mut conn).await?;
        let oldest_due = queue::oldest_due_age(&mut conn).await?;
        let deliveries_without_job = match self.stranded {
            Some((at, n)) if at.elapsed() < STRANDED_INTERVAL => n,
            _ => {
                let n = queue::maintenance::count_stranded(&mut conn, self.stranded_grace).await?;
                self.stranded = Some((Instant::now(), n));
                n
            }
        };
        let endpoints = endpoints::count_by_state(&mut conn).await?;
        self.leader = Some(conn);
        Ok(Some(QueueSample {
            jobs,
            oldest_due,
            deliveries_without_job,
            endpoints,
        }))
    }

    /// Give up the lead (closing the connection releases the lock).
    pub async fn close(mut self) {
        if let Some(mut conn) = self.leader.take() {
            let _ = unlock(&mut conn, SAMPLER_LOCK_KEY).await;
            let _ = conn.close().await;
        }
    }
}

/// Sample every `config.queue_sample_interval` until `stop`.
pub async fn run(pool: PgPool, config: Arc<WorkerConfig>, stop: CancellationToken) {
    let mut sampler = Sampler::new(pool, config.stranded_event_grace);
    let mut tick = tokio::time::interval(config.queue_sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match sampler.tick().await {
            Ok(Some(reading)) => publish(&reading),
            // Not the leader (or no reading): export zero, so sums across the fleet stay right.
            Ok(None) => publish(&QueueSample::default()),
            Err(e) => {
                publish(&QueueSample::default());
                tracing::debug!(error = format!("{e:#}"), "queue sample unavailable");
            }
        }
    }
    sampler.close().await;
}
