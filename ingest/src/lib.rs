//! The ingest service: validates, authenticates, rate-limits, deduplicates and durably stores
//! events, and serves the pull inbox. `run` is what `main` and the tests call.

pub mod auth;
pub mod batcher;
pub mod budget;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod state;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use triggers_shared::{config::IngestConfig, db};

pub use state::AppState;

/// A built, bound, not yet serving ingest app.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
}

impl Application {
    /// Connect, migrate, start background tasks and bind the listener.
    pub async fn build(config: IngestConfig) -> anyhow::Result<Self> {
        let pool = db::pool(&config.common)?;
        db::wait_until_reachable(&pool, Duration::from_secs(30)).await?;
        db::migrate(&pool).await?;
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding TRIGGERS_INGEST_ADDR {}", config.addr))?;
        let state = AppState::start(Arc::new(config), pool).await?;
        triggers_shared::metrics::init_ingest();
        let router = routes::router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
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

    /// Serve until `shutdown` resolves, then finish in-flight requests and flush the batcher.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "ingest listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        self.state.shutdown().await;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

/// Run the ingest service until SIGTERM or SIGINT.
pub async fn run(config: IngestConfig) -> anyhow::Result<()> {
    Application::build(config)
        .await?
        .run_until_stopped(shutdown_signal())
        .await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
