//! `POST /api/events/{id}/endpoints/{endpoint_id}/resend`: a new chain of attempts for one
//! delivery, whatever its status (`db::events::redeliver` restricted to that endpoint: the
//! delivery is locked until its new first job commits, so concurrent resends take turns).
//!
//! Choices where API.md is silent: an unknown, malformed or another organisation's event id is
//! `404 event_not_found` (checked first); an event without a delivery to that endpoint, or one
//! whose endpoint was deleted (or is not a UUID), is `404 delivery_not_found`; a disabled
//! endpoint is `409 endpoint_disabled` (the new chain would be skipped at once). The answer is
//! that of `POST /api/events/{id}/redeliver`; a resend clears the event's acknowledgement as a
//! redelivery does.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
};
use triggers_shared::db::{self, endpoints, events::Redelivery};
use uuid::Uuid;

use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    routes::events::RedeliveryOut,
};

/// The `{id}` and `{endpoint_id}` of the route: an event id that is not a UUID is an unknown
/// event; an endpoint id that is not one is `None` (no delivery can go there).
pub struct DeliveryPath {
    event_id: Uuid,
    endpoint_id: Option<Uuid>,
}

impl<S: Send + Sync> FromRequestParts<S> for DeliveryPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((event, endpoint)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::EventNotFound)?;
        let event_id = Uuid::try_parse(&event).map_err(|_| ApiError::EventNotFound)?;
        Ok(Self {
            event_id,
            endpoint_id: Uuid::try_parse(&endpoint).ok(),
        })
    }
}

/// Send one delivery again: a new chain of attempts, whatever its status.
///
/// The delivery of the event to the endpoint gets a new chain of attempts (its attempts keep
/// counting), enqueued in the same transaction, and the event's acknowledgement is cleared. A
/// delivery still pending (a first attempt or a retry due) is left alone: the answer is the
/// same `202` with the message `delivery already pending`, so repeating the call is safe.
#[utoipa::path(post, path = "/api/events/{id}/endpoints/{endpoint_id}/resend", tag = "events",
    params(
        ("id" = String, Path, description = "Event id (UUID)"),
        ("endpoint_id" = String, Path, description = "Endpoint id (UUID)"),
    ),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Enqueued (`resend enqueued`), or already pending (`delivery already pending`)", body = RedeliveryOut),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`event_not_found` (unknown, malformed or another organisation's event), or `delivery_not_found` (the event has no delivery to that endpoint, or the endpoint was deleted)", body = ErrorBody),
        (status = 409, description = "`endpoint_disabled`: enable the endpoint first", body = ErrorBody),
        (status = 503, description = "Database unavailable (`unavailable`)", body = ErrorBody),
    ))]
pub async fn resend_delivery(
    State(state): State<AppState>,
    org: Org,
    path: DeliveryPath,
) -> Result<(StatusCode, Json<RedeliveryOut>), ApiError> {
    let DeliveryPath {
        event_id,
        endpoint_id,
    } = path;
    let mut tx = state.db.begin().await?;
    let endpoint = match endpoint_id {
        Some(id) => endpoints::find(&mut tx, org.id, id).await?,
        None => None,
    };
    let message = match endpoint {
        Some(endpoint) if endpoint.enabled() => {
            match db::events::redeliver(&mut tx, org.id, event_id, Some(endpoint.id))
                .await?
                .ok_or(ApiError::EventNotFound)?
            {
                Redelivery::NoDelivery => return Err(ApiError::DeliveryNotFound),
                Redelivery::AlreadyPending => "delivery already pending",
                Redelivery::Started(_) => "resend enqueued",
            }
        }
        // Nothing would be sent: say why, the event first.
        endpoint => {
            if db::events::find(&mut tx, org.id, event_id).await?.is_none() {
                return Err(ApiError::EventNotFound);
            }
            let Some(endpoint) = endpoint else {
                return Err(ApiError::DeliveryNotFound);
            };
            let delivery =
                db::deliveries::lock_of_event(&mut tx, org.id, event_id, Some(endpoint.id)).await?;
            return Err(if delivery.is_empty() {
                ApiError::DeliveryNotFound
            } else {
                ApiError::EndpointDisabled
            });
        }
    };
    tx.commit().await?;
    tracing::info!(org_id = %org.id, %event_id, endpoint_id = ?endpoint_id, message, "delivery resent");
    Ok((
        StatusCode::ACCEPTED,
        Json(RedeliveryOut {
            id: event_id,
            status: "pending",
            message,
        }),
    ))
}
