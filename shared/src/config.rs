//! Typed configuration read from environment variables, validated once at start.
//!
//! Each setting is declared once, below, as a field with its variable, its default and its rule
//! (clap's `Args` derive, parsed from the environment only: the binaries take no setting as a
//! flag). The test configurations are parsed from the same declarations, and a test checks the
//! README's table against them. Every error names the variable at fault; secrets are
//! [`SecretString`]s, so they never print.
//!
//! One grammar for durations with a unit ([`parse_duration`]: `humantime`'s, a bare number being
//! seconds); a variable whose name ends in `_SECS` or `_DAYS` takes a whole number of that unit.
//! A variable set to an empty string counts as unset, except `TRIGGERS_RETRY_SCHEDULE`, where
//! empty means no retries.

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

use anyhow::bail;
use clap::{
    Args, Command, FromArgMatches, ValueEnum, error::ContextKind, error::ContextValue, error::ErrorKind,
};
pub use secrecy::{ExposeSecret, SecretString};

/// Log output format (`TRIGGERS_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Settings shared by both binaries (and all that the operator commands read).
#[derive(Clone, Debug, Args)]
pub struct CommonConfig {
    /// Postgres.
    #[arg(long, env = "DATABASE_URL", value_parser = secret)]
    pub database_url: SecretString,
    /// Connections per process.
    #[arg(long, env = "TRIGGERS_DB_POOL_SIZE", default_value = "20", value_parser = at_least(1u32))]
    pub db_pool_size: u32,
    #[arg(long, env = "TRIGGERS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Open HTTP connections at most (ingest's port, the worker's admin port); more wait.
    #[arg(long, env = "TRIGGERS_MAX_CONNECTIONS", default_value = "10000", value_parser = at_least(1usize))]
    pub max_connections: usize,
    /// Whether webhook and endpoint URLs may point at loopback or private addresses (ingest
    /// checks them when they are set, the worker before each delivery).
    #[arg(long, env = "TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", default_value = "false", value_parser = boolean, action = clap::ArgAction::Set)]
    pub allow_private_webhooks: bool,
}

impl CommonConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        parse(Source::Environment, &[])
    }

    /// A configuration for tests: the given database, a small pool, the declared defaults
    /// elsewhere (the environment is not read; `testing` feature).
    #[cfg(feature = "testing")]
    pub fn for_database(database_url: impl Into<String>) -> Self {
        let mut config: Self = test_defaults(database_url);
        config.test_settings();
        config
    }

    /// What every test configuration changes: a small pool (each test has a database of its
    /// own), private webhook targets allowed (test receivers listen on loopback).
    #[cfg(feature = "testing")]
    fn test_settings(&mut self) {
        self.db_pool_size = 10;
        self.allow_private_webhooks = true;
    }
}

/// Settings of `triggers-ingest`.
#[derive(Clone, Debug, Args)]
pub struct IngestConfig {
    #[command(flatten)]
    pub common: CommonConfig,
    /// Where ingest listens.
    #[arg(
        long = "ingest-addr",
        env = "TRIGGERS_INGEST_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: SocketAddr,
    /// Guards `POST /api/keys/generate`; unset, it is open.
    #[arg(long, env = "TRIGGERS_ADMIN_TOKEN", value_parser = secret)]
    pub admin_token: Option<SecretString>,
    /// How long a verified (or refused) API key stays cached; a backstop to LISTEN/NOTIFY.
    #[arg(long = "auth-cache-ttl-secs", env = "TRIGGERS_AUTH_CACHE_TTL_SECS", default_value = "60", value_parser = seconds(0))]
    pub auth_cache_ttl: Duration,
    /// How long a dedup id is remembered: the API's [`DedupId::WINDOW`](crate::models::DedupId::WINDOW),
    /// not a setting (tests shorten it).
    #[arg(skip = crate::models::DedupId::WINDOW)]
    pub dedup_window: Duration,
    /// Bytes of request bodies ingest holds at once; a request that does not fit is `503`.
    #[arg(long, env = "TRIGGERS_REQUEST_BYTES_BUDGET", default_value = "67108864", value_parser = at_least(1usize))]
    pub request_bytes_budget: usize,
    /// A request (body included) not answered within this gets `408`: 30 s, shorter in tests.
    #[arg(skip = crate::service::DEFAULT_REQUEST_TIMEOUT)]
    pub request_timeout: Duration,
    /// Where browsers reach ingest (`TRIGGERS_PUBLIC_URL`): the base of the console links that
    /// `POST /api/portal/sessions` answers. `None`: `http://` and the address ingest listens on.
    #[arg(long, env = "TRIGGERS_PUBLIC_URL", value_parser = |text: &str| parse_public_url(text.trim()).map_err(|e| e.to_string()))]
    pub public_url: Option<url::Url>,
    /// The most endpoints one organisation may have.
    #[arg(long, env = "TRIGGERS_MAX_ENDPOINTS_PER_ORG", default_value = "50", value_parser = at_least(1u32))]
    pub max_endpoints_per_org: u32,
}

