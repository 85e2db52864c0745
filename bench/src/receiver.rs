//! The embedded webhook receiver: an axum server on 127.0.0.1:0 that timestamps each delivery
//! and answers 200 at once, so the measured end-to-end latency is the service's, not ours; and,
//! for isolation runs, a slow endpoint that answers 200 only after a delay and records nothing;
//! for recovery runs, an endpoint that answers at once and only counts (`recovery::Arrivals`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::oneshot;

use crate::recovery::Arrivals;
use crate::timeline::Timeline;

pub struct Receiver {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(
        timeline: Arc<Timeline>,
        slow_delay: Duration,
        recovered: Arc<Arrivals>,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook/{org}/{endpoint}", post(hook))
            .with_state(timeline)
            .route(
                "/slow",
                post(move || async move {
                    tokio::time::sleep(slow_delay).await;
                    StatusCode::OK
                }),
            )
            .route(
                "/recover",
                post(move || async move {
                    recovered.record(Instant::now());
                    StatusCode::OK
                }),
            );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The URL of measured organisation `org`'s endpoint number `endpoint` (numbered from 0;
    /// the ones its events match come first).
    pub fn url_for(&self, org: usize, endpoint: usize) -> String {
        format!("http://{}/hook/{org}/{endpoint}", self.addr)
    }

    pub fn slow_url(&self) -> String {
        format!("http://{}/slow", self.addr)
    }

    pub fn recover_url(&self) -> String {
        format!("http://{}/recover", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for open keep-alive connections; do not let that hang us.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

/// The delivered body is `{"id", "type", "timestamp", "dedup_id", "data"}` where `data` is the
/// payload we sent, carrying `bench_run` and `seq`.
async fn hook(
    State(timeline): State<Arc<Timeline>>,
    Path((_org, endpoint)): Path<(usize, usize)>,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let data = parsed.as_ref().and_then(|v| v.get("data"));
    let run = data
        .and_then(|d| d.get("bench_run"))
        .and_then(|r| r.as_str())
        .unwrap_or("");
    let seq = data.and_then(|d| d.get("seq")).and_then(|s| s.as_u64());
    timeline.received(run, seq, endpoint, at);
    StatusCode::OK
}
