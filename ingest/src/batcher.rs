//! The micro-batching writer of accepted events (see ARCHITECTURE.md).
//!
//! Requests hand their validated event to a bounded channel and wait for the verdict. A writer
//! task takes what is waiting (up to [`MAX_BATCH`] items, lingering [`LINGER`] after the first)
//! and writes it in ONE transaction: dedup keys (multi-row, conflicts are answers, not errors),
//! events (multi-row), and one delivery job per event of an organisation with a webhook (one
//! multi-row insert). Only after the commit does each waiter learn `Accepted` or `Duplicate`, so
//! a `202` always means "stored with its job". If the transaction fails, every waiter gets the
//! error (503 for an unreachable database); a data error that is not an outage is retried item by
//! item so one bad row cannot sink its neighbours. Up to [`MAX_IN_FLIGHT`] batches commit
//! concurrently; the bounded channel and that cap are the back-pressure.
//!
//! Waits are bounded: the transaction by [`BATCH_TIMEOUT`], a request's whole wait by
//! [`WAIT_TIMEOUT`]. On shutdown, everything queued is written before the task ends.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use triggers_shared::{
    db::{self, events::NewEvents},
    jobs::{self, DeliveryJob},
    metrics as m,
    models::{DedupId, EventType, Payload},
};
use uuid::Uuid;

use crate::error::ApiError;

/// Most events in one transaction.
pub const MAX_BATCH: usize = 500;
/// How long the writer waits for company after the first event of a batch.
pub const LINGER: Duration = Duration::from_millis(1);
/// Capacity of the queue in front of the writer.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Batches committing at the same time.
pub const MAX_IN_FLIGHT: usize = 4;
/// Bound on one batch transaction.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(4);
/// Bound on a request's wait (queueing plus its batch).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated event to store. `payload` is its JSON text, as the client sent it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_type: EventType,
    pub dedup_id: Option<DedupId>,
    pub payload: Payload,
}

/// What happened to a submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (with its delivery job if the organisation has a webhook).
    Accepted { id: Uuid, created_at: DateTime<Utc> },
    /// Its dedup id is held by `event_id`; nothing was stored.
    Duplicate { event_id: Uuid },
}

/// Why a batch failed, as its waiters see it (the cause is logged once by the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unavailable,
    Internal,
}

type Reply = oneshot::Sender<Result<Outcome, Failure>>;

enum Msg {
    Event(NewEvent, Reply),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::Sender<Msg>,
}

impl BatchWriter {
    /// Start the writer task on the runtime.
    pub fn start(db: PgPool) -> Self {
        Self::start_with_window(db, Duration::from_secs(24 * 3600))
    }

    /// Start the writer; dedup ids are remembered for `dedup_window`.
    pub fn start_with_window(db: PgPool, dedup_window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(db, dedup_window, rx));
        Self { tx }
    }

    /// Store an event; resolves after its batch committed (or failed).
    pub async fn submit(&self, event: NewEvent) -> Result<Outcome, ApiError> {
        let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
        let (reply, answer) = oneshot::channel();
        let sent = tokio::time::timeout_at(deadline, self.tx.send(Msg::Event(event, reply))).await;
        match sent {
            Ok(Ok(())) => {}
            // Closed: we are shutting down. Timed out: the queue stayed full.
            Ok(Err(_)) | Err(_) => return Err(ApiError::Unavailable),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(Failure::Internal))) => Err(ApiError::internal(anyhow::anyhow!(
                "the event batch failed (see the writer's log)"
            ))),
            Ok(Ok(Err(Failure::Unavailable))) | Ok(Err(_)) | Err(_) => Err(ApiError::Unavailable),
        }
    }

    /// Write everything queued so far, then stop the writer.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

type Item = (NewEvent, Reply);

