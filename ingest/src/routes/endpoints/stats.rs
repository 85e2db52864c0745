//! `GET /api/endpoints/{id}/stats?since=`: an endpoint's deliveries by status and its attempts'
//! duration percentiles over a window, read from an hourly rollup (`db::endpoint_stats`), so
//! the answer costs a few rows per hour of the window whatever the endpoint's volume.
//!
//! Choices where API.md is silent: the rollup's grain is the hour, so `since` counts from the
//! start of its hour (the answer's `since` says which instant that is) up to now; deliveries
//! count by the hour they were created, with their status now, and attempts by the hour they
//! started; the percentiles are those of a histogram of quarter-octave buckets (each reported as
//! its bucket's middle, within about 9%), `null` without attempts. A `since` more than 28
//! days ago counts from 28 days ago, one in the future from now: the answer's `since` says which
//! instant the window started at (a range the schema cannot state is narrowed, not refused).
//! Deliveries purged by retention still count.

use axum::{Json, extract::State};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use triggers_shared::{
    db::{endpoint_stats, endpoints},
    models::DeliveryStatus,
};

use super::EndpointId;
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::ApiQuery,
    validate::{Parse, Problems, timestamp},
};

/// The window when `since` is absent.
const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(24);
/// The longest window.
const MAX_WINDOW: TimeDelta = TimeDelta::days(28);

/// Query of `GET /api/endpoints/{id}/stats`, as read.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointStatsQuery {
    /// Start of the window (RFC 3339), counted from the start of its hour; at most 28 days ago
    /// (an earlier one counts from 28 days ago) and not after now. Default: 24 hours ago.
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
}

impl Parse for EndpointStatsQuery {
    type Valid = Option<DateTime<Utc>>;

    fn parse(self) -> Result<Option<DateTime<Utc>>, ApiError> {
        let mut problems = Problems::default();
        let since = problems.optional("since", self.since, |t| timestamp(&t));
        problems.finish()?;
        Ok(since)
    }
}

/// Deliveries created in the window, by their status now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryCountsOut {
    pub total: i64,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
    pub skipped: i64,
    pub cancelled: i64,
}

/// Percentiles of attempt durations, in milliseconds (`null` without attempts).
#[derive(Serialize, utoipa::ToSchema)]
pub struct DurationsOut {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// Attempts started in the window.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptStatsOut {
    pub count: i64,
    pub duration_ms: DurationsOut,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointStatsOut {
    /// The window's start: the start of the hour of the `since` asked for.
    pub since: DateTime<Utc>,
    /// The window's end: now.
    pub until: DateTime<Utc>,
    pub deliveries: DeliveryCountsOut,
    pub attempts: AttemptStatsOut,
}

/// Milliseconds to a tenth.
fn tenths(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// One of your endpoints' numbers over a window: deliveries by status, attempt durations.
///
/// Read from an hourly rollup: the window starts at the start of `since`'s hour and ends now.
/// Deliveries count by the hour they were created, with their status now; attempts by the hour
/// they started, their durations' p50 and p95 estimated from a histogram (within about 9%).
#[utoipa::path(get, path = "/api/endpoints/{id}/stats", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id (UUID)"), EndpointStatsQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint's deliveries by status and attempt durations over the window", body = EndpointStatsOut),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `since` is not RFC 3339 (an empty one included), or a parameter holds NUL", body = ErrorBody),
        (status = 503, description = "Database unavailable (`unavailable`)", body = ErrorBody),
    ))]
pub async fn get_endpoint_stats(
    org: Org,
    State(state): State<AppState>,
    EndpointId(id): EndpointId,
    ApiQuery(query): ApiQuery<EndpointStatsQuery>,
) -> Result<Json<EndpointStatsOut>, ApiError> {
    let since = query.parse()?;
    let until = Utc::now();
    let since = since
        .unwrap_or(until - DEFAULT_WINDOW)
        .clamp(until - MAX_WINDOW, until);
    let since = since.duration_trunc(TimeDelta::hours(1)).unwrap_or(since);
    let mut conn = state.db.acquire().await?;
    if endpoints::find(&mut conn, org.id, id).await?.is_none() {
        return Err(ApiError::EndpointNotFound);
    }
    let stats = endpoint_stats::read(&mut conn, org.id, id, since).await?;
    let count = |status| stats.deliveries_in(status);
    Ok(Json(EndpointStatsOut {
        since,
        until,
        deliveries: DeliveryCountsOut {
            total: stats.deliveries.iter().map(|(_, n)| n).sum(),
            pending: count(DeliveryStatus::Pending),
            delivered: count(DeliveryStatus::Delivered),
            failed: count(DeliveryStatus::Failed),
            skipped: count(DeliveryStatus::Skipped),
            cancelled: count(DeliveryStatus::Cancelled),
        },
        attempts: AttemptStatsOut {
            count: stats.attempts(),
            duration_ms: DurationsOut {
                p50: stats.duration_quantile_ms(0.5).map(tenths),
                p95: stats.duration_quantile_ms(0.95).map(tenths),
            },
        },
    }))
}
