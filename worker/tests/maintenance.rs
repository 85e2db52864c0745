//! The janitor, and the worker's admin port.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use triggers_shared::{
    config::WorkerConfig,
    db::janitor::JANITOR_LOCK_KEY,
    jobs::{self, DELIVERY_QUEUE, DeliveryJob},
};
use triggers_worker::run_janitor_once;
use uuid::Uuid;

async fn job_ids(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM apalis.jobs WHERE job_type = $1 ORDER BY id")
        .bind(DELIVERY_QUEUE)
        .fetch_all(pool)
        .await
        .expect("job ids")
}

#[tokio::test]
async fn the_janitor_removes_finished_jobs_expired_dedup_keys_old_delivered_events_and_dead_workers_only() {
    let db = test_db().await;
    let pool = &db.pool;
    let (org, _) = create_org(pool, None).await;
    // Six events; their jobs get the states below.
    let ids = create_events(pool, org, 6).await;
    let jobs = job_ids(pool).await;
    assert_eq!(jobs.len(), 6);
    let set_job = |id: &str, sql: &'static str| {
        let id = id.to_string();
        async move {
            sqlx::query(sql).bind(id).execute(pool).await.expect("update job");
        }
    };
    // Deleted: done, killed, and failed for good, all finished two minutes ago.
    set_job(
        &jobs[0],
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '2 minutes' WHERE id = $1",
    )
    .await;
    set_job(
        &jobs[1],
        "UPDATE apalis.jobs SET status = 'Killed', done_at = now() - interval '2 minutes' WHERE id = $1",
    )
    .await;
    set_job(
        &jobs[2],
        "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, done_at = now() - interval '2 minutes' WHERE id = $1",
    )
    .await;
    // Kept: just finished, failed but retryable, and still pending.
    set_job(
        &jobs[3],
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() WHERE id = $1",
    )
    .await;
    set_job(
        &jobs[4],
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 1, done_at = now() - interval '2 minutes' WHERE id = $1",
    )
    .await;
    // A job of another queue is never ours to delete.
    let mut conn = pool.acquire().await.expect("conn");
    let other = DeliveryJob::first(Uuid::now_v7(), org)
        .to_task(Duration::ZERO)
        .expect("task");
    apalis_postgres::queries::push_tasks(&mut *conn, "someone_elses_queue", vec![other])
        .await
        .expect("push");
    sqlx::query("UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '1 day' WHERE job_type = 'someone_elses_queue'")
        .execute(pool)
        .await
        .expect("update");

    // Dedup keys: one expired, one live.
    for (dedup, sql) in [
        (
            "old",
            "INSERT INTO dedup_keys (organization_id, dedup_id, event_id, expires_at) VALUES ($1, $2, $3, now() - interval '1 hour')",
        ),
        (
            "live",
            "INSERT INTO dedup_keys (organization_id, dedup_id, event_id, expires_at) VALUES ($1, $2, $3, now() + interval '1 hour')",
        ),
    ] {
        sqlx::query(sql)
            .bind(org)
            .bind(dedup)
            .bind(ids[0])
            .execute(pool)
            .await
            .expect("dedup key");
    }

    // Events: delivered 8 days ago (purged), delivered now, acknowledged 8 days ago without a
    // delivery (purged), failed long ago, pending long ago (kept).
    let set_event = |id: Uuid, sql: &'static str| async move {
        sqlx::query(sql)
            .bind(id)
            .execute(pool)
            .await
            .expect("update event");
    };
    set_event(
        ids[0],
        "UPDATE events SET status = 'delivered', delivered_at = now() - interval '8 days' WHERE id = $1",
    )
    .await;
    set_event(
        ids[1],
        "UPDATE events SET status = 'delivered', delivered_at = now() WHERE id = $1",
    )
    .await;
    set_event(
        ids[2],
        "UPDATE events SET status = 'delivered', acknowledged_at = now() - interval '8 days' WHERE id = $1",
    )
    .await;
    set_event(
        ids[3],
        "UPDATE events SET status = 'failed', updated_at = now() - interval '30 days' WHERE id = $1",
    )
    .await;
    set_event(ids[4], "UPDATE events SET created_at = now() - interval '30 days', updated_at = now() - interval '30 days' WHERE id = $1").await;

    // Worker registrations: long gone and idle (deleted), long gone but still holding a job
    // (kept: orphan recovery finds the job through it), and alive (kept).
    for (id, seen) in [
        ("gone-idle", "2 days"),
        ("gone-holding", "2 days"),
        ("alive", "0 seconds"),
    ] {
        sqlx::query(
            "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen)
             VALUES ($1, $2, 'PgStorage', now() - $3::interval)",
        )
        .bind(id)
        .bind(DELIVERY_QUEUE)
        .bind(seen)
        .execute(pool)
        .await
        .expect("worker row");
    }
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_by = 'gone-holding' WHERE id = $1")
        .bind(&jobs[5])
        .execute(pool)
        .await
        .expect("lock job");

    let config = WorkerConfig::for_tests(&db.url); // retention 7 days
    let report = run_janitor_once(pool, &config)
        .await
        .expect("janitor")
        .expect("it had the lock");
    assert_eq!(
        (report.jobs, report.dedup_keys, report.events, report.workers),
        (3, 1, 2, 1)
    );
    let workers: Vec<String> = sqlx::query_scalar("SELECT id FROM apalis.workers ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("workers");
    assert_eq!(workers, ["alive", "gone-holding"]);

    assert_eq!(job_ids(pool).await, jobs[3..].to_vec());
    let other_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = 'someone_elses_queue'")
            .fetch_one(pool)
            .await
            .expect("count");
    assert_eq!(other_left, 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT dedup_id FROM dedup_keys")
        .fetch_all(pool)
        .await
        .expect("keys");
    assert_eq!(keys, ["live"]);
    let mut left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events")
        .fetch_all(pool)
        .await
        .expect("events");
    left.sort();
    let mut expected = vec![ids[1], ids[3], ids[4], ids[5]];
    expected.sort();
    assert_eq!(left, expected);

    // A second run finds nothing more.
    let again = run_janitor_once(pool, &config)
        .await
        .expect("janitor")
        .expect("lock");
    assert_eq!(again, Default::default());
}

#[tokio::test]
async fn an_event_whose_job_apalis_gave_up_on_is_dead_lettered_not_left_pending() {
    let db = test_db().await;
    let pool = &db.pool;
    let (org, _) = create_org(pool, None).await;
    // Three pending events: the first's job failed for good; the second's too, but it has a
    // fresh job (a redelivery); the third's job is merely retryable.
    let ids = create_events(pool, org, 3).await;
    let job_of = |id: Uuid| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT id FROM apalis.jobs WHERE job_type = $1 AND convert_from(job, 'UTF8')::jsonb ->> 'event_id' = $2",
        )
        .bind(DELIVERY_QUEUE)
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .expect("job of event")
    };
    for (id, sql) in [
        (
            ids[0],
            "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, done_at = now() WHERE id = $1",
        ),
        (
            ids[1],
            "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, done_at = now() WHERE id = $1",
        ),
        (
            ids[2],
            "UPDATE apalis.jobs SET status = 'Failed', attempts = 1, done_at = now() WHERE id = $1",
        ),
    ] {
        let job = job_of(id).await;
        sqlx::query(sql)
            .bind(job)
            .execute(pool)
            .await
            .expect("update job");
    }
    let mut tx = pool.begin().await.expect("begin");
    jobs::enqueue(
        &mut tx,
        &[(DeliveryJob::first(ids[1], org), Duration::from_secs(3600))],
    )
    .await
    .expect("redelivery job");
    tx.commit().await.expect("commit");

    let report = run_janitor_once(pool, &WorkerConfig::for_tests(&db.url))
        .await
        .expect("janitor")
        .expect("lock taken");
    assert_eq!(report.abandoned, 1);
    assert_eq!(event(pool, ids[0]).await.status, "failed");
    assert!(
        event(pool, ids[0])
            .await
            .last_error
            .is_some_and(|e| e.contains("abandoned"))
    );
    assert_eq!(
        event(pool, ids[1]).await.status,
        "pending",
        "a live redelivery job still owns it"
    );
    assert_eq!(
        event(pool, ids[2]).await.status,
        "pending",
        "apalis will retry its job"
    );
}

