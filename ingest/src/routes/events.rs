//! Routes of the `events` resource: ingestion (`POST /api/events`, and many at once with
//! `POST /api/events/batch` in [`batch`]), inspection (`GET /api/events/{id}`) and redelivery.
//!
//! Ingestion runs auth → rate limit → validation → batch writer → `202`. Every authenticated
//! request consumes one rate-limit token, whatever its outcome (422, 409 and 413 included): the
//! limit protects the work a request costs, and a rejected request is not a free probe. Every
//! response after authentication carries `X-RateLimit-*`.

pub mod batch;
mod validate;

use axum::{
    Json,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use triggers_shared::{
    db::{self, events::Redelivery},
    metrics as m,
    models::{DedupId, Delivery, DeliveryAttempt, DeliveryStatus, Event, EventStatus, EventType, Payload},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub use validate::{EventIn, ValidEvent};

use crate::{
    AppState,
    auth::Org,
    batcher::{NewEvent, Outcome},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, MAX_BATCH_BODY_BYTES, path_uuid},
    ratelimit::Decision,
    refusals::RefusalBudget,
    validate::Parse,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event))
        .routes(routes!(get_event))
        .routes(routes!(redeliver_event))
        .routes(routes!(redeliver_events))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(batch::create_events))
                .layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
}

/// The answer to an accepted event: it is committed with its deliveries.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventAcceptedOut {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub event_type: EventType,
    #[schema(value_type = Option<String>)]
    pub dedup_id: Option<DedupId>,
    /// Always `accepted`.
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
}

/// An event as the inbox and `GET /api/events/{id}` show it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventOut {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub dedup_id: Option<String>,
    /// The JSON object as stored (Postgres prints it: key order and spacing may differ from
    /// what was sent).
    #[schema(value_type = Object)]
    pub payload: Payload,
    /// The summary of its deliveries: `delivered` once acknowledged; otherwise `pending` while
    /// any delivery is pending, else `failed` (the dead letter) if any failed, else `delivered`
    /// if any was delivered; with only skipped or cancelled deliveries, or none, `pending`.
    pub status: EventStatus,
    /// Attempts of all its deliveries.
    pub attempts: i32,
    /// The latest attempt's answer, over all its deliveries.
    pub response_status: Option<i32>,
    /// The latest attempt's error, over all its deliveries.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

impl From<Event> for EventOut {
    fn from(e: Event) -> Self {
        Self {
            id: e.id,
            event_type: e.event_type,
            dedup_id: e.dedup_id,
            payload: e.payload,
            status: e.status,
            attempts: e.attempts,
            response_status: e.response_status,
            last_error: e.last_error,
            created_at: e.created_at,
            updated_at: e.updated_at,
            delivered_at: e.delivered_at,
            acknowledged_at: e.acknowledged_at,
        }
    }
}

/// One delivery attempt.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptOut {
    /// The attempt's number within its delivery, from 1 (a resend keeps counting).
    pub attempt: i32,
    /// The endpoint of the delivery (`null` only for attempts made before endpoints existed by
    /// an organisation whose webhook was removed before the upgrade).
    pub endpoint_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
}

impl From<DeliveryAttempt> for AttemptOut {
    fn from(a: DeliveryAttempt) -> Self {
        Self {
            attempt: a.attempt,
            endpoint_id: a.endpoint_id,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            response_status: a.response_status,
            error: a.error,
        }
    }
}

/// One delivery of an event: to one endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventDeliveryOut {
    pub endpoint_id: Uuid,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub response_status: Option<i32>,
    pub last_error: Option<String>,
    /// When the next attempt is due (`pending` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for EventDeliveryOut {
    fn from(d: Delivery) -> Self {
        Self {
            endpoint_id: d.endpoint_id,
            status: d.status,
            attempts: d.attempts,
            response_status: d.response_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
        }
    }
}

