//! `GET /api/endpoints/{id}/deliveries`: one endpoint's deliveries, newest first, filtered by
//! status and a time window, paged by cursor (`db::deliveries::list_for_endpoint`: one index
//! range scan, however many deliveries the table holds).
//!
//! Choices where API.md is silent: `since` is inclusive and `until` exclusive (both RFC 3339,
//! on the delivery's `created_at`, which is its event's); `dead_letter` is accepted for
//! `failed`; `next_cursor` is present only while `has_more`; a deleted endpoint's deliveries are
//! not listed (its id answers `404`).

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use triggers_shared::{
    db::{
        self,
        deliveries::{DeliveryFilter, EndpointDelivery},
        events::Keyset,
    },
    models::DeliveryStatus,
};
use uuid::Uuid;

use super::EndpointId;
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::ApiQuery,
    routes::inbox::{DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor},
    validate::{Parse, Problems, integer_in, non_empty, timestamp},
};

/// Query of `GET /api/endpoints/{id}/deliveries`, as read; every bad parameter is reported in
/// one `422`. An empty value counts as absent.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointDeliveriesQuery {
    /// `pending`, `delivered`, `failed` (or `dead_letter`), `skipped` or `cancelled`. Absent: all.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Deliveries created at or after this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    /// Deliveries created before this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    until: Option<String>,
    /// 1-1000, default 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of a previous page.
    cursor: Option<String>,
}

/// A valid listing request.
pub struct DeliveriesRequest {
    filter: DeliveryFilter,
    before: Option<Keyset>,
    limit: i64,
}

impl Parse for EndpointDeliveriesQuery {
    type Valid = DeliveriesRequest;

    fn parse(self) -> Result<DeliveriesRequest, ApiError> {
        let mut problems = Problems::default();
        let status = problems.optional("status", non_empty(self.status), |s| {
            DeliveryStatus::parse(&s).ok_or_else(|| {
                "must be one of pending, delivered, failed, dead_letter, skipped, cancelled".to_owned()
            })
        });
        let since = problems.optional("since", non_empty(self.since), |t| timestamp(&t));
        let until = problems.optional("until", non_empty(self.until), |t| timestamp(&t));
        let limit = problems.optional("limit", self.limit, |v| {
            integer_in(&v, 1, MAX_LIMIT).ok_or_else(|| format!("must be an integer from 1 to {MAX_LIMIT}"))
        });
        let before = problems.optional("cursor", non_empty(self.cursor), |c| {
            decode_cursor(&c).ok_or_else(|| "is not a cursor this API issued".to_owned())
        });
        problems.finish()?;
        Ok(DeliveriesRequest {
            filter: DeliveryFilter { status, since, until },
            before,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

/// One delivery of the endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointDeliveryOut {
    pub event_id: Uuid,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub response_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (`pending` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl From<EndpointDelivery> for EndpointDeliveryOut {
    fn from(row: EndpointDelivery) -> Self {
        let d = row.delivery;
        Self {
            event_id: d.event_id,
            event_type: row.event_type,
            status: d.status,
            attempts: d.attempts,
            response_status: d.response_status,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            next_attempt_at: d.next_attempt_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveriesPagination {
    pub limit: i64,
    /// More deliveries follow: pass `next_cursor` as `cursor`.
    pub has_more: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointDeliveriesOut {
    pub deliveries: Vec<EndpointDeliveryOut>,
    pub pagination: DeliveriesPagination,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// List one of your endpoints' deliveries, newest first.
///
/// Filter by `status` and by a window on `created_at` (`since` inclusive, `until` exclusive);
/// page with `cursor` (the previous page's `next_cursor`). Paging is stable under new deliveries:
/// a page continues strictly after (older than) the previous one.
#[utoipa::path(get, path = "/api/endpoints/{id}/deliveries", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id (UUID)"), EndpointDeliveriesQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, body = EndpointDeliveriesOut),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a bad status, since, until, limit or cursor, or a parameter holding NUL", body = ErrorBody),
        (status = 503, description = "Database unavailable (`unavailable`)", body = ErrorBody),
    ))]
pub async fn list_endpoint_deliveries(
    org: Org,
    State(state): State<AppState>,
    EndpointId(id): EndpointId,
    ApiQuery(query): ApiQuery<EndpointDeliveriesQuery>,
) -> Result<Json<EndpointDeliveriesOut>, ApiError> {
    let request = query.parse()?;
    let mut conn = state.db.acquire().await?;
    if db::endpoints::find(&mut conn, org.id, id).await?.is_none() {
        return Err(ApiError::EndpointNotFound);
    }
    let before = request.before.map(|k| (k.created_at, k.id));
    let (rows, has_more) =
        db::deliveries::list_for_endpoint(&mut conn, org.id, id, &request.filter, before, request.limit)
            .await?;
    let next_cursor = rows.last().filter(|_| has_more).map(|r| {
        encode_cursor(Keyset {
            created_at: r.delivery.created_at,
            id: r.delivery.event_id,
        })
    });
    Ok(Json(EndpointDeliveriesOut {
        deliveries: rows.into_iter().map(EndpointDeliveryOut::from).collect(),
        pagination: DeliveriesPagination {
            limit: request.limit,
            has_more,
        },
        next_cursor,
    }))
}
