//! The HTTP surface: one module per resource, merged here with the middleware every request
//! gets (request id, trace span, metrics, request timeout, bytes budget, body limit) and the JSON
//! fallbacks. The request timeout sits inside the metrics, so a `408` is counted like any answer.

pub mod endpoints;
pub mod events;
pub mod health;
pub mod inbox;
pub mod keys;
pub mod portal;
pub mod webhook;

use std::time::{Duration, Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::HeaderName,
    middleware::{self, Next},
    response::Response,
};
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    AppState,
    budget::{self, Budget},
    console,
    extract::MAX_BODY_BYTES,
    openapi,
};
use triggers_shared::service;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every documented route, with its OpenAPI description.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(keys::router())
        .merge(webhook::router())
        .merge(endpoints::router())
        .merge(events::router())
        .merge(inbox::router())
        .merge(portal::router())
        .merge(console::router())
}

/// The complete application router.
pub fn router(state: AppState) -> Router {
    let (routes, mut api) = api_routes().split_for_parts();
    openapi::document_shared_responses(&mut api, state.config.request_timeout);
    // After the shared answers: a read-only session's 403 goes where a 401 is.
    openapi::document_read_only_sessions(&mut api);
    routes
        .merge(openapi::docs_router(api))
        .fallback(service::http::not_found)
        .method_not_allowed_fallback(service::http::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request| {
                            let request_id = req
                                .headers()
                                .get(&REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default();
                            tracing::info_span!(
                                "request",
                                method = %req.method(),
                                path = %req.uri().path(),
                                request_id = %request_id,
                                org_id = tracing::field::Empty,
                            )
                        })
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
                .layer(middleware::from_fn(record_metrics))
                .layer(middleware::from_fn_with_state(
                    state.config.request_timeout,
                    service::request_timeout,
                ))
                .layer(middleware::from_fn_with_state(
                    Budget::new(state.config.request_bytes_budget),
                    budget::limit,
                ))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = triggers_shared::metrics::method_label(req.method().as_str());
    let response = next.run(req).await;
    let elapsed: Duration = start.elapsed();
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", status),
    ];
    metrics::counter!(triggers_shared::metrics::HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(triggers_shared::metrics::HTTP_REQUEST_DURATION_SECONDS, &labels)
        .record(elapsed.as_secs_f64());
    response
}
