//! `POST /api/events/batch`: up to [`MAX_BATCH_EVENTS`] events in one request, each judged as
//! `POST /api/events` would judge it, one result per event in request order.
//!
//! The body is read first (the rate limit needs the count: one token per event, all or none),
//! then every event is parsed on its own. The valid ones go to the batcher together
//! ([`BatchWriter::submit_many`]): the same group commit as single events, so they may share a
//! statement with other requests' events, and the answer waits for every one of them to be
//! committed. Within the request, the first valid event with a `dedup_id` claims it; later ones
//! are `409` duplicates of whatever came of it. Should the first not be stored (its payload
//! refused by the database), the next one with that `dedup_id` is judged in a further round,
//! as a client posting them one by one would have seen.

use std::collections::{HashMap, HashSet};

use axum::{
    Json,
    extract::{FromRequest, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use triggers_shared::{
    metrics as m,
    models::{DedupId, EventType, MAX_PAYLOAD_BYTES},
};
use utoipa::openapi::{
    RefOr,
    schema::{ObjectBuilder, Schema, SchemaType},
};
use uuid::Uuid;

use super::{EventIn, ValidEvent};
use crate::{
    AppState,
    auth::Org,
    batcher::{self, BatchWriter, NewEvent, Outcome},
    budget::content_length,
    error::{ApiError, ErrorBody, FieldError},
    extract::{ApiJson, parse_json},
    validate::{Parse, Problems},
};

/// Most events in one batch request.
pub const MAX_BATCH_EVENTS: usize = 1_000;

// A batch enters the batcher's queue whole, so it must fit in it.
const _: () = assert!(MAX_BATCH_EVENTS <= batcher::QUEUE_CAPACITY);

/// The body of `POST /api/events/batch`. Unknown fields are ignored.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct BatchIn {
    #[schema(schema_with = events_schema, required = true)]
    events: Option<Box<RawValue>>,
}

/// The array is checked as a whole; its items are not: each is judged on its own, and one that
/// is not a valid `EventIn` gets its own `413`/`422` result in a `200`, not a refusal of the
/// request. So the items are any JSON value here.
fn events_schema() -> Schema {
    let item = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "An event, as the body of `POST /api/events` (`EventIn`). One that is not valid is \
         answered in its own result (`413`/`422`); the other events are not affected.",
        ));
    crate::openapi::array_of(
        RefOr::T(item.into()),
        1..=MAX_BATCH_EVENTS,
        false,
        "The events, each under the rules of `POST /api/events` and judged on its own.",
    )
}

impl Parse for BatchIn {
    /// Each event's JSON text, not yet looked into.
    type Valid = Vec<Box<RawValue>>;

    fn parse(self) -> Result<Self::Valid, ApiError> {
        let mut problems = Problems::default();
        let events = problems.required("events", self.events, |raw| {
            let events: Vec<Box<RawValue>> = serde_json::from_str(raw.get())
                .map_err(|_| format!("must be an array of 1 to {MAX_BATCH_EVENTS} events"))?;
            if (1..=MAX_BATCH_EVENTS).contains(&events.len()) {
                Ok(events)
            } else {
                Err(format!(
                    "must hold 1 to {MAX_BATCH_EVENTS} events, not {}",
                    events.len()
                ))
            }
        });
        problems.finish()?;
        events.ok_or_else(|| ApiError::invalid("events", "is required"))
    }
}

/// The answer to a batch: how its events fared, and each one's result in request order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchOut {
    /// Events stored (`202` results).
    pub accepted: usize,
    /// Events refused as duplicates (`409` results).
    pub duplicates: usize,
    /// Events refused for any other reason.
    pub rejected: usize,
    pub results: Vec<BatchItemOut>,
}

/// One event's result.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchItemOut {
    /// The event's position in `events`, from 0.
    pub index: usize,
    /// What `POST /api/events` would have answered for it: `202`, `409`, `413`, `422`, or
    /// `503` when the database became unreachable while the batch was written (retry it with
    /// the same `dedup_id`).
    pub status: u16,
    #[serde(flatten)]
    pub result: ItemResult,
}

/// A stored event (`202`), or why it was not stored (the error body `POST /api/events` would
/// have answered: `409 duplicate_event` with `dedup_id` and `event_id`; `413`/`422` with
/// `details`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ItemResult {
    Accepted(AcceptedItem),
    Refused(ErrorBody),
}

/// A stored event: committed with its deliveries before the answer was sent.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AcceptedItem {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub event_type: EventType,
    #[schema(value_type = Option<String>)]
    pub dedup_id: Option<DedupId>,
    pub created_at: DateTime<Utc>,
}

