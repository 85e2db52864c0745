//! `triggers-ingest`'s command line: `serve` (the default) and the operator subcommands that act
//! on the database directly (`migrate`, `org create`, `key rotate`, `events redeliver`, `queue
//! stats`). Operator commands need only `DATABASE_URL`; they print their result on stdout (JSON
//! unless a table reads better) and log to stderr.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use sqlx::PgPool;
use triggers_shared::{
    config::{CommonConfig, IngestConfig},
    db::{self, key_issuance},
    models::{OrganizationName, Tier},
    service, telemetry,
};
use uuid::Uuid;

/// Triggers ingest: the HTTP API for events, keys, webhooks and the inbox, plus operator
/// commands that work on the database directly.
///
/// Every command reads DATABASE_URL; `serve` reads the whole configuration (see the README).
#[derive(Debug, Parser)]
#[command(name = "triggers-ingest", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API on TRIGGERS_INGEST_ADDR (the default when no command is given).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage an organisation's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Act on stored events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inspect the delivery queue.
    #[command(subcommand)]
    Queue(QueueCommand),
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Create an organisation with its first API key. The key is printed once: store it now.
    Create {
        /// Display name (1 to 255 characters).
        #[arg(long)]
        name: String,
        /// Rate-limit tier.
        #[arg(long, value_enum, default_value_t = TierArg::Free)]
        tier: TierArg,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Issue a new API key for an organisation and retire its current one(s). The new key is
    /// printed once.
    Rotate {
        /// Organisation id (UUID).
        #[arg(long)]
        org: Uuid,
        /// Seconds the previous key keeps working (0: it stops at once on every instance).
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Put an organisation's dead-lettered events back on the delivery queue.
    Redeliver {
        /// Organisation id (UUID).
        #[arg(long)]
        org: Uuid,
        /// Which events: only `failed` (dead-lettered) ones can be redelivered in bulk.
        #[arg(long, value_enum)]
        status: RedeliverStatus,
        /// Only events created at or after this instant (RFC 3339, e.g. 2026-11-27T10:00:00Z).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Delivery jobs by state, the oldest due job's age, and the 10 organisations with the
    /// most waiting jobs.
    Stats {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TierArg {
    Free,
    Pro,
    Business,
    Enterprise,
}

impl From<TierArg> for Tier {
    fn from(tier: TierArg) -> Self {
        match tier {
            TierArg::Free => Tier::Free,
            TierArg::Pro => Tier::Pro,
            TierArg::Business => Tier::Business,
            TierArg::Enterprise => Tier::Enterprise,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RedeliverStatus {
    Failed,
}

/// Parse the command line and run the command.
pub(crate) async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = IngestConfig::from_env().context("invalid configuration")?;
            telemetry::init(config.common.log_format);
            triggers_ingest::run(config).await
        }
        Command::Migrate => {
            connect().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Org(OrgCommand::Create { name, tier }) => {
            create_org(&connect().await?, &name, tier.into()).await
        }
        Command::Key(KeyCommand::Rotate { org, grace_seconds }) => {
            rotate_key(&connect().await?, org, Duration::from_secs(grace_seconds)).await
        }
        Command::Events(EventsCommand::Redeliver {
            org,
            status: RedeliverStatus::Failed,
            since,
        }) => redeliver_failed(&connect().await?, org, since).await,
        Command::Queue(QueueCommand::Stats { json }) => queue_stats(&connect().await?, json).await,
    }
}

/// A pool for an operator command, on a migrated database: only the common configuration is
/// needed.
async fn connect() -> anyhow::Result<PgPool> {
    let config = CommonConfig::from_env().context("invalid configuration")?;
    telemetry::init(config.log_format);
    // One command, one statement at a time: no need for the serving pool's size.
    service::connect_and_migrate(&CommonConfig {
        db_pool_size: 2,
        ..config
    })
    .await
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn create_org(pool: &PgPool, name: &str, tier: Tier) -> anyhow::Result<()> {
    // The same rule as `POST /api/keys/generate`.
    let name = match OrganizationName::parse(name) {
        Ok(name) => name,
        Err(problem) => bail!("--name {problem}"),
    };
    let (org, key) = key_issuance::create_organization(pool, &name, tier).await?;
    tracing::info!(org_id = %org.id, tier = tier.as_str(), "organisation created");
    print_json(&json!({
        "organization_id": org.id,
        "organization_name": org.name,
        "tier": tier.as_str(),
        "rate_limit_per_minute": org.rate_limit_per_minute,
        "api_key": key.key,
        "warning": "Store this API key now: it is shown only once.",
    }))
}

async fn rotate_key(pool: &PgPool, org_id: Uuid, grace: Duration) -> anyhow::Result<()> {
    // Every ingest instance drops its cached keys of this organisation on commit.
    let Some(rotation) =
        key_issuance::rotate(pool, org_id, grace, triggers_ingest::auth::INVALIDATION_CHANNEL).await?
    else {
        bail!("no organisation {org_id}");
    };
    tracing::info!(org_id = %org_id, grace_secs = grace.as_secs(), "API key rotated");
    print_json(&json!({
        "organization_id": rotation.organization.id,
        "organization_name": rotation.organization.name,
        "api_key": rotation.key.key,
        "rotated_at": rotation.retired.rotated_at,
        "previous_key_expires_at": rotation.retired.expires_at,
        "warning": "Store this API key now: it is shown only once.",
    }))
}

async fn redeliver_failed(pool: &PgPool, org_id: Uuid, since: Option<DateTime<Utc>>) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let Some(routes) = db::routing::load(&mut conn, org_id).await? else {
        bail!("no organisation {org_id}");
    };
    if !routes.has_endpoints() {
        bail!("organisation {org_id} has no endpoint: nothing to redeliver to");
    }
    drop(conn);
    let count = db::events::redeliver_failed(pool, org_id, since).await?;
    tracing::info!(org_id = %org_id, count, "failed deliveries queued for redelivery");
    print_json(&json!({ "organization_id": org_id, "count": count }))
}

async fn queue_stats(pool: &PgPool, as_json: bool) -> anyhow::Result<()> {
    let stats = db::queue::stats::stats(&mut *pool.acquire().await?).await?;
    if as_json {
        return print_json(&serde_json::to_value(&stats)?);
    }
    println!("due        {}", stats.due);
    println!("scheduled  {}", stats.scheduled);
    println!("running    {}", stats.running);
    println!("oldest due {:.1}s", stats.oldest_due_age_seconds);
    println!();
    println!(
        "{:<36}  {:>8}  {:>10}",
        "organization_id", "waiting", "oldest due"
    );
    for org in &stats.top_organizations {
        println!(
            "{:<36}  {:>8}  {:>9.1}s",
            org.organization_id, org.waiting, org.oldest_due_age_seconds
        );
    }
    Ok(())
}
