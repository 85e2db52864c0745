//! The janitor: deletes finished queue rows and expired dedup keys, and purges delivered events
//! past the retention period. Every worker runs it on a timer; a Postgres advisory lock on a
//! dedicated connection makes sure at most one run happens at a time across the fleet.

use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;
use triggers_shared::{
    config::WorkerConfig,
    db::janitor,
    jobs::DELIVERY_QUEUE,
    metrics::{EVENTS_DEAD_LETTERED_TOTAL, JANITOR_DELETED_TOTAL},
};

/// Rows deleted per statement: small, so no statement holds many locks for long.
pub const BATCH: i64 = 1000;

/// Finished job rows are kept this long (enough to inspect a just-finished job).
pub const FINISHED_JOB_GRACE: Duration = Duration::from_secs(60);

/// Worker registrations unseen this long (and holding no job) are deleted.
pub const STALE_WORKER_AGE: Duration = Duration::from_secs(24 * 3600);

/// What one run deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JanitorReport {
    pub jobs: u64,
    pub dedup_keys: u64,
    pub events: u64,
    pub workers: u64,
    /// Pending events whose job apalis gave up on, now `failed`.
    pub abandoned: u64,
}

/// One janitor run. `Ok(None)` when another run (anywhere in the fleet) holds the lock.
pub async fn run_janitor_once(pool: &PgPool, config: &WorkerConfig) -> anyhow::Result<Option<JanitorReport>> {
    // A connection of our own, closed at the end: closing releases the session lock whatever
    // happened in between (an error, a cancelled future).
    let mut conn = pool.acquire().await.context("janitor connection")?.detach();
    let result = async {
        if !janitor::try_lock(&mut conn).await? {
            return anyhow::Ok(None);
        }
        // Before their jobs are deleted: an event whose job apalis gave up on is dead-lettered.
        let mut report = JanitorReport {
            abandoned: janitor::dead_letter_abandoned_jobs(&mut conn, DELIVERY_QUEUE, BATCH).await?,
            ..JanitorReport::default()
        };
        loop {
            let n =
                janitor::delete_finished_jobs(&mut conn, DELIVERY_QUEUE, FINISHED_JOB_GRACE, BATCH).await?;
            report.jobs += n;
            if n < BATCH as u64 {
                break;
            }
        }
        loop {
            let n = janitor::delete_expired_dedup_keys(&mut conn, BATCH).await?;
            report.dedup_keys += n;
            if n < BATCH as u64 {
                break;
            }
        }
        loop {
            let n = janitor::purge_delivered_events(&mut conn, config.event_retention, BATCH).await?;
            report.events += n;
            if n < BATCH as u64 {
                break;
            }
        }
        report.workers = janitor::delete_stale_workers(&mut conn, DELIVERY_QUEUE, STALE_WORKER_AGE).await?;
        Ok(Some(report))
    }
    .await;
    let _ = conn.close().await;
    let report = result?;
    if let Some(r) = report {
        metrics::counter!(JANITOR_DELETED_TOTAL, "table" => "apalis.jobs").increment(r.jobs);
        metrics::counter!(JANITOR_DELETED_TOTAL, "table" => "dedup_keys").increment(r.dedup_keys);
        metrics::counter!(JANITOR_DELETED_TOTAL, "table" => "events").increment(r.events);
        metrics::counter!(JANITOR_DELETED_TOTAL, "table" => "apalis.workers").increment(r.workers);
        metrics::counter!(EVENTS_DEAD_LETTERED_TOTAL).increment(r.abandoned);
        if r != JanitorReport::default() {
            tracing::info!(?r, "janitor run");
        }
    }
    Ok(report)
}

/// Run the janitor every `config.janitor_interval` until `stop`.
pub async fn run(pool: PgPool, config: std::sync::Arc<WorkerConfig>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(config.janitor_interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = run_janitor_once(&pool, &config).await {
            tracing::warn!(error = format!("{e:#}"), "janitor run failed");
        }
    }
}
