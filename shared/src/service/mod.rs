//! The shell both binaries run in, so the two cannot drift: connecting to and migrating the
//! database at start, the shutdown signal, the operations routes (`/health`, `/health/live`,
//! `/health/ready`, `/metrics`) with the JSON 404/405 fallbacks, the HTTP server with its limits,
//! and the periodic upkeep of the metrics exporter and the database-pool gauges.

pub mod http;
pub mod server;
mod upkeep;

use std::time::Duration;

use sqlx::PgPool;

pub use http::Ops;
pub use server::{DEFAULT_REQUEST_TIMEOUT, ServerLimits, request_timeout, serve};
pub use upkeep::spawn_upkeep;

use crate::{config::CommonConfig, db};

/// How long a binary waits at start for the database to answer before giving up.
pub const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// Open the pool, wait (up to [`DATABASE_PATIENCE`]) until the database answers and apply the
/// migrations: what each binary does before anything else.
pub async fn connect_and_migrate(config: &CommonConfig) -> anyhow::Result<PgPool> {
    let pool = db::pool(config)?;
    db::wait_until_reachable(&pool, DATABASE_PATIENCE).await?;
    db::migrate(&pool).await?;
    Ok(pool)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // An error means no handler could be installed: then only SIGTERM stops us.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
