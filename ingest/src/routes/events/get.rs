//! `GET /api/events/{id}`: one event with its deliveries and every attempt of them.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use triggers_shared::{
    db,
    models::{Delivery, DeliveryAttempt, DeliveryStatus},
};
use uuid::Uuid;

use super::{EventId, EventOut};
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
};

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
