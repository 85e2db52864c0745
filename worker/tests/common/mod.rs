//! Test harness for the worker: a fresh database, the real worker in-process (or as a process),
//! fixtures written with `shared::db` functions or directly in SQL, and a webhook receiver that
//! records every request and answers from a script.
#![allow(dead_code)]

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
pub use triggers_shared::db::queue;
use triggers_shared::{
    config::{LogFormat, WorkerConfig},
    db::{self, endpoints, organizations},
    models::Tier,
    signing, telemetry,
    testing::{self, TestDb},
};
use triggers_worker::Worker;
use uuid::Uuid;

pub async fn test_db() -> TestDb {
    telemetry::init(LogFormat::Pretty);
    TestDb::new().await.expect("test database")
}

// ---------------------------------------------------------------- the worker

/// The real worker, in this process, on port 0.
pub struct TestWorker {
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    pub async fn spawn(db_url: &str, tweak: impl FnOnce(&mut WorkerConfig)) -> Self {
        let mut config = WorkerConfig::for_tests(db_url);
        config.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(1)];
        config.heartbeat_interval = Duration::from_secs(1);
        tweak(&mut config);
        let worker = Worker::build(config).await.expect("build worker");
        let admin = worker.admin_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            admin,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Signal shutdown and wait until the worker has drained and returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("worker task panicked"),
            None => Ok(()),
        }
    }
}

/// `triggers-ingest`, built beside `triggers-worker` (the test command builds every binary).
pub fn ingest_binary() -> std::path::PathBuf {
    let path =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_triggers-worker")).with_file_name("triggers-ingest");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`, as deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real `triggers-worker` binary, configured through its environment.
pub fn spawn_worker_process(db_url: &str, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_triggers-worker"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("TRIGGERS_WORKER_ADDR", "127.0.0.1:0")
        .env("TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", "true")
        .env("TRIGGERS_WORKER_HEARTBEAT_SECS", "1")
        .env("TRIGGERS_RETRY_SCHEDULE", "1s")
        .env("TRIGGERS_DB_POOL_SIZE", "10")
        .env("RUST_LOG", "warn,triggers_worker=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn triggers-worker")
}

// ---------------------------------------------------------------- fixtures

/// A `pro` organisation (no API key: the worker never reads one) whose default endpoint (its
/// webhook) is `webhook_url`, created by the same `db` functions as the API; returns its id and
/// the endpoint's signing secret.
pub async fn create_org(pool: &PgPool, webhook_url: Option<&str>) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let mut secret = signing::generate_secret();
    let mut tx = pool.begin().await.expect("begin");
    organizations::insert(&mut tx, id, &format!("org-{id}"), Tier::Pro)
        .await
        .expect("insert organization");
    if let Some(url) = webhook_url {
        let url = triggers_shared::net::WebhookUrl::parse(url).expect("a webhook URL");
        secret = endpoints::set_default(&mut tx, id, &url, &secret)
            .await
            .expect("set webhook")
            .signing_secret;
    }
    tx.commit().await.expect("commit");
    (id, secret)
}

