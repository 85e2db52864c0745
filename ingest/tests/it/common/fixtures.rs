//! Fixtures for the events, inbox and rate-limit tests: organisations and keys created by the
//! same transaction as `POST /api/keys/generate` but without its HTTP round trip, webhooks set by
//! the same `db::endpoints` function as `POST /api/webhook/config`, and small request helpers.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use sqlx::PgPool;
use triggers_ingest::{batcher::BatchWriter, routing::RoutingCache};
use triggers_shared::{
    db::{
        deliveries::{self, AttemptRecord},
        queue,
    },
    jobs::{DeliveryJob, JobId},
    models::{DeliveryKey, DeliveryStatus},
};
use uuid::Uuid;

pub use triggers_testkit::fixtures::org_with_key;

use super::TestApp;

/// The fields of an inbox item (API.md); `GET /api/events/{id}` adds `attempts_log`.
pub const INBOX_ITEM_FIELDS: [&str; 12] = [
    "id",
    "type",
    "dedup_id",
    "payload",
    "status",
    "attempts",
    "response_status",
    "last_error",
    "created_at",
    "updated_at",
    "delivered_at",
    "acknowledged_at",
];

/// Configure the organisation's webhook (its default endpoint, matching every type) by the
/// function `POST /api/webhook/config` calls; returns the endpoint's id.
pub async fn set_webhook(pool: &PgPool, org_id: Uuid) -> Uuid {
    triggers_testkit::fixtures::set_webhook(pool, org_id, "http://127.0.0.1:9/hook").await
}

/// Record one attempt, answered `response_status`, on each pending delivery of these events,
/// as the worker does: its own statement (`db::deliveries::record_attempts`) and, in the same
/// transaction, the job that made the attempt finished (deleted) and the retry's job enqueued.
/// A 2xx delivers; another answer schedules a retry in an hour, or dead-letters the delivery
/// when it was the `last` attempt. The trigger sums each event up. Returns how many
/// deliveries had an attempt.
pub async fn attempt(pool: &PgPool, event_ids: &[Uuid], response_status: i32, last: bool) -> usize {
    let mut tx = pool.begin().await.expect("begin");
    let chains: Vec<(DeliveryKey, String)> = sqlx::query_as::<_, (Uuid, Uuid, Uuid, String)>(
        "SELECT organization_id, event_id, endpoint_id, job_id FROM deliveries
         WHERE event_id = ANY($1) AND status = 'pending' AND job_id IS NOT NULL",
    )
    .bind(event_ids)
    .fetch_all(&mut *tx)
    .await
    .expect("pending deliveries")
    .into_iter()
    .map(|(organization_id, event_id, endpoint_id, job)| {
        let key = DeliveryKey {
            organization_id,
            event_id,
            endpoint_id,
        };
        (key, job)
    })
    .collect();
    let jobs: HashMap<String, DeliveryJob> =
        queue::testing::decoded_jobs(&mut tx).await.into_iter().collect();
    let delivered = (200..300).contains(&response_status);
    let retry_in = Duration::from_secs(3600);
    let mut attempts = Vec::with_capacity(chains.len());
    let mut retries = Vec::new();
    for (key, job_id) in &chains {
        let retry = (!delivered && !last).then(|| {
            let id = JobId::new();
            let job = jobs.get(job_id).expect("the delivery's job").following();
            retries.push((id, job, retry_in));
            (id, chrono::Utc::now() + retry_in)
        });
        attempts.push(AttemptRecord {
            key: *key,
            task_id: job_id.clone(),
            started_at: chrono::Utc::now(),
            duration_ms: 120,
            response_status: Some(response_status),
            error: (!delivered).then(|| format!("HTTP {response_status}")),
            next_status: match (delivered, retry) {
                (true, _) => DeliveryStatus::Delivered,
                (false, Some(_)) => DeliveryStatus::Pending,
                (false, None) => DeliveryStatus::Failed,
            },
            retry,
        });
    }
    let policy = deliveries::DisablePolicy::after(std::time::Duration::from_secs(432_000));
    let recorded = deliveries::record_attempts(&mut tx, &attempts, policy)
        .await
        .expect("record the attempts")
        .attempts;
    assert!(
        recorded.iter().all(|r| r.is_some_and(|r| r.status_applied)),
        "{recorded:?}"
    );
    let finished: Vec<String> = chains.into_iter().map(|(_, job)| job).collect();
    queue::testing::delete_jobs(&mut tx, &finished).await;
    queue::enqueue(&mut tx, &retries)
        .await
        .expect("enqueue the retries");
    tx.commit().await.expect("commit");
    finished.len()
}