/// An event with its deliveries and their attempts.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventDetailOut {
    #[serde(flatten)]
    pub event: EventOut,
    /// One per endpoint the event was routed to when it was accepted, by endpoint id.
    pub deliveries: Vec<EventDeliveryOut>,
    /// Every attempt of every delivery, in the order they started.
    pub attempts_log: Vec<AttemptOut>,
}

/// The answer to a single redelivery.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RedeliveryOut {
    pub id: Uuid,
    /// Always `pending`.
    pub status: &'static str,
    pub message: &'static str,
}

/// The body of `POST /api/events/redeliver`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RedeliverAllIn {
    #[schema(schema_with = failed_status_schema)]
    pub status: String,
}

/// The statuses `POST /api/events/redeliver` takes: those [`EventStatus::parse`] reads as
/// `failed`.
pub const FAILED_STATUS_NAMES: [&str; 2] = ["failed", "dead_letter"];

fn failed_status_schema() -> utoipa::openapi::Schema {
    triggers_shared::schemas::one_of_strings(
        "`failed` (or its synonym `dead_letter`): the only selection supported.",
        &FAILED_STATUS_NAMES,
    )
}

/// How many failed deliveries were given a new chain of attempts.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RedeliverAllOut {
    pub count: i64,
}

/// Ingest an event.
///
/// The `202` is sent only after the event, its dedup key and its deliveries (one per endpoint
/// whose `event_types` match its type, each pending with its first job, or `skipped` when the
/// endpoint is disabled) are committed, in one transaction. Unknown body fields are ignored; `null` counts as absent; a key
/// given twice is `422`. The payload is never decoded into a tree: it is checked as JSON text and
/// stored from that text. A payload over the size limit is `413` even if other fields are
/// invalid too; otherwise every bad field is listed in one `422`, including a payload Postgres
/// could not store (nesting over 64 levels, a lone surrogate escape, a number outside
/// `numeric`). Should Postgres still refuse an event's data, that event alone is `422
/// payload_not_storable` (never a `500`, and never a failure of other events). Every
/// authenticated request consumes one rate-limit token, whether or not it is accepted, and every
/// response after authentication carries `X-RateLimit-Limit`, `X-RateLimit-Remaining`
/// (approximate) and `X-RateLimit-Reset` (seconds). An organisation whose bodies are refused
/// (`400`, `413`, `415`, `422`) more than 100 times at once and then 100 a second gets each
/// further refusal 250 ms later, unchanged.
#[utoipa::path(
    post, path = "/api/events", tag = "events",
    request_body = EventIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Stored with its deliveries", body = EventAcceptedOut, headers(
            ("X-RateLimit-Limit" = u32, description = "Events per minute allowed to the organisation"),
            ("X-RateLimit-Remaining" = u32, description = "Approximate events left in the sliding minute"),
            ("X-RateLimit-Reset" = u64, description = "Seconds until the current minute ends"),
            ("Location" = String, description = "`/api/events/{id}`"),
        ), links(
            ("get" = (operation_id = "get_event", parameters(("id" = "$response.body#/id")))),
            ("acknowledge" = (operation_id = "ack_event", parameters(("id" = "$response.body#/id")))),
            ("redeliver" = (operation_id = "redeliver_event", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 409, description = "`duplicate_event`, with `dedup_id` and the original `event_id`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`, with `limit_bytes`: the payload is over its limit (262,144 bytes without insignificant white space; reported even when other fields are bad too), or the whole body is over 1 MiB (answered before it is read: `Connection: close`)", body = ErrorBody),
        (status = 422, description = "`validation_failed`, with `details` naming each bad field (`body` when the body is not a JSON object or holds a key twice); or `payload_not_storable`: the database refused the event's data although it passed validation", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with `limit`, `window`, `retry_after`", body = ErrorBody, headers(
            ("Retry-After" = u64, description = "Seconds until capacity frees up"),
            ("X-RateLimit-Limit" = u32),
            ("X-RateLimit-Remaining" = u32, description = "0"),
            ("X-RateLimit-Reset" = u64, description = "Seconds until capacity frees up"),
        )),
    )
)]
pub async fn create_event(State(state): State<AppState>, org: Org, request: Request) -> Response {
    rate_limited(&state, &org, 1, ingest(&state, &org, request)).await
}

