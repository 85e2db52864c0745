//! The janitor: keeps every pending delivery deliverable and the tables bounded. Each run it
//! dead-letters the deliveries whose job apalis gave up on and deletes those jobs (a delivered
//! job is deleted when its attempt is recorded; `Done` rows of older versions after a grace),
//! gives stranded deliveries (pending, no live job) a new chain, deletes expired dedup keys,
//! and applies retention to delivered events, dead letters (each with its deliveries and
//! attempts), dead API keys, rate-limit windows and departed workers. Every worker runs it on a timer; a
//! Postgres advisory lock on a dedicated connection makes sure at most one run happens at a time
//! across the fleet.

use std::{future::Future, pin::Pin, time::Duration};

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use triggers_shared::{
    config::WorkerConfig,
    db::{
        deliveries, janitor,
        locks::{self, JANITOR_LOCK_KEY},
        queue::maintenance,
    },
    metrics::{EVENTS_DEAD_LETTERED_TOTAL, JANITOR_DELETED_TOTAL},
    models::DeliveryKey,
};

/// Rows changed per statement: small, so no statement holds many locks for long.
pub const BATCH: i64 = 1000;

/// `Done` job rows (left by versions before workers deleted their jobs) are kept this long.
pub const FINISHED_JOB_GRACE: Duration = Duration::from_secs(60);

/// Worker registrations unseen this long (and holding no job) are deleted.
pub const STALE_WORKER_AGE: Duration = Duration::from_secs(24 * 3600);

/// What one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JanitorReport {
    pub jobs: u64,
    pub dedup_keys: u64,
    /// Delivered events past their retention.
    pub events: u64,
    pub workers: u64,
    /// Pending deliveries whose job apalis gave up on, now `failed`.
    pub abandoned: u64,
    /// Pending deliveries that had no live job, given a new chain.
    pub requeued: u64,
    /// Dead-lettered events past their retention.
    pub dead_letters: u64,
    pub api_keys: u64,
    pub rate_limit_windows: u64,
}

type Step<'c> = Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send + 'c>>;

/// Run `step` until it changes fewer than [`BATCH`] rows; the rows changed in all.
async fn in_batches<F>(conn: &mut PgConnection, mut step: F) -> anyhow::Result<u64>
where
    F: for<'c> FnMut(&'c mut PgConnection) -> Step<'c>,
{
    let mut total = 0;
    loop {
        let n = step(&mut *conn).await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// One janitor run. `Ok(None)` when another run (anywhere in the fleet) holds the lock.
pub async fn run_janitor_once(pool: &PgPool, config: &WorkerConfig) -> anyhow::Result<Option<JanitorReport>> {
    // A connection of our own, closed at the end: closing releases the session lock whatever
    // happened in between (an error, a cancelled future).
    let mut conn = pool.acquire().await.context("janitor connection")?.detach();
    let result = async {
        if !locks::try_lock(&mut conn, JANITOR_LOCK_KEY).await? {
            return anyhow::Ok(None);
        }
        let report = clean(&mut conn, config).await;
        locks::unlock(&mut conn, JANITOR_LOCK_KEY).await?;
        Ok(Some(report?))
    }
    .await;
    let _ = conn.close().await;
    let report = result?;
    if let Some(r) = report {
        for (table, n) in [
            ("apalis.jobs", r.jobs),
            ("dedup_keys", r.dedup_keys),
            ("events", r.events + r.dead_letters),
            ("apalis.workers", r.workers),
            ("api_keys", r.api_keys),
            ("rate_limit_windows", r.rate_limit_windows),
        ] {
            metrics::counter!(JANITOR_DELETED_TOTAL, "table" => table).increment(n);
        }
        metrics::counter!(EVENTS_DEAD_LETTERED_TOTAL).increment(r.abandoned);
        if r.requeued > 0 {
            tracing::warn!(
                deliveries = r.requeued,
                "pending deliveries had no job; re-enqueued"
            );
        }
        if r != JanitorReport::default() {
            tracing::info!(?r, "janitor run");
        }
    }
    Ok(report)
}

/// The statements of one run, on the lock holder's connection.
async fn clean(conn: &mut PgConnection, config: &WorkerConfig) -> anyhow::Result<JanitorReport> {
    let grace = config.stranded_event_grace;
    // Given-up jobs first (their deliveries are dead-lettered and the jobs deleted together),
    // then stranded deliveries, which no longer include those.
    let (mut abandoned, mut jobs) = (0, 0);
    loop {
        let mut tx = conn.begin().await?;
        let given_up = maintenance::given_up(&mut tx, BATCH).await?;
        let keyed: Vec<(DeliveryKey, String)> = given_up
            .iter()
            .filter_map(|(id, job)| Some((DeliveryKey::from(job.as_ref()?), id.clone())))
            .collect();
        abandoned += deliveries::dead_letter_abandoned(&mut tx, &keyed).await?;
        let ids: Vec<String> = given_up.into_iter().map(|(id, _)| id).collect();
        let deleted = maintenance::delete_jobs(&mut tx, &ids).await?;
        tx.commit().await?;
        jobs += deleted;
        if (ids.len() as i64) < BATCH {
            break;
        }
    }
    jobs += in_batches(conn, |c| {
        Box::pin(async { Ok(maintenance::delete_done_jobs(c, FINISHED_JOB_GRACE, BATCH).await?) })
    })
    .await?;
    let requeued = in_batches(conn, |c| {
        Box::pin(async move {
            // The deliveries stay locked until their new jobs commit.
            let mut tx = c.begin().await?;
            let stranded = maintenance::lock_stranded(&mut tx, grace, BATCH).await?;
            let n = deliveries::new_chains(&mut tx, &stranded).await?;
            tx.commit().await?;
            Ok(n)
        })
    })
    .await?;
    let dedup_keys = in_batches(conn, |c| {
        Box::pin(async { Ok(janitor::delete_expired_dedup_keys(c, BATCH).await?) })
    })
    .await?;
    let retention = config.event_retention;
    let events = in_batches(conn, |c| {
        Box::pin(async move { Ok(janitor::purge_delivered_events(c, retention, BATCH).await?) })
    })
    .await?;
    let retention = config.failed_event_retention;
    let dead_letters = in_batches(conn, |c| {
        Box::pin(async move { Ok(janitor::purge_failed_events(c, retention, BATCH).await?) })
    })
    .await?;
    let retention = config.dead_key_retention;
    let api_keys = in_batches(conn, |c| {
        Box::pin(async move { Ok(janitor::purge_dead_api_keys(c, retention, BATCH).await?) })
    })
    .await?;
    let retention = config.rate_limit_window_retention;
    let rate_limit_windows = in_batches(conn, |c| {
        Box::pin(async move { Ok(janitor::purge_rate_limit_windows(c, retention, BATCH).await?) })
    })
    .await?;
    let workers = maintenance::delete_stale_workers(conn, STALE_WORKER_AGE).await?;
    Ok(JanitorReport {
        jobs,
        dedup_keys,
        events,
        workers,
        abandoned,
        requeued,
        dead_letters,
        api_keys,
        rate_limit_windows,
    })
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
