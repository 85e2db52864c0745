//! The janitor, and the worker's admin port.

use std::time::Duration;

use crate::common::*;
use queue::testing::{self as q, ForcedState};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use triggers_shared::{config::WorkerConfig, db::locks::JANITOR_LOCK_KEY, jobs::DeliveryJob};
use triggers_worker::run_janitor_once;
use uuid::Uuid;

/// Set the one delivery of event `id` to `status` (the trigger sums the event up), then age the
/// event's and the delivery's timestamps by `age` (a Postgres interval).
async fn age_delivery(pool: &sqlx::PgPool, id: Uuid, status: &str, age: &str) {
    sqlx::query("UPDATE deliveries SET status = $2, job_id = NULL, delivered_at = CASE WHEN $2 = 'delivered' THEN now() - $3::interval END WHERE event_id = $1")
        .bind(id)
        .bind(status)
        .bind(age)
        .execute(pool)
        .await
        .expect("set delivery");
    sqlx::query(
        "UPDATE events SET updated_at = now() - $2::interval,
                           delivered_at = CASE WHEN delivered_at IS NOT NULL THEN now() - $2::interval END
         WHERE id = $1",
    )
    .bind(id)
    .bind(age)
    .execute(pool)
    .await
    .expect("age event");
}

#[tokio::test]
async fn the_janitor_removes_finished_jobs_expired_dedup_keys_old_delivered_events_and_dead_workers_only() {
    let db = test_db().await;
    let pool = &db.pool;
    // An endpoint nobody serves: no worker runs here, only the janitor.
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/")).await;
    // Six events, each with one delivery and its job; the jobs get the states below.
    let ids = create_events(pool, org, 6).await;
    assert_eq!(job_ids(pool).await.len(), 6);
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(job_of(pool, *id).await);
    }
    // Deleted: done two minutes ago (a row of an older version), killed, and failed for good
    // (their deliveries are dead-lettered with them).
    force_job(pool, &jobs[0], ForcedState::Done, TWO_MINUTES).await;
    force_job(pool, &jobs[1], ForcedState::Killed, TWO_MINUTES).await;
    force_job(pool, &jobs[2], ForcedState::GivenUp, TWO_MINUTES).await;
    // Kept: just finished, failed but retryable, and still pending.
    force_job(pool, &jobs[3], ForcedState::Done, Duration::ZERO).await;
    force_job(pool, &jobs[4], ForcedState::Retryable, TWO_MINUTES).await;
    // A job of another queue is never ours to delete.
    let mut conn = pool.acquire().await.expect("conn");
    q::push_to(
        &mut conn,
        "someone_elses_queue",
        &DeliveryJob::first(org, Uuid::now_v7(), Uuid::now_v7()),
    )
    .await;
    q::force_state_of_queue(
        &mut conn,
        "someone_elses_queue",
        ForcedState::Done,
        Duration::from_secs(24 * 3600),
    )
    .await;

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

    // Events: delivered 8 days ago (purged), acknowledged 8 days ago (purged; its pending
    // delivery is cancelled, so its given-up job dead-letters nothing), failed 20 days ago (kept:
    // dead letters are kept 30 days), pending long ago (kept).
    age_delivery(pool, ids[0], "delivered", "8 days").await;
    triggers_shared::db::events::acknowledge(&mut conn, org, ids[2])
        .await
        .expect("ack")
        .expect("event");
    sqlx::query(
        "UPDATE events SET acknowledged_at = now() - interval '8 days', delivered_at = now() - interval '8 days'
         WHERE id = $1",
    )
    .bind(ids[2])
    .execute(pool)
    .await
    .expect("age ack");
    age_delivery(pool, ids[3], "failed", "20 days").await;
    sqlx::query("UPDATE events SET created_at = now() - interval '30 days', updated_at = now() - interval '30 days' WHERE id = $1")
        .bind(ids[4])
        .execute(pool)
        .await
        .expect("age event");

    // Worker registrations: long gone and idle (deleted), long gone but still holding a job
    // (kept: orphan recovery finds the job through it), and alive (kept).
    for (id, seen) in [
        ("gone-idle", 2 * 24 * 3600),
        ("gone-holding", 2 * 24 * 3600),
        ("alive", 0),
    ] {
        q::register_worker(&mut conn, id, Duration::from_secs(seen)).await;
    }
    q::hold_by(&mut conn, &jobs[5], "gone-holding").await;
    drop(conn);

    let config = WorkerConfig::for_tests(&db.url); // retention 7 days
    let report = run_janitor_once(pool, &config)
        .await
        .expect("janitor")
        .expect("it had the lock");
    assert_eq!(
        (
            report.jobs,
            report.abandoned,
            report.dedup_keys,
            report.events,
            report.workers
        ),
        (3, 1, 1, 2, 1)
    );
    assert_eq!(event(pool, ids[1]).await.status, "failed", "its job was killed");
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(q::worker_ids(&mut conn).await, ["alive", "gone-holding"]);

    let mut kept = jobs[3..].to_vec();
    kept.sort();
    assert_eq!(job_ids(pool).await, kept);
    assert_eq!(q::count_in(&mut conn, "someone_elses_queue").await, 1);
    drop(conn);
    // (The events' own keys are live for a day.)
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT dedup_id FROM dedup_keys WHERE dedup_id IN ('old', 'live')")
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
    let mut delivered_to: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM deliveries")
        .fetch_all(pool)
        .await
        .expect("deliveries");
    delivered_to.sort();
    assert_eq!(
        delivered_to, expected,
        "the purged events' deliveries went with them"
    );

    // A second run finds nothing more.
    let again = run_janitor_once(pool, &config)
        .await
        .expect("janitor")
        .expect("lock");
    assert_eq!(again, Default::default());
}

