//! The fleet-wide per-organisation rate limit of `POST /api/events`.

use crate::common::TestApp;
use crate::common::fixtures::*;
use futures::StreamExt;
use serde_json::{Value, json};
use triggers_ingest::ratelimit::RateLimiter;
use triggers_shared::testing::TestDb;
use uuid::Uuid;

fn header_u64(res: &reqwest::Response, name: &str) -> u64 {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("integer")
}

/// Mark the organisation's budget as spent in this minute and the previous one.
async fn exhaust(app: &TestApp, org: Uuid, granted: i32) {
    sqlx::query(
        "INSERT INTO rate_limit_windows (organization_id, window_start, granted)
         VALUES ($1, date_trunc('minute', clock_timestamp()), $2),
                ($1, date_trunc('minute', clock_timestamp()) - interval '1 minute', $2)",
    )
    .bind(org)
    .bind(granted)
    .execute(&app.db)
    .await
    .expect("exhaust");
}

#[tokio::test]
async fn a_free_organisation_gets_about_100_of_150_quick_requests_across_two_instances() {
    let test_db = TestDb::new().await.expect("db");
    let one = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let two = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let (key, org) = org_with_key(&one.db, "free").await;

    let statuses: Vec<u16> = futures::stream::iter(0..150)
        .map(|i| {
            let app = if i % 2 == 0 { &one } else { &two };
            let key = key.clone();
            async move {
                post_event(app, &key, &json!({"type": "rl", "payload": {"i": i}}))
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (95..=105).contains(&accepted),
        "accepted {accepted}: {statuses:?}"
    );
    assert_eq!(accepted + limited, 150, "{statuses:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE organization_id = $1")
        .bind(org)
        .fetch_one(&test_db.pool)
        .await
        .expect("count");
    assert_eq!(stored as usize, accepted);
}

#[tokio::test]
async fn over_the_limit_answers_429_with_limit_window_and_retry_after() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "free").await;
    exhaust(&app, org, 100).await;

    let res = post_event(&app, &key, &json!({"type": "a", "payload": {}})).await;
    assert_eq!(res.status(), 429);
    let retry_after = header_u64(&res, "retry-after");
    assert!((1..=120).contains(&retry_after), "{retry_after}");
    assert_eq!(header_u64(&res, "x-ratelimit-limit"), 100);
    assert_eq!(header_u64(&res, "x-ratelimit-remaining"), 0);
    assert_eq!(header_u64(&res, "x-ratelimit-reset"), retry_after);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["limit"], 100);
    assert_eq!(body["window"], "1 minute");
    assert_eq!(body["retry_after"], retry_after);
    assert!(body["error"].is_string());

    // A refused request stores nothing, and a remembered refusal answers the same way.
    let res = post_event(&app, &key, &json!({"type": "a", "payload": {}})).await;
    assert_eq!(res.status(), 429);
    let stored = count_events(&app.db).await;
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn every_answer_after_authentication_carries_rate_limit_headers_and_consumes_a_token() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;

    let res = post_event(&app, &key, &json!({"type": "a", "payload": {}, "dedup_id": "x"})).await;
    assert_eq!(res.status(), 202);
    assert_eq!(header_u64(&res, "x-ratelimit-limit"), 1000);
    let first = header_u64(&res, "x-ratelimit-remaining");
    assert_eq!(first, 999);
    let reset = header_u64(&res, "x-ratelimit-reset");
    assert!((1..=60).contains(&reset), "{reset}");

    let res = post_event(&app, &key, &json!({"type": "", "payload": {}})).await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        header_u64(&res, "x-ratelimit-remaining"),
        998,
        "a 422 consumes a token"
    );

    let res = post_event(&app, &key, &json!({"type": "a", "payload": {}, "dedup_id": "x"})).await;
    assert_eq!(res.status(), 409);
    assert_eq!(
        header_u64(&res, "x-ratelimit-remaining"),
        997,
        "a 409 consumes a token"
    );

    let res = post_raw(&app, &key, Some("application/json"), b"{".to_vec()).await;
    assert_eq!(res.status(), 400);
    assert_eq!(header_u64(&res, "x-ratelimit-limit"), 1000);

    // No headers before authentication: there is no organisation to count against.
    let res = post_event(&app, "nope", &json!({"type": "a", "payload": {}})).await;
    assert_eq!(res.status(), 401);
    assert!(!res.headers().contains_key("x-ratelimit-limit"));
}

#[tokio::test]
async fn capacity_returns_as_the_previous_minute_decays() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "free").await;
    // Only the previous minute is full: part of it has already slid out of the window, so some
    // capacity is there unless the minute has just begun.
    sqlx::query(
        "INSERT INTO rate_limit_windows (organization_id, window_start, granted)
         VALUES ($1, date_trunc('minute', clock_timestamp()) - interval '1 minute', 100)",
    )
    .bind(org)
    .execute(&app.db)
    .await
    .expect("prev window");
    let elapsed: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM clock_timestamp() - date_trunc('minute', clock_timestamp()))::float8",
    )
    .fetch_one(&app.db)
    .await
    .expect("elapsed");
    let res = post_event(&app, &key, &json!({"type": "a", "payload": {}})).await;
    if (2.0..=58.0).contains(&elapsed) {
        assert_eq!(res.status(), 202, "elapsed {elapsed}");
        let remaining = header_u64(&res, "x-ratelimit-remaining") as f64;
        // About elapsed/60 of the limit is free again.
        let expected = 100.0 * elapsed / 60.0 - 1.0;
        assert!(
            (remaining - expected).abs() <= 3.0,
            "remaining {remaining}, expected ~{expected}"
        );
    }
}

#[tokio::test]
async fn two_limiters_on_one_database_never_grant_more_than_the_limit_together() {
    let test_db = TestDb::new().await.expect("db");
    let (_, org) = org_with_key(&test_db.pool, "free").await;
    let one = RateLimiter::new(test_db.pool.clone());
    let two = RateLimiter::new(test_db.pool.clone());
    let mut allowed = 0;
    for i in 0..150 {
        let limiter = if i % 3 == 0 { &one } else { &two };
        let decision = limiter.check(org, 100).await.expect("decision");
        if decision.allowed {
            allowed += 1;
        } else {
            assert_eq!(decision.remaining, 0);
            assert!(decision.reset_secs >= 1);
        }
    }
    // Leases are slices of 2; at a minute boundary at most one unspent token per instance lapses.
    assert!((98..=100).contains(&allowed), "{allowed}");
    let granted: i64 =
        sqlx::query_scalar("SELECT sum(granted)::int8 FROM rate_limit_windows WHERE organization_id = $1")
            .bind(org)
            .fetch_one(&test_db.pool)
            .await
            .expect("granted");
    assert!((100..=102).contains(&granted), "{granted}");
}

#[tokio::test]
async fn a_lease_the_database_cannot_answer_is_a_fast_503_and_the_limiter_recovers() {
    let test_db = TestDb::new().await.expect("db");
    let (_, org) = org_with_key(&test_db.pool, "pro").await;
    let limiter = RateLimiter::new(test_db.pool.clone());
    test_db.cut_off().await.expect("cut off");
    let started = std::time::Instant::now();
    let err = limiter.check(org, 1000).await.expect_err("no database");
    assert_eq!(err.code(), "unavailable");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    test_db.restore().await.expect("restore");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match limiter.check(org, 1000).await {
            Ok(d) => {
                assert!(d.allowed);
                break;
            }
            Err(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the limiter did not recover"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}
