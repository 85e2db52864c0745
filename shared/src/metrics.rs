//! Metric names, in one place so dashboards, alerts and code agree, and the series each binary
//! exports from its start (a series that appears only after its first event breaks dashboards and
//! alerts that compare against it).
//!
//! Every label value fed by input is mapped onto a fixed set before it becomes a label, so no
//! client can grow the number of series.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// Both binaries.
/// Gauge `{version, service}` = 1.
pub const BUILD_INFO: &str = "triggers_build_info";
/// Gauge `{state="in_use"|"idle"}`: this process's database pool.
pub const DB_POOL_CONNECTIONS: &str = "triggers_db_pool_connections";

// Ingest.
/// Counter `{route, method, status}`; `method` is one of [`HTTP_METHODS`] or `other`.
pub const HTTP_REQUESTS_TOTAL: &str = "triggers_http_requests_total";
/// Histogram `{route, method, status}`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "triggers_http_request_duration_seconds";
/// Counter: events committed (answered `202`).
pub const EVENTS_ACCEPTED_TOTAL: &str = "triggers_events_accepted_total";
/// Counter `{reason}`: `POST /api/events` answered with an error; `reason` is the error `code`.
pub const EVENTS_REJECTED_TOTAL: &str = "triggers_events_rejected_total";
/// Counter: events that passed validation but that Postgres refused for their data (SQLSTATE
/// class `22` or `54001`), answered `422 payload_not_storable`. Each is a check
/// `Payload::parse` lacks: should stay 0.
pub const EVENTS_UNSTORABLE_TOTAL: &str = "triggers_events_unstorable_total";
/// Histogram: events per ingest transaction.
pub const INGEST_BATCH_SIZE: &str = "triggers_ingest_batch_size";
/// Histogram: seconds one ingest transaction took, BEGIN to COMMIT.
pub const INGEST_BATCH_COMMIT_SECONDS: &str = "triggers_ingest_batch_commit_seconds";
/// Counter `{outcome}`: API-key lookups by what the cache did (see [`AUTH_CACHE_OUTCOMES`]).
pub const AUTH_CACHE_TOTAL: &str = "triggers_auth_cache_total";

// Worker.
/// Counter `{outcome}`: delivery jobs by how they ended (see [`DELIVERY_OUTCOMES`]).
pub const DELIVERIES_TOTAL: &str = "triggers_deliveries_total";
/// Histogram: seconds one webhook request took.
pub const DELIVERY_DURATION_SECONDS: &str = "triggers_delivery_duration_seconds";
/// Histogram: seconds from an event's creation to its successful delivery.
pub const DELIVERY_END_TO_END_SECONDS: &str = "triggers_delivery_end_to_end_seconds";
/// Gauge: webhook requests in flight in this worker.
pub const DELIVERY_INFLIGHT: &str = "triggers_delivery_inflight";
/// Counter: jobs put back on the queue because their organisation was at its cap.
pub const DELIVERY_DEFERRED_TOTAL: &str = "triggers_delivery_deferred_total";
/// Counter: deliveries moved to `failed` (the dead-letter queue). The name is kept from the
/// one-webhook model, where an event had one delivery, so dashboards and alerts keep working.
pub const EVENTS_DEAD_LETTERED_TOTAL: &str = "triggers_events_dead_lettered_total";
/// Gauge: delivery jobs due or scheduled (not running).
pub const QUEUE_DEPTH: &str = "triggers_queue_depth";
/// Gauge `{state="due"|"scheduled"|"running"}`: delivery jobs by state.
pub const QUEUE_JOBS: &str = "triggers_queue_jobs";
/// Gauge: age in seconds of the oldest delivery job that is due and not yet running (0 when
/// none); sampled from the database by one worker of the fleet at a time.
pub const QUEUE_OLDEST_PENDING_AGE_SECONDS: &str = "triggers_queue_oldest_pending_age_seconds";
/// Gauge: pending deliveries that have no live job (should be 0; the janitor repairs them).
pub const DELIVERIES_WITHOUT_JOB: &str = "triggers_deliveries_without_job";
/// Counter `{table}`: rows the janitor deleted.
pub const JANITOR_DELETED_TOTAL: &str = "triggers_janitor_deleted_total";
/// Counter: vacuums of the queue table by the worker that holds the queue-vacuum lock (the dead
/// row versions of finished jobs had come to outnumber the live ones).
pub const QUEUE_VACUUMS_TOTAL: &str = "triggers_queue_vacuums_total";
/// Counter: answers to refused event bodies held back because the organisation was over its
/// budget of refusals (ingest's `refusals`: a client resending bad bodies in a loop).
pub const REFUSALS_DELAYED_TOTAL: &str = "triggers_refusals_delayed_total";
/// Counter: deliveries given a new chain by recoveries (`POST /api/endpoints/{id}/recover`).
pub const RECOVERED_DELIVERIES_TOTAL: &str = "triggers_recovered_deliveries_total";

/// Gauge `{state}`: the fleet's endpoints by state (see [`ENDPOINT_STATES`]); sampled from the
/// database by one worker of the fleet at a time, zero on the others.
pub const ENDPOINTS: &str = "triggers_endpoints";
/// Counter: endpoints disabled for failing (API.md, "Endpoints", Lifecycle).
pub const ENDPOINTS_AUTO_DISABLED_TOTAL: &str = "triggers_endpoints_auto_disabled_total";
/// Counter: delivery jobs put back on the queue to wait for their endpoint's rate limit
/// (`rate_limit_per_second`); not attempts.
pub const DELIVERY_RATE_LIMITED_TOTAL: &str = "triggers_delivery_rate_limited_total";

