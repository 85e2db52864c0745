//! `triggers-ingest`: the HTTP front door. `triggers-ingest migrate` applies migrations and exits.

use anyhow::Context;
use triggers_shared::{config::IngestConfig, service, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = IngestConfig::from_env().context("invalid configuration")?;
    telemetry::init(config.common.log_format);
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => triggers_ingest::run(config).await,
        Some("migrate") => {
            service::connect_and_migrate(&config.common).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command `{other}` (expected `serve` or `migrate`)"),
    }
}
