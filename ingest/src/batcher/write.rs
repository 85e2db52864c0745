//! The I/O half of writing a batch: one statement (see `db::queue::event_batch`), committed
//! on its own, retried on a deadlock or serialization failure, bounded by [`BATCH_TIMEOUT`].
//! Events the statement found stale (their organisation's endpoints changed since they were
//! routed) are rerouted and written by a follow-up statement, up to [`STALE_ROUNDS`] times.
//! Planning and the answers are [`super::plan`]'s.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use triggers_shared::{
    db::{self, queue::event_batch::RowFate},
    metrics as m,
};
use uuid::Uuid;

use super::{BATCH_TIMEOUT, NewEvent, Outcome, Writer, plan::Plan};
use crate::routing::{Fanout, RoutingError};

/// Follow-up statements for events whose endpoints kept changing under them, before giving up
/// (the request is then `503`: try again).
const STALE_ROUNDS: usize = 3;

/// Why a batch was not stored. Shared (in an `Arc`) by every waiter of the batch, so each
/// request's log line carries the cause with its source chain.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the batch statement failed")]
    Database(#[from] sqlx::Error),
    #[error("the batch statement did not finish within {BATCH_TIMEOUT:?}")]
    TimedOut,
    #[error("the batch statement did not account for event {0}")]
    NotReturned(Uuid),
    #[error("rerouting an event whose organisation's endpoints changed")]
    Routing(#[source] Arc<RoutingError>),
    #[error("the organisation's endpoints kept changing while its events were written")]
    EndpointsKeptChanging,
}

impl WriteError {
    /// An outage (no connection, database down, too slow) rather than a fault of this data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            WriteError::Database(e) => db::is_unavailable(e),
            WriteError::TimedOut | WriteError::EndpointsKeptChanging => true,
            WriteError::Routing(e) => e.is_unavailable(),
            WriteError::NotReturned(_) => false,
        }
    }

    /// Postgres refused the data itself: a data exception (SQLSTATE class `22`: a number out of
    /// range, an invalid escape, ...) or a value too complex to process (`54001`: nesting past
    /// its stack). Of a batch of one event, the fault of that event, not of the service.
    pub fn refused_data(&self) -> bool {
        self.database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code.starts_with("22") || code == "54001")
    }

    /// Postgres' own answer, when the statement got one.
    pub fn database_error(&self) -> Option<&(dyn sqlx::error::DatabaseError + 'static)> {
        match self {
            WriteError::Database(e) => e.as_database_error(),
            // Routing reads endpoints, not this event's data.
            WriteError::TimedOut
            | WriteError::NotReturned(_)
            | WriteError::Routing(_)
            | WriteError::EndpointsKeptChanging => None,
        }
    }
}

/// Write a batch; one outcome per event, in order. Retried (up to three tries) when Postgres
/// chose it as a deadlock or serialization victim.
pub(super) async fn write_with_retry(
    writer: &Writer,
    events: &[NewEvent],
) -> Result<Vec<Outcome>, Arc<WriteError>> {
    let plan = Plan::new(events);
    let mut tries = 0;
    loop {
        tries += 1;
        let started = Instant::now();
        let result = tokio::time::timeout(BATCH_TIMEOUT, write_once(writer, events, &plan))
            .await
            .unwrap_or(Err(WriteError::TimedOut));
        metrics::histogram!(m::INGEST_BATCH_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => return Ok(outcomes),
            Err(WriteError::Database(e)) if is_retryable(&e) && tries < 3 => {
                tracing::info!(error = %e, "event batch: retrying after a conflict");
            }
            Err(e) => {
                // Logged here once per batch; each waiter's request logs it again with its id.
                if e.is_unavailable() {
                    tracing::warn!(error = ?e, size = events.len(), "event batch: database unavailable");
                }
                return Err(Arc::new(e));
            }
        }
    }
}

#[tracing::instrument(name = "event_batch", skip_all, fields(size = events.len()))]
async fn write_once(writer: &Writer, events: &[NewEvent], plan: &Plan) -> Result<Vec<Outcome>, WriteError> {
    let mut conn = writer.db.acquire().await?;
    let mut rerouted: HashMap<usize, Fanout> = HashMap::new();
    let mut only: Option<HashSet<usize>> = None;
    let mut written: Vec<RowFate> = Vec::with_capacity(events.len());
    for round in 0..=STALE_ROUNDS {
        let rows = plan.rows(events, &rerouted, only.as_ref());
        let mut stale = HashSet::new();
        for w in db::queue::event_batch::insert_batch(&mut conn, &rows, writer.window).await? {
            match w {
                RowFate::Stale { id } => {
                    stale.insert(id);
                }
                other => written.push(other),
            }
        }
        if stale.is_empty() {
            break;
        }
        if round == STALE_ROUNDS {
            return Err(WriteError::EndpointsKeptChanging);
        }
        let indices = plan.sent_with_ids(events, &stale);
        for &i in &indices {
            let e = &events[i];
            writer.routing.invalidate(e.organization_id).await;
            let routes = writer
                .routing
                .routes(e.organization_id)
                .await
                .map_err(WriteError::Routing)?;
            rerouted.insert(i, routes.fanout(&e.event_type));
        }
        only = Some(indices.into_iter().collect());
    }
    let unknown = plan.unknown_owners(events, &written);
    let late_owners: HashMap<(Uuid, String), Uuid> = if unknown.is_empty() {
        HashMap::new()
    } else {
        let (orgs, dedups): (Vec<Uuid>, Vec<String>) =
            unknown.into_iter().map(|(o, d)| (o, d.to_owned())).unzip();
        db::events::dedup_owners(&mut conn, &orgs, &dedups)
            .await?
            .into_iter()
            .map(|(o, d, e)| ((o, d), e))
            .collect()
    };
    plan.resolve(events, &written, &late_owners)
        .map_err(WriteError::NotReturned)
}

fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}
