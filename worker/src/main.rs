//! `triggers-worker`: delivers events to webhooks. Scaled separately from ingest.

use anyhow::Context;
use triggers_shared::{config::WorkerConfig, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::from_env().context("invalid configuration")?;
    telemetry::init(config.common.log_format);
    triggers_worker::run(config).await
}
