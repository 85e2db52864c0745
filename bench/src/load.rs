//! One benchmark run: create the organisations, point their webhooks at the receiver, send the
//! events (closed loop: over C keep-alive connections; open loop: on a fixed schedule with at most
//! C in flight), then (with `--webhook`) wait, bounded, for every accepted event to arrive, while
//! the accepted and delivered counts are sampled every 250 ms.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::args::RunArgs;
use crate::poison::{PoisonOutcome, Poisoner};
use crate::receiver::Receiver;
use crate::recovery::{self, Arrivals, RecoveryOutcome};
use crate::stats::Latency;
use crate::timeline::Timeline;

/// Per-request cap, well above any sane latency; the run's own deadline cuts earlier if needed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accepted and delivered counts are sampled (and the width of a chart's step).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Runs that last longer than this print a progress line on stderr.
const PROGRESS_AFTER: Duration = Duration::from_secs(3);
/// The measured events' type, and the type of an isolation run's backlog for the slow endpoint.
const MEASURED_TYPE: &str = "order.created";
const SLOW_TYPE: &str = "order.slow";
/// Patterns of the measured organisations' endpoints: the matching ones alternate between an
/// exact type and a prefix, the others between patterns that miss it in either way.
const MATCHING_PATTERNS: [&str; 2] = [MEASURED_TYPE, "order.*"];
const MISSING_PATTERNS: [&str; 2] = ["invoice.*", "order.refunded"];

/// What a run measured; `report` renders it.
#[derive(Debug)]
pub struct Outcome {
    pub args: RunArgs,
    pub run_id: String,
    pub sent: u64,
    pub accepted: u64,
    /// Non-202 outcomes: an HTTP status code, `transport_error`, or `cut_at_time_limit`.
    pub rejected: BTreeMap<String, u64>,
    pub send_wall: Duration,
    pub post_latency: Option<Latency>,
    pub webhook: Option<WebhookOutcome>,
    pub hit_time_limit: bool,
    /// Counts sampled every `SAMPLE_EVERY` from the first POST to the end of the run.
    pub samples: Vec<Sample>,
    /// Per `SAMPLE_EVERY` step since the first POST: the end-to-end latencies of the events
    /// that arrived in it.
    pub end_to_end_by_step: Vec<Option<Latency>>,
    /// Open loop: accepted - delivered when the schedule ended.
    pub backlog_at_schedule_end: Option<u64>,
    /// Isolation: the slow organisation's events accepted before the measured ones were sent.
    pub slow_accepted: Option<u64>,
    /// A recovery under load: how it went.
    pub recovery: Option<RecoveryOutcome>,
    /// `--poison`: what the poisoning organisation sent meanwhile and was answered.
    pub poison: Option<PoisonOutcome>,
}

/// The counts at one moment of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Since the first POST.
    pub at: Duration,
    pub sent: u64,
    /// Events.
    pub accepted: u64,
    /// Deliveries: `fanout` per accepted event once all have arrived.
    pub delivered: u64,
    pub fanout: u64,
}

impl Sample {
    /// Deliveries owed: accepted events times the endpoints each matches, less those received.
    pub fn backlog(&self) -> u64 {
        (self.accepted * self.fanout).saturating_sub(self.delivered)
    }
}

#[derive(Debug)]
pub struct WebhookOutcome {
    pub delivered: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub unknown: u64,
    /// From the first POST to the last first-arrival.
    pub delivery_span: Option<Duration>,
    /// From the end of sending to the last first-arrival.
    pub drain_after_send: Option<Duration>,
    /// Deliveries that arrived after the end of sending: the backlog the burst left behind.
    pub backlog_after_send: u64,
    pub end_to_end: Option<Latency>,
}

impl WebhookOutcome {
    /// How fast the backlog left at the end of sending drained: the deliveries that arrived
    /// after the last POST, over the time from it to the last arrival (none below 1,000, too
    /// few to be a rate).
    pub fn drain_after_send_rate(&self) -> Option<f64> {
        let drain = self.drain_after_send?.as_secs_f64();
        (self.backlog_after_send >= 1_000 && drain > 0.0).then(|| self.backlog_after_send as f64 / drain)
    }
}

impl Outcome {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn ingest_throughput(&self) -> f64 {
        per_second(self.accepted, self.send_wall)
    }

