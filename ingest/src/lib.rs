//! The ingest service: validates, authenticates, rate-limits, deduplicates and durably stores
//! events, and serves the pull inbox. `run` is what `main` and the tests call; the shell around it
//! (database start-up, server limits, signals, upkeep) is `triggers_shared::service`.

pub mod auth;
pub mod batcher;
pub mod budget;
pub mod console;
pub mod error;
pub mod extract;
pub mod listener;
pub mod openapi;
pub mod ratelimit;
pub mod refusals;
pub mod routes;
pub mod routing;
pub mod state;
pub mod validate;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::net::TcpListener;
use triggers_shared::{
    config::IngestConfig,
    service::{self, ServerLimits},
};

pub use state::AppState;

/// A built, bound, not yet serving ingest app.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    limits: ServerLimits,
}

impl Application {
    /// Connect, migrate, start background tasks and bind the listener.
    pub async fn build(config: IngestConfig) -> anyhow::Result<Self> {
        let pool = service::connect_and_migrate(&config.common).await?;
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding TRIGGERS_INGEST_ADDR {}", config.addr))?;
        warn_if_open_without_admin_token(&config);
        let limits = ServerLimits::with_max_connections(config.common.max_connections);
        let public_url = public_url(&config, &listener)?;
        let state = AppState::start(Arc::new(config), pool, &public_url).await?;
        triggers_shared::metrics::init_ingest();
        let router = routes::router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves, then finish in-flight requests (bounded by the server's
    /// drain timeout) and flush the batcher.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "ingest listening");
        let upkeep = service::spawn_upkeep(self.state.metrics.clone(), self.state.db.clone());
        let served = service::serve(self.listener, self.router, &self.limits, shutdown)
            .await
            .context("serving HTTP");
        upkeep.abort();
        self.state.shutdown().await;
        tracing::info!("ingest stopped");
        served
    }
}

/// Where browsers reach this service: `TRIGGERS_PUBLIC_URL`, or `http://` and the bound address
/// (an unspecified address, `0.0.0.0` or `::`, as loopback).
fn public_url(config: &IngestConfig, listener: &TcpListener) -> anyhow::Result<String> {
    if let Some(url) = &config.public_url {
        return Ok(url.as_str().trim_end_matches('/').to_owned());
    }
    let mut addr = listener.local_addr().context("reading the bound address")?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{addr}"))
}

/// Without an admin token anyone who reaches the port can create organisations: fine on
/// loopback for development, worth a warning anywhere else.
fn warn_if_open_without_admin_token(config: &IngestConfig) {
    if config.admin_token.is_none() && !config.addr.ip().is_loopback() {
        tracing::warn!(
            addr = %config.addr,
            "TRIGGERS_ADMIN_TOKEN is not set and ingest listens beyond loopback: \
             anyone who can reach this port can create organisations"
        );
    }
}

/// Run the ingest service until SIGTERM or SIGINT.
pub async fn run(config: IngestConfig) -> anyhow::Result<()> {
    Application::build(config)
        .await?
        .run_until_stopped(service::shutdown_signal())
        .await
}