impl IngestConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        parse(Source::Environment, &[])
    }

    /// A configuration for tests: the given database, port 0, private webhooks allowed, the
    /// declared defaults elsewhere (the environment is not read).
    #[cfg(feature = "testing")]
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        let mut config: Self = test_defaults(database_url);
        config.common.test_settings();
        config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config
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

/// Settings of `triggers-worker`.
#[derive(Clone, Debug, Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub common: CommonConfig,
    /// Admin port: health and metrics.
    #[arg(
        long = "worker-addr",
        env = "TRIGGERS_WORKER_ADDR",
        default_value = "127.0.0.1:9091"
    )]
    pub addr: SocketAddr,
    /// Webhook request timeout.
    #[arg(long = "delivery-timeout-secs", env = "TRIGGERS_DELIVERY_TIMEOUT_SECS", default_value = "10", value_parser = seconds(1))]
    pub delivery_timeout: Duration,
    /// Delays before each retry; attempts in all = 1 + its length.
    #[arg(long, env = "TRIGGERS_RETRY_SCHEDULE", default_value = "5s,30s,2m,10m,45m", value_parser = |text: &str| parse_schedule(text).map_err(|e| format!("{e:#}")))]
    pub retry_schedule: ::std::vec::Vec<Duration>,
    /// Webhook requests in flight.
    #[arg(long = "worker-concurrency", env = "TRIGGERS_WORKER_CONCURRENCY", default_value = "64", value_parser = at_least(1usize))]
    pub concurrency: usize,
    /// In-flight deliveries allowed per organisation in one worker.
    #[arg(long, env = "TRIGGERS_ORG_INFLIGHT_CAP", default_value = "16", value_parser = at_least(1usize))]
    pub org_inflight_cap: usize,
    /// Delivered events are purged after this.
    #[arg(long = "event-retention-days", env = "TRIGGERS_EVENT_RETENTION_DAYS", default_value = "7", value_parser = days)]
    pub event_retention: Duration,
    /// apalis heartbeat; a dead worker's jobs are re-queued after 3 missed beats.
    #[arg(long = "worker-heartbeat-secs", env = "TRIGGERS_WORKER_HEARTBEAT_SECS", default_value = "10", value_parser = seconds(1))]
    pub heartbeat_interval: Duration,
    /// Jobs claimed per fetch.
    #[arg(long = "worker-batch-size", env = "TRIGGERS_WORKER_BATCH_SIZE", default_value = "500", value_parser = at_least(1usize))]
    pub batch_size: usize,
    /// How often the janitor runs.
    #[arg(long = "janitor-interval-secs", env = "TRIGGERS_JANITOR_INTERVAL_SECS", default_value = "60", value_parser = seconds(0))]
    pub janitor_interval: Duration,
    /// Cap on a `Retry-After` the worker honours.
    #[arg(long = "max-retry-after-secs", env = "TRIGGERS_MAX_RETRY_AFTER_SECS", default_value = "3600", value_parser = seconds(0))]
    pub max_retry_after: Duration,
    /// A unique name for this worker process.
    #[arg(skip = unique_worker_name())]
    pub worker_name: String,
    /// On SIGTERM, how long in-flight deliveries may take to finish before they are abandoned
    /// (another worker then re-queues them after the heartbeat timeout); unset, the delivery
    /// timeout and 10 s more ([`WorkerConfig::drain_timeout`]).
    #[arg(long = "worker-drain-secs", env = "TRIGGERS_WORKER_DRAIN_SECS", value_parser = seconds(0))]
    pub drain: Option<Duration>,
    /// Dead-lettered (`failed`) events, with their attempts, are deleted after this long unchanged.
    #[arg(long = "failed-event-retention-days", env = "TRIGGERS_FAILED_EVENT_RETENTION_DAYS", default_value = "30", value_parser = days)]
    pub failed_event_retention: Duration,
    /// Revoked or expired API keys are deleted this long after they stopped working.
    #[arg(long = "dead-key-retention-days", env = "TRIGGERS_DEAD_KEY_RETENTION_DAYS", default_value = "30", value_parser = days)]
    pub dead_key_retention: Duration,
    /// Rate-limit windows older than this are deleted (at least 2 minutes: leases read the last two).
    #[arg(long = "rate-limit-window-retention-secs", env = "TRIGGERS_RATE_LIMIT_WINDOW_RETENTION_SECS", default_value = "3600", value_parser = seconds(120))]
    pub rate_limit_window_retention: Duration,
    /// A pending event without a live job is repaired only once unchanged this long, so the
    /// janitor never races a transaction still committing its job.
    #[arg(long = "stranded-event-grace-secs", env = "TRIGGERS_STRANDED_EVENT_GRACE_SECS", default_value = "300", value_parser = seconds(0))]
    pub stranded_event_grace: Duration,
    /// How often the queue gauges are sampled (by one worker of the fleet at a time).
    #[arg(long = "queue-sample-secs", env = "TRIGGERS_QUEUE_SAMPLE_SECS", default_value = "10", value_parser = seconds(1))]
    pub queue_sample_interval: Duration,
    /// Deliveries a recovery restarts per transaction.
    #[arg(long, env = "TRIGGERS_RECOVERY_BATCH", default_value = "100", value_parser = within(1usize, 10_000))]
    pub recovery_batch: usize,
    /// A worker adds a recovery's next batch only while fewer recovered jobs than this wait in
    /// the queue: recoveries go as fast as deliveries leave, never far ahead of them.
    #[arg(long, env = "TRIGGERS_RECOVERY_BACKLOG", default_value = "1000", value_parser = at_least(1usize))]
    pub recovery_backlog: usize,
    /// Recovered deliveries a worker restarts per second at most: what a recovery may take of
    /// the capacity live traffic shares with it (the database, the CPU).
    #[arg(long, env = "TRIGGERS_RECOVERY_RATE", default_value = "1000", value_parser = within(1u32, 100_000))]
    pub recovery_rate: u32,
    /// An endpoint whose attempts have all failed for this long (with at least 10 failed
    /// attempts) is disabled as `failing`.
    #[arg(long = "endpoint-disable-after-secs", env = "TRIGGERS_ENDPOINT_DISABLE_AFTER_SECS", default_value = "432000", value_parser = seconds(1))]
    pub endpoint_disable_after: Duration,
}

