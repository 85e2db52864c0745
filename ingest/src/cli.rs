//! `triggers-ingest`'s command line: `serve` (the default) and the operator subcommands that act
//! on the database directly (`migrate`, `org create`, `key rotate`, `events redeliver`, `queue
//! stats`). Operator commands need only `DATABASE_URL`; they print their result on stdout (JSON
//! unless a table reads better) and log to stderr.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use triggers_shared::{
    apikey,
    config::{CommonConfig, IngestConfig},
    db::{self, api_keys, organizations},
    jobs::{self, DELIVERY_QUEUE, DeliveryJob},
    models::{OrganizationName, Tier},
    service, telemetry,
};
use uuid::Uuid;

const KEY_ATTEMPTS: usize = 3;
/// Events put back per transaction by `events redeliver`.
const REDELIVER_CHUNK: i64 = 500;

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

/// A new key and its hash (argon2, on the process's one hashing pool).
async fn fresh_key() -> anyhow::Result<apikey::GeneratedKey> {
    apikey::generate().await
}

async fn create_org(pool: &PgPool, name: &str, tier: Tier) -> anyhow::Result<()> {
    // The same rule as `POST /api/keys/generate`.
    let name = match OrganizationName::parse(name) {
        Ok(name) => name,
        Err(problem) => bail!("--name {problem}"),
    };
    let org_id = Uuid::now_v7();
    for attempt in 1..=KEY_ATTEMPTS {
        let key = fresh_key().await?;
        let mut tx = pool.begin().await?;
        let org = organizations::insert(&mut tx, org_id, name.as_str(), tier).await?;
        match api_keys::insert(&mut tx, Uuid::now_v7(), org_id, &key.prefix, &key.hash).await {
            Err(e) if db::is_unique_violation(&e) && attempt < KEY_ATTEMPTS => continue,
            inserted => inserted?,
        };
        tx.commit().await?;
        tracing::info!(org_id = %org.id, tier = tier.as_str(), "organisation created");
        return print_json(&json!({
            "organization_id": org.id,
            "organization_name": org.name,
            "tier": tier.as_str(),
            "rate_limit_per_minute": org.rate_limit_per_minute,
            "api_key": key.key,
            "warning": "Store this API key now: it is shown only once.",
        }));
    }
    bail!("no free key prefix after {KEY_ATTEMPTS} attempts")
}

async fn rotate_key(pool: &PgPool, org_id: Uuid, grace: Duration) -> anyhow::Result<()> {
    for attempt in 1..=KEY_ATTEMPTS {
        let key = fresh_key().await?;
        let mut tx = pool.begin().await?;
        // The row lock serialises rotations of one organisation (as the API does).
        let Some(org) = organizations::get_for_update(&mut tx, org_id).await? else {
            bail!("no organisation {org_id}");
        };
        let retired = api_keys::retire_active(&mut tx, org_id, grace).await?;
        match api_keys::insert(&mut tx, Uuid::now_v7(), org_id, &key.prefix, &key.hash).await {
            Err(e) if db::is_unique_violation(&e) && attempt < KEY_ATTEMPTS => continue,
            inserted => inserted?,
        };
        organizations::touch(&mut tx, org_id).await?;
        // Every ingest instance drops its cached keys of this organisation on commit.
        api_keys::notify_change(&mut tx, triggers_ingest::auth::INVALIDATION_CHANNEL, org_id).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, grace_secs = grace.as_secs(), "API key rotated");
        return print_json(&json!({
            "organization_id": org.id,
            "organization_name": org.name,
            "api_key": key.key,
            "rotated_at": retired.rotated_at,
            "previous_key_expires_at": retired.expires_at,
            "warning": "Store this API key now: it is shown only once.",
        }));
    }
    bail!("no free key prefix after {KEY_ATTEMPTS} attempts")
}