/// One event's verdict before it is written out.
type Verdict = Result<AcceptedItem, ApiError>;

/// Ingest a batch of events.
///
/// Body `{"events": [...]}` with 1 to 1,000 events, each as the body of `POST /api/events`; the
/// whole body may be up to 5 MiB. Each event is judged on its own, and the answer is `200` with
/// one result per event, in request order. Every `202` result is committed (with its
/// deliveries) before the answer is sent; events of a batch may be written in the same
/// transaction as other requests' events. A `dedup_id` repeated inside the batch: the first
/// valid event with it wins, the later ones are `409` with its `event_id`. The batch takes one
/// rate-limit token per event, all or none: without enough for all of them the answer is `429`
/// and nothing is stored (a request refused as a whole, for its body, takes one token). When
/// the database is unreachable for every event, the answer is `503` as a whole.
#[utoipa::path(
    post, path = "/api/events/batch", tag = "events",
    request_body = BatchIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Each event's result, in request order", body = BatchOut, headers(
            ("X-RateLimit-Limit" = u32, description = "Events per minute allowed to the organisation"),
            ("X-RateLimit-Remaining" = u32, description = "Approximate events left in the sliding minute"),
            ("X-RateLimit-Reset" = u64, description = "Seconds until the current minute ends"),
        )),
        (status = 413, description = "`payload_too_large`, with `limit_bytes`: the body is over 5 MiB (answered before it is read: `Connection: close`)", body = ErrorBody),
        (status = 422, description = "`validation_failed`, with `details`: `events` is missing, not an array, or holds fewer than 1 or more than 1,000 events (`body` when the body is not a JSON object or holds a key twice)", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with `limit`, `window`, `retry_after`: not enough of the minute's budget is left for every event of the batch; nothing was stored", body = ErrorBody, headers(
            ("Retry-After" = u64, description = "Seconds until capacity for the whole batch frees up"),
            ("X-RateLimit-Limit" = u32),
            ("X-RateLimit-Remaining" = u32, description = "0"),
            ("X-RateLimit-Reset" = u64, description = "Seconds until capacity frees up"),
        )),
    )
)]
pub async fn create_events(State(state): State<AppState>, org: Org, request: Request) -> Response {
    let body_len = content_length(&request).unwrap_or(0);
    let body = match ApiJson::<BatchIn>::from_request(request, &state).await {
        Ok(ApiJson(body)) => body.parse(),
        Err(e) => Err(e),
    };
    let tokens = body.as_ref().map_or(1, Vec::len);
    let ingest = {
        let (state, org) = (&state, &org);
        async move {
            let out = ingest_batch(state, org, body?).await?;
            Ok((StatusCode::OK, Json(out)).into_response())
        }
    };
    super::create::rate_limited(&state, &org, tokens, body_len, ingest).await
}

async fn ingest_batch(state: &AppState, org: &Org, events: Vec<Box<RawValue>>) -> Result<BatchOut, ApiError> {
    let mut verdicts: Vec<Option<Verdict>> = (0..events.len()).map(|_| None).collect();
    let mut waiting: Vec<(usize, ValidEvent)> = Vec::with_capacity(events.len());
    for (index, raw) in events.into_iter().enumerate() {
        match parse_json::<EventIn>(raw.get().as_bytes()).and_then(Parse::parse) {
            Ok(valid) => waiting.push((index, valid)),
            Err(e) => verdicts[index] = Some(Err(e)),
        }
    }
    if !waiting.is_empty() {
        let routes = state.routing.routes(org.id).await?;
        while !waiting.is_empty() {
            waiting = write_round(&state.batcher, org, &routes, waiting, &mut verdicts).await;
        }
    }
    let verdicts: Vec<Verdict> = verdicts
        .into_iter()
        .map(|v| v.unwrap_or(Err(ApiError::Unavailable)))
        .collect();
    if verdicts.iter().all(|v| matches!(v, Err(ApiError::Unavailable))) {
        return Err(ApiError::Unavailable);
    }
    Ok(summarise(verdicts))
}

