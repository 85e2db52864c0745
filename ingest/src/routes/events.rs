//! Routes of the `events` resource, one module per action: ingestion ([`create`]: `POST
//! /api/events`, and many at once with `POST /api/events/batch` in [`batch`]), inspection
//! ([`get`]: `GET /api/events/{id}`) and redelivery ([`redeliver`]). What more than one route
//! shows or reads lives here: the event as the inbox and `GET /api/events/{id}` show it
//! ([`EventOut`]), the answer to a redelivery ([`RedeliveryOut`], also a resend's) and the
//! `{id}` extractor ([`EventId`]); the body of `POST /api/events` is parsed in `validate`.
//!
//! Ingestion runs auth → rate limit → validation → batch writer → `202`. Every authenticated
//! request consumes one rate-limit token, whatever its outcome (422, 409 and 413 included): the
//! limit protects the work a request costs, and a rejected request is not a free probe. Every
//! response after authentication carries `X-RateLimit-*`.

pub mod batch;
pub mod create;
pub mod get;
pub mod redeliver;
mod validate;

use axum::{
    extract::{DefaultBodyLimit, FromRequestParts},
    http::request::Parts,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use triggers_shared::models::{Event, EventStatus, Payload};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub use validate::{EventIn, ValidEvent};

use crate::{
    AppState,
    error::ApiError,
    extract::{MAX_BATCH_BODY_BYTES, path_uuid},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create::create_event))
        .routes(routes!(get::get_event))
        .routes(routes!(redeliver::redeliver_event))
        .routes(routes!(redeliver::redeliver_events))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(batch::create_events))
                .layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
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

/// The answer to a single redelivery.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RedeliveryOut {
    pub id: Uuid,
    /// Always `pending`.
    pub status: &'static str,
    pub message: &'static str,
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