async fn run(db: PgPool, window: Duration, mut rx: mpsc::Receiver<Msg>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
    let mut stop: Option<oneshot::Sender<()>> = None;
    loop {
        if rx.recv_many(&mut buf, MAX_BATCH).await == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while buf.len() < MAX_BATCH && !buf.iter().any(|m| matches!(m, Msg::Shutdown(_))) {
            let room = MAX_BATCH - buf.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut buf, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut items = Vec::with_capacity(buf.len());
        for msg in buf.drain(..) {
            match msg {
                Msg::Event(e, r) => items.push((e, r)),
                Msg::Shutdown(done) => stop = Some(done),
            }
        }
        if !items.is_empty() {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let db = db.clone();
            tokio::spawn(async move {
                write_and_answer(&db, window, items).await;
                drop(permit);
            });
        }
        if stop.is_some() {
            // Refuse new work, then write what is still queued.
            rx.close();
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Event(e, r) => buf.push(Msg::Event(e, r)),
                    Msg::Shutdown(done) => {
                        let _ = done.send(());
                    }
                }
            }
            let items: Vec<Item> = buf
                .drain(..)
                .filter_map(|m| match m {
                    Msg::Event(e, r) => Some((e, r)),
                    Msg::Shutdown(_) => None,
                })
                .collect();
            for chunk in chunks(items, MAX_BATCH) {
                write_and_answer(&db, window, chunk).await;
            }
            break;
        }
    }
    // Wait for batches still committing before declaring the writer stopped.
    let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

fn chunks(mut items: Vec<Item>, size: usize) -> Vec<Vec<Item>> {
    let mut out = Vec::new();
    while items.len() > size {
        let rest = items.split_off(size);
        out.push(std::mem::replace(&mut items, rest));
    }
    if !items.is_empty() {
        out.push(items);
    }
    out
}

/// Write one batch and answer its waiters. A failure that is not an outage is retried one
/// event at a time, so only the event at fault fails.
async fn write_and_answer(db: &PgPool, window: Duration, items: Vec<Item>) {
    let (events, replies): (Vec<NewEvent>, Vec<Reply>) = items.into_iter().unzip();
    metrics::histogram!(m::INGEST_BATCH_SIZE).record(events.len() as f64);
    let result = write_with_retry(db, window, &events).await;
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(Failure::Internal) if events.len() > 1 => {
            for (event, reply) in events.into_iter().zip(replies) {
                let one = std::slice::from_ref(&event);
                let answer = write_with_retry(db, window, one).await.map(|mut o| o.remove(0));
                let _ = reply.send(answer);
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure));
            }
        }
    }
}

/// One batch transaction, retried once on a deadlock or serialization failure.
async fn write_with_retry(
    db: &PgPool,
    window: Duration,
    events: &[NewEvent],
) -> Result<Vec<Outcome>, Failure> {
    let mut tries = 0;
    loop {
        tries += 1;
        let started = Instant::now();
        let result = tokio::time::timeout(BATCH_TIMEOUT, write_batch(db, window, events)).await;
        metrics::histogram!(m::INGEST_BATCH_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(outcomes)) => return Ok(outcomes),
            Ok(Err(BatchError::Begin(e))) => {
                tracing::warn!(error = %e, "event batch: no database connection");
                return Err(Failure::Unavailable);
            }
            Ok(Err(BatchError::Query(e))) if is_retryable(&e) && tries < 3 => {
                tracing::info!(error = %e, "event batch: retrying after a conflict");
            }
            Ok(Err(BatchError::Query(e))) => {
                if db::is_unavailable(&e) {
                    tracing::warn!(error = %e, "event batch: database unavailable");
                    return Err(Failure::Unavailable);
                }
                tracing::error!(error = ?e, size = events.len(), "event batch failed");
                return Err(Failure::Internal);
            }
            Ok(Err(BatchError::Enqueue(e))) => {
                if e.is_unavailable() {
                    tracing::warn!(error = %e, "event batch: database unavailable while enqueueing");
                    return Err(Failure::Unavailable);
                }
                tracing::error!(error = ?e, size = events.len(), "event batch: enqueueing jobs failed");
                return Err(Failure::Internal);
            }
            Err(_) => {
                tracing::warn!(size = events.len(), "event batch timed out");
                return Err(Failure::Unavailable);
            }
        }
    }
}

fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

enum BatchError {
    /// No connection or no transaction: the database is unreachable.
    Begin(sqlx::Error),
    Query(sqlx::Error),
    Enqueue(triggers_shared::jobs::QueueError),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Query(e)
    }
}

