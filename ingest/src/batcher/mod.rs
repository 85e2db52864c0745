//! The group-committing writer of accepted events (see ARCHITECTURE.md).
//!
//! Requests hand their validated event to a bounded queue and wait for the verdict. A writer
//! task turns the queue into batches without a timer: when nothing is being written, whatever
//! is queued (often one event) is written at once, so a request alone never waits for company;
//! while a batch is committing, what arrives gathers for the next one (natural group commit).
//! A second batch (up to [`MAX_IN_FLIGHT`]) starts early only when a full one has gathered.
//!
//! A batch is ONE statement ([`write`]): dedup keys, events, their deliveries and first jobs, so
//! a `202` always means "stored with its deliveries", answered only after the commit. (An event
//! whose organisation's endpoints changed since it was routed is rerouted and written by a
//! follow-up statement before anyone is answered.) If it fails for an outage, every waiter gets
//! the cause (503). Any other failure splits the batch in halves, recursively, until the events
//! at fault stand alone: one bad event costs its batch about 2·log2(n) more statements, and only
//! it fails. An event Postgres refuses alone for its data (SQLSTATE class `22` or `54001`:
//! something `Payload::parse` should have caught) is `422 payload_not_storable` and counted in
//! [`m::EVENTS_UNSTORABLE_TOTAL`]; any other fault of one event stays a `500`.
//!
//! Back-pressure and bounds: the queue holds at most [`QUEUE_CAPACITY`] events and
//! [`QUEUE_BYTES`] of event text; the transaction is bounded by [`BATCH_TIMEOUT`], a request's
//! whole wait by [`WAIT_TIMEOUT`]. On shutdown, everything queued is written before the task ends.

mod plan;
mod write;

use std::{ops::Range, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgPool, postgres::PgPoolOptions};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::JoinSet,
};
use triggers_shared::metrics as m;
use triggers_shared::models::{DedupId, EventType, Payload};
use uuid::Uuid;

pub use write::WriteError;

use crate::{
    error::ApiError,
    routing::{Fanout, RoutingCache},
};

/// Most events in one statement.
pub const MAX_BATCH: usize = 500;
/// Capacity of the queue in front of the writer, in events.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Capacity of the queue in front of the writer, in bytes of event text (payload, type, dedup
/// id): with payloads of up to 256 KiB, a count alone would let the queue hold gigabytes.
pub const QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// Batches committing at the same time.
pub const MAX_IN_FLIGHT: usize = 4;
/// A writer connection idle this long is pinged before its next batch.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);
/// Bound on one batch statement.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(4);
/// Bound on a request's wait (queueing plus its batch).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated event to store. `payload` is its JSON object text, stored as it is.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_type: EventType,
    pub dedup_id: Option<DedupId>,
    pub payload: Payload,
    /// Its deliveries, as its organisation's endpoints (at `fanout.version`) route it. If they
    /// changed by the time the batch is written, the writer reroutes it.
    pub fanout: Fanout,
}

impl NewEvent {
    /// What the event weighs in the queue.
    fn bytes(&self) -> usize {
        self.payload.get().len() + self.event_type.len() + self.dedup_id.as_deref().map_or(0, str::len)
    }
}

/// What happened to a submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, with its deliveries and their first jobs.
    Accepted { id: Uuid, created_at: DateTime<Utc> },
    /// Its dedup id is held by `event_id`; nothing was stored.
    Duplicate { event_id: Uuid },
}