    /// Why the run counts as failed, if it does (every reason, joined).
    pub fn failure(&self) -> Option<String> {
        let mut reasons = Vec::new();
        if self.accepted == 0 {
            reasons.push("no event was accepted".to_string());
        } else if self.rejected_total() > self.accepted {
            reasons.push(format!(
                "errors dominate: {} rejected vs {} accepted",
                self.rejected_total(),
                self.accepted
            ));
        }
        if let Some(w) = &self.webhook
            && w.missing > 0
        {
            reasons.push(format!(
                "{} deliveries of accepted events did not arrive in time",
                w.missing
            ));
        }
        if let Some(p) = &self.poison
            && p.server_errors() > 0
        {
            reasons.push(format!(
                "{} poison payloads were answered with a 5xx",
                p.server_errors()
            ));
        }
        if self.sent < self.args.events {
            reasons.push(format!(
                "stopped at the time limit after sending {} of {} events",
                self.sent, self.args.events
            ));
        }
        if reasons.is_empty() {
            None
        } else {
            Some(reasons.join("; "))
        }
    }
}

pub fn per_second(count: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        count as f64 / over.as_secs_f64()
    }
}

pub async fn run(args: RunArgs, admin_token: Option<String>) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + args.duration_limit;
    let run_id = run_id();
    let timeline = Arc::new(Timeline::with_fanout(
        args.events,
        args.matching,
        MEASURED_TYPE,
        run_id.clone(),
    ));
    let client = reqwest::Client::builder()
        // Never via a proxy from the environment, never redirected elsewhere: loopback only.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;

    let recovered = Arc::new(Arrivals::default());
    let receiver = if args.webhook {
        Some(Receiver::start(timeline.clone(), args.slow_delay, recovered.clone()).await?)
    } else {
        None
    };
    let (keys, slow_key, poison_key) = bounded(
        deadline,
        setup_orgs(&client, &args, &run_id, admin_token.as_deref(), receiver.as_ref()),
    )
    .await
    .context("setting up organisations")??;
    let url = format!("{}/api/events", args.base_url);

    // Isolation: the slow organisation's backlog is queued first (tagged with another run id, so
    // the receiver does not count it).
    let slow_accepted = match slow_key {
        Some(key) => {
            let slow = Arc::new(Timeline::with_fanout(
                args.slow_events,
                1,
                SLOW_TYPE,
                format!("{run_id}-slow"),
            ));
            let s = closed_loop(
                &client,
                &url,
                args.slow_events,
                (args.concurrency, 1),
                vec![key],
                slow,
                deadline,
            )
            .await?;
            Some(s.accepted)
        }
        None => None,
    };

    // A recovery under load: its organisation misses N events, then they are recovered while
    // the measured events are sent.
    let recovery = match (args.recover_events, receiver.as_ref()) {
        (Some(n), Some(r)) => {
            let key = bounded(
                deadline,
                create_org(
                    &client,
                    &args,
                    &format!("bench-{run_id}-recover"),
                    admin_token.as_deref(),
                    Some(r.recover_url()),
                ),
            )
            .await
            .context("creating the recovering organisation")??;
            Some(
                bounded(deadline, recovery::start(&client, &args.base_url, &key, n))
                    .await
                    .context("starting the recovery")??,
            )
        }
        _ => None,
    };

    let poisoner = poison_key.map(|key| {
        Poisoner::start(
            &client,
            &url,
            &key,
            args.poison.unwrap_or(1),
            &args.poison_kinds,
            deadline,
        )
    });
    let send_start = Instant::now();
    let sampler = Sampler::start(timeline.clone(), send_start, args.rate.map(|_| args.events));
    let (s, backlog_at_schedule_end) = match args.rate {
        Some(rate) => {
            open_loop(
                &client,
                &url,
                rate,
                args.events,
                args.concurrency,
                Arc::new(keys),
                &timeline,
                deadline,
            )
            .await
        }
        None => (
            closed_loop(
                &client,
                &url,
                args.events,
                (args.concurrency, args.batch_size),
                keys,
                timeline.clone(),
                deadline,
            )
            .await?,
            None,
        ),
    };
    let SenderResult {
        sent,
        accepted,
        rejected,
        mut latencies,
    } = s;
    let send_end = Instant::now();
    let send_wall = send_end - send_start;
    let poison = match poisoner {
        Some(p) => Some(p.stop().await),
        None => None,
    };

    let webhook = match receiver {
        Some(receiver) => {
            let drain = match &args.drain_start {
                Some(cmd) => Some(start_drain(cmd)?),
                None => None,
            };
            let w = wait_for_deliveries(&timeline, accepted, deadline, send_start, send_end, drain).await;
            if let Some(started) = &recovery {
                recovery::finish(started, &recovered, deadline).await;
            }
            receiver.stop().await;
            Some(w)
        }
        None => None,
    };
    let recovery = match recovery {
        Some(started) => Some(
            recovery::outcome(&client, &args.base_url, &started, &recovered)
                .await
                .context("reading the recovery's progress")?,
        ),
        None => None,
    };
    let samples = sampler.stop().await;
    let end_to_end_by_step = timeline
        .end_to_end_by_arrival(send_start, SAMPLE_EVERY)
        .into_iter()
        .map(|mut b| Latency::of(&mut b))
        .collect();
    Ok(Outcome {
        args,
        run_id,
        sent,
        accepted,
        rejected,
        send_wall,
        post_latency: Latency::of(&mut latencies),
        webhook,
        hit_time_limit: Instant::now() >= deadline,
        samples,
        end_to_end_by_step,
        backlog_at_schedule_end,
        slow_accepted,
        recovery,
        poison,
    })
}

