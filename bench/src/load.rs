//! One benchmark run: create the organisations, point their webhooks at the receiver, send the
//! events over a bounded number of keep-alive connections, then (with `--webhook`) wait, bounded,
//! for every accepted event to arrive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;

use crate::args::RunArgs;
use crate::receiver::Receiver;
use crate::stats::Latency;
use crate::timeline::Timeline;

/// Per-request cap, well above any sane latency; the run's own deadline cuts earlier if needed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub end_to_end: Option<Latency>,
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
                "{} accepted events were not delivered in time",
                w.missing
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
    let timeline = Arc::new(Timeline::new(args.events, run_id.clone()));
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

    let receiver = if args.webhook {
        Some(Receiver::start(timeline.clone()).await?)
    } else {
        None
    };
    let keys = bounded(
        deadline,
        setup_orgs(&client, &args, &run_id, admin_token.as_deref(), receiver.as_ref()),
    )
    .await
    .context("setting up organisations")??;

    // Send: C tasks share one counter, so the load stays at C requests in flight until N.
    let next = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys);
    let send_start = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (client, next, keys, timeline) = (client.clone(), next.clone(), keys.clone(), timeline.clone());
        let url = format!("{}/api/events", args.base_url);
        let events = args.events;
        tasks.push(tokio::spawn(async move {
            sender(client, url, events, next, keys, timeline, deadline).await
        }));
    }
    let mut sent = 0;
    let mut accepted = 0;
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(usize::try_from(args.events).unwrap_or(0));
    for task in tasks {
        let s = task.await.context("a sender task panicked")?;
        sent += s.sent;
        accepted += s.accepted;
        for (k, v) in s.rejected {
            *rejected.entry(k).or_default() += v;
        }
        latencies.extend(s.latencies);
    }
    let send_end = Instant::now();
    let send_wall = send_end - send_start;

    let webhook = match receiver {
        Some(receiver) => {
            let drain = match &args.drain_start {
                Some(cmd) => Some(start_drain(cmd)?),
                None => None,
            };
            let w = wait_for_deliveries(&timeline, accepted, deadline, send_start, send_end, drain).await;
            receiver.stop().await;
            Some(w)
        }
        None => None,
    };
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
    })
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
/// is warm: the run measures steady state, not K argon2 verifications.
async fn setup_orgs(
    client: &reqwest::Client,
    args: &RunArgs,
    run_id: &str,
    admin_token: Option<&str>,
    receiver: Option<&Receiver>,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::with_capacity(args.orgs);
    for org in 0..args.orgs {
        let mut req = client
            .post(format!("{}/api/keys/generate", args.base_url))
            .json(&json!({"organization_name": format!("bench-{run_id}-{org}"), "tier": "enterprise"}));
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
        if let Some(receiver) = receiver {
            let resp = client
                .post(format!("{}/api/webhook/config", args.base_url))
                .header("X-API-Key", &key)
                .json(&json!({"webhook_url": receiver.url_for(org)}))
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
        keys.push(key);
    }
    Ok(keys)
}

#[derive(Default)]
struct SenderResult {
    sent: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

/// A small, realistic event: an order with a customer and two line items (about 400 bytes).
fn event_body(run_id: &str, seq: u64) -> serde_json::Value {
    json!({
        "type": "order.created",
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
        let body = event_body(&timeline.run_id, seq);
        let started = Instant::now();
        timeline.started(seq as usize, started);
        out.sent += 1;
        let request = async {
            let resp = client
                .post(&url)
                .header("X-API-Key", key)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            // Read the body so the connection goes back to the pool for keep-alive.
            let _ = resp.bytes().await;
            Ok::<_, reqwest::Error>(status)
        };
        match tokio::time::timeout_at(deadline.into(), request).await {
            Ok(Ok(status)) if status == reqwest::StatusCode::ACCEPTED => {
                out.latencies.push(started.elapsed());
                timeline.accepted(seq as usize);
                out.accepted += 1;
            }
            Ok(Ok(status)) => *out.rejected.entry(status.as_u16().to_string()).or_default() += 1,
            Ok(Err(_)) => *out.rejected.entry("transport_error".into()).or_default() += 1,
            Err(_) => *out.rejected.entry("cut_at_time_limit".into()).or_default() += 1,
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
        if timeline.first_receipts.load(Ordering::Relaxed) >= accepted && timeline.deliveries().missing == 0 {
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