/// Why a waiter's event was not stored: the batch's error, shared by all its waiters.
#[derive(Debug, thiserror::Error)]
#[error("the event batch was not stored")]
pub struct BatchFailed(#[source] pub Arc<WriteError>);

type Reply = oneshot::Sender<Result<Outcome, Arc<WriteError>>>;

/// A queued event, its waiter, and its share of [`QUEUE_BYTES`] (released once answered).
struct Item {
    event: NewEvent,
    reply: Reply,
    bytes: OwnedSemaphorePermit,
}

enum Msg {
    Event(Item),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::Sender<Msg>,
    bytes: Arc<Semaphore>,
}

impl BatchWriter {
    /// Start the writer task on the runtime; dedup ids are remembered for `dedup_window`, and
    /// events whose endpoints changed are rerouted through `routing`.
    pub fn start(db: PgPool, routing: RoutingCache, dedup_window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            db: writer_pool(&db),
            routing,
            window: dedup_window,
        };
        tokio::spawn(run(writer, rx));
        Self {
            tx,
            bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
        }
    }

    /// Store an event; resolves after its batch committed (or failed). A queue that stays full
    /// (by count or by bytes) for [`WAIT_TIMEOUT`] is `503`, like a writer that is shutting down.
    pub async fn submit(&self, event: NewEvent) -> Result<Outcome, ApiError> {
        self.submit_many(vec![event])
            .await
            .pop()
            .unwrap_or(Err(ApiError::Unavailable))
    }

    /// Store several events (one request's batch); one answer per event, in order, once every
    /// one of them is answered. They enter the queue together (room for all is taken at once),
    /// so they go to the next statements with whatever else is queued, in their order, and
    /// never wait for a timer. Each is judged alone: an outage answers `503` for the events it
    /// reached, a refused payload `422` for that event only. The bounds are [`submit`]'s, for
    /// all of them together.
    ///
    /// [`submit`]: Self::submit
    pub async fn submit_many(&self, events: Vec<NewEvent>) -> Vec<Result<Outcome, ApiError>> {
        let count = events.len();
        let unavailable = || (0..count).map(|_| Err(ApiError::Unavailable)).collect();
        if count == 0 {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
        let weights: Vec<usize> = events.iter().map(|e| e.bytes().max(1)).collect();
        // Taken at once (two requests taking their shares piecemeal could each wait for the
        // other); a batch heavier than the whole queue takes all of it.
        let total = weights.iter().sum::<usize>().min(QUEUE_BYTES);
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        let bytes = self.bytes.clone().acquire_many_owned(total);
        let Ok(Ok(mut bytes)) = tokio::time::timeout_at(deadline, bytes).await else {
            return unavailable();
        };
        let Ok(Ok(slots)) = tokio::time::timeout_at(deadline, self.tx.reserve_many(count)).await else {
            // Closed: we are shutting down. Timed out: the queue stayed full.
            return unavailable();
        };
        let mut answers = Vec::with_capacity(count);
        for (i, ((event, slot), weight)) in events.into_iter().zip(slots).zip(weights).enumerate() {
            let (reply, answer) = oneshot::channel();
            // Each event holds its share until it is answered; the last takes what is left.
            let share = if i + 1 == count {
                bytes.num_permits()
            } else {
                weight.min(bytes.num_permits())
            };
            let bytes = bytes
                .split(share)
                .expect("a share is never more than the permits left");
            slot.send(Msg::Event(Item { event, reply, bytes }));
            answers.push(answer);
        }
        let mut outcomes = Vec::with_capacity(count);
        for answer in answers {
            outcomes.push(match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Ok(outcome))) => Ok(outcome),
                Ok(Ok(Err(cause))) if cause.is_unavailable() => Err(ApiError::Unavailable),
                Ok(Ok(Err(cause))) if cause.refused_data() => Err(ApiError::PayloadNotStorable),
                Ok(Ok(Err(cause))) => Err(ApiError::internal(BatchFailed(cause))),
                // The writer dropped the waiter (it stopped) or the wait ran out.
                Ok(Err(_)) | Err(_) => Err(ApiError::Unavailable),
            });
        }
        outcomes
    }

    /// Write everything queued so far, then stop the writer.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// The writer's own connections (at most [`MAX_IN_FLIGHT`], to the same database), checked
/// with a ping only after idling [`PING_AFTER_IDLE`]: the shared pool pings before every
/// acquire, one more round trip in front of every batch than a busy connection needs.
fn writer_pool(db: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(MAX_IN_FLIGHT as u32)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with((*db.connect_options()).clone())
}