impl WorkerConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        parse(Source::Environment, &[])
    }

    /// On SIGTERM, how long in-flight deliveries may take to finish: `TRIGGERS_WORKER_DRAIN_SECS`,
    /// or the delivery timeout and 10 s more.
    pub fn drain_timeout(&self) -> Duration {
        self.drain
            .unwrap_or(self.delivery_timeout + Duration::from_secs(10))
    }

    /// A configuration for tests: short retries, timeouts and heartbeats, private targets
    /// allowed, port 0, the declared defaults elsewhere (the environment is not read).
    #[cfg(feature = "testing")]
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        let mut config: Self = test_defaults(database_url);
        config.common.test_settings();
        config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.delivery_timeout = Duration::from_secs(2);
        config.retry_schedule = vec![Duration::from_millis(200), Duration::from_millis(400)];
        config.concurrency = 32;
        config.heartbeat_interval = Duration::from_secs(2);
        config.batch_size = 100;
        config.janitor_interval = Duration::from_secs(3600);
        config.max_retry_after = Duration::from_secs(60);
        config.drain = Some(Duration::from_secs(10));
        config
    }
}

/// A process-unique worker name: host, pid and a random suffix.
pub fn unique_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Parse `5s,30s,2m,10m,45m`: durations ([`parse_duration`]) separated by commas; an empty
/// string is no retries.
pub fn parse_schedule(text: &str) -> anyhow::Result<Vec<Duration>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_duration)
        .collect()
}

/// The one duration grammar of Triggers' settings and tools: `humantime`'s (`250ms`, `5s`,
/// `2m`, `1.5h`, `1h 30m`), or a bare whole number of seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Duration::from_secs(text.parse()?));
    }
    humantime::parse_duration(text)
        .map_err(|e| anyhow::anyhow!("`{text}` is not a duration such as 500ms, 5s or 2m: {e}"))
}

/// Where a configuration's values come from.
enum Source {
    /// The process environment, then the declared defaults.
    Environment,
    /// The declared defaults only (test configurations).
    #[cfg(any(test, feature = "testing"))]
    Defaults,
}

/// Variables whose empty value is a value rather than unset.
const EMPTY_IS_A_VALUE: &[&str] = &["TRIGGERS_RETRY_SCHEDULE"];