/// The transaction: dedup keys, events, jobs, commit. Returns one outcome per event, in order.
async fn write_batch(db: &PgPool, window: Duration, events: &[NewEvent]) -> Result<Vec<Outcome>, BatchError> {
    // First occurrence of each (org, dedup_id) in the batch claims the key; later ones are
    // duplicates of whatever ends up holding it.
    let mut first_of: HashMap<(Uuid, &str), usize> = HashMap::new();
    let mut claimants: Vec<usize> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(d) = e.dedup_id.as_deref()
            && let Entry::Vacant(slot) = first_of.entry((e.organization_id, d))
        {
            slot.insert(i);
            claimants.push(i);
        }
    }
    // A stable lock order across concurrent batches (and instances) avoids deadlocks.
    claimants.sort_by(|&a, &b| {
        (events[a].organization_id, events[a].dedup_id.as_deref())
            .cmp(&(events[b].organization_id, events[b].dedup_id.as_deref()))
    });

    let mut tx = db.begin().await.map_err(BatchError::Begin)?;

    let orgs: Vec<Uuid> = claimants.iter().map(|&i| events[i].organization_id).collect();
    let dedups: Vec<String> = claimants
        .iter()
        .map(|&i| events[i].dedup_id.as_deref().unwrap_or_default().to_owned())
        .collect();
    let ids: Vec<Uuid> = claimants.iter().map(|&i| events[i].id).collect();
    let claimed: HashSet<(Uuid, String)> =
        db::events::claim_dedup_keys(&mut tx, &orgs, &dedups, &ids, window)
            .await?
            .into_iter()
            .collect();

    // Keys we did not claim belong to an earlier event: find it.
    let (lost_orgs, lost_dedups): (Vec<Uuid>, Vec<String>) = orgs
        .iter()
        .zip(&dedups)
        .filter(|(o, d)| !claimed.contains(&(**o, (*d).clone())))
        .map(|(o, d)| (*o, d.clone()))
        .unzip();
    let owners: HashMap<(Uuid, String), Uuid> = db::events::dedup_owners(&mut tx, &lost_orgs, &lost_dedups)
        .await?
        .into_iter()
        .map(|(o, d, e)| ((o, d), e))
        .collect();

    // Decide each event's fate.
    let mut fate: Vec<Option<Uuid>> = vec![None; events.len()]; // Some(original) = duplicate
    let mut rows = NewEvents::default();
    for (i, e) in events.iter().enumerate() {
        if let Some(d) = e.dedup_id.as_deref() {
            let first = first_of.get(&(e.organization_id, d)).copied().unwrap_or(i);
            let key = (e.organization_id, d.to_owned());
            if !claimed.contains(&key) {
                // Held by an event from before this batch. If it vanished meanwhile (janitor),
                // the conflict still stands for this transaction: report the claimant's id.
                fate[i] = Some(owners.get(&key).copied().unwrap_or(events[first].id));
                continue;
            }
            if first != i {
                fate[i] = Some(events[first].id);
                continue;
            }
        }
        rows.ids.push(e.id);
        rows.organization_ids.push(e.organization_id);
        rows.types.push(e.event_type.as_str().to_owned());
        rows.dedup_ids.push(e.dedup_id.as_deref().map(str::to_owned));
        rows.payloads.push(e.payload.get().to_owned());
    }

    let inserted: HashMap<Uuid, DateTime<Utc>> = db::events::insert_many(&mut tx, &rows)
        .await?
        .into_iter()
        .collect();

    let mut distinct_orgs: Vec<Uuid> = rows.organization_ids.clone();
    distinct_orgs.sort_unstable();
    distinct_orgs.dedup();
    let with_webhook: HashSet<Uuid> = if distinct_orgs.is_empty() {
        HashSet::new()
    } else {
        db::events::organizations_with_webhook(&mut tx, &distinct_orgs)
            .await?
            .into_iter()
            .collect()
    };
    let jobs: Vec<(DeliveryJob, Duration)> = rows
        .ids
        .iter()
        .zip(&rows.organization_ids)
        .filter(|(_, org)| with_webhook.contains(org))
        .map(|(id, org)| (DeliveryJob::first(*id, *org), Duration::ZERO))
        .collect();
    jobs::enqueue(&mut tx, &jobs).await.map_err(BatchError::Enqueue)?;

    tx.commit().await?;

    let mut outcomes = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let outcome = match fate[i] {
            Some(original) => Outcome::Duplicate { event_id: original },
            None => match inserted.get(&e.id) {
                Some(created_at) => Outcome::Accepted {
                    id: e.id,
                    created_at: *created_at,
                },
                None => {
                    return Err(BatchError::Query(sqlx::Error::Protocol(
                        "an inserted event was not returned".into(),
                    )));
                }
            },
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