/// Closed loop: C tasks share one counter, so the load stays at C requests in flight until N;
/// each request carries `batch` events (more than one: `POST /api/events/batch`).
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    events: u64,
    (concurrency, batch): (usize, usize),
    keys: Vec<String>,
    timeline: Arc<Timeline>,
    deadline: Instant,
) -> anyhow::Result<SenderResult> {
    let next = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, next, keys, timeline) = (client.clone(), next.clone(), keys.clone(), timeline.clone());
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            if batch > 1 {
                batch_sender(
                    client,
                    url,
                    (events, batch as u64),
                    next,
                    keys,
                    timeline,
                    deadline,
                )
                .await
            } else {
                sender(client, url, events, next, keys, timeline, deadline).await
            }
        }));
    }
    let mut out = SenderResult::default();
    for task in tasks {
        out.merge(task.await.context("a sender task panicked")?);
    }
    Ok(out)
}

/// Open loop: event `i` is sent at `start + i / rate` whether or not earlier ones were answered,
/// with at most `max_in_flight` outstanding (an arrival that finds them all busy is counted, not
/// sent). Latency counts from the scheduled arrival, so a stalled server shows as latency rather
/// than as a slower schedule. Also returns the backlog (accepted - delivered) when the schedule
/// ended.
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: u64,
    events: u64,
    max_in_flight: usize,
    keys: Arc<Vec<String>>,
    timeline: &Arc<Timeline>,
    deadline: Instant,
) -> (SenderResult, Option<u64>) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Result<(), String>, Duration)>();
    let mut out = SenderResult::default();
    let start = Instant::now();
    let step = 1.0 / rate as f64;
    for seq in 0..events {
        let due = start + Duration::from_secs_f64(seq as f64 * step);
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        out.sent += 1;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            *out.rejected.entry("not_sent_in_flight_full".into()).or_default() += 1;
            continue;
        };
        let Some(key) = keys.get((seq % keys.len().max(1) as u64) as usize).cloned() else {
            break;
        };
        timeline.started(seq as usize, due);
        let (client, url, tx, timeline) = (client.clone(), url.to_string(), tx.clone(), timeline.clone());
        tokio::spawn(async move {
            let answer = post_event(&client, &url, &key, &event_body(&timeline, seq), deadline).await;
            if answer.is_ok() {
                timeline.accepted(seq as usize);
            }
            let _ = tx.send((answer, due.elapsed()));
            drop(permit);
        });
    }
    let backlog = timeline
        .accepted_deliveries()
        .saturating_sub(timeline.first_receipts.load(Ordering::Relaxed));
    drop(tx);
    while let Some((answer, latency)) = rx.recv().await {
        out.record(answer, latency);
    }
    (out, Some(backlog))
}