/// The declarations of `T` as they are written, each argument with its variable.
fn declarations<T: Args>() -> Command {
    let mut command = T::augment_args(Command::new("triggers").no_binary_name(true));
    // Settles what the declarations leave implicit (how arguments print, in errors too).
    command.build();
    command
}

/// The declarations of `T` as a command to parse: the variables read (or not) per `source`.
fn command<T: Args>(source: &Source) -> Command {
    let mut command = T::augment_args(Command::new("triggers").no_binary_name(true)).mut_args(|arg| {
        let Some(name) = arg.get_env().and_then(|n| n.to_str()).map(str::to_owned) else {
            return arg;
        };
        let unset = match source {
            Source::Environment => {
                std::env::var_os(&name).is_some_and(|v| v.to_string_lossy().trim().is_empty())
                    && !EMPTY_IS_A_VALUE.contains(&name.as_str())
            }
            #[cfg(any(test, feature = "testing"))]
            Source::Defaults => true,
        };
        if unset { arg.env(None) } else { arg }
    });
    // Settles what the declarations leave implicit (how arguments print, in errors too).
    command.build();
    command
}

/// Parse `T` from `source` (and `args`, flags given as `--name value`, which only the test
/// configurations use), with errors that name the variable at fault.
fn parse<T: Args + FromArgMatches>(source: Source, args: &[&str]) -> anyhow::Result<T> {
    let command = command::<T>(&source);
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| T::from_arg_matches(&matches));
    parsed.map_err(|e| explain(&declarations::<T>(), &e))
}

/// A clap error in the words of this configuration: the variable's name, its value, the rule.
fn explain(declarations: &Command, error: &clap::Error) -> anyhow::Error {
    let named = |shown: &str| {
        declarations
            .get_arguments()
            .find(|a| a.to_string() == shown)
            .and_then(|a| a.get_env())
            .map_or_else(|| shown.to_owned(), |n| n.to_string_lossy().into_owned())
    };
    let strings = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => Vec::new(),
    };
    let arg = strings(ContextKind::InvalidArg);
    let value = strings(ContextKind::InvalidValue).join(",");
    match error.kind() {
        ErrorKind::MissingRequiredArgument => {
            let names: Vec<String> = arg.iter().map(|a| named(a)).collect();
            anyhow::anyhow!(
                "{} is not set (the README's run command provisions a local Postgres and sets DATABASE_URL)",
                names.join(", ")
            )
        }
        ErrorKind::ValueValidation | ErrorKind::InvalidValue if !arg.is_empty() => {
            let name = named(&arg[0]);
            let reason = match std::error::Error::source(error) {
                Some(source) => source.to_string(),
                None => format!("expected one of {}", strings(ContextKind::ValidValue).join(", ")),
            };
            anyhow::anyhow!("{name} is invalid (`{value}`): {reason}")
        }
        _ => anyhow::anyhow!("{}", error.to_string().trim_end()),
    }
}

/// A test configuration: `T`'s declared defaults and the given database; the environment is not
/// read. The declarations' defaults are valid (a unit test parses them), so this cannot fail.
#[cfg(feature = "testing")]
fn test_defaults<T: Args + FromArgMatches>(database_url: impl Into<String>) -> T {
    let url = database_url.into();
    parse(Source::Defaults, &["--database-url", &url]).expect("the declared defaults are valid")
}

/// Any text, kept secret. (Only a parser that can refuse prints the value, in its error.)
fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(text.into())
}

/// A whole number of at least `min`.
fn at_least<T>(min: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
    T::Err: Display,
{
    move |text| {
        let n = whole::<T>(text)?;
        if n < min {
            return Err(format!("must be at least {min}"));
        }
        Ok(n)
    }
}

/// A whole number from `min` to `max`.
fn within<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
    T::Err: Display,
{
    move |text| {
        let n = whole::<T>(text)?;
        if n < min || n > max {
            return Err(format!("must be from {min} to {max}"));
        }
        Ok(n)
    }
}

fn whole<T: FromStr>(text: &str) -> Result<T, String>
where
    T::Err: Display,
{
    text.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// A whole number of seconds, at least `min`.
fn seconds(min: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let at_least = at_least(min);
    move |text| at_least(text).map(Duration::from_secs)
}

/// A whole number of days.
fn days(text: &str) -> Result<Duration, String> {
    let days: u64 = whole(text)?;
    days.checked_mul(24 * 3600)
        .map(Duration::from_secs)
        .ok_or_else(|| "too many days".to_owned())
}

/// `true`/`false`, also `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

#[cfg(test)]
mod tests;
