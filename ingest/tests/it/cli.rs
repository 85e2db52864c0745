//! The operator subcommands of the real `triggers-ingest` binary, run as processes against a
//! real database: `migrate`, `org create`, `key rotate`, `events redeliver`, `queue stats`.

use std::{process::Output, time::Duration};

use crate::common::{TestApp, fixtures::get_keys};
use serde_json::{Value, json};
use sqlx::PgPool;
use triggers_shared::{
    db::{
        endpoints, organizations,
        queue::testing::{self as q, ForcedState},
    },
    models::Tier,
    net::WebhookUrl,
    signing,
    testing::{self, TestDb},
};
use uuid::Uuid;

/// Run `triggers-ingest ARGS` with only `DATABASE_URL` (or nothing) in its environment.
async fn run(db_url: Option<&str>, args: &[&str]) -> Output {
    run_with(db_url, &[], args).await
}

/// [`run`], with these variables set too.
async fn run_with(db_url: Option<&str>, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_triggers-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied())
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
    get_keys(app, key).await.status().as_u16()
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
async fn a_setting_out_of_its_range_stops_serve_naming_the_variable_and_an_empty_one_is_unset() {
    // Validation runs before any connection: no database is needed. The budget, declared before
    // the cap, would be refused first were its empty value not taken as unset.
    let vars = [
        ("TRIGGERS_REQUEST_BYTES_BUDGET", ""),
        ("TRIGGERS_MAX_ENDPOINTS_PER_ORG", "0"),
    ];
    let out = run_with(Some("postgres://triggers@127.0.0.1:1/none"), &vars, &["serve"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TRIGGERS_MAX_ENDPOINTS_PER_ORG is invalid (`0`): must be at least 1"),
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

/// An organisation with a webhook (its default endpoint) and, per `(status, hours ago)`, one
/// event stored as ingest stores it, created that long ago, its one delivery in that status
/// (the trigger sums the event up). A delivery that is no longer pending has no job any more.
async fn org_with_events(pool: &PgPool, events: &[(&str, i32)]) -> (Uuid, Vec<Uuid>) {
    let org = Uuid::now_v7();
    let mut conn = pool.acquire().await.expect("connection");
    organizations::insert(&mut conn, org, "cli", Tier::Pro)
        .await
        .expect("insert organisation");
    let url = WebhookUrl::parse("http://127.0.0.1:9/").expect("a webhook URL");
    endpoints::set_default(&mut conn, org, &url, &signing::generate_secret())
        .await
        .expect("set webhook");
    let payloads = vec![(None, json!({})); events.len()];
    let ids = testing::store_events(pool, org, "order.created", &payloads)
        .await
        .expect("store events");
    for (&(status, hours_ago), &id) in events.iter().zip(&ids) {
        if status != "pending" {
            sqlx::query(
                "UPDATE deliveries SET status = $2, attempts = 6, job_id = NULL, next_attempt_at = NULL,
                        delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
                 WHERE event_id = $1",
            )
            .bind(id)
            .bind(status)
            .execute(&mut *conn)
            .await
            .expect("set the delivery's status");
            q::delete_jobs_of_events(&mut conn, &[id]).await;
        }
        sqlx::query(
            "WITH e AS (UPDATE events SET created_at = now() - make_interval(hours => $2) WHERE id = $1
                        RETURNING id, created_at)
             UPDATE deliveries d SET created_at = e.created_at FROM e WHERE d.event_id = e.id",
        )
        .bind(id)
        .bind(hours_ago)
        .execute(&mut *conn)
        .await
        .expect("age the event");
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

/// Jobs of event `id` (in any state: no worker runs here, so every job is waiting).
async fn jobs_for(pool: &PgPool, id: Uuid) -> usize {
    let mut conn = pool.acquire().await.expect("connection");
    q::jobs_of_event(&mut conn, id).await.len()
}

/// The one job of event `id` (which has one delivery).
async fn only_job(conn: &mut sqlx::PgConnection, id: Uuid) -> String {
    let jobs = q::jobs_of_event(conn, id).await;
    assert_eq!(jobs.len(), 1, "event {id} has one job");
    jobs[0].clone()
}

/// Make the next attempt of event `id`'s one delivery due `secs` from now (negative: overdue
/// by that much): its job and the delivery's `next_attempt_at` alike.
async fn due_in(pool: &PgPool, id: Uuid, secs: f64) {
    let mut conn = pool.acquire().await.expect("connection");
    let job = only_job(&mut conn, id).await;
    q::set_due_in(&mut conn, &job, secs).await;
    sqlx::query(
        "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2) WHERE event_id = $1",
    )
    .bind(id)
    .bind(secs)
    .execute(&mut *conn)
    .await
    .expect("reschedule the delivery");
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
async fn events_redeliver_refuses_an_organisation_without_an_endpoint() {
    let app = TestApp::spawn().await;
    let (_, org) = app.create_org("NoHook", "free").await;
    let out = redeliver(&app.db_url, &org, "failed", &[]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("organisation {org} has no endpoint")),
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
    // Each event has its delivery's first job, due now. One of the busy organisation's has been
    // due for five minutes; one of the quiet organisation's is a retry due in an hour.
    due_in(&db.pool, busy_events[0], -300.0).await;
    due_in(&db.pool, quiet_events[1], 3600.0).await;
    // A claimed job is running, not due; a failed one with runs left is due again (what the
    // worker's queue gauges count too).
    let mut conn = db.pool.acquire().await.expect("connection");
    let claimed = only_job(&mut conn, busy_events[1]).await;
    q::register_worker(&mut conn, "some-worker", Duration::ZERO).await;
    q::hold_by(&mut conn, &claimed, "some-worker").await;
    let retryable = only_job(&mut conn, busy_events[2]).await;
    q::force_state(&mut conn, &retryable, ForcedState::Retryable, Duration::ZERO).await;
    drop(conn);

    let stats = stdout_json(&run(Some(&db.url), &["queue", "stats", "--json"]).await);
    assert_eq!(
        (&stats["due"], &stats["scheduled"], &stats["running"]),
        (&4.into(), &1.into(), &1.into())
    );
    let oldest = stats["oldest_due_age_seconds"].as_f64().expect("oldest");
    assert!((299.0..400.0).contains(&oldest), "oldest due age {oldest}");
    let top = stats["top_organizations"].as_array().expect("top");
    assert_eq!(top.len(), 2);
    // An organisation's waiting work is its pending deliveries, whether or not a worker has
    // claimed the job carrying one.
    assert_eq!(top[0]["organization_id"], busy.to_string());
    assert_eq!(top[0]["waiting"], 4);
    let busy_oldest = top[0]["oldest_due_age_seconds"].as_f64().expect("oldest");
    assert!(
        (299.0..400.0).contains(&busy_oldest),
        "busy oldest due age {busy_oldest}"
    );
    assert_eq!(top[1]["organization_id"], quiet.to_string());
    assert_eq!(top[1]["waiting"], 2);

    let table = run(Some(&db.url), &["queue", "stats"]).await;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("due        4"), "{text}");
    assert!(text.contains(&busy.to_string()), "{text}");
}