#[tokio::test]
async fn a_delivery_whose_job_apalis_gave_up_on_is_dead_lettered_not_left_pending() {
    let db = test_db().await;
    let pool = &db.pool;
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/")).await;
    // Three pending deliveries: the first's job failed for good; the second's too, but it was
    // resent since (a new chain with a new job); the third's job is merely retryable.
    let ids = create_events(pool, org, 3).await;
    for (id, state) in [
        (ids[0], ForcedState::GivenUp),
        (ids[1], ForcedState::GivenUp),
        (ids[2], ForcedState::Retryable),
    ] {
        let job = job_of(pool, id).await;
        force_job(pool, &job, state, Duration::ZERO).await;
    }
    let resent = deliveries(pool, ids[1]).await[0].endpoint_id;
    let mut tx = pool.begin().await.expect("begin");
    let key = triggers_shared::models::DeliveryKey {
        organization_id: org,
        event_id: ids[1],
        endpoint_id: resent,
    };
    triggers_shared::db::deliveries::new_chains(&mut tx, &[key])
        .await
        .expect("a new chain");
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
        "its new chain's job still owns it"
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
        "triggers_queue_jobs{state=\"due\"}",
        "triggers_queue_jobs{state=\"scheduled\"}",
        "triggers_queue_jobs{state=\"running\"}",
        "triggers_queue_oldest_pending_age_seconds",
        "triggers_deliveries_without_job",
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

#[tokio::test]
async fn dead_letters_dead_api_keys_and_old_rate_limit_windows_are_purged_after_their_retention() {
    let db = test_db().await;
    let pool = &db.pool;
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/hook")).await;
    let ids = create_events(pool, org, 3).await;
    // Dead letters: one unchanged for 31 days (purged with its attempts), one for 29 (kept), and
    // a pending event as old (never purged: it still waits for delivery).
    for (id, age) in [(ids[0], "31 days"), (ids[1], "29 days")] {
        age_delivery(pool, id, "failed", age).await;
    }
    sqlx::query("UPDATE events SET updated_at = now() - interval '31 days' WHERE id = $1")
        .bind(ids[2])
        .execute(pool)
        .await
        .expect("age event");
    for id in &ids[..2] {
        sqlx::query(
            "INSERT INTO delivery_attempts (event_id, organization_id, attempt, started_at, duration_ms, response_status)
             VALUES ($1, $2, 1, now() - interval '31 days', 5, 500)",
        )
        .bind(id)
        .bind(org)
        .execute(pool)
        .await
        .expect("attempt");
    }
    // API keys: revoked 31 days ago and expired 31 days ago (purged); revoked yesterday, expiring
    // tomorrow and active (kept).
    for (prefix, revoked, expires) in [
        ("revoked-old", Some("31 days"), None),
        ("expired-old", None, Some("-31 days")),
        ("revoked-new", Some("1 day"), None),
        ("expiring", None, Some("1 day")),
        ("active", None, None),
    ] {
        sqlx::query(
            "INSERT INTO api_keys (id, organization_id, prefix, key_hash, revoked_at, expires_at)
             VALUES ($1, $2, $3, 'hash', now() - $4::interval, now() + $5::interval)",
        )
        .bind(Uuid::now_v7())
        .bind(org)
        .bind(prefix)
        .bind(revoked)
        .bind(expires)
        .execute(pool)
        .await
        .expect("key");
    }
    // Rate-limit windows: two hours old (purged), the previous and the current minute (kept).
    for age in ["2 hours", "1 minute", "0 minutes"] {
        sqlx::query(
            "INSERT INTO rate_limit_windows (organization_id, window_start, granted)
             VALUES ($1, date_trunc('minute', now() - $2::interval), 7)",
        )
        .bind(org)
        .bind(age)
        .execute(pool)
        .await
        .expect("window");
    }

    let report = run_janitor_once(pool, &WorkerConfig::for_tests(&db.url))
        .await
        .expect("janitor")
        .expect("lock taken");
    assert_eq!(
        (report.dead_letters, report.api_keys, report.rate_limit_windows),
        (1, 2, 1),
        "{report:?}"
    );
    let mut left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events")
        .fetch_all(pool)
        .await
        .expect("events");
    left.sort();
    assert_eq!(left, ids[1..].to_vec());
    let attempts_of: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM delivery_attempts")
        .fetch_all(pool)
        .await
        .expect("attempts");
    assert_eq!(attempts_of, [ids[1]]);
    let keys: Vec<String> = sqlx::query_scalar("SELECT prefix FROM api_keys ORDER BY prefix")
        .fetch_all(pool)
        .await
        .expect("keys");
    assert_eq!(keys, ["active", "expiring", "revoked-new"]);
    let windows: i64 = sqlx::query_scalar("SELECT count(*) FROM rate_limit_windows")
        .fetch_one(pool)
        .await
        .expect("windows");
    assert_eq!(windows, 2);
}
