//! The upgrade to endpoints and deliveries, on a database at the previous schema with work in
//! flight; and the apalis schema the queue's statements were written against.

use std::{path::PathBuf, time::Duration};

use crate::common::*;
use serde_json::json;
use sqlx::{PgPool, migrate::Migrator};
use triggers_shared::{
    db::{self, queue::DELIVERY_QUEUE},
    models::DeliveryStatus,
    signing,
    testing::TestDb,
};
use uuid::Uuid;

/// The first migration of the endpoints model: the schema before it is "the previous schema".
const ENDPOINTS_MIGRATION: i64 = 20261204000000;

/// Apply apalis' schema and our migrations older than the endpoints model, as a database of
/// the previous release has them (the same files, so the upgrade sees a consistent history).
async fn previous_schema(pool: &PgPool) {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .expect("apalis' schema");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let dir = std::env::temp_dir().join(format!("triggers-previous-migrations-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir(&source).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let version: i64 = name
            .split('_')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MAX);
        if version < ENDPOINTS_MIGRATION {
            std::fs::copy(&path, dir.join(&name)).expect("copy migration");
        }
    }
    let old = Migrator::new(dir.as_path())
        .await
        .expect("the previous migrations");
    old.run(pool).await.expect("migrate to the previous schema");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A job as the previous release encoded it (no endpoint), due at once.
async fn old_job(pool: &PgPool, event: Uuid, org: Uuid) {
    let bytes = serde_json::to_vec(&json!({"event_id": event, "organization_id": org, "attempt": 1}))
        .expect("job bytes");
    let task = apalis::prelude::TaskBuilder::new(bytes).max_attempts(5).build();
    let mut conn = pool.acquire().await.expect("connection");
    apalis_postgres::queries::push_tasks(&mut *conn, DELIVERY_QUEUE, vec![task])
        .await
        .expect("push");
}

#[tokio::test]
async fn an_upgraded_database_keeps_each_webhook_as_a_default_endpoint_and_delivers_what_was_queued() {
    let db = TestDb::empty().await.expect("empty database");
    let pool = &db.pool;
    previous_schema(pool).await;

    // The previous schema's data, written as the previous release wrote it.
    let receiver = Receiver::answering(200).await;
    let secret = signing::generate_secret();
    let (org, inbox_org) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, url) in [(org, Some(receiver.url.as_str())), (inbox_org, None)] {
        sqlx::query(
            "INSERT INTO organizations (id, name, tier, rate_limit_per_minute, webhook_url, signing_secret, webhook_updated_at)
             VALUES ($1, 'old', 'pro', 1000, $2, $3, CASE WHEN $2 IS NOT NULL THEN now() END)",
        )
        .bind(id)
        .bind(url)
        .bind(url.map(|_| &secret))
        .execute(pool)
        .await
        .expect("organisation");
    }
    let old_event = |org: Uuid, status: &'static str, attempts: i32, response: Option<i32>| async move {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO events (id, organization_id, type, payload, status, attempts, response_status, delivered_at)
             VALUES ($1, $2, 'order.created', '{\"n\": 1}', $3, $4, $5, CASE WHEN $3 = 'delivered' THEN now() END)",
        )
        .bind(id)
        .bind(org)
        .bind(status)
        .bind(attempts)
        .bind(response)
        .execute(pool)
        .await
        .expect("event");
        id
    };
    let queued: Vec<Uuid> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = old_event(org, "pending", 0, None).await;
            old_job(pool, id, org).await;
            ids.push(id);
        }
        ids
    };
    let retrying = old_event(org, "pending", 2, Some(500)).await;
    old_job(pool, retrying, org).await;
    let delivered = old_event(org, "delivered", 1, Some(204)).await;
    let failed = old_event(org, "failed", 6, Some(500)).await;
    let inbox = old_event(inbox_org, "pending", 0, None).await;

    // The upgrade, as a binary applies it at start.
    db::migrate(pool).await.expect("upgrade");

    let mut conn = pool.acquire().await.expect("connection");
    let default = db::endpoints::find_default(&mut conn, org)
        .await
        .expect("read")
        .expect("the webhook became the default endpoint");
    assert_eq!(
        (default.url.as_str(), default.signing_secret.as_str()),
        (receiver.url.as_str(), secret.as_str())
    );
    assert!(
        db::endpoints::find_default(&mut conn, inbox_org)
            .await
            .expect("read")
            .is_none()
    );
    drop(conn);
    let only = |id: Uuid| async move {
        let mut ds = deliveries(pool, id).await;
        assert_eq!(ds.len(), 1, "{id}: one delivery to the default endpoint");
        let d = ds.remove(0);
        assert_eq!(d.endpoint_id, default.id);
        d
    };
    for id in &queued {
        assert_eq!(only(*id).await.status, DeliveryStatus::Pending);
    }
    let retry = only(retrying).await;
    assert_eq!(
        (retry.status, retry.attempts, retry.response_status),
        (DeliveryStatus::Pending, 2, Some(500))
    );
    assert_eq!(only(delivered).await.status, DeliveryStatus::Delivered);
    assert_eq!(only(failed).await.status, DeliveryStatus::Failed);
    assert!(deliveries(pool, inbox).await.is_empty());
    assert_eq!(event(pool, failed).await.status, "failed");
    // Each queued job was given its delivery's endpoint, and each pending delivery names its job.
    let mut conn = pool.acquire().await.expect("connection");
    let jobs = queue::testing::decoded_jobs(&mut conn).await;
    assert_eq!(jobs.len(), 4);
    for (job_id, job) in &jobs {
        assert_eq!((job.organization_id, job.endpoint_id), (org, default.id));
        let named: Option<String> = sqlx::query_scalar("SELECT job_id FROM deliveries WHERE event_id = $1")
            .bind(job.event_id)
            .fetch_one(&mut *conn)
            .await
            .expect("delivery");
        assert_eq!(named.as_deref(), Some(job_id.as_str()));
    }
    drop(conn);

    // The new worker delivers what was queued before the upgrade, signed with the same secret.
    let _worker = TestWorker::spawn(&db.url, |_| {}).await;
    eventually(
        "the queued events are delivered",
        Duration::from_secs(20),
        || async { receiver.count() == 4 },
    )
    .await;
    for r in receiver.requests() {
        let timestamp: i64 = r.header("webhook-timestamp").parse().expect("timestamp");
        assert!(signing::verify(
            &secret,
            &r.event_id(),
            timestamp,
            &r.body,
            r.header("webhook-signature")
        ));
    }
    for id in queued.iter().chain([&retrying]) {
        eventually("delivered", Duration::from_secs(10), || async {
            event(pool, *id).await.status == "delivered"
        })
        .await;
    }
    assert_eq!(
        deliveries(pool, retrying).await[0].attempts,
        3,
        "its attempts kept counting"
    );
    assert_eq!(event(pool, inbox).await.status, "pending");
}

