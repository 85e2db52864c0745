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
    schemas,
};
use uuid::Uuid;

use super::EndpointId;
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::ApiQuery,
    routes::inbox::{
        DEFAULT_LIMIT, MAX_LIMIT, cursor_schema, decode_cursor, encode_cursor, limit_schema, storable,
    },
    validate::{Parse, Problems, integer_in, non_empty, timestamp},
};

/// Query of `GET /api/endpoints/{id}/deliveries`, as read; every bad parameter is reported in
/// one `422`. An empty text parameter (`status`, `cursor`) counts as
/// absent; a timestamp or number must be one.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointDeliveriesQuery {
    /// Only deliveries with this status (`dead_letter` is a synonym of `failed`). Absent: all.
    #[param(schema_with = delivery_status_filter_schema)]
    status: Option<String>,
    /// Deliveries created at or after this instant (RFC 3339).
    #[param(schema_with = instant_schema)]
    since: Option<String>,
    /// Deliveries created before this instant (RFC 3339).
    #[param(schema_with = instant_schema)]
    until: Option<String>,
    #[param(schema_with = limit_schema)]
    limit: Option<String>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// The statuses the listing filters on, as [`DeliveryStatus::parse`] reads them.
pub const DELIVERY_STATUS_FILTERS: [&str; 6] = [
    "pending",
    "delivered",
    "failed",
    "dead_letter",
    "skipped",
    "cancelled",
];

fn delivery_status_filter_schema() -> utoipa::openapi::Schema {
    schemas::one_of_strings(
        "A delivery status; `dead_letter` is `failed`; empty is all.",
        &[&[""][..], &DELIVERY_STATUS_FILTERS].concat(),
    )
}

fn instant_schema() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
        .description(Some("An RFC 3339 timestamp, e.g. `2026-12-04T17:00:00Z`."))
        .into()
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
        let since = problems.optional("since", self.since, |t| timestamp(&t));
        let until = problems.optional("until", self.until, |t| timestamp(&t));
        let limit = problems.optional("limit", self.limit, |v| {
            integer_in(&v, 1, MAX_LIMIT).ok_or_else(|| format!("must be an integer from 1 to {MAX_LIMIT}"))
        });
        let before = problems.optional("cursor", non_empty(self.cursor), |c| {
            decode_cursor(&c)
                .map(storable)
                .ok_or_else(|| "is not a cursor this API issued".to_owned())
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
        (status = 200, description = "A page of the endpoint's deliveries, newest first", body = EndpointDeliveriesOut),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a bad status, since, until or limit, a parameter (name or value) holding NUL, or a `cursor` this API did not issue (depends on state: only `next_cursor` values are cursors)", body = ErrorBody),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_status_filters_are_exactly_what_the_parser_reads() {
        for name in DELIVERY_STATUS_FILTERS {
            assert!(DeliveryStatus::parse(name).is_some(), "{name}");
        }
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Skipped,
            DeliveryStatus::Cancelled,
        ] {
            assert!(DELIVERY_STATUS_FILTERS.contains(&status.as_str()), "{status:?}");
        }
    }
}