/// What writing a batch needs.
#[derive(Clone)]
struct Writer {
    db: PgPool,
    routing: RoutingCache,
    window: Duration,
}

/// The writer task: gathers queued events into batches and starts their writes (see the module
/// header for when). Ends once shut down (or every handle is gone) and all is written.
async fn run(writer: Writer, mut rx: mpsc::Receiver<Msg>) {
    let mut pending: Vec<Item> = Vec::with_capacity(MAX_BATCH);
    let mut buf: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
    let mut writing: JoinSet<()> = JoinSet::new();
    let mut stopped: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    loop {
        while !pending.is_empty()
            && (writing.is_empty() || (pending.len() >= MAX_BATCH && writing.len() < MAX_IN_FLIGHT))
        {
            let batch: Vec<Item> = pending.drain(..pending.len().min(MAX_BATCH)).collect();
            writing.spawn(write_and_answer(writer.clone(), batch));
        }
        if !open && pending.is_empty() && writing.is_empty() {
            break;
        }
        let room = MAX_BATCH.saturating_sub(pending.len());
        tokio::select! {
            received = rx.recv_many(&mut buf, room), if open && room > 0 => {
                if received == 0 {
                    open = false;
                }
                for msg in buf.drain(..) {
                    match msg {
                        Msg::Event(item) => pending.push(item),
                        Msg::Shutdown(done) => {
                            // Refuse new work; what is already queued is still received.
                            rx.close();
                            stopped.push(done);
                        }
                    }
                }
            }
            Some(_) = writing.join_next(), if !writing.is_empty() => {}
        }
    }
    for done in stopped {
        let _ = done.send(());
    }
}

/// Write one batch and answer its waiters.
async fn write_and_answer(writer: Writer, items: Vec<Item>) {
    metrics::histogram!(m::INGEST_BATCH_SIZE).record(items.len() as f64);
    // Each waiter keeps its share of the queue's bytes until it is answered.
    let (events, waiters): (Vec<NewEvent>, Vec<(Reply, OwnedSemaphorePermit)>) =
        items.into_iter().map(|i| (i.event, (i.reply, i.bytes))).unzip();
    let answers = write_splitting(&writer, &events).await;
    for ((reply, _), answer) in waiters.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// One answer per event, in order. A part of the batch that fails for a reason that is not an
/// outage is split in halves, the left half written first (so the first event with a dedup id
/// still wins), until the events at fault are alone.
async fn write_splitting(writer: &Writer, events: &[NewEvent]) -> Vec<Result<Outcome, Arc<WriteError>>> {
    let mut answers = Vec::with_capacity(events.len());
    // The parts still to write, as a stack with the leftmost on top.
    let mut parts: Vec<Range<usize>> = Vec::new();
    parts.push(0..events.len());
    while let Some(part) = parts.pop() {
        let slice = &events[part.clone()];
        match write::write_with_retry(writer, slice).await {
            Ok(outcomes) => answers.extend(outcomes.into_iter().map(Ok)),
            Err(cause) if !cause.is_unavailable() && slice.len() > 1 => {
                let middle = part.start + slice.len() / 2;
                parts.push(middle..part.end);
                parts.push(part.start..middle);
            }
            Err(cause) => {
                if let Some(refusal) = cause.database_error().filter(|_| cause.refused_data()) {
                    // Postgres' code and message only: its detail may quote the payload.
                    tracing::warn!(
                        sqlstate = refusal.code().as_deref().unwrap_or_default(),
                        message = refusal.message(),
                        event_id = %slice.first().map(|e| e.id).unwrap_or_default(),
                        "the database refused an event that passed validation"
                    );
                    metrics::counter!(m::EVENTS_UNSTORABLE_TOTAL).increment(slice.len() as u64);
                }
                answers.extend(std::iter::repeat_n(Err(cause), slice.len()));
            }
        }
    }
    answers
}
