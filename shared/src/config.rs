//! Typed configuration read from environment variables, validated once at start.
//!
//! Every error names the variable at fault; secrets are wrapped in [`Secret`] so they never print.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use anyhow::{Context, bail};

/// A value that must never be printed (admin token, database password).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log output format (`TRIGGERS_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected `json` or `pretty`, got `{other}`")),
        }
    }
}

/// Settings shared by both binaries.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    pub database_url: Secret,
    pub db_pool_size: u32,
    pub log_format: LogFormat,
    /// Open HTTP connections at most (ingest's port, the worker's admin port); more wait.
    pub max_connections: usize,
}

impl CommonConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let database_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .context(
                "DATABASE_URL is not set (the README's run command provisions a local Postgres and sets it)",
            )?;
        let db_pool_size: u32 = env_or("TRIGGERS_DB_POOL_SIZE", 20)?;
        if db_pool_size == 0 {
            bail!("TRIGGERS_DB_POOL_SIZE must be at least 1");
        }
        let max_connections: usize = env_or("TRIGGERS_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)?;
        if max_connections == 0 {
            bail!("TRIGGERS_MAX_CONNECTIONS must be at least 1");
        }
        Ok(Self {
            database_url: Secret::new(database_url),
            db_pool_size,
            log_format: env_or("TRIGGERS_LOG_FORMAT", LogFormat::Pretty)?,
            max_connections,
        })
    }

    /// A configuration for tests: the given database, defaults elsewhere (`testing` feature).
    #[cfg(feature = "testing")]
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self {
            database_url: Secret::new(database_url),
            db_pool_size: 10,
            log_format: LogFormat::Pretty,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The default of `TRIGGERS_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Settings of `triggers-ingest`.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub common: CommonConfig,
    pub addr: SocketAddr,
    pub admin_token: Option<Secret>,
    pub allow_private_webhooks: bool,
    /// How long a verified (or refused) API key stays cached; a backstop to LISTEN/NOTIFY.
    pub auth_cache_ttl: Duration,
    /// How long a dedup id is remembered.
    pub dedup_window: Duration,
    /// Bytes of request bodies ingest holds at once; a request that does not fit is `503`.
    pub request_bytes_budget: usize,
    /// A request (body included) not answered within this gets `408`: 30 s, shorter in tests.
    pub request_timeout: Duration,
    /// Where browsers reach ingest (`TRIGGERS_PUBLIC_URL`): the base of the console links that
    /// `POST /api/portal/sessions` answers. `None`: `http://` and the address ingest listens on.
    pub public_url: Option<url::Url>,
    /// The most endpoints one organisation may have.
    pub max_endpoints_per_org: u32,
}

impl IngestConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            common: CommonConfig::from_env()?,
            addr: env_or("TRIGGERS_INGEST_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            admin_token: std::env::var("TRIGGERS_ADMIN_TOKEN")
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new),
            allow_private_webhooks: env_bool("TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", false)?,
            auth_cache_ttl: Duration::from_secs(env_or("TRIGGERS_AUTH_CACHE_TTL_SECS", 60)?),
            dedup_window: Duration::from_secs(24 * 3600),
            request_bytes_budget: match env_or("TRIGGERS_REQUEST_BYTES_BUDGET", DEFAULT_REQUEST_BYTES_BUDGET)?
            {
                0 => bail!("TRIGGERS_REQUEST_BYTES_BUDGET must be at least 1"),
                bytes => bytes,
            },
            request_timeout: crate::service::DEFAULT_REQUEST_TIMEOUT,
            public_url: std::env::var("TRIGGERS_PUBLIC_URL")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    parse_public_url(v.trim())
                        .with_context(|| format!("TRIGGERS_PUBLIC_URL is invalid (`{v}`)"))
                })
                .transpose()?,
            max_endpoints_per_org: match env_or(
                "TRIGGERS_MAX_ENDPOINTS_PER_ORG",
                DEFAULT_MAX_ENDPOINTS_PER_ORG,
            )? {
                0 => bail!("TRIGGERS_MAX_ENDPOINTS_PER_ORG must be at least 1"),
                cap => cap,
            },
        })
    }

    /// A configuration for tests: the given database, port 0, private webhooks allowed.
    #[cfg(feature = "testing")]
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            common: CommonConfig::for_database(database_url),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            allow_private_webhooks: true,
            auth_cache_ttl: Duration::from_secs(60),
            dedup_window: Duration::from_secs(24 * 3600),
            request_bytes_budget: DEFAULT_REQUEST_BYTES_BUDGET,
            request_timeout: crate::service::DEFAULT_REQUEST_TIMEOUT,
            public_url: None,
            max_endpoints_per_org: DEFAULT_MAX_ENDPOINTS_PER_ORG,
        }
    }
}

