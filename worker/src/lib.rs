//! The delivery worker: claims delivery jobs from the apalis queue and POSTs signed webhooks.
//!
//! [`Worker::build`] connects, applies migrations and binds the admin port;
//! [`Worker::run_until_stopped`] consumes the queue, runs the janitor and the queue-depth gauge,
//! and serves the admin port until the shutdown future resolves, then drains. Tests start it
//! in-process the same way `main` does through [`run`].

pub mod admin;
pub mod client;
pub mod coalesce;
pub mod deliver;
pub mod fair;
pub mod janitor;
pub mod queue;
pub mod recorder;
pub mod retry;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use triggers_shared::{
    config::WorkerConfig,
    db,
    jobs::DELIVERY_QUEUE,
    metrics::{QUEUE_DEPTH, install_recorder},
};

pub use janitor::run_janitor_once;

/// How often the queue-depth gauge is refreshed.
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// A worker ready to run: database migrated, admin port bound.
pub struct Worker {
    config: Arc<WorkerConfig>,
    pool: PgPool,
    listener: TcpListener,
    metrics: PrometheusHandle,
}

impl Worker {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let pool = db::pool(&config.common)?;
        db::wait_until_reachable(&pool, Duration::from_secs(30)).await?;
        db::migrate(&pool).await?;
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding the admin port {}", config.addr))?;
        let metrics = install_recorder();
        triggers_shared::metrics::init_worker();
        Ok(Self {
            config: Arc::new(config),
            pool,
            listener,
            metrics,
        })
    }

    /// The admin port's address (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Run until `shutdown` resolves; then stop claiming, drain in-flight deliveries (bounded
    /// by `drain_timeout`), and stop the admin port last.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            pool,
            listener,
            metrics,
        } = self;
        let deliverer = Arc::new(deliver::Deliverer::new(pool.clone(), config.clone())?);
        let stop = CancellationToken::new();
        let admin_stop = CancellationToken::new();

        let admin = {
            let app = admin::router(admin::AdminState {
                db: pool.clone(),
                metrics,
            });
            let admin_stop = admin_stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { admin_stop.cancelled().await })
                    .await
            })
        };
        let janitor = tokio::spawn(janitor::run(pool.clone(), config.clone(), stop.clone()));
        let depth = tokio::spawn(queue_depth(pool.clone(), stop.clone()));
        let consumer = tokio::spawn(queue::consume(
            pool.clone(),
            config.clone(),
            deliverer,
            stop.clone(),
        ));

        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        });
        // The consumer returns only once stopped and drained (or past the drain bound).
        let consumed = consumer.await;
        stop.cancel();
        let _ = janitor.await;
        let _ = depth.await;
        admin_stop.cancel();
        let served = admin.await;
        pool.close().await;
        consumed.context("queue consumer panicked")?;
        served.context("admin server panicked")?.context("admin server")?;
        Ok(())
    }
}

/// Refresh the queue-depth gauge until `stop`.
async fn queue_depth(pool: PgPool, stop: CancellationToken) {
    let mut tick = tokio::time::interval(QUEUE_DEPTH_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let depth = async {
            let mut conn = pool.acquire().await?;
            db::deliveries::queue_depth(&mut conn, DELIVERY_QUEUE).await
        };
        match depth.await {
            Ok(n) => metrics::gauge!(QUEUE_DEPTH).set(n as f64),
            Err(e) => tracing::debug!(error = %e, "queue depth unavailable"),
        }
    }
}

/// Run the worker until SIGTERM or SIGINT.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let worker = Worker::build(config).await?;
    tracing::info!(admin = %worker.admin_addr(), "triggers-worker started");
    worker.run_until_stopped(shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
