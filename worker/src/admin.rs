//! The worker's admin port: liveness, readiness and Prometheus metrics (shapes as in API.md's
//! Operations section). Unknown routes answer JSON like the rest of the API.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;

#[derive(Clone)]
pub struct AdminState {
    pub db: PgPool,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "healthy", "version": triggers_shared::VERSION}))
}

async fn ready(State(state): State<AdminState>) -> Response {
    let ok = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&state.db))
        .await
        .is_ok_and(|r| r.is_ok());
    if ok {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "database": "connected"})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "database": "unreachable"})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no route for {method} {}", uri.path()), "code": "not_found"})),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": "method not allowed", "code": "method_not_allowed"})),
    )
        .into_response()
}