/// A public origin: http or https, a host (and port), nothing else: the console and the API it
/// calls are served at the root of their host. Paths are appended to
/// `as_str().trim_end_matches('/')` (the URL prints as `https://host/`).
pub fn parse_public_url(text: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(text)?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("must be an http or https URL");
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("must not carry user-info");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        bail!("must be an origin (scheme, host, port) without a path, query or fragment");
    }
    Ok(url)
}

/// Default of `TRIGGERS_REQUEST_BYTES_BUDGET`: 64 MiB.
pub const DEFAULT_REQUEST_BYTES_BUDGET: usize = 64 * 1024 * 1024;
/// Default of `TRIGGERS_MAX_ENDPOINTS_PER_ORG`.
pub const DEFAULT_MAX_ENDPOINTS_PER_ORG: u32 = 50;

/// Settings of `triggers-worker`.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub common: CommonConfig,
    /// Admin port: health and metrics.
    pub addr: SocketAddr,
    pub allow_private_webhooks: bool,
    pub delivery_timeout: Duration,
    /// Delays before each retry; attempts in all = 1 + its length.
    pub retry_schedule: Vec<Duration>,
    pub concurrency: usize,
    /// In-flight deliveries allowed per organisation in one worker.
    pub org_inflight_cap: usize,
    pub event_retention: Duration,
    /// apalis heartbeat; a dead worker's jobs are re-queued after 3 missed beats.
    pub heartbeat_interval: Duration,
    pub batch_size: usize,
    /// How often the janitor runs.
    pub janitor_interval: Duration,
    /// Cap on a `Retry-After` the worker honours.
    pub max_retry_after: Duration,
    /// A unique name for this worker process.
    pub worker_name: String,
    /// On SIGTERM, how long in-flight deliveries may take to finish before they are abandoned
    /// (another worker then re-queues them after the heartbeat timeout).
    pub drain_timeout: Duration,
    /// Dead-lettered (`failed`) events, with their attempts, are deleted after this long unchanged.
    pub failed_event_retention: Duration,
    /// Revoked or expired API keys are deleted this long after they stopped working.
    pub dead_key_retention: Duration,
    /// Rate-limit windows older than this are deleted (at least 2 minutes: leases read the last two).
    pub rate_limit_window_retention: Duration,
    /// A pending event without a live job is repaired only once unchanged this long, so the
    /// janitor never races a transaction still committing its job.
    pub stranded_event_grace: Duration,
    /// How often the queue gauges are sampled (by one worker of the fleet at a time).
    pub queue_sample_interval: Duration,
    /// Deliveries a recovery restarts per transaction.
    pub recovery_batch: usize,
    /// A worker adds a recovery's next batch only while fewer recovered jobs than this wait in
    /// the queue: recoveries go as fast as deliveries leave, never far ahead of them.
    pub recovery_backlog: usize,
    /// Recovered deliveries a worker restarts per second at most: what a recovery may take of
    /// the capacity live traffic shares with it (the database, the CPU).
    pub recovery_rate: u32,
    /// An endpoint whose attempts have all failed for this long (with at least 10 failed
    /// attempts) is disabled as `failing`.
    pub endpoint_disable_after: Duration,
}