/// Submit the first event of each `dedup_id` among `waiting` (and every event without one),
/// record their verdicts and those of the later events of a key that was settled; returns the
/// events whose key's first event was not stored, to be judged in the next round.
async fn write_round(
    batcher: &BatchWriter,
    org: &Org,
    routes: &crate::routing::Routes,
    waiting: Vec<(usize, ValidEvent)>,
    verdicts: &mut [Option<Verdict>],
) -> Vec<(usize, ValidEvent)> {
    let mut claimed: HashSet<DedupId> = HashSet::new();
    let (first, later): (Vec<_>, Vec<_>) = waiting
        .into_iter()
        .partition(|(_, e)| e.dedup_id.as_ref().is_none_or(|d| claimed.insert(d.clone())));
    let mut sent = Vec::with_capacity(first.len());
    let events: Vec<NewEvent> = first
        .into_iter()
        .map(|(index, valid)| {
            sent.push((index, valid.event_type.clone(), valid.dedup_id.clone()));
            NewEvent {
                id: Uuid::now_v7(),
                organization_id: org.id,
                fanout: routes.fanout(&valid.event_type),
                event_type: valid.event_type,
                dedup_id: valid.dedup_id,
                payload: valid.payload,
            }
        })
        .collect();
    // What became of each key's first event: its holder, or whether the database was down.
    let mut holders: HashMap<DedupId, Result<Uuid, bool>> = HashMap::new();
    for ((index, event_type, dedup_id), outcome) in sent.into_iter().zip(batcher.submit_many(events).await) {
        let (holder, verdict) = match outcome {
            Ok(Outcome::Accepted { id, created_at }) => (
                Ok(id),
                Ok(AcceptedItem {
                    id,
                    event_type,
                    dedup_id: dedup_id.clone(),
                    created_at,
                }),
            ),
            Ok(Outcome::Duplicate { event_id }) => {
                (Ok(event_id), Err(duplicate(dedup_id.as_ref(), event_id)))
            }
            Err(e) => (Err(matches!(e, ApiError::Unavailable)), Err(e)),
        };
        if let Some(d) = dedup_id {
            holders.insert(d, holder);
        }
        verdicts[index] = Some(verdict);
    }
    let mut next = Vec::new();
    for (index, event) in later {
        let holder = event.dedup_id.as_ref().and_then(|d| holders.get(d));
        match holder {
            Some(Ok(holder)) => verdicts[index] = Some(Err(duplicate(event.dedup_id.as_ref(), *holder))),
            Some(Err(true)) => verdicts[index] = Some(Err(ApiError::Unavailable)),
            Some(Err(false)) | None => next.push((index, event)),
        }
    }
    next
}

fn duplicate(dedup_id: Option<&DedupId>, event_id: Uuid) -> ApiError {
    ApiError::DuplicateEvent {
        dedup_id: dedup_id.map(|d| (**d).to_owned()).unwrap_or_default(),
        event_id,
    }
}

/// The answer's body, counting each verdict in the metrics as `POST /api/events` does.
fn summarise(verdicts: Vec<Verdict>) -> BatchOut {
    let mut out = BatchOut {
        accepted: 0,
        duplicates: 0,
        rejected: 0,
        results: Vec::with_capacity(verdicts.len()),
    };
    for (index, verdict) in verdicts.into_iter().enumerate() {
        let (status, result) = match verdict {
            Ok(accepted) => {
                out.accepted += 1;
                (StatusCode::ACCEPTED, ItemResult::Accepted(accepted))
            }
            Err(e) => {
                if matches!(e, ApiError::DuplicateEvent { .. }) {
                    out.duplicates += 1;
                } else {
                    out.rejected += 1;
                }
                metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => e.code()).increment(1);
                (e.status(), ItemResult::Refused(refusal(e)))
            }
        };
        out.results.push(BatchItemOut {
            index,
            status: status.as_u16(),
            result,
        });
    }
    metrics::counter!(m::EVENTS_ACCEPTED_TOTAL).increment(out.accepted as u64);
    out
}

/// The error body `POST /api/events` would have answered for one event.
fn refusal(e: ApiError) -> ErrorBody {
    let mut body = ErrorBody {
        error: e.to_string(),
        code: e.code().to_owned(),
        details: None,
        limit_bytes: None,
        limit: None,
        window: None,
        retry_after: None,
        dedup_id: None,
        event_id: None,
    };
    match e {
        ApiError::Validation(details) => body.details = Some(details),
        ApiError::PayloadTooLarge { limit_bytes } => {
            body.limit_bytes = Some(limit_bytes as u64);
            body.details = Some(vec![FieldError::new(
                "payload",
                format!("exceeds the size limit of {MAX_PAYLOAD_BYTES} bytes"),
            )]);
        }
        ApiError::DuplicateEvent { dedup_id, event_id } => {
            body.dedup_id = Some(dedup_id);
            body.event_id = Some(event_id);
        }
        ApiError::Unavailable => body.retry_after = Some(crate::error::UNAVAILABLE_RETRY_AFTER_SECS),
        ApiError::Internal(cause) => tracing::error!(error = ?cause, "internal error on a batch's event"),
        _ => {}
    }
    body
}
