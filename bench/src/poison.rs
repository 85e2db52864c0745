//! `--poison C`: while the measured events are sent, one more organisation sends payloads that
//! Postgres cannot store (issue 15's five), in a loop from C connections, so a run shows what
//! they cost the others. Each is well-formed JSON under the 256 KiB payload limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// One kind of poison payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DeepObjects,
    DeepArrays,
    LoneSurrogate,
    HugeExponent,
    LongNumber,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::DeepObjects,
        Kind::DeepArrays,
        Kind::LoneSurrogate,
        Kind::HugeExponent,
        Kind::LongNumber,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::DeepObjects => "deep-objects",
            Kind::DeepArrays => "deep-arrays",
            Kind::LoneSurrogate => "lone-surrogate",
            Kind::HugeExponent => "huge-exponent",
            Kind::LongNumber => "long-number",
        }
    }

    /// `all` (every kind in turn) or one kind's name.
    pub fn parse_list(name: &str) -> Option<Vec<Kind>> {
        if name == "all" {
            return Some(Self::ALL.to_vec());
        }
        Self::ALL.into_iter().find(|k| k.name() == name).map(|k| vec![k])
    }

    /// The payload's JSON text.
    fn payload(self) -> String {
        match self {
            Kind::DeepObjects => format!("{}1{}", r#"{"a":"#.repeat(20_000), "}".repeat(20_000)),
            Kind::DeepArrays => format!(r#"{{"a":{}{}}}"#, "[".repeat(20_000), "]".repeat(20_000)),
            Kind::LoneSurrogate => r#"{"s":"\ud800"}"#.to_owned(),
            Kind::HugeExponent => r#"{"n":1e1000000}"#.to_owned(),
            Kind::LongNumber => format!(r#"{{"n":{}}}"#, "9".repeat(200_000)),
        }
    }

    /// The request body of `POST /api/events` carrying it.
    pub fn body(self) -> String {
        format!(
            r#"{{"type":"poison.{}","payload":{}}}"#,
            self.name(),
            self.payload()
        )
    }
}

/// What the poisoning organisation sent and was answered.
#[derive(Debug, Default)]
pub struct PoisonOutcome {
    pub sent: u64,
    /// Answers by HTTP status (or `transport_error`).
    pub answers: BTreeMap<String, u64>,
    pub wall: Duration,
}

impl PoisonOutcome {
    /// Answers with a 5xx status: each one a client input the service failed on.
    pub fn server_errors(&self) -> u64 {
        self.answers
            .iter()
            .filter(|(status, _)| status.starts_with('5'))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The poisoning loop, started before the measured events and stopped after them.
pub struct Poisoner {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<String, u64>>>,
}

impl Poisoner {
    /// `connections` tasks each send the bodies of `kinds` in turn, one request at a time, until
    /// stopped or `deadline`.
    pub fn start(
        client: &reqwest::Client,
        url: &str,
        key: &str,
        connections: usize,
        kinds: &[Kind],
        deadline: Instant,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        // Shared bytes: a clone per request is a reference count, not a copy of up to 200 KB.
        let bodies: Arc<Vec<Bytes>> = Arc::new(kinds.iter().map(|k| Bytes::from(k.body())).collect());
        let next = Arc::new(AtomicU64::new(0));
        let tasks = (0..connections)
            .map(|_| {
                let (client, url, key) = (client.clone(), url.to_owned(), key.to_owned());
                let (stop, bodies, next) = (stop.clone(), bodies.clone(), next.clone());
                tokio::spawn(async move {
                    let mut answers = BTreeMap::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize % bodies.len().max(1);
                        let Some(body) = bodies.get(i) else { break };
                        let answer = client
                            .post(&url)
                            .header("X-API-Key", &key)
                            .header("Content-Type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        let status = match answer {
                            Ok(resp) => {
                                let status = resp.status().as_u16().to_string();
                                let _ = resp.bytes().await;
                                status
                            }
                            Err(_) => "transport_error".to_owned(),
                        };
                        *answers.entry(status).or_default() += 1;
                    }
                    answers
                })
            })
            .collect();
        Self {
            stop,
            started: Instant::now(),
            tasks,
        }
    }

    pub async fn stop(self) -> PoisonOutcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = PoisonOutcome::default();
        for task in self.tasks {
            for (status, n) in task.await.unwrap_or_default() {
                out.sent += n;
                *out.answers.entry(status).or_default() += n;
            }
        }
        out.wall = self.started.elapsed();
        out
    }
}
