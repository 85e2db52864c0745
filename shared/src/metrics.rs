//! Metric names, in one place so dashboards, alerts and code agree.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS_TOTAL: &str = "triggers_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "triggers_http_request_duration_seconds";
pub const EVENTS_ACCEPTED_TOTAL: &str = "triggers_events_accepted_total";
pub const EVENTS_REJECTED_TOTAL: &str = "triggers_events_rejected_total";
pub const INGEST_BATCH_SIZE: &str = "triggers_ingest_batch_size";
pub const INGEST_BATCH_COMMIT_SECONDS: &str = "triggers_ingest_batch_commit_seconds";
pub const AUTH_CACHE_TOTAL: &str = "triggers_auth_cache_total";
pub const DELIVERIES_TOTAL: &str = "triggers_deliveries_total";
pub const DELIVERY_DURATION_SECONDS: &str = "triggers_delivery_duration_seconds";
pub const DELIVERY_INFLIGHT: &str = "triggers_delivery_inflight";
pub const DELIVERY_DEFERRED_TOTAL: &str = "triggers_delivery_deferred_total";
pub const EVENTS_DEAD_LETTERED_TOTAL: &str = "triggers_events_dead_lettered_total";
pub const QUEUE_DEPTH: &str = "triggers_queue_depth";
pub const JANITOR_DELETED_TOTAL: &str = "triggers_janitor_deleted_total";

/// Install the Prometheus recorder once per process and return a handle to render it; later
/// calls (several apps in one test process) share the same recorder.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