async fn redeliver_failed(pool: &PgPool, org_id: Uuid, since: Option<DateTime<Utc>>) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    if organizations::get(&mut conn, org_id).await?.is_none() {
        bail!("no organisation {org_id}");
    }
    if !db::events::has_webhook(&mut conn, org_id).await? {
        bail!("organisation {org_id} has no webhook configured: nothing to redeliver to");
    }
    drop(conn);
    let mut count = 0usize;
    loop {
        let mut tx = pool.begin().await?;
        let ids = reset_failed_since(&mut tx, org_id, since, REDELIVER_CHUNK).await?;
        let jobs: Vec<_> = ids
            .iter()
            .map(|id| (DeliveryJob::first(*id, org_id), Duration::ZERO))
            .collect();
        jobs::enqueue(&mut tx, &jobs).await?;
        tx.commit().await?;
        count += ids.len();
        if (ids.len() as i64) < REDELIVER_CHUNK {
            break;
        }
    }
    tracing::info!(org_id = %org_id, count, "failed events queued for redelivery");
    print_json(&json!({ "organization_id": org_id, "count": count }))
}

// events SQL: moves to db::events (it is `reset_failed_for_redelivery` with a `since` bound).
/// Put up to `limit` failed events of the organisation created at or after `since` back to
/// `pending`, oldest first; returns their ids.
async fn reset_failed_since(
    conn: &mut PgConnection,
    organization_id: Uuid,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE events
         SET status = 'pending', delivered_at = NULL, acknowledged_at = NULL, updated_at = now()
         WHERE id IN (
             SELECT id FROM events
             WHERE organization_id = $1 AND status = 'failed'
               AND ($2::timestamptz IS NULL OR created_at >= $2)
             ORDER BY created_at, id
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(organization_id)
    .bind(since)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// What `queue stats` reports.
#[derive(Debug, serde::Serialize)]
struct QueueStats {
    /// Jobs whose time has come and that no worker runs yet.
    due: i64,
    /// Jobs waiting for a later retry.
    scheduled: i64,
    running: i64,
    /// Seconds since the oldest due job became due (0 when none is due).
    oldest_due_age_seconds: f64,
    /// The 10 organisations with the most waiting (due or scheduled) jobs.
    top_organizations: Vec<OrgBacklog>,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
struct OrgBacklog {
    organization_id: Uuid,
    waiting: i64,
    oldest_due_age_seconds: f64,
}

// queue SQL: moves to db::queue
/// Depth by state, oldest due age and the top 10 organisations of the delivery queue.
async fn load_queue_stats(conn: &mut PgConnection) -> sqlx::Result<QueueStats> {
    let (due, scheduled, running, oldest): (i64, i64, i64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN ('Pending', 'Queued') AND run_at <= now()),
                count(*) FILTER (WHERE status IN ('Pending', 'Queued') AND run_at > now()),
                count(*) FILTER (WHERE status = 'Running'),
                coalesce(extract(epoch FROM now() - min(run_at)
                    FILTER (WHERE status IN ('Pending', 'Queued') AND run_at <= now())), 0)::float8
         FROM apalis.jobs WHERE job_type = $1",
    )
    .bind(DELIVERY_QUEUE)
    .fetch_one(&mut *conn)
    .await?;
    let top_organizations = sqlx::query_as::<_, OrgBacklog>(
        "SELECT (convert_from(job, 'UTF8')::jsonb ->> 'organization_id')::uuid AS organization_id,
                count(*) AS waiting,
                coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8
                    AS oldest_due_age_seconds
         FROM apalis.jobs
         WHERE job_type = $1 AND status IN ('Pending', 'Queued')
         GROUP BY 1
         ORDER BY waiting DESC, organization_id
         LIMIT 10",
    )
    .bind(DELIVERY_QUEUE)
    .fetch_all(&mut *conn)
    .await?;
    Ok(QueueStats {
        due,
        scheduled,
        running,
        oldest_due_age_seconds: oldest,
        top_organizations,
    })
}

async fn queue_stats(pool: &PgPool, as_json: bool) -> anyhow::Result<()> {
    let stats = load_queue_stats(&mut *pool.acquire().await?).await?;
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
