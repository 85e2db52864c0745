//! The endpoint stats rollup (`GET /api/endpoints/{id}/stats`), kept small: every worker folds
//! the deltas that writers' triggers append into the per-hour rollup each
//! [`COMPACT_INTERVAL`] (`db::endpoint_stats::compact`: several workers at once take disjoint
//! rows), and drops hours past the longest window the API serves once per [`PRUNE_INTERVAL`].
//! Readers sum rollup and deltas, so how soon deltas are folded changes only how many rows a
//! read sums, never its answer.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use triggers_shared::db::endpoint_stats;

/// How often deltas are folded.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(1);

/// How often hours past [`KEEP`] are dropped.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// How long hours are kept: the API's longest window (28 days) and a day of margin.
pub const KEEP: Duration = Duration::from_secs(29 * 24 * 3600);

/// Rows folded or pruned per statement.
pub const BATCH: i64 = 10_000;

/// Fold every delta there is now (in statements of [`BATCH`]); how many were folded.
pub async fn compact_all(pool: &PgPool) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await?;
    let mut total = 0;
    loop {
        let folded = endpoint_stats::compact(&mut conn, BATCH).await?;
        total += folded;
        if folded < BATCH as u64 {
            return Ok(total);
        }
    }
}

async fn prune(pool: &PgPool) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await?;
    let before = chrono::Utc::now() - chrono::Duration::from_std(KEEP)?;
    let mut total = 0;
    loop {
        let deleted = endpoint_stats::prune(&mut conn, before, BATCH).await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Fold and prune until `stop` is cancelled.
pub async fn run(pool: PgPool, stop: CancellationToken) {
    let mut pruned_at: Option<Instant> = None;
    loop {
        if let Err(e) = compact_all(&pool).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "folding endpoint stats failed; trying again"
            );
        }
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
            match prune(&pool).await {
                Ok(_) => pruned_at = Some(Instant::now()),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "pruning endpoint stats failed"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(COMPACT_INTERVAL) => {}
        }
    }
}
