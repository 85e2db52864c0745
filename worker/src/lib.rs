//! The delivery worker: claims delivery jobs from the apalis queue and POSTs signed webhooks.
//!
//! [`Worker::build`] connects, applies migrations and binds the admin port;
//! [`Worker::run_until_stopped`] consumes the queue, runs the janitor, the queue sampler and
//! vacuum, recoveries and the stats rollup, and serves the admin port until the shutdown future
//! resolves, then drains. Tests start it in-process the same way `main` does through [`run`].
//! The shell (database start-up, admin server and its limits, signals, metrics upkeep) is
//! `triggers_shared::service`.

pub mod admin;
pub mod client;
pub mod coalesce;
pub mod deliver;
pub mod fair;
pub mod janitor;
pub mod queue;
pub mod rate;
pub mod recorder;
pub mod recovery;
pub mod retry;
pub mod rollup;
pub mod sampler;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vacuum;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use triggers_shared::{
    config::WorkerConfig,
    metrics::install_recorder,
    service::{self, Ops, ServerLimits},
};

pub use janitor::run_janitor_once;

/// On shutdown, how long the admin port's open requests may take once deliveries have drained
/// (its requests are health checks and scrapes: short).
const ADMIN_DRAIN: Duration = Duration::from_secs(5);

/// A worker ready to run: database migrated, admin port bound.
pub struct Worker {
    config: Arc<WorkerConfig>,
    pool: PgPool,
    listener: TcpListener,
    metrics: PrometheusHandle,
}

impl Worker {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let pool = service::connect_and_migrate(&config.common).await?;
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

        let upkeep = service::spawn_upkeep(metrics.clone(), pool.clone());
        let admin = {
            let app = admin::router(Ops {
                db: pool.clone(),
                metrics,
            });
            let limits = ServerLimits {
                drain_timeout: ADMIN_DRAIN,
                ..ServerLimits::with_max_connections(config.common.max_connections)
            };
            let admin_stop = admin_stop.clone();
            tokio::spawn(async move {
                service::serve(
                    listener,
                    app,
                    &limits,
                    async move { admin_stop.cancelled().await },
                )
                .await
            })
        };
        let janitor = tokio::spawn(janitor::run(pool.clone(), config.clone(), stop.clone()));
        let sampler = tokio::spawn(sampler::run(pool.clone(), config.clone(), stop.clone()));
        let recovery = tokio::spawn(recovery::run(pool.clone(), config.clone(), stop.clone()));
        let rollup = tokio::spawn(rollup::run(pool.clone(), stop.clone()));
        let vacuum = tokio::spawn(vacuum::run(pool.clone(), stop.clone()));
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
        let _ = sampler.await;
        let _ = recovery.await;
        let _ = rollup.await;
        let _ = vacuum.await;
        admin_stop.cancel();
        let served = admin.await;
        upkeep.abort();
        pool.close().await;
        consumed.context("queue consumer panicked")?;
        served.context("admin server panicked")?.context("admin server")?;
        Ok(())
    }
}

/// Run the worker until SIGTERM or SIGINT.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let worker = Worker::build(config).await?;
    tracing::info!(admin = %worker.admin_addr(), "triggers-worker started");
    worker.run_until_stopped(service::shutdown_signal()).await
}
