//! Periodic upkeep of this process's metrics: the exporter's histograms are drained even when
//! nobody scrapes (otherwise they grow without bound), and the database-pool gauges are sampled.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::metrics::DB_POOL_CONNECTIONS;

/// How often upkeep runs.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Run upkeep every [`UPKEEP_INTERVAL`] until the returned task is aborted.
pub fn spawn_upkeep(metrics: PrometheusHandle, pool: PgPool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sample_pool(&pool);
            metrics.run_upkeep();
        }
    })
}

/// Set `DB_POOL_CONNECTIONS{state}` from the pool's current counts.
fn sample_pool(pool: &PgPool) {
    let open = pool.size() as usize;
    let idle = pool.num_idle().min(open);
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set((open - idle) as f64);
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle as f64);
}
