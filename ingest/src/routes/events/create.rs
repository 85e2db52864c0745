//! `POST /api/events`: one event, through the organisation's rate limit ([`rate_limited`], which
//! `POST /api/events/batch` goes through too), validation and the batcher, answered `202` once
//! it is committed with its deliveries.

use axum::{
    Json,
    extract::{FromRequest, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use triggers_shared::{
    metrics as m,
    models::{DedupId, EventType},
};
use uuid::Uuid;

use super::EventIn;
use crate::{
    AppState,
    auth::Org,
    batcher::{NewEvent, Outcome},
    budget::content_length,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    ratelimit::Decision,
    refusals::RefusalBudget,
    validate::Parse,
};

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
/// (`400`, `413`, `415`, `422`) past its budget (100 small refusals at once and 100 a second,
/// a body counting one more for every 16 KiB) gets each further refusal 250 ms later, unchanged.
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
    let body_len = content_length(&request).unwrap_or(0);
    rate_limited(&state, &org, 1, body_len, ingest(&state, &org, request)).await
}

/// Take `tokens` of the organisation's rate limit, then answer with `ingest` (not run when
/// refused: `429`, or `503` when the budget cannot be consulted); the answer carries the
/// `X-RateLimit-*` headers. A refusal of the body (of `body_len` bytes: its `Content-Length`,
/// zero when not declared) counts against the organisation's refusal budget.
pub(super) async fn rate_limited(
    state: &AppState,
    org: &Org,
    tokens: usize,
    body_len: usize,
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
                    let delay = state.refusals.refused(org.id, body_len);
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
