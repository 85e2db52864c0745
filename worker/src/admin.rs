//! The worker's admin port: liveness, readiness and Prometheus metrics, the same routes and JSON
//! fallbacks as ingest's (`triggers_shared::service::http`), served with the same limits.

use axum::Router;
use triggers_shared::service::{Ops, http::ops_router};

pub fn router(ops: Ops) -> Router {
    ops_router(ops)
}
