//! Redelivery: one event's deliveries given a new chain of attempts (`POST
//! /api/events/{id}/redeliver`), or every dead-lettered delivery of the organisation's (`POST
//! /api/events/redeliver`).

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use triggers_shared::{
    db::{self, events::Redelivery},
    models::EventStatus,
};

use super::{EventId, RedeliveryOut};
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
};

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
