//! Command-line parsing and its limits: which host the bench may talk to (loopback only) and how
//! much load it may generate (bounded count, concurrency and time), so it always stops by itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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

pub const USAGE: &str = "\
usage: triggers-bench [--url http://127.0.0.1:8080] [--events N] [--concurrency C] [--orgs K]
                      [--webhook [--endpoints E [--matching M]]] [--drain-start CMD]
                      [--rate R --duration S] [--slow-org N | --slow-endpoint N [--slow-delay 3s]]
                      [--recover N]
                      [--poison C [--poison-payload all]] [--batch-size B] [--chart RUN.svg]
                      [--duration-limit 120s] [--json]
       triggers-bench summarize RUN.json...

Load-tests a Triggers ingest on this machine: creates K enterprise organisations, sends N events
over C keep-alive connections and reports throughput and latency. With --webhook, each
organisation's webhook points at a receiver embedded in the bench (the ingest and worker must run
with TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true) and the bench waits until every accepted event arrived.
TRIGGERS_ADMIN_TOKEN, when set, is sent to POST /api/keys/generate.

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

Limits: loopback addresses only; N <= 1000000, C <= 1024, K <= 1000, R <= 100000/s, slow N <= 100000,
recover N <= 100000, poison C <= 64, E <= 1000, batch B <= 1000, duration limit <= 1h
(the whole run stops at the limit, waiting included).";

/// One run of the load test.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// `scheme://ip:port` of the ingest, without a trailing slash.
    pub base_url: String,
    pub events: u64,
    pub concurrency: usize,
    pub orgs: usize,
    pub webhook: bool,
    /// Endpoints per measured organisation, and how many of them each measured event matches.
    pub endpoints: usize,
    pub matching: usize,
    /// A drain run: the shell command that starts the worker once every event is queued.
    pub drain_start: Option<String>,
    pub duration_limit: Duration,
    pub json: bool,
    /// An open-loop run: events per second (with `events` = rate x duration).
    pub rate: Option<u64>,
    /// An isolation run: events queued first for an organisation whose endpoint is slow.
    pub slow_events: u64,
    pub slow_delay: Duration,
    /// Isolation inside one organisation: the slow endpoint is the first measured organisation's.
    pub slow_endpoint: bool,
    /// A recovery under load: events missed by one more organisation, recovered during the run.
    pub recover_events: u64,
    /// Where to write the SVG chart of the run's timeline.
    pub chart: Option<PathBuf>,
    /// Connections of an organisation sending poison payloads meanwhile (0: none).
    pub poison: usize,
    /// Which poison payloads it sends, in turn.
    pub poison_kinds: Vec<poison::Kind>,
    /// Events per request: 1 sends `POST /api/events`, more `POST /api/events/batch`.
    pub batch_size: usize,
}

impl Default for RunArgs {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            events: 10_000,
            concurrency: 32,
            orgs: 4,
            webhook: false,
            endpoints: 1,
            matching: 1,
            drain_start: None,
            duration_limit: Duration::from_secs(120),
            json: false,
            rate: None,
            slow_events: 0,
            slow_delay: Duration::from_secs(3),
            slow_endpoint: false,
            recover_events: 0,
            chart: None,
            poison: 0,
            poison_kinds: poison::Kind::ALL.to_vec(),
            batch_size: 1,
        }
    }
}

