//! Liveness, readiness and Prometheus metrics.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(health_live))
        .routes(routes!(health_ready))
        .routes(routes!(metrics))
}

/// Liveness: the process answers. No database call.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = HealthOut)))]
pub async fn health() -> Json<HealthOut> {
    Json(HealthOut {
        status: "healthy",
        version: triggers_shared::VERSION,
    })
}

/// Liveness (same as `/health`).
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, body = HealthOut)))]
pub async fn health_live() -> Json<HealthOut> {
    health().await
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/health/ready", tag = "operations", responses(
    (status = 200, body = ReadyOut), (status = 503, body = ReadyOut)))]
pub async fn health_ready(State(state): State<AppState>) -> impl IntoResponse {
    let ok = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.db),
    )
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
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
