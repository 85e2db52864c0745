//! The global budget of request bytes in flight: what bounds ingest's memory however many
//! clients send large bodies at once.
//!
//! Every request that may carry a body reserves its declared size (its `Content-Length`, capped
//! at the body limit; the body limit itself when the length is not declared) before its body is
//! read, and holds it until its response is ready: the bytes, their parsed form and the event's
//! place in the batcher's queue are all covered. When the reservation does not fit, the answer is
//! at once `503 unavailable` with `Retry-After` (the body is not read, so the connection is
//! closed): waiting would only hold a connection, and the client can retry elsewhere or later.

use std::sync::Arc;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{error::ApiError, extract::body_limit};

/// The budget shared by every request of one ingest process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    /// A budget of `total` bytes (at least one).
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Reserve `bytes` now, or `None` when they do not fit. A reservation larger than the whole
    /// budget takes the whole budget (so it waits for an idle moment rather than never fitting).
    pub fn try_reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes.clamp(1, self.total)).unwrap_or(u32::MAX);
        self.bytes.clone().try_acquire_many_owned(bytes).ok()
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// What a request may bring: its declared length (capped at its route's body limit), zero when
/// it declares none and is not chunked, else the body limit.
fn declared_bytes(req: &Request) -> usize {
    let limit = body_limit(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let headers = req.headers();
    if headers.contains_key(header::CONTENT_LENGTH) {
        return content_length(req).map_or(limit, |n| n.min(limit));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        limit
    } else {
        0
    }
}

/// The request's `Content-Length`, when it declares a valid one.
pub fn content_length(req: &Request) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Middleware: hold a reservation of the request's bytes for its whole life, or refuse it.
pub async fn limit(State(budget): State<Budget>, req: Request, next: Next) -> Response {
    let bytes = declared_bytes(&req);
    if bytes == 0 {
        return next.run(req).await;
    }
    let Some(reservation) = budget.try_reserve(bytes) else {
        tracing::warn!(
            bytes,
            "request refused: the in-flight request bytes budget is spent"
        );
        let mut response = ApiError::Unavailable.into_response();
        // The body was not read: do not leave it in the connection for the next request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    };
    let response = next.run(req).await;
    drop(reservation);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::MAX_BODY_BYTES;

    #[test]
    fn reservations_fit_until_the_budget_is_spent_and_free_it_when_dropped() {
        let budget = Budget::new(100);
        let a = budget.try_reserve(60);
        assert!(a.is_some());
        assert!(budget.try_reserve(50).is_none(), "60 + 50 > 100");
        let b = budget.try_reserve(40);
        assert!(b.is_some());
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60);
    }

    #[test]
    fn a_reservation_larger_than_the_budget_takes_all_of_it() {
        let budget = Budget::new(10);
        let all = budget.try_reserve(1_000);
        assert!(all.is_some());
        assert_eq!(budget.available(), 0);
    }

    #[test]
    fn a_request_without_a_body_reserves_nothing_and_a_chunked_one_the_body_limit() {
        let get = Request::builder()
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(declared_bytes(&get), 0);
        let chunked = Request::builder()
            .header(header::TRANSFER_ENCODING, "chunked")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(declared_bytes(&chunked), MAX_BODY_BYTES);
        let sized = Request::builder()
            .header(header::CONTENT_LENGTH, "1234")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(declared_bytes(&sized), 1234);
        let huge = Request::builder()
            .header(header::CONTENT_LENGTH, "999999999999")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(declared_bytes(&huge), MAX_BODY_BYTES);
    }
}
