//! Command-line parsing (clap) and its limits: which host the bench may talk to (loopback only)
//! and how much load it may generate (bounded count, concurrency and time), so it always stops by
//! itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::poison;

pub const MAX_EVENTS: u64 = 1_000_000;
pub const MAX_CONCURRENCY: usize = 1024;
pub const MAX_ORGS: usize = 1000;
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
pub const MAX_RATE: u64 = 100_000;
pub const MAX_SLOW_EVENTS: u64 = 100_000;
pub const MAX_RECOVER_EVENTS: u64 = 100_000;
pub const MAX_POISON_CONNECTIONS: usize = 64;
/// The most events of one `POST /api/events/batch` (API.md).
pub const MAX_BATCH_SIZE: usize = 1000;
pub const MAX_ENDPOINTS: usize = 1000;
/// The longest delay of the slow endpoint.
pub const MAX_SLOW_DELAY: Duration = Duration::from_secs(60);

/// What `--help` says after the flags: the modes, the sampling and the limits.
const MODES: &str = "\
With --webhook, each organisation's webhook points at a receiver embedded in the bench (the
ingest and worker must run with TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true) and the bench waits until
every accepted event arrived. TRIGGERS_ADMIN_TOKEN, when set, is sent to POST /api/keys/generate.

--endpoints E --matching M (with --webhook): each organisation gets E endpoints (created with
POST /api/endpoints, the ingest's TRIGGERS_MAX_ENDPOINTS_PER_ORG must allow them), of which M
are subscribed to the measured events' type (alternately by exact type and by `order.*`) and the
others to types that miss it; every event is then owed M deliveries, the bench waits for all of
them, and rates and counts of deliveries are per delivery. Without them: one endpoint, set with
POST /api/webhook/config.

--drain-start CMD (with --webhook): a drain run. The worker is not running while the events are
sent; once all are answered the bench runs `sh -c CMD` (which starts the worker and returns), and
the delivery rate is taken from the first to the last webhook received after that.

--rate R --duration S: an open-loop run. Arrivals follow a fixed schedule of R events/s for S
seconds and do not wait for answers (at most C in flight: an arrival that finds C requests
outstanding is not sent and counts as `not_sent_in_flight_full`), so queueing shows; latencies
count from the scheduled arrival. N is R x S.

--slow-org N (with --webhook): isolation. One more organisation, whose webhook endpoint answers
only after --slow-delay (3s), first gets N events queued; then the measured events are sent for
the other organisations. The slow organisation's events are not waited for nor counted.
--slow-endpoint N: the same inside one organisation: the first measured organisation gets one
more endpoint, slow, subscribed only to `order.slow`, and N events of that type are queued for it
first; the measured events then go to that organisation's other endpoints.

--recover N (with --webhook): a recovery under load. One more organisation's endpoint misses N
events (disabled while they are sent, so they are `skipped`), is enabled again, and
POST /api/endpoints/{id}/recover restarts them; the measured events are sent right after. The
recovered deliveries go to a route of the receiver that only counts them; their rate and the
recovery's progress at the end of the run are reported beside the measured events' latency.

--batch-size B: the measured events are sent B at a time with POST /api/events/batch (closed
loop only); each event's latency is its batch's, and an event counts as accepted when its
result in the answer is 202.

--poison C: one more organisation sends payloads Postgres cannot store (issue 15's five:
deep-objects, deep-arrays, lone-surrogate, huge-exponent, long-number; --poison-payload picks
one, `all` sends each in turn) in a loop from C connections while the measured events are sent;
its answers are counted by status (a 5xx is a failure of the run).

With --webhook, the accepted and delivered counts (and the backlog, accepted - delivered) are
sampled every 250 ms into the JSON's `timeline`; --chart writes an SVG of throughput, backlog
and end-to-end latency over time. Runs longer than 3 s print a progress line on stderr.

`summarize` reads the --json outputs of several runs and prints them with their medians.

Durations: 500ms, 3s, 2m, 1h (humantime's grammar), or a bare number of seconds.

Limits: loopback addresses only; N <= 1000000, C <= 1024, K <= 1000, R <= 100000/s, slow N <= 100000,
recover N <= 100000, poison C <= 64, E <= 1000, batch B <= 1000, duration limit <= 1h
(the whole run stops at the limit, waiting included).";

/// Load-tests a Triggers ingest on this machine: creates K enterprise organisations, sends N
/// events over C keep-alive connections and reports throughput and latency.
#[derive(Debug, Parser)]
#[command(
    name = "triggers-bench",
    after_help = MODES,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Summarize>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Summarize {
    /// Read the --json outputs of several runs and print them with their medians.
    Summarize {
        #[arg(required = true, value_name = "RUN.json")]
        files: Vec<PathBuf>,
    },
}

/// One run of the load test.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct RunArgs {
    /// The ingest: `http://` and a loopback IP (kept as `scheme://ip:port`, no trailing slash).
    #[arg(long = "url", value_name = "URL", default_value = "http://127.0.0.1:8080", value_parser = parse_base_url)]
    pub base_url: String,
    /// Events to send (N).
    #[arg(short = 'n', long, value_name = "N", default_value = "10000", value_parser = bounded::<u64>(1, MAX_EVENTS))]
    pub events: u64,
    /// Keep-alive connections (C).
    #[arg(short = 'c', long, value_name = "C", default_value = "32", value_parser = bounded::<usize>(1, MAX_CONCURRENCY as u64))]
    pub concurrency: usize,
    /// Organisations, each with its own key (K).
    #[arg(short = 'k', long, value_name = "K", default_value = "4", value_parser = bounded::<usize>(1, MAX_ORGS as u64))]
    pub orgs: usize,
    /// Deliver to a receiver embedded in the bench and wait for every accepted event.
    #[arg(long)]
    pub webhook: bool,
    /// Endpoints per measured organisation (E, with --webhook).
    #[arg(long, value_name = "E", default_value = "1", value_parser = bounded::<usize>(1, MAX_ENDPOINTS as u64))]
    pub endpoints: usize,
    /// How many of them each measured event matches (M <= E).
    #[arg(long, value_name = "M", default_value = "1", value_parser = bounded::<usize>(1, MAX_ENDPOINTS as u64))]
    pub matching: usize,
    /// A drain run: the shell command that starts the worker once every event is queued.
    #[arg(long, value_name = "CMD")]
    pub drain_start: Option<String>,
    /// The whole run stops at this limit, waiting included (at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration_up_to("--duration-limit", MAX_DURATION, false))]
    pub duration_limit: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// An open-loop run: events per second (R, with --duration; N becomes R x S).
    #[arg(long, value_name = "R", requires = "duration", value_parser = bounded::<u64>(1, MAX_RATE))]
    pub rate: Option<u64>,
    /// How long an open-loop run sends (S, with --rate).
    #[arg(long, value_name = "S", requires = "rate", value_parser = duration_up_to("--duration", MAX_DURATION * 2, true))]
    pub duration: Option<Duration>,
    /// Isolation: N events queued first for one more organisation whose endpoint is slow.
    #[arg(long, value_name = "N", conflicts_with = "slow_endpoint_events", value_parser = bounded::<u64>(1, MAX_SLOW_EVENTS))]
    pub slow_org: Option<u64>,
    /// Isolation inside one organisation: N events queued first for a slow endpoint of the first
    /// measured organisation.
    #[arg(long = "slow-endpoint", value_name = "N", value_parser = bounded::<u64>(1, MAX_SLOW_EVENTS))]
    pub slow_endpoint_events: Option<u64>,
    /// How long the slow endpoint takes to answer (at most 60s).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = duration_up_to("--slow-delay", MAX_SLOW_DELAY, true))]
    pub slow_delay: Duration,
    /// Events of an isolation run's slow organisation or endpoint (from --slow-org or
    /// --slow-endpoint; 0: none).
    #[arg(skip)]
    pub slow_events: u64,
    /// Whether the slow endpoint is the first measured organisation's (--slow-endpoint).
    #[arg(skip)]
    pub slow_endpoint: bool,
    /// A recovery under load: N events missed by one more organisation, recovered during the run.
    #[arg(long = "recover", value_name = "N", value_parser = bounded::<u64>(1, MAX_RECOVER_EVENTS))]
    pub recover_events: Option<u64>,
    /// Where to write the SVG chart of the run's timeline.
    #[arg(long, value_name = "RUN.svg")]
    pub chart: Option<PathBuf>,
    /// Connections of one more organisation sending poison payloads meanwhile (C).
    #[arg(long, value_name = "C", value_parser = bounded::<usize>(1, MAX_POISON_CONNECTIONS as u64))]
    pub poison: Option<usize>,
    /// Which poison payloads it sends, in turn: `all` or one kind.
    #[arg(long = "poison-payload", value_name = "KIND", default_value = "all", value_parser = poison_kinds)]
    pub poison_kinds: ::std::vec::Vec<poison::Kind>,
    /// Events per request: 1 sends `POST /api/events`, more `POST /api/events/batch` (B).
    #[arg(long, value_name = "B", default_value = "1", value_parser = bounded::<usize>(1, MAX_BATCH_SIZE as u64))]
    pub batch_size: usize,
}

impl Default for RunArgs {
    /// The declared defaults.
    fn default() -> Self {
        let Ok(Command::Run(run)) = parse(std::iter::empty()) else {
            unreachable!("no arguments are valid arguments")
        };
        *run
    }
}

impl RunArgs {
    /// Whether the measured organisations' endpoints are created one by one with
    /// `POST /api/endpoints` rather than as the single endpoint of `/api/webhook/config`.
    pub fn explicit_endpoints(&self) -> bool {
        self.endpoints > 1 || self.matching > 1 || self.slow_endpoint
    }

    /// The rules between flags, and what follows from them.
    fn finish(mut self) -> Result<Self, String> {
        (self.slow_events, self.slow_endpoint) = match (self.slow_org, self.slow_endpoint_events) {
            (_, Some(n)) => (n, true),
            (Some(n), None) => (n, false),
            (None, None) => (0, false),
        };
        if self.drain_start.is_some() && !self.webhook {
            return Err("--drain-start needs --webhook".into());
        }
        if self.slow_events > 0 && !self.webhook {
            return Err("--slow-org and --slow-endpoint need --webhook".into());
        }
        if self.matching > self.endpoints {
            return Err(format!(
                "--matching {} is more than --endpoints {}",
                self.matching, self.endpoints
            ));
        }
        if self.explicit_endpoints() && !self.webhook {
            return Err("--endpoints, --matching and --slow-endpoint need --webhook".into());
        }
        if self.recover_events.is_some() && !self.webhook {
            return Err("--recover needs --webhook".into());
        }
        if self.batch_size > 1 && self.duration.is_some() {
            return Err("--batch-size goes with a closed-loop run, not --rate".into());
        }
        if let (Some(rate), Some(d)) = (self.rate, self.duration) {
            let events = (rate as f64 * d.as_secs_f64()).round() as u64;
            if events == 0 || events > MAX_EVENTS {
                return Err(format!(
                    "--rate x --duration must be between 1 and {MAX_EVENTS} events, got {events}"
                ));
            }
            self.events = events;
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<RunArgs>),
    Summarize(Vec<PathBuf>),
}

/// Parse the arguments after the program name. `Err` is clap's error (also for `--help`):
/// `exit()` prints it where it belongs and ends the process with its code.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, clap::Error> {
    use clap::CommandFactory as _;
    let cli = Cli::try_parse_from(std::iter::once("triggers-bench".to_owned()).chain(args))?;
    match cli.command {
        Some(Summarize::Summarize { files }) => Ok(Command::Summarize(files)),
        None => cli
            .run
            .finish()
            .map(|run| Command::Run(Box::new(run)))
            .map_err(|e| Cli::command().error(clap::error::ErrorKind::ArgumentConflict, e)),
    }
}

/// A whole number from `min` to `max` (`_` may group digits: `100_000`).
fn bounded<T>(min: u64, max: u64) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64>,
{
    move |raw| {
        let v: u64 = raw
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("`{raw}` is not a number"))?;
        if v < min || v > max {
            return Err(format!("must be between {min} and {max}, got {v}"));
        }
        T::try_from(v).map_err(|_| format!("`{raw}` is too large"))
    }
}