/// Samples the timeline's counters every `SAMPLE_EVERY` and, on runs longer than a few seconds,
/// shows them on stderr (one updating line on a terminal, a line every 5 s otherwise).
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(timeline: Arc<Timeline>, from: Instant, planned: Option<u64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let every = if tty { 4 } else { 20 };
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval_at((from + SAMPLE_EVERY).into(), SAMPLE_EVERY);
            let mut shown = false;
            loop {
                tick.tick().await;
                let done = stopped.load(Ordering::Relaxed);
                let s = Sample {
                    at: from.elapsed(),
                    sent: timeline.started_count.load(Ordering::Relaxed),
                    accepted: timeline.accepted_count.load(Ordering::Relaxed),
                    delivered: timeline.first_receipts.load(Ordering::Relaxed),
                    fanout: timeline.fanout as u64,
                };
                samples.push(s);
                if s.at >= PROGRESS_AFTER && (samples.len() % every == 0 || done) {
                    let of = planned.map_or(String::new(), |p| format!(" of {p}"));
                    let line = format!(
                        "triggers-bench: {:>6.1} s  sent {}{of}  accepted {}  delivered {}  backlog {}",
                        s.at.as_secs_f64(),
                        s.sent,
                        s.accepted,
                        s.delivered,
                        s.backlog()
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = if tty {
                        write!(err, "\r{line}\x1b[K")
                    } else {
                        writeln!(err, "{line}")
                    };
                    shown = true;
                }
                if done {
                    break;
                }
            }
            if shown && tty {
                eprintln!();
            }
            samples
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

async fn bounded<F: Future>(deadline: Instant, fut: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout_at(deadline.into(), fut)
        .await
        .context("the duration limit was reached")
}

/// Create K enterprise organisations (their limit, 100,000/min, stays out of the way), point
/// their webhooks at the receiver, and authenticate once with each key so the ingest's key cache
/// is warm: the run measures steady state, not K argon2 verifications. Also the slow
/// organisation of an isolation run and the poisoning one of a `--poison` run (no webhook).
async fn setup_orgs(
    client: &reqwest::Client,
    args: &RunArgs,
    run_id: &str,
    admin_token: Option<&str>,
    receiver: Option<&Receiver>,
) -> anyhow::Result<(Vec<String>, Option<String>, Option<String>)> {
    let mut keys = Vec::with_capacity(args.orgs);
    for org in 0..args.orgs {
        let name = format!("bench-{run_id}-{org}");
        let key = match receiver {
            Some(r) if args.explicit_endpoints() => {
                let key = create_org(client, args, &name, admin_token, None).await?;
                for endpoint in 0..args.endpoints {
                    let patterns = if endpoint < args.matching {
                        MATCHING_PATTERNS
                    } else {
                        MISSING_PATTERNS
                    };
                    let pattern = patterns[endpoint % patterns.len()];
                    create_endpoint(client, args, &key, &r.url_for(org, endpoint), pattern).await?;
                }
                if args.slow_endpoint && org == 0 {
                    create_endpoint(client, args, &key, &r.slow_url(), SLOW_TYPE).await?;
                }
                key
            }
            _ => {
                create_org(
                    client,
                    args,
                    &name,
                    admin_token,
                    receiver.map(|r| r.url_for(org, 0)),
                )
                .await?
            }
        };
        keys.push(key);
    }
    let slow = match receiver {
        // Isolation inside one organisation: its slow endpoint takes the first one's backlog.
        Some(_) if args.slow_endpoint => keys.first().cloned(),
        Some(r) if args.slow_events > 0 => Some(
            create_org(
                client,
                args,
                &format!("bench-{run_id}-slow"),
                admin_token,
                Some(r.slow_url()),
            )
            .await?,
        ),
        _ => None,
    };
    let poison = if args.poison.is_some() {
        Some(create_org(client, args, &format!("bench-{run_id}-poison"), admin_token, None).await?)
    } else {
        None
    };
    Ok((keys, slow, poison))
}

/// `POST /api/endpoints`: one endpoint of the organisation of `key`, subscribed to `pattern`.
async fn create_endpoint(
    client: &reqwest::Client,
    args: &RunArgs,
    key: &str,
    url: &str,
    pattern: &str,
) -> anyhow::Result<()> {
    let resp = client
        .post(format!("{}/api/endpoints", args.base_url))
        .header("X-API-Key", key)
        .json(&json!({"url": url, "event_types": [pattern]}))
        .send()
        .await
        .context("POST /api/endpoints")?;
    let status = resp.status();
    if status != reqwest::StatusCode::CREATED {
        let body = resp.text().await.unwrap_or_default();
        bail!(
            "POST /api/endpoints answered {status}: {body} (the ingest needs \
             TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true, and TRIGGERS_MAX_ENDPOINTS_PER_ORG >= --endpoints)"
        );
    }
    Ok(())
}

async fn create_org(
    client: &reqwest::Client,
    args: &RunArgs,
    name: &str,
    admin_token: Option<&str>,
    webhook_url: Option<String>,
) -> anyhow::Result<String> {
    {
        let mut req = client
            .post(format!("{}/api/keys/generate", args.base_url))
            .json(&json!({"organization_name": name, "tier": "enterprise"}));
        if let Some(token) = admin_token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.context("POST /api/keys/generate")?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            bail!("POST /api/keys/generate answered {status}: {body} (is TRIGGERS_ADMIN_TOKEN needed?)");
        }
        let Some(key) = body.get("api_key").and_then(|k| k.as_str()).map(String::from) else {
            bail!("POST /api/keys/generate answered without api_key: {body}");
        };
        if let Some(webhook_url) = webhook_url {
            let resp = client
                .post(format!("{}/api/webhook/config", args.base_url))
                .header("X-API-Key", &key)
                .json(&json!({"webhook_url": webhook_url}))
                .send()
                .await
                .context("POST /api/webhook/config")?;
            let status = resp.status();
            if status != reqwest::StatusCode::OK {
                let body = resp.text().await.unwrap_or_default();
                bail!(
                    "POST /api/webhook/config answered {status}: {body} \
                     (the ingest needs TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true)"
                );
            }
        }
        let resp = client
            .get(format!("{}/api/keys", args.base_url))
            .header("X-API-Key", &key)
            .send()
            .await
            .context("GET /api/keys")?;
        if !resp.status().is_success() {
            bail!("GET /api/keys with the new key answered {}", resp.status());
        }
        Ok(key)
    }
}

#[derive(Default)]
struct SenderResult {
    sent: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

impl SenderResult {
    fn record(&mut self, answer: Result<(), String>, latency: Duration) {
        match answer {
            Ok(()) => {
                self.latencies.push(latency);
                self.accepted += 1;
            }
            Err(why) => *self.rejected.entry(why).or_default() += 1,
        }
    }

    fn merge(&mut self, other: SenderResult) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }
}

/// One `POST /api/events`: `Ok` on 202, else what it was (a status code, `transport_error`,
/// `cut_at_time_limit`).
async fn post_event(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &serde_json::Value,
    deadline: Instant,
) -> Result<(), String> {
    match post(client, url, key, body, deadline).await? {
        (reqwest::StatusCode::ACCEPTED, _) => Ok(()),
        (status, _) => Err(status.as_u16().to_string()),
    }
}

/// One POST of a JSON body: its status and body, or `transport_error` / `cut_at_time_limit`.
/// The body is always read, so the connection goes back to the pool for keep-alive.
async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &serde_json::Value,
    deadline: Instant,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let request = async {
        let resp = client
            .post(url)
            .header("X-API-Key", key)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout_at(deadline.into(), request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err("transport_error".into()),
        Err(_) => Err("cut_at_time_limit".into()),
    }
}

/// A small, realistic event: an order with a customer and two line items (about 400 bytes).
fn event_body(timeline: &Timeline, seq: u64) -> serde_json::Value {
    let run_id = &timeline.run_id;
    json!({
        "type": timeline.event_type,
        "dedup_id": format!("bench-{run_id}-{seq}"),
        "payload": {
            "bench_run": run_id,
            "seq": seq,
            "order_id": format!("ord_{seq:010}"),
            "amount_cents": 1999 + (seq % 500) * 100,
            "currency": "EUR",
            "customer": {"id": format!("cus_{:06}", seq % 100_000), "email": format!("user{}@example.com", seq % 100_000)},
            "items": [
                {"sku": "SKU-1001", "quantity": 1, "unit_price_cents": 1999},
                {"sku": "SKU-2002", "quantity": 1 + seq % 3, "unit_price_cents": 500}
            ],
            "placed_at": "2026-11-27T04:00:00Z"
        }
    })
}

async fn sender(
    client: reqwest::Client,
    url: String,
    events: u64,
    next: Arc<AtomicU64>,
    keys: Arc<Vec<String>>,
    timeline: Arc<Timeline>,
    deadline: Instant,
) -> SenderResult {
    let mut out = SenderResult::default();
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= events {
            break;
        }
        let Some(key) = keys.get((seq % keys.len().max(1) as u64) as usize) else {
            break;
        };
        let body = event_body(&timeline, seq);
        let started = Instant::now();
        timeline.started(seq as usize, started);
        out.sent += 1;
        let answer = post_event(&client, &url, key, &body, deadline).await;
        if answer.is_ok() {
            timeline.accepted(seq as usize);
        }
        out.record(answer, started.elapsed());
    }
    out
}