impl WorkerConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let schedule =
            std::env::var("TRIGGERS_RETRY_SCHEDULE").unwrap_or_else(|_| DEFAULT_RETRY_SCHEDULE.into());
        let retry_schedule = parse_schedule(&schedule)
            .with_context(|| format!("TRIGGERS_RETRY_SCHEDULE is invalid (`{schedule}`)"))?;
        let concurrency: usize = env_or("TRIGGERS_WORKER_CONCURRENCY", 64)?;
        if concurrency == 0 {
            bail!("TRIGGERS_WORKER_CONCURRENCY must be at least 1");
        }
        let timeout: u64 = env_or("TRIGGERS_DELIVERY_TIMEOUT_SECS", 10)?;
        if timeout == 0 {
            bail!("TRIGGERS_DELIVERY_TIMEOUT_SECS must be at least 1");
        }
        let org_cap: usize = env_or("TRIGGERS_ORG_INFLIGHT_CAP", 16)?;
        if org_cap == 0 {
            bail!("TRIGGERS_ORG_INFLIGHT_CAP must be at least 1");
        }
        let heartbeat: u64 = env_or("TRIGGERS_WORKER_HEARTBEAT_SECS", 10)?;
        if heartbeat == 0 {
            bail!("TRIGGERS_WORKER_HEARTBEAT_SECS must be at least 1");
        }
        let retention_days: u64 = env_or("TRIGGERS_EVENT_RETENTION_DAYS", 7)?;
        let batch_size: usize = env_or("TRIGGERS_WORKER_BATCH_SIZE", 500)?;
        if batch_size == 0 {
            bail!("TRIGGERS_WORKER_BATCH_SIZE must be at least 1");
        }
        let window_retention: u64 = env_or("TRIGGERS_RATE_LIMIT_WINDOW_RETENTION_SECS", 3600)?;
        if window_retention < 120 {
            bail!("TRIGGERS_RATE_LIMIT_WINDOW_RETENTION_SECS must be at least 120");
        }
        let sample_secs: u64 = env_or("TRIGGERS_QUEUE_SAMPLE_SECS", 10)?;
        if sample_secs == 0 {
            bail!("TRIGGERS_QUEUE_SAMPLE_SECS must be at least 1");
        }
        let recovery_batch: usize = env_or("TRIGGERS_RECOVERY_BATCH", 500)?;
        if !(1..=10_000).contains(&recovery_batch) {
            bail!("TRIGGERS_RECOVERY_BATCH must be from 1 to 10000");
        }
        let recovery_backlog: usize = env_or("TRIGGERS_RECOVERY_BACKLOG", 1000)?;
        if recovery_backlog == 0 {
            bail!("TRIGGERS_RECOVERY_BACKLOG must be at least 1");
        }
        let recovery_rate: u32 = env_or("TRIGGERS_RECOVERY_RATE", 1000)?;
        if !(1..=100_000).contains(&recovery_rate) {
            bail!("TRIGGERS_RECOVERY_RATE must be from 1 to 100000");
        }
        let disable_after: u64 = env_or("TRIGGERS_ENDPOINT_DISABLE_AFTER_SECS", 432_000)?;
        if disable_after == 0 {
            bail!("TRIGGERS_ENDPOINT_DISABLE_AFTER_SECS must be at least 1");
        }
        Ok(Self {
            common: CommonConfig::from_env()?,
            addr: env_or("TRIGGERS_WORKER_ADDR", SocketAddr::from(([127, 0, 0, 1], 9091)))?,
            allow_private_webhooks: env_bool("TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", false)?,
            delivery_timeout: Duration::from_secs(timeout),
            retry_schedule,
            concurrency,
            org_inflight_cap: org_cap,
            event_retention: Duration::from_secs(retention_days * 24 * 3600),
            heartbeat_interval: Duration::from_secs(heartbeat),
            batch_size,
            janitor_interval: Duration::from_secs(env_or("TRIGGERS_JANITOR_INTERVAL_SECS", 60)?),
            max_retry_after: Duration::from_secs(env_or("TRIGGERS_MAX_RETRY_AFTER_SECS", 3600)?),
            worker_name: unique_worker_name(),
            drain_timeout: Duration::from_secs(env_or("TRIGGERS_WORKER_DRAIN_SECS", timeout + 10)?),
            failed_event_retention: days(env_or("TRIGGERS_FAILED_EVENT_RETENTION_DAYS", 30)?),
            dead_key_retention: days(env_or("TRIGGERS_DEAD_KEY_RETENTION_DAYS", 30)?),
            rate_limit_window_retention: Duration::from_secs(window_retention),
            stranded_event_grace: Duration::from_secs(env_or("TRIGGERS_STRANDED_EVENT_GRACE_SECS", 300)?),
            queue_sample_interval: Duration::from_secs(sample_secs),
            recovery_batch,
            recovery_backlog,
            recovery_rate,
            endpoint_disable_after: Duration::from_secs(disable_after),
        })
    }

    /// A configuration for tests: short retries, private targets allowed, port 0.
    #[cfg(feature = "testing")]
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            common: CommonConfig::for_database(database_url),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_private_webhooks: true,
            delivery_timeout: Duration::from_secs(2),
            retry_schedule: vec![Duration::from_millis(200), Duration::from_millis(400)],
            concurrency: 32,
            org_inflight_cap: 16,
            event_retention: Duration::from_secs(7 * 24 * 3600),
            heartbeat_interval: Duration::from_secs(2),
            batch_size: 100,
            janitor_interval: Duration::from_secs(3600),
            max_retry_after: Duration::from_secs(60),
            worker_name: unique_worker_name(),
            drain_timeout: Duration::from_secs(10),
            failed_event_retention: days(30),
            dead_key_retention: days(30),
            rate_limit_window_retention: Duration::from_secs(3600),
            stranded_event_grace: Duration::from_secs(300),
            queue_sample_interval: Duration::from_secs(10),
            recovery_batch: 500,
            recovery_backlog: 1000,
            recovery_rate: 1000,
            endpoint_disable_after: Duration::from_secs(432_000),
        }
    }
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