/// An endpoint of `org` at `url`, subscribed to `patterns`, with custom `headers`, created by
/// `db::endpoints::create` as the API creates it; returns its id and its signing secret.
pub async fn create_endpoint(
    pool: &PgPool,
    org: Uuid,
    url: &str,
    patterns: &[&str],
    headers: &[(&str, &str)],
) -> (Uuid, String) {
    use triggers_shared::{
        db::endpoints::{Created, NewEndpoint},
        models::{Description, EventTypes},
    };
    let new = NewEndpoint {
        url: triggers_shared::net::WebhookUrl::parse(url).expect("a webhook URL"),
        description: Description::parse("").expect("description"),
        event_types: EventTypes::try_from(patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
            .expect("patterns"),
        enabled: true,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into(),
        rate_limit_per_second: None,
    };
    let secret = signing::generate_secret();
    let mut conn = pool.acquire().await.expect("connection");
    match endpoints::create(&mut conn, org, i64::MAX, &new, &secret, false)
        .await
        .expect("create endpoint")
    {
        Created::Endpoint(e) => (e.id, secret),
        Created::OverCap => panic!("no cap in tests"),
    }
}

/// `n` events of `org` of type `event_type`, stored as ingest stores them.
pub async fn create_events_of(pool: &PgPool, org: Uuid, event_type: &str, n: usize) -> Vec<Uuid> {
    let events: Vec<_> = (0..n).map(|i| (None, serde_json::json!({"n": i}))).collect();
    testing::store_events(pool, org, event_type, &events)
        .await
        .expect("store events")
}

/// `n` events of `org` of type `order.created`, stored as ingest stores them (one statement,
/// with their deliveries and first jobs).
pub async fn create_events(pool: &PgPool, org: Uuid, n: usize) -> Vec<Uuid> {
    let events: Vec<_> = (0..n)
        .map(|i| {
            let payload =
                serde_json::json!({"n": i, "note": "snow ☃ \"quoted\"", "nested": {"a": [1, 2.5, null]}});
            (Some(format!("dedup-{i}-{}", Uuid::now_v7())), payload)
        })
        .collect();
    testing::store_events(pool, org, "order.created", &events)
        .await
        .expect("store events")
}

/// An event as the API reads it (its status sums its deliveries up).
#[derive(Debug)]
pub struct EventRow {
    pub status: String,
    pub attempts: i32,
    pub response_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn event(pool: &PgPool, id: Uuid) -> EventRow {
    let mut conn = pool.acquire().await.expect("connection");
    let org: Uuid = sqlx::query_scalar("SELECT organization_id FROM events WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .expect("event's organisation");
    let e = db::events::find(&mut conn, org, id)
        .await
        .expect("read event")
        .expect("event exists");
    EventRow {
        status: e.status.as_str().to_owned(),
        attempts: e.attempts,
        response_status: e.response_status,
        last_error: e.last_error,
        delivered_at: e.delivered_at,
    }
}

/// The deliveries of event `id` as the API reads them, by endpoint id.
pub async fn deliveries(pool: &PgPool, id: Uuid) -> Vec<triggers_shared::models::Delivery> {
    let mut conn = pool.acquire().await.expect("connection");
    let org: Uuid = sqlx::query_scalar("SELECT organization_id FROM events WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .expect("event's organisation");
    db::deliveries::list_for_event(&mut conn, org, id)
        .await
        .expect("read deliveries")
}

#[derive(Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

pub async fn attempts(pool: &PgPool, id: Uuid) -> Vec<AttemptRow> {
    sqlx::query_as(
        "SELECT attempt, response_status, error, duration_ms FROM delivery_attempts
         WHERE event_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("attempt rows")
}

/// Jobs of the delivery queue not finished yet (due, scheduled, claimed or retryable).
pub async fn unfinished_jobs(pool: &PgPool) -> i64 {
    let mut conn = pool.acquire().await.expect("connection");
    queue::testing::count_live(&mut conn).await
}

/// Two minutes: finished longer ago than the janitor keeps finished jobs.
pub const TWO_MINUTES: Duration = Duration::from_secs(120);

pub async fn job_ids(pool: &PgPool) -> Vec<String> {
    queue::testing::job_ids(&mut pool.acquire().await.expect("conn")).await
}

/// The one job of event `id`.
pub async fn job_of(pool: &PgPool, id: Uuid) -> String {
    let jobs = queue::testing::jobs_of_event(&mut pool.acquire().await.expect("conn"), id).await;
    assert_eq!(jobs.len(), 1, "event {id} should have one job: {jobs:?}");
    jobs[0].clone()
}

pub async fn force_job(pool: &PgPool, job: &str, state: queue::testing::ForcedState, ago: Duration) {
    queue::testing::force_state(&mut pool.acquire().await.expect("conn"), job, state, ago).await;
}

pub async fn count_status(pool: &PgPool, org: Uuid, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE organization_id = $1 AND status = $2")
        .bind(org)
        .bind(status)
        .fetch_one(pool)
        .await
        .expect("count events")
}

/// Poll `check` every 50 ms until it holds; panic with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- the receiver

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("header {name} missing"))
    }
    pub fn event_id(&self) -> String {
        self.header("webhook-id").to_string()
    }
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// How long to wait before answering (a hanging endpoint).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Clone)]
struct ReceiverState {
    requests: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    inflight: Arc<AtomicUsize>,
    max_inflight: Arc<AtomicUsize>,
}

/// A webhook endpoint on 127.0.0.1:0 that records every request (headers and exact body bytes)
/// and answers from a script, then with a default reply.
pub struct Receiver {
    pub addr: SocketAddr,
    pub url: String,
    state: ReceiverState,
}

impl Receiver {
    pub async fn start(script: Vec<Reply>, default: Reply) -> Self {
        let state = ReceiverState {
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
            default: Arc::new(Mutex::new(default)),
            inflight: Arc::default(),
            max_inflight: Arc::default(),
        };
        let app = Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            url: format!("http://{addr}/hooks/triggers"),
            state,
        }
    }

    /// Always answer `status` at once.
    pub async fn answering(status: u16) -> Self {
        Self::start(Vec::new(), Reply::status(status)).await
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().expect("lock").len()
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().expect("lock") = reply;
    }

    pub fn max_inflight(&self) -> usize {
        self.state.max_inflight.load(Ordering::SeqCst)
    }

    pub fn inflight(&self) -> usize {
        self.state.inflight.load(Ordering::SeqCst)
    }
}

struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    state.requests.lock().expect("lock").push(Received {
        at: Instant::now(),
        headers,
        body,
    });
    let now = state.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_inflight.fetch_max(now, Ordering::SeqCst);
    let _guard = InflightGuard(state.inflight.clone());
    let reply = {
        let next = state.script.lock().expect("lock").pop_front();
        next.unwrap_or_else(|| state.default.lock().expect("lock").clone())
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).expect("status"),
        "receiver says hi",
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}

// ---------------------------------------------------------------- metrics

/// The value of an unlabelled counter or gauge on a worker's admin port.
pub async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("metric {name} not exported"))
}
