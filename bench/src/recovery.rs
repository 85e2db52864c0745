//! `--recover N`: one more organisation whose endpoint missed N events, recovered while the
//! measured load runs, to show what a large recovery costs the other organisations' live
//! deliveries (API.md: a recovery must not starve live traffic).
//!
//! Before the measured run: the organisation's endpoint (the embedded receiver's `/recover`,
//! which answers at once and only counts) is disabled, N events are sent to it in batches of
//! 1,000 (`POST /api/events/batch`: N `skipped` deliveries, no job), the endpoint is enabled
//! again and `POST /api/endpoints/{id}/recover` is called; the measured events follow at once.
//! After it: the receiver stays up until every recovered delivery has arrived (or the run's
//! deadline), so that no recovery outlives its run and retries against a closed port during the
//! next one; then the recovery's progress and how fast its deliveries arrived.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Events per `POST /api/events/batch` (the API's maximum).
const BATCH: u64 = 1000;

/// What the receiver's `/recover` route saw.
#[derive(Default)]
pub struct Arrivals {
    count: AtomicU64,
    span: Mutex<Option<(Instant, Instant)>>,
}

impl Arrivals {
    pub fn record(&self, at: Instant) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut span) = self.span.lock() {
            *span = Some(span.map_or((at, at), |(first, _)| (first, at)));
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn span(&self) -> Option<(Instant, Instant)> {
        self.span.lock().ok().and_then(|s| *s)
    }
}

/// A recovery under way.
pub struct Started {
    key: String,
    endpoint_id: String,
    recovery_id: String,
    /// Deliveries it restarts (`count` of the `202`).
    pub count: u64,
    /// When the `202` came.
    pub at: Instant,
}

/// Wait until every delivery `started` restarts has arrived, or `deadline`.
pub async fn finish(started: &Started, arrivals: &Arrivals, deadline: Instant) {
    while arrivals.count() < started.count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How the recovery went, read once the measured run is over.
#[derive(Debug, Clone)]
pub struct RecoveryOutcome {
    pub count: u64,
    /// Of the recovery, once the measured run ended.
    pub enqueued: u64,
    pub done: bool,
    /// Recovered deliveries the receiver got by then.
    pub received: u64,
    /// Their arrival rate (first to last).
    pub rate_eps: Option<f64>,
    /// From the `202` to the last recovered arrival.
    pub elapsed: Option<Duration>,
}

async fn call(req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let resp = req.send().await.with_context(|| what.to_string())?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what} answered {status}: {body}");
    }
    Ok(body)
}

/// Give the organisation of `key` (whose webhook points at the receiver's `/recover`) `events`
/// skipped deliveries, then start their recovery.
pub async fn start(
    client: &reqwest::Client,
    base_url: &str,
    key: &str,
    events: u64,
) -> anyhow::Result<Started> {
    let api = |path: &str| format!("{base_url}{path}");
    let endpoints = call(
        client.get(api("/api/endpoints")).header("X-API-Key", key),
        "GET /api/endpoints",
    )
    .await?;
    let Some(endpoint_id) = endpoints["endpoints"][0]["id"].as_str().map(String::from) else {
        bail!("the recovering organisation has no endpoint: {endpoints}");
    };
    let enabled = |on: bool| {
        call(
            client
                .patch(api(&format!("/api/endpoints/{endpoint_id}")))
                .header("X-API-Key", key)
                .json(&json!({"enabled": on})),
            "PATCH /api/endpoints/{id}",
        )
    };
    enabled(false).await?;
    let mut sent = 0;
    while sent < events {
        let n = BATCH.min(events - sent);
        let batch: Vec<Value> = (0..n)
            .map(|i| json!({"type": "bench.missed", "payload": {"seq": sent + i}}))
            .collect();
        let answer = call(
            client
                .post(api("/api/events/batch"))
                .header("X-API-Key", key)
                .json(&json!({"events": batch})),
            "POST /api/events/batch",
        )
        .await?;
        if answer["accepted"].as_u64() != Some(n) {
            bail!(
                "a batch of missed events was not accepted whole: {}",
                answer["accepted"]
            );
        }
        sent += n;
    }
    enabled(true).await?;
    let started = call(
        client
            .post(api(&format!("/api/endpoints/{endpoint_id}/recover")))
            .header("X-API-Key", key)
            .json(&json!({"since": "2000-01-01T00:00:00Z"})),
        "POST /api/endpoints/{id}/recover",
    )
    .await?;
    let (Some(recovery_id), Some(count)) = (started["recovery_id"].as_str(), started["count"].as_u64())
    else {
        bail!("POST /api/endpoints/{{id}}/recover answered {started}");
    };
    if count != events {
        bail!("the recovery counts {count} deliveries, not the {events} missed");
    }
    Ok(Started {
        key: key.to_string(),
        endpoint_id,
        recovery_id: recovery_id.to_string(),
        count,
        at: Instant::now(),
    })
}

/// The recovery's progress now, with what the receiver saw of it.
pub async fn outcome(
    client: &reqwest::Client,
    base_url: &str,
    started: &Started,
    arrivals: &Arrivals,
) -> anyhow::Result<RecoveryOutcome> {
    let progress = call(
        client
            .get(format!(
                "{base_url}/api/endpoints/{}/recoveries/{}",
                started.endpoint_id, started.recovery_id
            ))
            .header("X-API-Key", &started.key),
        "GET /api/endpoints/{id}/recoveries/{recovery_id}",
    )
    .await?;
    let received = arrivals.count();
    let span = arrivals.span();
    Ok(RecoveryOutcome {
        count: started.count,
        enqueued: progress["enqueued"].as_u64().unwrap_or(0),
        done: progress["status"] == "done",
        received,
        rate_eps: span.and_then(|(first, last)| {
            let secs = (last - first).as_secs_f64();
            (secs > 0.0).then(|| received as f64 / secs)
        }),
        elapsed: span.map(|(_, last)| last.saturating_duration_since(started.at)),
    })
}