/// The default delays before each retry.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,30s,2m,10m,45m";

/// A process-unique worker name: host, pid and a random suffix.
pub fn unique_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Parse `5s,30s,2m,10m,45m` (units `ms`, `s`, `m`, `h`; an empty string is no retries).
pub fn parse_schedule(text: &str) -> anyhow::Result<Vec<Duration>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_duration)
        .collect()
}

/// Parse one duration such as `250ms`, `5s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .with_context(|| format!("`{text}` does not start with a number"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => bail!("unknown unit `{other}` in `{text}` (use ms, s, m or h)"),
    })
}

fn env_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name} is invalid (`{v}`): {e}")),
        _ => Ok(default),
    }
}

fn env_bool(name: &str, default: bool) -> anyhow::Result<bool> {
    match std::env::var(name) {
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" => Ok(default),
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => bail!("{name} is invalid (`{v}`): expected true or false"),
        },
        Err(_) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_has_five_retries() {
        let s = parse_schedule(DEFAULT_RETRY_SCHEDULE).expect("valid");
        assert_eq!(
            s,
            vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
                Duration::from_secs(600),
                Duration::from_secs(2700)
            ]
        );
    }

    #[test]
    fn a_public_url_is_an_origin() {
        for good in [
            "https://triggers.example.com",
            "https://triggers.example.com/",
            "http://10.0.0.5:8080",
        ] {
            let url = parse_public_url(good).expect(good);
            assert_eq!(url.as_str().trim_end_matches('/'), good.trim_end_matches('/'));
        }
        for bad in [
            "https://example.com/triggers",
            "ftp://example.com",
            "https://u:p@example.com",
            "https://example.com/?q=1",
            "https://example.com/#x",
            "example.com",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_units_are_refused() {
        assert!(parse_schedule("5s,3y").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