#[tokio::test]
async fn apalis_schema_is_the_one_the_queue_statements_were_written_for() {
    // `db::queue` writes `apalis.jobs` and reads `apalis.workers` by hand (the ingest statement,
    // finishing, releasing and failing jobs, the janitor's statements). An apalis upgrade that
    // changes these tables must fail here, before those statements fail in production.
    let db = test_db().await;
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
         FROM information_schema.columns
         WHERE table_schema = 'apalis' AND table_name IN ('jobs', 'workers')
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("columns");
    let columns: Vec<String> = columns
        .into_iter()
        .map(|(t, c, ty, null)| format!("{t}.{c} {ty}{}", if null == "NO" { " not null" } else { "" }))
        .collect();
    assert_eq!(
        columns,
        [
            "jobs.job bytea not null",
            "jobs.id text not null",
            "jobs.job_type text not null",
            "jobs.status text not null",
            "jobs.attempts integer not null",
            "jobs.max_attempts integer not null",
            "jobs.run_at timestamp with time zone not null",
            "jobs.last_result jsonb",
            "jobs.lock_at timestamp with time zone",
            "jobs.lock_by text",
            "jobs.done_at timestamp with time zone",
            "jobs.priority integer",
            "jobs.idempotency_key text",
            "jobs.metadata USER-DEFINED",
            "workers.id text not null",
            "workers.worker_type text not null",
            "workers.storage_name text not null",
            "workers.layers text not null",
            "workers.last_seen timestamp with time zone not null",
            "workers.started_at timestamp with time zone",
        ]
    );
}
