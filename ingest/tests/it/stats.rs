//! `GET /api/endpoints/{id}/stats`: deliveries by status and attempt-duration percentiles from
//! the hourly rollup, exact before and after the worker folds the deltas, per endpoint; and
//! (ignored by default, run by hand) its time with 1,000,000 deliveries in the table.

use std::time::{Duration, Instant};

use crate::common::TestApp;
use chrono::{DateTime, Duration as Span, SubsecRound, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use triggers_shared::{db::endpoint_stats, testing::store_events};
use uuid::Uuid;

struct Client<'a> {
    app: &'a TestApp,
    key: String,
    org: Uuid,
}

impl<'a> Client<'a> {
    async fn new(app: &'a TestApp, name: &str) -> Self {
        let (key, org) = app.create_org(name, "enterprise").await;
        Self {
            app,
            key,
            org: Uuid::parse_str(&org).expect("organisation id"),
        }
    }

    async fn endpoint(&self) -> Uuid {
        let res = self
            .app
            .client
            .post(self.app.url("/api/endpoints"))
            .header("X-API-Key", &self.key)
            .json(&json!({"url": "http://127.0.0.1:9/hooks"}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.expect("json");
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    async fn stats(&self, endpoint: Uuid, query: &str) -> (StatusCode, Value) {
        let res = self
            .app
            .client
            .get(self.app.url(&format!("/api/endpoints/{endpoint}/stats{query}")))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .expect("request");
        (res.status(), res.json().await.expect("a JSON answer"))
    }
}

/// The bucket of a duration, as `triggers_duration_bucket` computes it.
fn bucket(ms: i32) -> i32 {
    (4.0 * (f64::from(ms) + 1.0).log2()).floor() as i32
}

fn middle(ms: i32) -> f64 {
    (endpoint_stats::bucket_middle_ms(bucket(ms)) * 10.0).round() / 10.0
}

async fn set_status(pool: &PgPool, endpoint: Uuid, events: &[Uuid], status: &str) {
    sqlx::query("UPDATE deliveries SET status = $3 WHERE endpoint_id = $1 AND event_id = ANY($2)")
        .bind(endpoint)
        .bind(events)
        .bind(status)
        .execute(pool)
        .await
        .expect("status");
}

/// Attempts of `event` to `endpoint`, one per duration, started at `at`, in one statement.
async fn attempts(
    pool: &PgPool,
    org: Uuid,
    endpoint: Uuid,
    event: Uuid,
    at: DateTime<Utc>,
    durations: &[i32],
) {
    sqlx::query(
        "INSERT INTO delivery_attempts (event_id, organization_id, endpoint_id, attempt, started_at, duration_ms,
                                        response_status)
         SELECT $1, $2, $3, n, $4, d, 500 FROM unnest($5::int4[]) WITH ORDINALITY AS t(d, n)",
    )
    .bind(event)
    .bind(org)
    .bind(endpoint)
    .bind(at)
    .bind(durations)
    .execute(pool)
    .await
    .expect("attempts");
}

async fn deltas(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM endpoint_stats_deltas")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn stats_count_each_status_and_attempt_durations_exactly_before_and_after_folding() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let (e, f) = (acme.endpoint().await, acme.endpoint().await);
    let pool = &app.db;
    let events = |n: usize| async move {
        let payloads: Vec<_> = (0..n).map(|i| (None, json!({"n": i}))).collect();
        store_events(pool, acme.org, "order.created", &payloads)
            .await
            .expect("store")
    };
    let now_ids = events(10).await;
    set_status(pool, e, &now_ids[..4], "delivered").await;
    set_status(pool, e, &now_ids[4..6], "failed").await;
    set_status(pool, e, &now_ids[6..7], "skipped").await;
    // Three more events from 30 hours ago: delivered, outside the default window.
    let old = events(3).await;
    sqlx::query("UPDATE deliveries SET created_at = now() - interval '30 hours', status = 'delivered' WHERE event_id = ANY($1)")
        .bind(&old)
        .execute(pool)
        .await
        .expect("old deliveries");
    let now = Utc::now();
    attempts(pool, acme.org, e, now_ids[0], now, &[10; 10]).await;
    attempts(
        pool,
        acme.org,
        e,
        now_ids[1],
        now,
        &[100, 100, 100, 100, 100, 100, 100, 100, 100, 1000],
    )
    .await;
    attempts(pool, acme.org, e, old[0], now - Span::hours(30), &[5000; 5]).await;

    let expected_default = json!({
        "deliveries": {"total": 10, "pending": 3, "delivered": 4, "failed": 2, "skipped": 1, "cancelled": 0},
        "attempts": {"count": 20, "duration_ms": {"p50": middle(10), "p95": middle(100)}},
    });
    let two_days = Utc::now() - Span::hours(48);
    let expected_two_days = json!({
        "deliveries": {"total": 13, "pending": 3, "delivered": 7, "failed": 2, "skipped": 1, "cancelled": 0},
        "attempts": {"count": 25, "duration_ms": {"p50": middle(100), "p95": middle(5000)}},
    });
    let since_query = format!("?since={}", two_days.to_rfc3339().replace('+', "%2B"));
    assert!(deltas(pool).await > 0);
    for folded in [false, true] {
        if folded {
            let mut conn = pool.acquire().await.expect("connection");
            let n = endpoint_stats::compact(&mut conn, 3).await.expect("fold");
            assert_eq!(n, 3, "a bounded fold");
            while endpoint_stats::compact(&mut conn, 3).await.expect("fold") > 0 {}
            assert_eq!(deltas(pool).await, 0);
        }
        let (status, body) = acme.stats(e, "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json!({"deliveries": body["deliveries"], "attempts": body["attempts"]}),
            expected_default,
            "folded: {folded}"
        );
        let since = DateTime::parse_from_rfc3339(body["since"].as_str().expect("since"))
            .expect("since")
            .with_timezone(&Utc);
        let until = DateTime::parse_from_rfc3339(body["until"].as_str().expect("until")).expect("until");
        let hour_ago = (Utc::now() - Span::hours(24)).trunc_subsecs(0);
        assert_eq!(since.timestamp() % 3600, 0, "the window starts on the hour");
        assert!(since <= hour_ago && hour_ago - since < Span::hours(1));
        assert!((Utc::now() - until.with_timezone(&Utc)).num_seconds().abs() < 5);

        let (status, body) = acme.stats(e, &since_query).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json!({"deliveries": body["deliveries"], "attempts": body["attempts"]}),
            expected_two_days,
            "folded: {folded}"
        );
        // The other endpoint got the same events and is still pending on all of them.
        let (_, body) = acme.stats(f, "").await;
        assert_eq!(
            json!({"deliveries": body["deliveries"], "attempts": body["attempts"]}),
            json!({
                "deliveries": {"total": 10, "pending": 10, "delivered": 0, "failed": 0, "skipped": 0, "cancelled": 0},
                "attempts": {"count": 0, "duration_ms": {"p50": null, "p95": null}},
            })
        );
    }
}

#[tokio::test]
async fn stats_refuse_a_bad_window_and_another_organisations_endpoint() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let globex = Client::new(&app, "Globex").await;
    let e = acme.endpoint().await;
    let at = |d: Span| (Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for since in ["yesterday", ""] {
        let (status, body) = acme.stats(e, &format!("?since={since}")).await;
        assert_eq!(status, 422, "{since:?}: {body}");
        assert_eq!(body["details"][0]["field"], "since");
    }
    // 28 days is the longest window: an earlier start counts from 28 days ago (from the start
    // of that hour), a start in the future from now.
    let window = |body: &Value| {
        let read =
            |f: &str| DateTime::parse_from_rfc3339(body[f].as_str().expect("a timestamp")).expect("RFC 3339");
        read("until") - read("since")
    };
    let (status, body) = acme.stats(e, &format!("?since={}", at(-Span::days(400)))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        (Span::days(28)..=Span::days(28) + Span::hours(1)).contains(&window(&body)),
        "{body}"
    );
    let (status, body) = acme.stats(e, &format!("?since={}", at(Span::hours(5)))).await;
    assert_eq!(status, 200, "{body}");
    assert!((Span::zero()..=Span::hours(1)).contains(&window(&body)), "{body}");
    assert_eq!(body["deliveries"]["total"], 0, "{body}");
    let (status, foreign) = globex.stats(e, "").await;
    assert_eq!(
        (status, &foreign["code"]),
        (StatusCode::NOT_FOUND, &json!("endpoint_not_found"))
    );
    let (status, unknown) = globex.stats(Uuid::now_v7(), "").await;
    assert_eq!((status, unknown), (StatusCode::NOT_FOUND, foreign));
}

/// The measurement of BENCHMARKS.md ("Endpoint stats"): 1,000,000 deliveries of one endpoint
/// over the last 24 hours (and as many attempts), loaded with SQL in statements of 10,000 rows
/// (so the triggers write deltas as real traffic would), then the route timed 50 times with
/// the deltas unfolded and 50 times folded. Run it with
/// `cargo test -p triggers-ingest --test stats -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement: loads 1,000,000 deliveries (about a minute)"]
async fn stats_answer_within_50_ms_with_a_million_deliveries() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let e = acme.endpoint().await;
    let loading = Instant::now();
    for chunk in 0..100 {
        sqlx::query(
            "WITH e AS (
                 INSERT INTO events (id, organization_id, type, payload, status, created_at)
                 SELECT triggers_uuid_v7(), $1, 'order.created', '{}', 'delivered',
                        now() - make_interval(secs => (($3 * 10000 + g) % 86000))
                 FROM generate_series(1, 10000) g
                 RETURNING id, created_at
             ),
             d AS (
                 INSERT INTO deliveries (organization_id, event_id, endpoint_id, status, attempts, created_at, updated_at)
                 SELECT $1, id, $2, (ARRAY['delivered', 'delivered', 'delivered', 'failed', 'pending'])[1 + (abs(hashtext(id::text)) % 5)],
                        1, created_at, created_at
                 FROM e
             )
             INSERT INTO delivery_attempts (event_id, organization_id, endpoint_id, attempt, started_at, duration_ms, response_status)
             SELECT id, $1, $2, 1, created_at, 5 + abs(hashtext(id::text)) % 400, 200 FROM e",
        )
        .bind(acme.org)
        .bind(e)
        .bind(chunk)
        .execute(&app.db)
        .await
        .expect("load");
    }
    let loaded = loading.elapsed();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(rows, 1_000_000);
    sqlx::query("ANALYZE").execute(&app.db).await.expect("analyze");

    let time = |label: &'static str| {
        let acme = &acme;
        async move {
            let mut times = Vec::new();
            for _ in 0..50 {
                let start = Instant::now();
                let (status, body) = acme.stats(e, "").await;
                times.push(start.elapsed());
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["deliveries"]["total"], 1_000_000, "{body}");
                assert_eq!(body["attempts"]["count"], 1_000_000, "{body}");
            }
            times.sort();
            let (p50, max) = (times[times.len() / 2], times[times.len() - 1]);
            println!("stats with {label}: median {p50:?}, max {max:?} over 50 requests");
            p50
        }
    };
    let unfolded = deltas(&app.db).await;
    let p50_unfolded = time("the deltas of 100 loading statements unfolded").await;
    let mut conn = app.db.acquire().await.expect("connection");
    while endpoint_stats::compact(&mut conn, 10_000).await.expect("fold") > 0 {}
    let p50_folded = time("the rollup folded").await;
    println!("loaded 1,000,000 deliveries and attempts in {loaded:?}; {unfolded} delta rows before folding");
    // Beside it: what the same answer costs from the deliveries table itself.
    let start = Instant::now();
    let _: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM deliveries WHERE organization_id = $1 AND endpoint_id = $2
           AND created_at >= now() - interval '24 hours' GROUP BY status",
    )
    .bind(acme.org)
    .bind(e)
    .fetch_all(&app.db)
    .await
    .expect("scan");
    println!(
        "the same counts by scanning deliveries_endpoint_idx: {:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let since = (Utc::now() - Span::hours(25)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let res = app
        .client
        .post(app.url(&format!("/api/endpoints/{e}/recover")))
        .header("X-API-Key", &acme.key)
        .json(&json!({"since": since, "statuses": ["failed"], "dry_run": true}))
        .send()
        .await
        .expect("recover dry run");
    assert_eq!(res.status(), 200);
    println!("recover dry run over the same window: {:?}", start.elapsed());
    assert!(p50_unfolded < Duration::from_millis(50) && p50_folded < Duration::from_millis(50));
}
