//! Send one event to Triggers, retrying safely; or, with `--batch`, a stream of them in batches.
//!
//!     TRIGGERS_URL=http://127.0.0.1:8080 TRIGGERS_API_KEY=trg_live_... \
//!       cargo run -p triggers-examples --bin example-sender -- order.created '{"order": 42}'
//!
//!     ... example-sender -- --batch [--max 100] [--linger-ms 1000] < events.jsonl
//!
//! In batching mode each stdin line is one event (`{"type", "payload", "dedup_id"?}`); events
//! are sent with `POST /api/events/batch` once `--max` are queued or `--linger-ms` after the
//! first of them was, whichever comes first (and at the end of input). The retry rules are the
//! same (see `batch.rs`), applied to the whole request and then to each event's own result. It
//! prints one line per event, in input order: its stored id, or `-` when it was refused (the
//! reason goes to stderr, and the exit status is then 1).
//!
//! The dedup id is chosen once, before the first try, and sent with every retry: if a try was
//! stored but its answer was lost, the retry gets `409 duplicate_event` naming the stored event
//! instead of creating a second one. `429` and `503` are retried after `Retry-After` seconds;
//! connection errors and other 5xx after an exponential backoff with jitter. Other 4xx are the
//! caller's mistake and are not retried. Prints the stored event's id.

#[path = "sender/batch.rs"]
mod batch;

use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use serde_json::{Value, json};

pub(crate) const MAX_TRIES: u32 = 6;
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Exponential backoff with full jitter: a random wait up to 0.5 s, 1 s, 2 s, ... (capped).
pub(crate) fn backoff(try_number: u32) -> Duration {
    let ceiling = Duration::from_millis(500)
        .saturating_mul(1 << try_number.min(7))
        .min(MAX_WAIT);
    ceiling.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// The server's `Retry-After` (seconds) when present, else a backoff.
pub(crate) fn wait_before_retry(response: &reqwest::Response, try_number: u32) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_WAIT))
        .unwrap_or_else(|| backoff(try_number))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("TRIGGERS_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("TRIGGERS_API_KEY").context("set TRIGGERS_API_KEY")?;
    if std::env::args().nth(1).as_deref() == Some("--batch") {
        let options = batch::Options::parse(std::env::args().skip(2))?;
        return batch::run(&base, &key, options).await;
    }
    let mut args = std::env::args().skip(1);
    let event_type = args
        .next()
        .context("usage: example-sender TYPE PAYLOAD_JSON [DEDUP_ID]")?;
    let payload: Value = serde_json::from_str(&args.next().unwrap_or_else(|| "{}".into()))?;
    let dedup_id = args.next().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let body = json!({"type": event_type, "payload": payload, "dedup_id": dedup_id});
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    for try_number in 1..=MAX_TRIES {
        let sent = client
            .post(format!("{base}/api/events"))
            .header("X-API-Key", &key)
            .json(&body)
            .send()
            .await;
        let wait = match sent {
            Err(e) => {
                eprintln!("try {try_number}: {e}");
                backoff(try_number)
            }
            Ok(response) => {
                let status = response.status().as_u16();
                match status {
                    202 => {
                        let stored: Value = response.json().await?;
                        println!("{}", stored["id"].as_str().unwrap_or_default());
                        return Ok(());
                    }
                    // An earlier try was stored: that event is ours.
                    409 => {
                        let answer: Value = response.json().await?;
                        println!("{}", answer["event_id"].as_str().unwrap_or_default());
                        return Ok(());
                    }
                    429 | 503 => wait_before_retry(&response, try_number),
                    500..=599 => backoff(try_number),
                    _ => bail!("{status}: {}", response.text().await.unwrap_or_default()),
                }
            }
        };
        eprintln!("try {try_number} failed; retrying in {wait:?} with dedup_id {dedup_id}");
        tokio::time::sleep(wait).await;
    }
    bail!("gave up after {MAX_TRIES} tries (dedup_id {dedup_id})")
}