#[tokio::test]
async fn only_one_janitor_runs_at_a_time() {
    let db = test_db().await;
    let mut holder = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(JANITOR_LOCK_KEY)
        .execute(&mut holder)
        .await
        .expect("lock");
    let config = WorkerConfig::for_tests(&db.url);
    assert_eq!(run_janitor_once(&db.pool, &config).await.expect("janitor"), None);
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(JANITOR_LOCK_KEY)
        .execute(&mut holder)
        .await
        .expect("unlock");
    assert!(
        run_janitor_once(&db.pool, &config)
            .await
            .expect("janitor")
            .is_some()
    );
}

#[tokio::test]
async fn the_admin_port_serves_health_readiness_metrics_and_json_404s() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let worker = TestWorker::spawn(&db.url, |_| {}).await;
    let base = format!("http://{}", worker.admin);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    for path in ["/health", "/health/live"] {
        let res = get(path).await.expect("request");
        assert_eq!(res.status(), 200);
        let body: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"status": "healthy", "version": triggers_shared::VERSION})
        );
    }
    let res = get("/health/ready").await.expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "database": "connected"})
    );

    eventually("the event is delivered", Duration::from_secs(20), || async {
        event(&db.pool, ids[0]).await.status == "delivered"
    })
    .await;
    let res = get("/metrics").await.expect("request");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert!(
        text.contains("triggers_deliveries_total{outcome=\"delivered\"}"),
        "{text}"
    );
    for metric in [
        "triggers_delivery_duration_seconds",
        "triggers_delivery_inflight",
        "triggers_queue_depth",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }

    let res = get("/nope").await.expect("request");
    assert_eq!(res.status(), 404);
    let body: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
    assert_eq!(body["code"], "not_found");
    assert!(body["error"].is_string());

    db.cut_off().await.expect("cut off");
    let res = get("/health/ready").await.expect("request");
    assert_eq!(res.status(), 503);
    let body: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(get("/health").await.expect("request").status(), 200);
    db.restore().await.expect("restore");
    eventually("ready again", Duration::from_secs(10), || async {
        get("/health/ready").await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}