/// One `POST /api/events/batch`: each event's result status, or what went wrong with the whole
/// request (a status code, `transport_error`, `cut_at_time_limit`).
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &serde_json::Value,
    deadline: Instant,
) -> Result<Vec<u64>, String> {
    match post(client, url, key, body, deadline).await? {
        (reqwest::StatusCode::OK, bytes) => {
            let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            Ok(answer["results"]
                .as_array()
                .map(|results| {
                    results
                        .iter()
                        .map(|r| r["status"].as_u64().unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default())
        }
        (status, _) => Err(status.as_u16().to_string()),
    }
}

/// A closed-loop sender of batches: takes `batch` sequence numbers at a time and sends their
/// events in one request; each event's latency is its request's.
async fn batch_sender(
    client: reqwest::Client,
    url: String,
    (events, batch): (u64, u64),
    next: Arc<AtomicU64>,
    keys: Arc<Vec<String>>,
    timeline: Arc<Timeline>,
    deadline: Instant,
) -> SenderResult {
    let url = format!("{url}/batch");
    let mut out = SenderResult::default();
    while Instant::now() < deadline {
        let first = next.fetch_add(batch, Ordering::Relaxed);
        if first >= events {
            break;
        }
        let seqs = first..(first + batch).min(events);
        let Some(key) = keys.get(((first / batch) % keys.len().max(1) as u64) as usize) else {
            break;
        };
        let body = json!({
            "events": seqs.clone().map(|seq| event_body(&timeline, seq)).collect::<Vec<_>>(),
        });
        let started = Instant::now();
        for seq in seqs.clone() {
            timeline.started(seq as usize, started);
        }
        out.sent += seqs.end - seqs.start;
        let answer = post_batch(&client, &url, key, &body, deadline).await;
        let latency = started.elapsed();
        for (i, seq) in seqs.enumerate() {
            let result = match &answer {
                Ok(statuses) => match statuses.get(i) {
                    Some(202) => Ok(()),
                    Some(status) => Err(status.to_string()),
                    None => Err("missing_result".to_string()),
                },
                Err(why) => Err(why.clone()),
            };
            if result.is_ok() {
                timeline.accepted(seq as usize);
            }
            out.record(result, latency);
        }
    }
    out
}

async fn wait_for_deliveries(
    timeline: &Timeline,
    accepted: u64,
    deadline: Instant,
    send_start: Instant,
    send_end: Instant,
    drain: Option<Instant>,
) -> WebhookOutcome {
    loop {
        // The cheap counter first; the exact scan only once it could be complete.
        if timeline.first_receipts.load(Ordering::Relaxed) >= accepted * timeline.fanout as u64
            && timeline.deliveries().missing == 0
        {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut d = timeline.deliveries();
    let last = d.last_receipt.map(|at| timeline.epoch + at);
    WebhookOutcome {
        delivered: d.delivered,
        missing: d.missing,
        duplicates: timeline.duplicates.load(Ordering::Relaxed),
        unknown: timeline.unknown.load(Ordering::Relaxed),
        // A drain run counts from its first webhook, so the worker's start-up is left out.
        delivery_span: match drain {
            Some(_) => d
                .first_receipt
                .zip(d.last_receipt)
                .map(|(first, last)| last.saturating_sub(first)),
            None => last.map(|l| l.saturating_duration_since(send_start)),
        },
        drain_after_send: last.map(|l| l.saturating_duration_since(send_end)),
        backlog_after_send: d.arrived_since(send_end.saturating_duration_since(timeline.epoch)),
        end_to_end: Latency::of(&mut d.end_to_end),
    }
}

/// Run the drain command (it starts the worker and returns); when it was run.
fn start_drain(cmd: &str) -> anyhow::Result<Instant> {
    let at = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .context("running the --drain-start command")?;
    anyhow::ensure!(status.success(), "the --drain-start command failed: {status}");
    Ok(at)
}
