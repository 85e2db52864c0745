//! `triggers-worker`: delivers events to webhooks. Scaled separately from ingest.

use anyhow::Context;
use triggers_shared::{config::WorkerConfig, telemetry};

/// mimalloc instead of glibc's malloc: under load glibc's allocator took a tenth of the
/// machine's CPU (perf) and kept freed memory (per-thread arenas, argon2's 19 MiB blocks) resident.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::from_env().context("invalid configuration")?;
    telemetry::init(config.common.log_format);
    triggers_worker::run(config).await
}
