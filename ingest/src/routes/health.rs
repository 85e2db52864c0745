//! Liveness, readiness and Prometheus metrics: the routes both binaries share
//! (`triggers_shared::service::http`), documented in ingest's OpenAPI.

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    triggers_shared::service::http::router()
}