/// Take `tokens` of the organisation's rate limit, then answer with `ingest` (not run when
/// refused: `429`, or `503` when the budget cannot be consulted); the answer carries the
/// `X-RateLimit-*` headers.
async fn rate_limited(
    state: &AppState,
    org: &Org,
    tokens: usize,
    ingest: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    let decision = match state
        .limiter
        .check_many(org.id, org.rate_limit_per_minute, tokens)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            // The budget cannot be consulted: nothing can be accepted until the database is back.
            let mut response = rejected(e, tokens);
            response
                .headers_mut()
                .extend(Decision::unknown(org.rate_limit_per_minute).headers());
            return response;
        }
    };
    let mut response = if decision.allowed {
        match ingest.await {
            Ok(r) => r,
            Err(e) => {
                // A body refused in a loop is answered later (`refusals`).
                if RefusalBudget::counts(e.status()) {
                    let delay = state.refusals.refused(org.id);
                    if !delay.is_zero() {
                        metrics::counter!(m::REFUSALS_DELAYED_TOTAL).increment(1);
                        tokio::time::sleep(delay).await;
                    }
                }
                rejected(e, tokens)
            }
        }
    } else {
        rejected(decision.rejection(), tokens)
    };
    response.headers_mut().extend(decision.headers());
    response
}

/// A request refused as a whole: each of its `events` counts as rejected.
fn rejected(e: ApiError, events: usize) -> Response {
    metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => e.code()).increment(events as u64);
    e.into_response()
}

async fn ingest(state: &AppState, org: &Org, request: Request) -> Result<Response, ApiError> {
    let ApiJson(body) = ApiJson::<EventIn>::from_request(request, state).await?;
    let valid = body.parse()?;
    let routes = state.routing.routes(org.id).await?;
    let event = NewEvent {
        id: Uuid::now_v7(),
        organization_id: org.id,
        fanout: routes.fanout(&valid.event_type),
        event_type: valid.event_type,
        dedup_id: valid.dedup_id,
        payload: valid.payload,
    };
    let (event_type, dedup_id) = (event.event_type.clone(), event.dedup_id.clone());
    match state.batcher.submit(event).await? {
        Outcome::Accepted { id, created_at } => {
            metrics::counter!(m::EVENTS_ACCEPTED_TOTAL).increment(1);
            let mut response = (
                StatusCode::ACCEPTED,
                Json(EventAcceptedOut {
                    id,
                    event_type,
                    dedup_id,
                    status: "accepted",
                    created_at,
                }),
            )
                .into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/api/events/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        Outcome::Duplicate { event_id } => Err(ApiError::DuplicateEvent {
            dedup_id: dedup_id.as_deref().unwrap_or_default().to_owned(),
            event_id,
        }),
    }
}

/// The `{id}` of an event route. Anything that is not a UUID (including a path segment that is
/// not valid UTF-8 once decoded) is simply an unknown event: `404 event_not_found`, like an
/// unknown or foreign id.
pub struct EventId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for EventId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_uuid(parts, state)
            .await
            .map(EventId)
            .ok_or(ApiError::EventNotFound)
    }
}

/// Fetch one of your events with its deliveries and their attempts.
#[utoipa::path(
    get, path = "/api/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id (UUID)")),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The event, its deliveries and their attempts", body = EventDetailOut),
        (status = 404, description = "`event_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
    )
)]
pub async fn get_event(
    State(state): State<AppState>,
    org: Org,
    EventId(id): EventId,
) -> Result<Json<EventDetailOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let event = db::events::find(&mut conn, org.id, id)
        .await?
        .ok_or(ApiError::EventNotFound)?;
    let deliveries = db::deliveries::list_for_event(&mut conn, org.id, id).await?;
    let attempts = db::attempts::list_for_event(&mut conn, org.id, id).await?;
    Ok(Json(EventDetailOut {
        event: event.into(),
        deliveries: deliveries.into_iter().map(EventDeliveryOut::from).collect(),
        attempts_log: attempts.into_iter().map(AttemptOut::from).collect(),
    }))
}