/// Request methods that get their own `method` label; anything else is `other`.
pub const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The `method` label of a request method: itself when standard, `other` otherwise.
pub fn method_label(method: &str) -> &'static str {
    HTTP_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// Values of [`AUTH_CACHE_TOTAL`]'s `outcome` label.
pub const AUTH_CACHE_OUTCOMES: [&str; 6] = [
    "hit",
    "refused_hit",
    "verified",
    "rejected",
    "unknown",
    "throttled",
];

/// Values of [`DELIVERIES_TOTAL`]'s `outcome` label: `delivered`, `retry` (an attempt failed,
/// the next is scheduled), `failed` (dead letter), `superseded` (the attempt was made but its
/// chain was replaced or its delivery closed meanwhile), `dropped` (nothing to send: the
/// delivery was finished, cancelled or resent before its job ran), `skipped` (the endpoint was
/// disabled when it came to sending), `cancelled` (the endpoint had been deleted). Never a
/// label per endpoint or organisation.
pub const DELIVERY_OUTCOMES: [&str; 7] = [
    "delivered",
    "retry",
    "failed",
    "superseded",
    "dropped",
    "skipped",
    "cancelled",
];

/// Values of [`EVENTS_REJECTED_TOTAL`]'s `reason` label exported from the start (other error
/// codes appear when first used; the set of codes is fixed by the code, not by input).
pub const EVENT_REJECTION_REASONS: [&str; 10] = [
    "missing_api_key",
    "invalid_api_key",
    "invalid_json",
    "unsupported_media_type",
    "validation_failed",
    "payload_too_large",
    "payload_not_storable",
    "duplicate_event",
    "rate_limited",
    "unavailable",
];

/// Values of [`QUEUE_JOBS`]' `state` label.
pub const QUEUE_JOB_STATES: [&str; 3] = ["due", "scheduled", "running"];

/// Values of [`ENDPOINTS`]' `state` label: enabled, disabled by a client (`disabled_reason`
/// `manual`), disabled for failing (`failing`). Never a label per endpoint.
pub const ENDPOINT_STATES: [&str; 3] = ["enabled", "disabled_manual", "disabled_failing"];

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
                // Retries take an event's end-to-end time to minutes and hours.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(DELIVERY_END_TO_END_SECONDS.into()),
                        &[
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                            900.0, 3600.0, 10_800.0,
                        ],
                    )
                })
                // Counts, not seconds.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_batch_size".into()),
                        &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Export the series both binaries have, at zero (or their value), from the start.
fn init_common(service: &'static str) {
    metrics::gauge!(BUILD_INFO, "version" => crate::VERSION, "service" => service).set(1.0);
    for state in ["in_use", "idle"] {
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => state).set(0.0);
    }
}

/// Export ingest's series from its start.
pub fn init_ingest() {
    init_common("ingest");
    metrics::counter!(EVENTS_ACCEPTED_TOTAL).absolute(0);
    metrics::counter!(EVENTS_UNSTORABLE_TOTAL).absolute(0);
    for reason in EVENT_REJECTION_REASONS {
        metrics::counter!(EVENTS_REJECTED_TOTAL, "reason" => reason).absolute(0);
    }
    for outcome in AUTH_CACHE_OUTCOMES {
        metrics::counter!(AUTH_CACHE_TOTAL, "outcome" => outcome).absolute(0);
    }
    // Histograms appear with their first observation; the batch ones on the first event.
}

/// Export the worker's series from its start.
pub fn init_worker() {
    init_common("worker");
    for outcome in DELIVERY_OUTCOMES {
        metrics::counter!(DELIVERIES_TOTAL, "outcome" => outcome).absolute(0);
    }
    metrics::counter!(DELIVERY_DEFERRED_TOTAL).absolute(0);
    metrics::counter!(EVENTS_DEAD_LETTERED_TOTAL).absolute(0);
    metrics::gauge!(DELIVERY_INFLIGHT).set(0.0);
    metrics::gauge!(QUEUE_DEPTH).set(0.0);
    for state in QUEUE_JOB_STATES {
        metrics::gauge!(QUEUE_JOBS, "state" => state).set(0.0);
    }
    metrics::gauge!(QUEUE_OLDEST_PENDING_AGE_SECONDS).set(0.0);
    metrics::gauge!(DELIVERIES_WITHOUT_JOB).set(0.0);
    metrics::counter!(RECOVERED_DELIVERIES_TOTAL).absolute(0);
    for state in ENDPOINT_STATES {
        metrics::gauge!(ENDPOINTS, "state" => state).set(0.0);
    }
    metrics::counter!(ENDPOINTS_AUTO_DISABLED_TOTAL).absolute(0);
    metrics::counter!(DELIVERY_RATE_LIMITED_TOTAL).absolute(0);
    for table in [
        "apalis.jobs",
        "dedup_keys",
        "events",
        "apalis.workers",
        "api_keys",
        "rate_limit_windows",
    ] {
        metrics::counter!(JANITOR_DELETED_TOTAL, "table" => table).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("DELETE"), "DELETE");
        assert_eq!(method_label("FROBNICATE"), "other");
        assert_eq!(method_label("get"), "other");
    }
}
