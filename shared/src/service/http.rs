//! The operations routes both binaries serve (shapes in API.md's Operations section) and the JSON
//! answers for unknown routes and wrong methods, so ingest and the worker's admin port answer alike.

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRef, State},
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The Prometheus text exposition format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long `/health/ready` waits for the database.
const READY_PATIENCE: Duration = Duration::from_secs(2);

/// What the operations routes need from a binary's state.
#[derive(Clone)]
pub struct Ops {
    pub db: PgPool,
    pub metrics: PrometheusHandle,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthOut {
    pub status: &'static str,
    pub version: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadyOut {
    pub status: &'static str,
    pub database: &'static str,
}

/// `/health`, `/health/live`, `/health/ready` and `/metrics`, for any state that holds [`Ops`].
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Ops: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(health_live))
        .routes(routes!(health_ready))
        .routes(routes!(metrics))
}

/// Liveness: the process answers. No database call.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process answers", body = HealthOut)))]
pub async fn health() -> Json<HealthOut> {
    Json(HealthOut {
        status: "healthy",
        version: crate::VERSION,
    })
}

/// Liveness (same as `/health`).
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "The process answers", body = HealthOut)))]
pub async fn health_live() -> Json<HealthOut> {
    health().await
}

/// Readiness: the database answers within 2 seconds.
#[utoipa::path(get, path = "/health/ready", tag = "operations", responses(
    (status = 200, description = "The database answered", body = ReadyOut),
    (status = 503, description = "The database did not answer within 2 seconds", body = ReadyOut)))]
pub async fn health_ready(State(ops): State<Ops>) -> (StatusCode, Json<ReadyOut>) {
    let ok = tokio::time::timeout(READY_PATIENCE, sqlx::query!("SELECT 1 AS up").fetch_one(&ops.db))
        .await
        .is_ok_and(|r| r.is_ok());
    if ok {
        (
            StatusCode::OK,
            Json(ReadyOut {
                status: "ready",
                database: "connected",
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyOut {
                status: "not_ready",
                database: "unreachable",
            }),
        )
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        ops.metrics.render(),
    )
}

/// An error answer in API.md's shape: `{"error": "<sentence>", "code": "<stable_code>"}`.
pub fn json_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(json!({"error": message, "code": code}))).into_response()
}

/// The fallback for unknown routes: `404` `not_found`.
pub async fn not_found(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

/// The fallback for a known route with another method: `405` `method_not_allowed`.
pub async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
    )
}

/// A router with only the operations routes and the JSON fallbacks (the worker's admin port),
/// answering `408` past the default request timeout.
pub fn ops_router(ops: Ops) -> axum::Router {
    let (routes, _doc) = router::<Ops>().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            super::server::DEFAULT_REQUEST_TIMEOUT,
            super::server::request_timeout,
        ))
        .with_state(ops)
}