/// A duration ([`parse_duration`]) of at most `max`, zero allowed or not.
fn duration_up_to(
    flag: &'static str,
    max: Duration,
    zero: bool,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |raw| {
        let d = parse_duration(raw)?;
        if (d.is_zero() && !zero) || d > max {
            let least = if zero { "0s" } else { "1ms" };
            return Err(format!("{flag} must be between {least} and {}s", max.as_secs()));
        }
        Ok(d)
    }
}

/// Triggers' one duration grammar: `humantime`'s (`500ms`, `3s`, `2m`, `1h`, `1.5s`), or a bare
/// number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    triggers_shared::config::parse_duration(raw).map_err(|e| e.to_string())
}

fn poison_kinds(name: &str) -> Result<Vec<poison::Kind>, String> {
    poison::Kind::parse_list(name).ok_or_else(|| {
        let names: Vec<&str> = poison::Kind::ALL.iter().map(|k| k.name()).collect();
        format!("one of all, {}", names.join(", "))
    })
}

/// The bench only ever talks to this machine: an `http` URL whose host is a loopback IP literal
/// (no host names, which could resolve anywhere). Returns `http://ip:port`.
pub fn parse_base_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("--url `{raw}`: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "--url `{raw}`: only http:// to a loopback address is allowed"
        ));
    }
    let ip: IpAddr = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.into(),
        Some(url::Host::Ipv6(ip)) => ip.into(),
        _ => {
            return Err(format!(
                "--url `{raw}`: the host must be a loopback IP such as 127.0.0.1"
            ));
        }
    };
    if !ip.is_loopback() {
        return Err(format!(
            "--url `{raw}`: refusing to load-test {ip}; only loopback addresses are allowed"
        ));
    }
    if !(url.path() == "/" || url.path().is_empty()) || url.query().is_some() || !url.username().is_empty() {
        return Err(format!("--url `{raw}`: give only scheme, host and port"));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn all_flags_are_parsed_in_both_spellings() {
        let Ok(cmd) = parse(args(
            "--url http://127.0.0.1:18080/ --events=2000 --concurrency 8 --orgs 3 --webhook --duration-limit 90s --json",
        )) else {
            panic!("valid arguments")
        };
        assert_eq!(
            cmd,
            Command::Run(Box::new(RunArgs {
                base_url: "http://127.0.0.1:18080".into(),
                events: 2000,
                concurrency: 8,
                orgs: 3,
                webhook: true,
                drain_start: None,
                duration_limit: Duration::from_secs(90),
                json: true,
                ..RunArgs::default()
            }))
        );
    }

    #[test]
    fn a_drain_run_needs_webhooks_and_keeps_its_command() {
        let Ok(Command::Run(run)) = parse(["--webhook", "--drain-start", "echo go"].map(String::from)) else {
            panic!("valid arguments")
        };
        assert_eq!(run.drain_start.as_deref(), Some("echo go"));
        let Err(err) = parse(["--drain-start", "echo go"].map(String::from)) else {
            panic!("needs --webhook")
        };
        assert!(err.to_string().contains("--webhook"), "{err}");
    }

    #[test]
    fn an_open_loop_run_takes_rate_and_duration_together_and_sets_the_count() {
        let Ok(Command::Run(run)) = parse(args("--rate 2500 --duration 60s")) else {
            panic!("valid arguments")
        };
        assert_eq!((run.rate, run.events), (Some(2500), 150_000));
        assert!(parse(args("--rate 2500")).is_err());
        assert!(parse(args("--duration 60s")).is_err());
        assert!(parse(args("--rate 100000 --duration 11s")).is_err());
        assert!(parse(args("--rate 0 --duration 1s")).is_err());
    }

    #[test]
    fn a_recovery_run_needs_webhooks_and_at_most_100000_events() {
        let Ok(Command::Run(run)) = parse(args("--webhook --recover 100000 --rate 500 --duration 40s"))
        else {
            panic!("valid arguments")
        };
        assert_eq!((run.recover_events, run.events), (Some(100_000), 20_000));
        assert!(parse(args("--recover 10")).is_err());
        assert!(parse(args("--webhook --recover 100001")).is_err());
        assert!(parse(args("--webhook --recover 0")).is_err());
    }

    #[test]
    fn an_isolation_run_needs_webhooks_and_a_bounded_delay() {
        let Ok(Command::Run(run)) = parse(args("--webhook --slow-org 2000 --slow-delay 3s --chart x.svg"))
        else {
            panic!("valid arguments")
        };
        assert_eq!((run.slow_events, run.slow_delay), (2000, Duration::from_secs(3)));
        assert_eq!(run.chart, Some(PathBuf::from("x.svg")));
        assert!(parse(args("--slow-org 2000")).is_err());
        assert!(parse(args("--webhook --slow-org 10 --slow-delay 2m")).is_err());
    }

    #[test]
    fn endpoints_and_matching_need_webhooks_and_matching_at_most_endpoints() {
        let Ok(Command::Run(run)) = parse(args("--webhook --endpoints 50 --matching 1")) else {
            panic!("valid arguments")
        };
        assert_eq!(
            (run.endpoints, run.matching, run.explicit_endpoints()),
            (50, 1, true)
        );
        let Ok(Command::Run(run)) = parse(args("--webhook")) else {
            panic!("valid arguments")
        };
        assert_eq!(
            (run.endpoints, run.matching, run.explicit_endpoints()),
            (1, 1, false)
        );
        assert!(parse(args("--webhook --endpoints 4 --matching 5")).is_err());
        assert!(
            parse(args("--webhook --matching 2")).is_err(),
            "one endpoint cannot match twice"
        );
        assert!(parse(args("--endpoints 4")).is_err());
        assert!(parse(args("--webhook --endpoints 1001")).is_err());
        let Ok(Command::Run(run)) = parse(args("--webhook --slow-endpoint 2000")) else {
            panic!("valid arguments")
        };
        assert_eq!(
            (run.slow_events, run.slow_endpoint, run.explicit_endpoints()),
            (2000, true, true)
        );
        assert!(parse(args("--slow-endpoint 10")).is_err());
    }

    #[test]
    fn a_poisoned_run_takes_bounded_connections_and_a_known_payload() {
        let Ok(Command::Run(run)) = parse(args("--poison 4 --poison-payload lone-surrogate")) else {
            panic!("valid arguments")
        };
        assert_eq!(
            (run.poison, run.poison_kinds),
            (Some(4), vec![poison::Kind::LoneSurrogate])
        );
        let Ok(Command::Run(run)) = parse(args("--poison 2")) else {
            panic!("valid arguments")
        };
        assert_eq!(run.poison_kinds.len(), 5, "all five in turn by default");
        assert!(parse(args("--poison 65")).is_err());
        assert!(parse(args("--poison 1 --poison-payload ricin")).is_err());
    }

    #[test]
    fn a_batched_run_takes_1_to_1000_events_per_request_in_a_closed_loop() {
        let Ok(Command::Run(run)) = parse(args("--batch-size 100 -c 16")) else {
            panic!("valid arguments")
        };
        assert_eq!((run.batch_size, run.concurrency), (100, 16));
        assert_eq!(RunArgs::default().batch_size, 1);
        assert!(parse(args("--batch-size 0")).is_err());
        assert!(parse(args("--batch-size 1001")).is_err());
        assert!(parse(args("--batch-size 10 --rate 100 --duration 1s")).is_err());
    }

    #[test]
    fn non_loopback_hosts_and_names_are_refused() {
        for url in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "http://localhost:8080",
            "https://127.0.0.1",
        ] {
            assert!(parse_base_url(url).is_err(), "{url} must be refused");
        }
        assert_eq!(
            parse_base_url("http://[::1]:9000").as_deref(),
            Ok("http://[::1]:9000")
        );
        assert_eq!(
            parse_base_url("http://127.0.0.1").as_deref(),
            Ok("http://127.0.0.1:80")
        );
    }

    #[test]
    fn counts_and_durations_are_bounded() {
        assert!(parse(args("--events 0")).is_err());
        assert!(parse(args("--events 1000001")).is_err());
        assert!(parse(args("--concurrency 5000")).is_err());
        assert!(parse(args("--duration-limit 2h")).is_err());
        assert!(parse(args("--bogus")).is_err());
        assert!(parse(args("--events")).is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn summarize_takes_files() {
        let Ok(cmd) = parse(args("summarize a.json b.json")) else {
            panic!("valid arguments")
        };
        assert_eq!(cmd, Command::Summarize(vec!["a.json".into(), "b.json".into()]));
        assert!(parse(args("summarize")).is_err());
        assert!(parse(args("--events 10 summarize a.json")).is_err());
    }

    #[test]
    fn help_names_every_flag_its_limits_and_the_modes() {
        use clap::CommandFactory as _;
        let Err(help) = parse(args("--help")) else {
            panic!("--help is not a run")
        };
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = Cli::command().render_long_help().to_string();
        for flag in [
            "--url",
            "--events",
            "--concurrency",
            "--orgs",
            "--webhook",
            "--endpoints",
            "--matching",
            "--drain-start",
            "--duration-limit",
            "--json",
            "--rate",
            "--duration",
            "--slow-org",
            "--slow-endpoint",
            "--slow-delay",
            "--recover",
            "--chart",
            "--poison",
            "--poison-payload",
            "--batch-size",
            "summarize",
            "Limits: loopback addresses only",
            "not_sent_in_flight_full",
        ] {
            assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
        }
        assert!(parse(args("--webhook=true")).is_err(), "a switch takes no value");
        assert!(parse(args("--events 1_000")).is_ok(), "digits may be grouped");
        assert_eq!(RunArgs::default().duration_limit, Duration::from_secs(120));
    }
}
