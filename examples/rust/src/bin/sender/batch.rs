//! The sender's batching mode: events read from stdin (one JSON object a line) are queued and
//! sent with `POST /api/events/batch`, flushed by count (`--max`) or by time (`--linger-ms`
//! after the first queued event), whichever comes first.
//!
//! Retries follow the single sender's rules. Each event gets its `dedup_id` when it is queued
//! (unless the line has one), so any retry is safe. For the whole request: `429`/`503` wait
//! `Retry-After`, connection errors and other 5xx back off with jitter, other 4xx stop the run.
//! In a `200`, each event's result: `202` is stored; `409` means an earlier try stored it (its
//! `event_id` is ours); a 5xx (the database went away mid-batch) is sent again in the next try,
//! alone with the others like it; `413`/`422` are the caller's mistake and are not retried.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};

use crate::{MAX_TRIES, backoff, wait_before_retry};

/// The most events one batch may hold (API.md).
const MAX_BATCH: usize = 1000;

/// When to flush.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    max: usize,
    linger: Duration,
}

impl Options {
    /// `[--max N] [--linger-ms MS]`.
    pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = Self {
            max: 100,
            linger: Duration::from_millis(1000),
        };
        while let Some(flag) = args.next() {
            let value: u64 = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} needs a number"))?;
            match flag.as_str() {
                "--max" if (1..=MAX_BATCH as u64).contains(&value) => options.max = value as usize,
                "--max" => bail!("--max must be 1 to {MAX_BATCH}"),
                "--linger-ms" => options.linger = Duration::from_millis(value),
                other => {
                    bail!("unknown option {other}: usage: example-sender --batch [--max N] [--linger-ms MS]")
                }
            }
        }
        Ok(options)
    }
}

/// Read stdin to its end, sending batches as they fill or linger; print each event's id.
pub(crate) async fn run(base: &str, key: &str, options: Options) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut lines = stdin_lines();
    let mut queued: Vec<Value> = Vec::with_capacity(options.max);
    let mut due: Option<Instant> = None;
    let mut refused = 0usize;
    let mut open = true;
    while open || !queued.is_empty() {
        let flush = tokio::select! {
            line = lines.recv(), if open => match line {
                Some(line) => {
                    if !line.trim().is_empty() {
                        queued.push(event_from(&line)?);
                        due.get_or_insert_with(|| Instant::now() + options.linger);
                    }
                    queued.len() >= options.max
                }
                None => {
                    open = false;
                    true
                }
            },
            () = sleep_until(due) => true,
        };
        if flush && !queued.is_empty() {
            let events = std::mem::take(&mut queued);
            due = None;
            for result in send(&client, base, key, &events).await? {
                match result {
                    Ok(id) => println!("{id}"),
                    Err(why) => {
                        refused += 1;
                        eprintln!("refused: {why}");
                        println!("-");
                    }
                }
            }
        }
    }
    if refused > 0 {
        bail!("{refused} events were refused");
    }
    Ok(())
}

/// Sleeps until `due`, or forever when nothing is queued.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Stdin's lines, read on a thread of their own (blocking reads stay off the runtime).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// One input line as an event, with its `dedup_id` chosen now if it has none.
fn event_from(line: &str) -> anyhow::Result<Value> {
    let mut event: Value = serde_json::from_str(line).with_context(|| format!("not a JSON event: {line}"))?;
    let Some(fields) = event.as_object_mut() else {
        bail!("not a JSON object: {line}");
    };
    if fields.get("dedup_id").is_none_or(Value::is_null) {
        fields.insert("dedup_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    }
    Ok(event)
}

/// Send one batch until every event has a final result: its stored id, or why it was refused.
async fn send(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    events: &[Value],
) -> anyhow::Result<Vec<Result<String, String>>> {
    let mut results: Vec<Option<Result<String, String>>> = vec![None; events.len()];
    let mut pending: Vec<usize> = (0..events.len()).collect();
    for try_number in 1..=MAX_TRIES {
        let body = json!({"events": pending.iter().map(|&i| &events[i]).collect::<Vec<_>>()});
        let sent = client
            .post(format!("{base}/api/events/batch"))
            .header("X-API-Key", key)
            .json(&body)
            .send()
            .await;
        let wait = match sent {
            Err(e) => {
                eprintln!("try {try_number}: {e}");
                backoff(try_number)
            }
            Ok(response) => match response.status().as_u16() {
                200 => {
                    let answer: Value = response.json().await?;
                    let mut again = Vec::new();
                    for (position, &i) in pending.iter().enumerate() {
                        let result = &answer["results"][position];
                        let id = |member: &str| result[member].as_str().unwrap_or_default().to_owned();
                        match result["status"].as_u64().unwrap_or_default() {
                            202 => results[i] = Some(Ok(id("id"))),
                            // An earlier try stored it.
                            409 => results[i] = Some(Ok(id("event_id"))),
                            500..=599 => again.push(i),
                            status => results[i] = Some(Err(format!("event {i}: {status} {result}"))),
                        }
                    }
                    pending = again;
                    if pending.is_empty() {
                        break;
                    }
                    backoff(try_number)
                }
                429 | 503 => wait_before_retry(&response, try_number),
                500..=599 => backoff(try_number),
                status => bail!("{status}: {}", response.text().await.unwrap_or_default()),
            },
        };
        if try_number == MAX_TRIES {
            break;
        }
        eprintln!(
            "try {try_number}: {} events not stored yet; retrying in {wait:?} with the same dedup ids",
            pending.len()
        );
        tokio::time::sleep(wait).await;
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(format!("gave up after {MAX_TRIES} tries"))))
        .collect())
}
