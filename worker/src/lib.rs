//! The delivery worker: claims delivery jobs from the apalis queue and POSTs signed webhooks.

use triggers_shared::config::WorkerConfig;

/// Run the worker until SIGTERM or SIGINT.
pub async fn run(_config: WorkerConfig) -> anyhow::Result<()> {
    Ok(())
}
