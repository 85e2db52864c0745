//! The consumer: an apalis worker on the Postgres queue, kept alive, and stopped gracefully.
//!
//! How jobs are found: apalis-postgres fetches a batch (`FOR UPDATE SKIP LOCKED`) whenever the
//! worker is woken. Wake-ups come from LISTEN/NOTIFY (an insert trigger notifies, but only for
//! jobs due at insert time) and from a 1-second interval, which picks up retries whose `run_at`
//! has come (apalis stores `run_at` in whole seconds anyway) and covers a lost LISTEN
//! connection (apalis' listener does not reconnect).
//!
//! Crash safety: every worker heartbeats each `heartbeat_interval` and, in the same
//! transaction, re-queues the jobs of workers silent for 3 intervals (apalis-postgres runs
//! `reenqueue_orphaned` on register and on every heartbeat of every worker of the queue).
//!
//! apalis ends a worker on the first database error (a failed heartbeat or fetch). The
//! supervisor below lets it drain, then starts a fresh one under a new name (apalis keeps a
//! name's registration locked to the session that made it).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{Event, PollWith, Strategy, WorkerBuilder, WorkerBuilderExt, WorkerContext};
use apalis_postgres::{Config, PostgresStorage, Pubsub};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use triggers_shared::{config::WorkerConfig, db::queue::DELIVERY_QUEUE, jobs::DeliveryJob};

use crate::deliver::{self, Deliverer};

/// How often an idle worker looks for due jobs besides NOTIFY.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(16);

/// Heartbeats a worker may miss before its jobs go to others.
pub const MISSED_HEARTBEATS: usize = 3;

/// Consume the queue until `stop` is cancelled; then stop claiming, drain in-flight deliveries
/// (for at most `config.drain_timeout()`) and return.
pub async fn consume(
    pool: PgPool,
    config: Arc<WorkerConfig>,
    deliverer: Arc<Deliverer>,
    stop: CancellationToken,
) {
    let mut generation = 0u32;
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        generation += 1;
        let name = if generation == 1 {
            config.worker_name.clone()
        } else {
            format!("{}-{generation}", config.worker_name)
        };
        let started = tokio::time::Instant::now();
        run_one(&name, &pool, &config, &deliverer, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        // Back off while the database stays away; start over after a healthy run.
        if started.elapsed() > Duration::from_secs(30) {
            backoff = RESTART_BACKOFF_MIN;
        }
        tracing::warn!(worker = %name, retry_in_ms = backoff.as_millis() as u64, "queue consumer ended; starting a new one");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// Run one apalis worker until it ends on its own or `stop` asks it to drain.
async fn run_one(
    name: &str,
    pool: &PgPool,
    config: &WorkerConfig,
    deliverer: &Arc<Deliverer>,
    stop: &CancellationToken,
) {
    let storage = PostgresStorage::<DeliveryJob>::new(pool).with_config(
        Config::default()
            .queue(DELIVERY_QUEUE)
            // Never claim more at once than the worker holds: a claimed job waiting in apalis'
            // buffer has no slot to wait for and cannot be shed.
            .batch_size(config.batch_size.clamp(1, deliver::held_jobs(config)))
            .heartbeat_interval(config.heartbeat_interval)
            .missed_heartbeats(MISSED_HEARTBEATS)
            // The handlers acknowledge their jobs themselves, in the transaction that records
            // what they did (see `recorder`): no per-batch result statement, no lock statement.
            .persist_results(false)
            .lock_tasks(false),
    );
    // The interval comes first: apalis polls strategies in order and stops at the first ready
    // one, and a closed NOTIFY stream is "ready" forever.
    let strategy = Strategy::new()
        .interval(POLL_INTERVAL)
        .stream(MergedWakeups(Pubsub::new(
            pool.clone(),
            DELIVERY_QUEUE.to_string(),
        )));
    let backend = PollWith::new(storage, strategy);
    let ctx = WorkerContext::new(name);
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend)
        .data(deliverer.clone())
        // Claimed jobs wait in the worker for a slot (see `fair`); the requests in flight are
        // bounded there, by `config.concurrency`.
        .concurrency(deliver::held_jobs(config))
        .build(deliver::handle);
    deliverer.gate().open();
    let mut events = std::pin::pin!(worker.stream());
    tracing::info!(worker = %name, "queue consumer started");

    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        let deadline = draining.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Ok(Event::Error(e))) => tracing::warn!(worker = %name, error = %e, "delivery job failed"),
                Some(Ok(Event::Exit)) => {
                    tracing::info!(worker = %name, "queue consumer stopped");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    // apalis stops fetching after a backend error but only finishes once the
                    // worker is stopped: stop it, let it drain, and the supervisor starts anew.
                    tracing::error!(worker = %name, error = %e, "queue consumer error; restarting it");
                    let _ = ctx.stop();
                    deliverer.gate().close();
                    draining.get_or_insert_with(|| tokio::time::Instant::now() + config.drain_timeout());
                }
            },
            () = stop.cancelled(), if draining.is_none() => {
                tracing::info!(worker = %name, "stopping: no new claims; draining in-flight deliveries");
                if ctx.stop().is_err() {
                    // Not started yet: nothing is in flight.
                    return;
                }
                // Held jobs that have not started go back to the queue at once; only requests
                // already in flight are drained.
                deliverer.gate().close();
                draining = Some(tokio::time::Instant::now() + config.drain_timeout());
            }
            () = tokio::time::sleep_until(deadline), if draining.is_some() => {
                tracing::warn!(
                    worker = %name,
                    "drain timed out; abandoning in-flight deliveries (another worker re-queues them)"
                );
                return;
            }
        }
    }
}

/// Turns every notification that is waiting into one wake-up. apalis consumes one item of its
/// strategy stream per poll, and one poll fetches a whole batch, so without this a burst of
/// inserts would leave thousands of NOTIFY messages queued on the listening connection.
struct MergedWakeups<S>(S);

impl<S: Stream + Unpin> Stream for MergedWakeups<S> {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let mut woken = false;
        // Bounded, so a stream that is always ready cannot hold the worker's task.
        for _ in 0..4096 {
            match self.0.poll_next_unpin(cx) {
                Poll::Ready(Some(_)) => woken = true,
                Poll::Ready(None) => return Poll::Ready(woken.then_some(())),
                Poll::Pending => break,
            }
        }
        if woken {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