impl RunArgs {
    /// Whether the measured organisations' endpoints are created one by one with
    /// `POST /api/endpoints` rather than as the single endpoint of `/api/webhook/config`.
    pub fn explicit_endpoints(&self) -> bool {
        self.endpoints > 1 || self.matching > 1 || self.slow_endpoint
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(RunArgs),
    Summarize(Vec<PathBuf>),
    Help,
}

/// Parse the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut it = args.into_iter().peekable();
    if it.peek().map(String::as_str) == Some("summarize") {
        it.next();
        let files: Vec<PathBuf> = it.map(PathBuf::from).collect();
        if files.is_empty() {
            return Err("summarize needs at least one JSON file".into());
        }
        return Ok(Command::Summarize(files));
    }
    let mut run = RunArgs::default();
    let mut duration = None;
    let mut matching = None;
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--url" => run.base_url = parse_base_url(&value("--url")?)?,
            "--events" | "-n" => run.events = parse_bounded("--events", &value("--events")?, 1, MAX_EVENTS)?,
            "--concurrency" | "-c" => {
                run.concurrency = parse_bounded(
                    "--concurrency",
                    &value("--concurrency")?,
                    1,
                    MAX_CONCURRENCY as u64,
                )? as usize
            }
            "--orgs" | "-k" => {
                run.orgs = parse_bounded("--orgs", &value("--orgs")?, 1, MAX_ORGS as u64)? as usize
            }
            "--duration-limit" => {
                let d = parse_duration(&value("--duration-limit")?)?;
                if d.is_zero() || d > MAX_DURATION {
                    return Err(format!(
                        "--duration-limit must be between 1ms and {}s",
                        MAX_DURATION.as_secs()
                    ));
                }
                run.duration_limit = d;
            }
            "--webhook" if inline.is_none() => run.webhook = true,
            "--endpoints" => {
                run.endpoints =
                    parse_bounded("--endpoints", &value("--endpoints")?, 1, MAX_ENDPOINTS as u64)? as usize
            }
            "--matching" => {
                matching = Some(
                    parse_bounded("--matching", &value("--matching")?, 1, MAX_ENDPOINTS as u64)? as usize,
                )
            }
            "--drain-start" => run.drain_start = Some(value("--drain-start")?),
            "--json" if inline.is_none() => run.json = true,
            "--rate" => run.rate = Some(parse_bounded("--rate", &value("--rate")?, 1, MAX_RATE)?),
            "--duration" => duration = Some(parse_duration(&value("--duration")?)?),
            "--slow-org" => {
                run.slow_events = parse_bounded("--slow-org", &value("--slow-org")?, 1, MAX_SLOW_EVENTS)?
            }
            "--slow-endpoint" => {
                run.slow_events =
                    parse_bounded("--slow-endpoint", &value("--slow-endpoint")?, 1, MAX_SLOW_EVENTS)?;
                run.slow_endpoint = true;
            }
            "--slow-delay" => {
                let d = parse_duration(&value("--slow-delay")?)?;
                if d > Duration::from_secs(60) {
                    return Err("--slow-delay must be at most 60s".into());
                }
                run.slow_delay = d;
            }
            "--recover" => {
                run.recover_events = parse_bounded("--recover", &value("--recover")?, 1, MAX_RECOVER_EVENTS)?
            }
            "--chart" => run.chart = Some(PathBuf::from(value("--chart")?)),
            "--poison" => {
                run.poison =
                    parse_bounded("--poison", &value("--poison")?, 1, MAX_POISON_CONNECTIONS as u64)? as usize
            }
            "--poison-payload" => {
                let name = value("--poison-payload")?;
                run.poison_kinds = poison::Kind::parse_list(&name).ok_or_else(|| {
                    let names: Vec<&str> = poison::Kind::ALL.iter().map(|k| k.name()).collect();
                    format!("--poison-payload `{name}`: one of all, {}", names.join(", "))
                })?;
            }
            "--batch-size" => {
                run.batch_size =
                    parse_bounded("--batch-size", &value("--batch-size")?, 1, MAX_BATCH_SIZE as u64)? as usize
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if run.drain_start.is_some() && !run.webhook {
        return Err("--drain-start needs --webhook".into());
    }
    if run.slow_events > 0 && !run.webhook {
        return Err("--slow-org and --slow-endpoint need --webhook".into());
    }
    run.matching = matching.unwrap_or(1);
    if run.matching > run.endpoints {
        return Err(format!(
            "--matching {} is more than --endpoints {}",
            run.matching, run.endpoints
        ));
    }
    if run.explicit_endpoints() && !run.webhook {
        return Err("--endpoints, --matching and --slow-endpoint need --webhook".into());
    }
    if run.recover_events > 0 && !run.webhook {
        return Err("--recover needs --webhook".into());
    }
    if run.batch_size > 1 && duration.is_some() {
        return Err("--batch-size goes with a closed-loop run, not --rate".into());
    }
    match (run.rate, duration) {
        (Some(rate), Some(d)) => {
            let events = (rate as f64 * d.as_secs_f64()).round() as u64;
            if events == 0 || events > MAX_EVENTS {
                return Err(format!(
                    "--rate x --duration must be between 1 and {MAX_EVENTS} events, got {events}"
                ));
            }
            run.events = events;
        }
        (None, None) => {}
        _ => return Err("--rate and --duration go together".into()),
    }
    Ok(Command::Run(run))
}

fn parse_bounded(name: &str, raw: &str, min: u64, max: u64) -> Result<u64, String> {
    let v: u64 = raw
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{name}: `{raw}` is not a number"))?;
    if v < min || v > max {
        return Err(format!("{name} must be between {min} and {max}, got {v}"));
    }
    Ok(v)
}

/// `120s`, `2m`, `500ms`, `1h` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration (e.g. 120s, 2m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{raw}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 || secs > MAX_DURATION.as_secs_f64() * 2.0 {
        return Err(format!("`{raw}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
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
        let cmd = parse(args(
            "--url http://127.0.0.1:18080/ --events=2000 --concurrency 8 --orgs 3 --webhook --duration-limit 90s --json",
        ))
        .expect("valid arguments");
        assert_eq!(
            cmd,
            Command::Run(RunArgs {
                base_url: "http://127.0.0.1:18080".into(),
                events: 2000,
                concurrency: 8,
                orgs: 3,
                webhook: true,
                drain_start: None,
                duration_limit: Duration::from_secs(90),
                json: true,
                ..RunArgs::default()
            })
        );
    }

    #[test]
    fn a_drain_run_needs_webhooks_and_keeps_its_command() {
        let Ok(Command::Run(run)) = parse(["--webhook", "--drain-start", "echo go"].map(String::from)) else {
            panic!("valid arguments")
        };
        assert_eq!(run.drain_start.as_deref(), Some("echo go"));
        let err = parse(["--drain-start", "echo go"].map(String::from)).expect_err("needs --webhook");
        assert!(err.contains("--webhook"), "{err}");
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
        assert_eq!((run.recover_events, run.events), (100_000, 20_000));
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
            (4, vec![poison::Kind::LoneSurrogate])
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
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn summarize_takes_files() {
        assert_eq!(
            parse(args("summarize a.json b.json")),
            Ok(Command::Summarize(vec!["a.json".into(), "b.json".into()]))
        );
        assert!(parse(args("summarize")).is_err());
    }
}