/// Dead-letter the pending deliveries of these events as the worker does after their last
/// attempt (answered `500`, see [`attempt`]). Returns how many.
pub async fn dead_letter(pool: &PgPool, event_ids: &[Uuid]) -> usize {
    attempt(pool, event_ids, 500, true).await
}

/// The batch writer as ingest starts it, on the test database (with the 24-hour dedup window).
pub fn writer_of(pool: &PgPool) -> BatchWriter {
    BatchWriter::start(
        pool.clone(),
        RoutingCache::new(pool.clone()),
        Duration::from_secs(24 * 3600),
    )
}

/// Delivery jobs in the queue (any state).
pub async fn job_count(pool: &PgPool) -> i64 {
    let mut conn = pool.acquire().await.expect("connection");
    queue::testing::count_in(&mut conn, queue::DELIVERY_QUEUE).await
}

/// Delivery jobs of one event (any state).
pub async fn jobs_for_event(pool: &PgPool, event_id: &str) -> i64 {
    let mut conn = pool.acquire().await.expect("connection");
    let id = event_id.parse().expect("an event id");
    queue::testing::jobs_of_event(&mut conn, id).await.len() as i64
}

/// POST /api/events with a JSON body.
pub async fn post_event(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/events"))
        .header("X-API-Key", key)
        .json(body)
        .send()
        .await
        .expect("post event")
}

/// POST /api/events with raw bytes and an optional content type.
pub async fn post_raw(
    app: &TestApp,
    key: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/events"))
        .header("X-API-Key", key)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    req.send().await.expect("post raw")
}

/// Post an event that must be accepted; returns its 202 body.
pub async fn accept(app: &TestApp, key: &str, body: &Value) -> Value {
    let res = post_event(app, key, body).await;
    let status = res.status();
    let json: Value = res.json().await.expect("json");
    assert_eq!(status, 202, "expected 202, got {status}: {json}");
    json
}

/// GET with a key; returns (status, body).
pub async fn get_json(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let res = app
        .client
        .get(app.url(path))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("get");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

/// POST a JSON body with a key; returns (status, body).
pub async fn post_json(app: &TestApp, key: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = app.client.post(app.url(path)).header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.expect("post");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

/// Elements of the array in [`insert_large_events`]' payloads: `{"data":[0,1,...]}` is then
/// 262,010 bytes of compact JSON, just under the 256 KiB payload limit.
pub const LARGE_PAYLOAD_ITEMS: i64 = 131_000;

/// Store `n` events of type `big` whose payloads are arrays of small numbers at the payload
/// limit (the shape that costs most to decode), straight in SQL: seeding hundreds through
/// HTTP would only slow the test down. Their `created_at` is distinct and increasing.
pub async fn insert_large_events(pool: &PgPool, org_id: Uuid, n: i64) {
    sqlx::query(
        "INSERT INTO events (id, organization_id, type, payload, created_at)
         SELECT gen_random_uuid(), $1, 'big', jsonb_build_object('data', a.arr),
                now() + make_interval(secs => i / 1000.0)
         FROM generate_series(1, $2) AS i,
              (SELECT jsonb_agg(j % 10) AS arr FROM generate_series(1, $3) AS j) AS a",
    )
    .bind(org_id)
    .bind(n)
    .bind(LARGE_PAYLOAD_ITEMS)
    .execute(pool)
    .await
    .expect("insert large events");
}

/// Make the database refuse, with the SQLSTATE it names, every event whose payload has a
/// `poison` key (`{"poison": "22003"}`), as Postgres refuses data it cannot store; and count
/// the statements that insert events (see [`event_statements`]).
pub async fn poison_events(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE SEQUENCE event_statements;
         CREATE FUNCTION count_event_statement() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM nextval('event_statements'); RETURN NULL; END $$;
         CREATE TRIGGER count_event_statements BEFORE INSERT ON events
             FOR EACH STATEMENT EXECUTE FUNCTION count_event_statement();
         CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.payload ? 'poison' THEN
                 RAISE EXCEPTION 'poisoned event' USING ERRCODE = NEW.payload ->> 'poison';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON events
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(pool)
    .await
    .expect("install the poison triggers");
}

/// Statements that inserted (or tried to insert) events since [`poison_events`]: a sequence,
/// whose increments survive the rollback of a statement that failed.
pub async fn event_statements(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_statements")
        .fetch_one(pool)
        .await
        .expect("event statements")
}

/// `GET /api/keys` as the holder of `key`.
pub async fn get_keys(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/keys"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("GET /api/keys")
}

/// How many events are stored, of every organisation.
pub async fn count_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count events")
}
