//! The operator subcommands of the real `triggers-ingest` binary, run as processes against a
//! real database: `migrate`, `org create`, `key rotate`, `events redeliver`, `queue stats`.

mod common;

use std::{process::Output, time::Duration};

use common::TestApp;
use serde_json::Value;
use sqlx::PgPool;
use triggers_shared::{
    db::organizations,
    jobs::{self, DeliveryJob},
    models::Tier,
    signing,
    testing::TestDb,
};
use uuid::Uuid;

/// Run `triggers-ingest ARGS` with only `DATABASE_URL` (or nothing) in its environment.
async fn run(db_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_triggers-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .args(args);
    if let Some(url) = db_url {
        cmd.env("DATABASE_URL", url);
    }
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run triggers-ingest")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn key_status(app: &TestApp, key: &str) -> u16 {
    app.client
        .get(app.url("/api/keys"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("GET /api/keys")
        .status()
        .as_u16()
}

#[tokio::test]
async fn help_names_every_operator_command_without_a_database() {
    let out = run(None, &["--help"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "migrate", "org", "key", "events", "queue"] {
        assert!(
            help.contains(&format!("  {command} ")),
            "--help lacks {command}:\n{help}"
        );
    }
    let out = run(None, &["events", "redeliver", "--help"]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--org", "--status", "--since"] {
        assert!(help.contains(flag), "redeliver --help lacks {flag}:\n{help}");
    }
}

#[tokio::test]
async fn an_operator_command_without_database_url_says_what_is_missing() {
    let out = run(None, &["queue", "stats"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("DATABASE_URL is not set"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn migrate_creates_the_schema_in_an_empty_database() {
    let db = TestDb::new().await.expect("test database");
    let name = format!("triggers_test_{}", Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&db.pool)
        .await
        .expect("create empty database");
    let url = db.url.replace(&db.name, &name);

    let out = run(Some(&url), &["migrate"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let pool = PgPool::connect(&url).await.expect("connect");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name IN ('organizations', 'api_keys', 'events')",
    )
    .fetch_one(&pool)
    .await
    .expect("count tables");
    assert_eq!(tables, 3);
    // A second run has nothing to do and still succeeds.
    let again = run(Some(&url), &["migrate"]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    pool.close().await;
}

#[tokio::test]
async fn org_create_prints_a_working_key_once_and_refuses_an_unknown_tier() {
    let app = TestApp::spawn().await;
    let created = stdout_json(
        &run(
            Some(&app.db_url),
            &["org", "create", "--name", "Acme", "--tier", "pro"],
        )
        .await,
    );
    let key = created["api_key"].as_str().expect("api_key");
    assert_eq!(created["organization_name"], "Acme");
    assert_eq!(created["tier"], "pro");
    let org: Uuid = created["organization_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let (tier, keys): (String, i64) = sqlx::query_as(
        "SELECT o.tier, (SELECT count(*) FROM api_keys k WHERE k.organization_id = o.id)
         FROM organizations o WHERE o.id = $1",
    )
    .bind(org)
    .fetch_one(&app.db)
    .await
    .expect("organisation row");
    assert_eq!((tier.as_str(), keys), ("pro", 1));
    let stored_plain: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE key_hash = $1")
        .bind(key)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(stored_plain, 0, "the key itself is never stored");
    assert_eq!(key_status(&app, key).await, 200);

    let refused = run(
        Some(&app.db_url),
        &["org", "create", "--name", "Acme", "--tier", "gold"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("possible values: free, pro, business, enterprise"));
    let blank = run(Some(&app.db_url), &["org", "create", "--name", "   "]).await;
    assert!(!blank.status.success());
    assert!(
        stderr(&blank).contains("--name must not be only whitespace"),
        "{}",
        stderr(&blank)
    );
    app.stop().await;
}

#[tokio::test]
async fn key_rotate_issues_a_new_key_and_the_old_one_stops_working() {
    let app = TestApp::spawn().await;
    let created = stdout_json(&run(Some(&app.db_url), &["org", "create", "--name", "Rotating"]).await);
    let old_key = created["api_key"].as_str().expect("api_key").to_string();
    let org = created["organization_id"].as_str().expect("id").to_string();
    assert_eq!(
        key_status(&app, &old_key).await,
        200,
        "the old key is cached as valid"
    );

    let rotated = stdout_json(&run(Some(&app.db_url), &["key", "rotate", "--org", &org]).await);
    let new_key = rotated["api_key"].as_str().expect("api_key");
    assert_ne!(new_key, old_key);
    assert_eq!(rotated["previous_key_expires_at"], rotated["rotated_at"]);
    assert_eq!(key_status(&app, new_key).await, 200);
    // The running instance hears the rotation (LISTEN/NOTIFY) and drops the cached old key.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while key_status(&app, &old_key).await != 401 {
        assert!(tokio::time::Instant::now() < deadline, "the old key still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let unknown = Uuid::now_v7().to_string();
    let missing = run(Some(&app.db_url), &["key", "rotate", "--org", &unknown]).await;
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains(&format!("no organisation {unknown}")));
    let not_a_uuid = run(Some(&app.db_url), &["key", "rotate", "--org", "acme"]).await;
    assert_eq!(not_a_uuid.status.code(), Some(2));
    app.stop().await;
}

/// An organisation with a webhook and, per `(status, hours ago)`, one event.
async fn org_with_events(pool: &PgPool, events: &[(&str, i32)]) -> (Uuid, Vec<Uuid>) {
    let org = Uuid::now_v7();
    let mut conn = pool.acquire().await.expect("connection");
    organizations::insert(&mut conn, org, "cli", Tier::Pro)
        .await
        .expect("insert organisation");
    organizations::set_webhook(&mut conn, org, "http://127.0.0.1:9/", &signing::generate_secret())
        .await
        .expect("set webhook");
    drop(conn);
    let mut ids = Vec::new();
    for (status, hours_ago) in events {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO events (id, organization_id, type, payload, status, attempts, created_at)
             VALUES ($1, $2, 'order.created', '{}', $3, 6, now() - make_interval(hours => $4))",
        )
        .bind(id)
        .bind(org)
        .bind(status)
        .bind(hours_ago)
        .execute(pool)
        .await
        .expect("insert event");
        ids.push(id);
    }
    (org, ids)
}

async fn status_of(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM events WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("event")
}

async fn jobs_for(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs
         WHERE status = 'Pending' AND convert_from(job, 'UTF8')::jsonb ->> 'event_id' = $1::text",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("jobs")
}

/// `triggers-ingest events redeliver --org ORG --status STATUS [EXTRA...]`.
async fn redeliver(db_url: &str, org: &str, status: &str, extra: &[&str]) -> Output {
    let mut args = vec!["events", "redeliver", "--org", org, "--status", status];
    args.extend_from_slice(extra);
    run(Some(db_url), &args).await
}

#[tokio::test]
async fn events_redeliver_queues_only_failed_events_since_the_given_instant() {
    let db = TestDb::new().await.expect("test database");
    let (org, ids) = org_with_events(&db.pool, &[("failed", 48), ("failed", 1), ("delivered", 1)]).await;
    let org = org.to_string();
    let since = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();

    let out = stdout_json(&redeliver(&db.url, &org, "failed", &["--since", &since]).await);
    assert_eq!(out["count"], 1);
    assert_eq!(status_of(&db.pool, ids[0]).await, "failed", "older than --since");
    assert_eq!(status_of(&db.pool, ids[1]).await, "pending");
    assert_eq!(status_of(&db.pool, ids[2]).await, "delivered");
    assert_eq!(
        (jobs_for(&db.pool, ids[0]).await, jobs_for(&db.pool, ids[1]).await),
        (0, 1)
    );

    // Without --since every remaining failed event goes.
    let all = stdout_json(&redeliver(&db.url, &org, "failed", &[]).await);
    assert_eq!(all["count"], 1);
    assert_eq!(status_of(&db.pool, ids[0]).await, "pending");

    let wrong = redeliver(&db.url, &org, "delivered", &[]).await;
    assert_eq!(wrong.status.code(), Some(2));
    let bad_since = redeliver(&db.url, &org, "failed", &["--since", "yesterday"]).await;
    assert_eq!(bad_since.status.code(), Some(2));
    assert!(stderr(&bad_since).contains("--since"), "{}", stderr(&bad_since));
}

#[tokio::test]
async fn events_redeliver_refuses_an_organisation_without_a_webhook() {
    let app = TestApp::spawn().await;
    let (_, org) = app.create_org("NoHook", "free").await;
    let out = redeliver(&app.db_url, &org, "failed", &[]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has no webhook configured"),
        "{}",
        stderr(&out)
    );
    app.stop().await;
}

#[tokio::test]
async fn queue_stats_reports_depth_by_state_oldest_due_age_and_the_busiest_organisations() {
    let db = TestDb::new().await.expect("test database");
    let (busy, busy_events) = org_with_events(
        &db.pool,
        &[("pending", 0), ("pending", 0), ("pending", 0), ("pending", 0)],
    )
    .await;
    let (quiet, quiet_events) = org_with_events(&db.pool, &[("pending", 0), ("pending", 0)]).await;
    let mut tx = db.pool.begin().await.expect("begin");
    let due: Vec<_> = busy_events
        .iter()
        .map(|id| (DeliveryJob::first(*id, busy), Duration::ZERO))
        .chain([(DeliveryJob::first(quiet_events[0], quiet), Duration::ZERO)])
        .collect();
    jobs::enqueue(&mut tx, &due).await.expect("enqueue due");
    jobs::enqueue(
        &mut tx,
        &[(
            DeliveryJob::first(quiet_events[1], quiet),
            Duration::from_secs(3600),
        )],
    )
    .await
    .expect("enqueue scheduled");
    tx.commit().await.expect("commit");
    // One of the busy organisation's jobs has been due for five minutes.
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() - interval '300 seconds'
         WHERE convert_from(job, 'UTF8')::jsonb ->> 'event_id' = $1::text",
    )
    .bind(busy_events[0])
    .execute(&db.pool)
    .await
    .expect("age a job");
    // A claimed job is running, not due; a failed one with runs left is due again (what the
    // worker's queue gauges count too).
    for (event, status, attempts) in [(busy_events[1], "Queued", 0), (busy_events[2], "Failed", 1)] {
        sqlx::query(
            "UPDATE apalis.jobs SET status = $2, attempts = $3
             WHERE convert_from(job, 'UTF8')::jsonb ->> 'event_id' = $1::text",
        )
        .bind(event)
        .bind(status)
        .bind(attempts)
        .execute(&db.pool)
        .await
        .expect("set a job's state");
    }

    let stats = stdout_json(&run(Some(&db.url), &["queue", "stats", "--json"]).await);
    assert_eq!(
        (&stats["due"], &stats["scheduled"], &stats["running"]),
        (&4.into(), &1.into(), &1.into())
    );
    let oldest = stats["oldest_due_age_seconds"].as_f64().expect("oldest");
    assert!((299.0..400.0).contains(&oldest), "oldest due age {oldest}");
    let top = stats["top_organizations"].as_array().expect("top");
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["organization_id"], busy.to_string());
    assert_eq!(top[0]["waiting"], 3);
    assert_eq!(top[1]["organization_id"], quiet.to_string());
    assert_eq!(top[1]["waiting"], 2);

    let table = run(Some(&db.url), &["queue", "stats"]).await;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("due        4"), "{text}");
    assert!(text.contains(&busy.to_string()), "{text}");
}
