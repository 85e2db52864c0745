//! The database: pool, migrations, and the SQL of each table (one module per table), with two
//! modules that are not a table's: [`key_issuance`], the transactions over `organizations` and
//! `api_keys`, and [`locks`], the fleet-wide advisory locks.
//!
//! Every query function takes `&mut PgConnection` so it works inside a transaction (a function
//! that is a whole transaction of its own takes the pool), and every query on tenant data takes
//! the organisation id.

pub mod api_keys;
pub mod attempts;
pub mod deliveries;
pub mod endpoint_rates;
pub mod endpoint_stats;
pub mod endpoints;
pub mod events;
pub mod janitor;
pub mod key_issuance;
pub mod locks;
pub mod organizations;
pub mod portal_sessions;
pub mod queue;
pub mod rate_limits;
pub mod recoveries;
pub mod routing;

use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::{CommonConfig, ExposeSecret as _};

/// Our own migrations (`migrations/` at the repo root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Open the pool. Connecting is lazy, so a binary starts (and reports not-ready) while the
/// database is down, and recovers without a restart once it is back.
pub fn pool(config: &CommonConfig) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy(config.database_url.expose_secret())
        .context("DATABASE_URL is not a valid Postgres URL")
}

/// Apply apalis' own schema, then our migrations (some of which trim apalis' tables). Safe to
/// run any number of times, from any number of processes at once (sqlx takes an advisory lock;
/// each keeps its own history table).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .context("applying apalis' migrations")?;
    MIGRATOR.run(pool).await.context("applying Triggers migrations")?;
    Ok(())
}

/// Wait until the database answers, up to `patience`. Used at start-up.
pub async fn wait_until_reachable(pool: &PgPool, patience: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match sqlx::query!("SELECT 1 AS up").fetch_one(pool).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).context("the database is unreachable");
            }
            Err(e) => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Is this error a unique-constraint violation (SQLSTATE 23505)?
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23505")
}

/// Is this error the database being unreachable (pool timeout, I/O, closed), rather than a bug?
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
    ) || err
        .as_database_error()
        .and_then(|e| e.code())
        // 55000: "database is not currently accepting connections" (ALLOW_CONNECTIONS false during
        // maintenance; also how `TestDb::cut_off` simulates an outage), raised while connecting.
        .is_some_and(|code| code.starts_with("08") || code == "57P01" || code == "57P03" || code == "55000")
}
