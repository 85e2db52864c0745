//! The HTTP server both binaries use, with the limits `axum::serve` lacks: a header-read timeout
//! (a client that never finishes its headers, or idles between requests, is dropped), a cap on
//! open connections (past it, new connections wait in the listen backlog), and a bounded drain
//! on shutdown. The request timeout (`408`, [`request_timeout`]) is a layer each binary puts in
//! its router, inside whatever must see that answer (ingest counts it in its request metrics).
//!
//! Every answer sent before the request body was read to its end carries `Connection: close`:
//! the server will not read the rest, so a keep-alive client must not reuse the connection.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use http_body::Frame;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};

use super::http::json_error;

/// A request (body included) not answered within this gets `408` (see [`request_timeout`]).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's limits.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// A request's headers must arrive within this time after the connection opens or goes idle.
    pub header_read_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// On shutdown, how long open connections may take to finish before they are dropped.
    pub drain_timeout: Duration,
}

impl ServerLimits {
    /// The documented defaults (10 s headers, a drain as long as the default request timeout)
    /// with the given connection cap.
    pub fn with_max_connections(max_connections: usize) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections,
            drain_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Middleware (`from_fn_with_state(limit, request_timeout)`): a request, body included, not
/// answered within `limit` is `408 request_timeout` (JSON). Whatever the handler was doing is
/// dropped; an event it was storing may still commit (the client retries with its `dedup_id`).
pub async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => json_error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request was not completed in time",
        ),
    }
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting, let open
/// connections finish their current request (up to `drain_timeout`) and drop the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router.layer(middleware::from_fn(close_if_body_unread));
    let service = TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);

    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit?,
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        connections.spawn(async move {
            // A client that vanishes or times out ends its connection with an error: not ours.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let open = connections.len();
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open,
            drain_secs = limits.drain_timeout.as_secs(),
            "connections still open past the drain bound; dropping them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// Add `Connection: close` to an answer given before the request body was read to its end.
async fn close_if_body_unread(request: Request, next: Next) -> Response {
    // A request without a body (most GETs) has nothing left to read from the start.
    let read = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(request.body())));
    let request = request.map(|body| {
        Body::new(WatchedBody {
            read: read.clone(),
            inner: body,
        })
    });
    let mut response = next.run(request).await;
    if !read.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end.
struct WatchedBody {
    read: Arc<AtomicBool>,
    inner: Body,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.read.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
