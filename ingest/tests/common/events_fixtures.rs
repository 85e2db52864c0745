//! Fixtures for the events, inbox and rate-limit tests: organisations and keys created by the
//! same transaction as `POST /api/keys/generate` but without its HTTP round trip, webhooks set in
//! SQL, and small request helpers.
#![allow(dead_code)]

use serde_json::Value;
use sqlx::PgPool;
use triggers_shared::{
    db::{organizations, queue},
    models::{OrganizationName, Tier},
};
use uuid::Uuid;

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

/// Create an organisation of `tier` with one key, by the transaction the API and the CLI use
/// (`db::organizations::create_with_key`); returns (api_key, organization_id).
pub async fn org_with_key(pool: &PgPool, tier: &str) -> (String, Uuid) {
    let tier = Tier::parse(tier).expect("known tier");
    let name = OrganizationName::parse("test organisation").expect("a valid name");
    let (org, key) = organizations::create_with_key(pool, &name, tier)
        .await
        .expect("create organisation");
    (key.key, org.id)
}

/// Configure a webhook URL for the organisation (directly in SQL).
pub async fn set_webhook(pool: &PgPool, org_id: Uuid) {
    sqlx::query(
        "UPDATE organizations SET webhook_url = 'http://127.0.0.1:9/hook', signing_secret = 'whsec_dGVzdA==',
                webhook_updated_at = now() WHERE id = $1",
    )
    .bind(org_id)
    .execute(pool)
    .await
    .expect("set webhook");
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
