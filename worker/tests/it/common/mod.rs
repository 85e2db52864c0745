//! Test harness for the worker: a fresh database, the real worker in-process (or as a process),
//! and what the test kit shares with ingest's tests (the recording receiver, fixtures through
//! `shared::db`, processes, Prometheus text) under the names these tests use.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
pub use triggers_shared::db::queue;
use triggers_shared::{
    config::{LogFormat, WorkerConfig},
    db, telemetry,
    testing::{self, TestDb},
};
use triggers_testkit::prometheus;
pub use triggers_testkit::{
    Received, Receiver, Reply, ServiceProcess, eventually,
    fixtures::{endpoint as create_endpoint, org as create_org},
};
use triggers_worker::{Worker, deliver::Deliverer};
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

/// The real `triggers-worker` binary, configured through its environment (see
/// [`ServiceProcess::worker`]); not awaited.
pub fn spawn_worker_process(db_url: &str, extra_env: &[(&str, &str)]) -> ServiceProcess {
    ServiceProcess::worker(env!("CARGO_BIN_EXE_triggers-worker"), db_url)
        .envs(extra_env)
        .spawn()
}

/// The worker's deliverer without its consumer (nor janitor, sampler or admin port): a test
/// runs what is due with [`TestDeliverer::run_due`] and moves a retry's `run_at` with
/// [`TestDeliverer::run_retries`] instead of waiting for the queue's poll or the retry's delay.
pub struct TestDeliverer {
    pub deliverer: Deliverer,
    pool: PgPool,
}

impl TestDeliverer {
    /// With the in-process worker's test settings (retries after 1 s and 1 s: three attempts).
    pub async fn new(db: &TestDb, tweak: impl FnOnce(&mut WorkerConfig)) -> Self {
        let mut config = WorkerConfig::for_tests(&db.url);
        config.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(1)];
        tweak(&mut config);
        let deliverer = Deliverer::new(db.pool.clone(), Arc::new(config)).expect("a deliverer");
        Self {
            deliverer,
            pool: db.pool.clone(),
        }
    }

    /// Claim and deliver every job due now; return once each outcome is committed: how many
    /// jobs ran.
    pub async fn run_due(&self) -> usize {
        self.deliverer.run_due().await.expect("run the due jobs")
    }

    /// Make every scheduled job (a retry) due, as if its delay had passed, and run what is due:
    /// how many jobs ran.
    pub async fn run_retries(&self) -> usize {
        let mut conn = self.pool.acquire().await.expect("connection");
        queue::testing::make_scheduled_due(&mut conn).await;
        drop(conn);
        self.run_due().await
    }
}

/// `triggers-ingest`, built beside `triggers-worker` (the test command builds every binary).
pub fn ingest_binary() -> std::path::PathBuf {
    triggers_testkit::binary("triggers-ingest")
}

// ---------------------------------------------------------------- fixtures

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

/// The organisation of event `id`.
async fn organisation_of(conn: &mut sqlx::PgConnection, id: Uuid) -> Uuid {
    sqlx::query_scalar("SELECT organization_id FROM events WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .expect("event's organisation")
}

pub async fn event(pool: &PgPool, id: Uuid) -> EventRow {
    let mut conn = pool.acquire().await.expect("connection");
    let org = organisation_of(&mut conn, id).await;
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
    let org = organisation_of(&mut conn, id).await;
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

// ---------------------------------------------------------------- metrics

/// The value of an unlabelled counter or gauge on a worker's admin port.
pub async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let text = prometheus::scrape(&reqwest::Client::new(), &format!("http://{admin}/metrics")).await;
    prometheus::value(&text, name).unwrap_or_else(|| panic!("metric {name} not exported"))
}