/// Deliver one of your events again (any status, e.g. a dead-lettered or acknowledged one).
///
/// Each of the event's deliveries that is not pending gets a new chain of attempts (its
/// attempts keep counting), enqueued in the same transaction, and an acknowledgement is
/// cleared. Deliveries still pending (a first attempt or a retry due) are left alone: when
/// every delivery is, the answer is the same `202` with the message `delivery already pending`,
/// so repeating the call is safe. An event that has no delivery (no endpoint matched it when it
/// was accepted) has nowhere to go: `409 webhook_not_configured`.
#[utoipa::path(
    post, path = "/api/events/{id}/redeliver", tag = "events",
    params(("id" = String, Path, description = "Event id (UUID)")),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Enqueued, or a delivery was already pending", body = RedeliveryOut),
        (status = 404, description = "`event_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 409, description = "`webhook_not_configured`: the event has no delivery", body = ErrorBody),
    )
)]
pub async fn redeliver_event(
    State(state): State<AppState>,
    org: Org,
    EventId(id): EventId,
) -> Result<(StatusCode, Json<RedeliveryOut>), ApiError> {
    let mut tx = state.db.begin().await?;
    let outcome = db::events::redeliver(&mut tx, org.id, id, None)
        .await?
        .ok_or(ApiError::EventNotFound)?;
    let message = match outcome {
        Redelivery::NoDelivery => return Err(ApiError::RedeliveryWithoutWebhook),
        Redelivery::AlreadyPending => "delivery already pending",
        Redelivery::Started(_) => "redelivery enqueued",
    };
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RedeliveryOut {
            id,
            status: "pending",
            message,
        }),
    ))
}

/// Replay every dead-lettered (`failed`) delivery of your organisation.
///
/// Body `{"status": "failed"}` (`dead_letter` is accepted as a synonym; anything else is `422`).
/// Each failed delivery gets a new chain of attempts, in chunks, each chunk in its own
/// transaction; `count` is the number of deliveries. Replayed deliveries are `pending`, no longer
/// `failed`, so repeating the call while they are being delivered finds nothing to replay
/// (`count` 0) and starts no second delivery. An organisation without any endpoint gets `409
/// webhook_not_configured`.
#[utoipa::path(
    post, path = "/api/events/redeliver", tag = "events",
    request_body = RedeliverAllIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "The failed deliveries given a new chain of attempts", body = RedeliverAllOut),
        (status = 409, description = "`webhook_not_configured`: the organisation has no endpoint", body = ErrorBody),
            )
)]
pub async fn redeliver_events(
    State(state): State<AppState>,
    org: Org,
    ApiJson(body): ApiJson<RedeliverAllIn>,
) -> Result<(StatusCode, Json<RedeliverAllOut>), ApiError> {
    // `dead_letter` is parsed as `failed`, its synonym.
    if EventStatus::parse(&body.status) != Some(EventStatus::Failed) {
        return Err(ApiError::invalid(
            "status",
            "must be `failed` (or its synonym `dead_letter`)",
        ));
    }
    let routes = state.routing.routes(org.id).await?;
    if !routes.has_endpoints() {
        return Err(ApiError::RedeliveryWithoutWebhook);
    }
    let count = db::events::redeliver_failed(&state.db, org.id, None).await?;
    Ok((StatusCode::ACCEPTED, Json(RedeliverAllOut { count })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_redelivery_statuses_are_exactly_those_read_as_failed() {
        for name in FAILED_STATUS_NAMES {
            assert_eq!(EventStatus::parse(name), Some(EventStatus::Failed), "{name}");
        }
        for other in ["pending", "delivered", "", "FAILED"] {
            assert_ne!(EventStatus::parse(other), Some(EventStatus::Failed), "{other}");
        }
    }
}
