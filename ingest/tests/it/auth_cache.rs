//! The API key cache: argon2 runs once per key per TTL (for good and bad keys), concurrent
//! first requests share one verification, a lost invalidation listener empties the cache, and
//! one organisation's rotations leave the others cached. Whether a flood of wrong secrets for
//! one prefix delays other organisations is a timing budget, measured by
//! `deploy/local/auth-burst.sh` rather than asserted here.
//!
//! These tests count `triggers_auth_cache_total{outcome}` from `/metrics`, which is process-wide:
//! they need a process of their own (see `main.rs`).

use std::time::{Duration, Instant};

use crate::common::TestApp;
use serde_json::Value;
use triggers_shared::{apikey, metrics::AUTH_CACHE_OUTCOMES};
use triggers_testkit::prometheus;

/// The status of an authenticated request whose handler does not look at keys itself
/// (`GET /api/keys` reads the key table again), so it shows what authentication decided.
async fn status_with(app: &TestApp, key: &str) -> u16 {
    app.client
        .get(app.url("/api/webhook/config"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("GET /api/webhook/config")
        .status()
        .as_u16()
}

/// `triggers_auth_cache_total{outcome="<outcome>"}` as the app reports it now.
async fn outcome_count(app: &TestApp, outcome: &str) -> u64 {
    let text = prometheus::scrape(&app.client, &app.url("/metrics")).await;
    let series = format!("triggers_auth_cache_total{{outcome=\"{outcome}\"}}");
    prometheus::value(&text, &series).unwrap_or(0.0) as u64
}

async fn counts(app: &TestApp) -> [u64; 6] {
    let mut out = [0; 6];
    for (slot, outcome) in out.iter_mut().zip(AUTH_CACHE_OUTCOMES) {
        *slot = outcome_count(app, outcome).await;
    }
    out
}

#[tokio::test]
async fn a_valid_key_is_verified_once_and_then_served_from_the_cache() {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_org("Cached", "free").await;
    let [hit0, _, verified0, ..] = counts(&app).await;
    for _ in 0..5 {
        assert_eq!(status_with(&app, &key).await, 200);
    }
    let [hit1, _, verified1, ..] = counts(&app).await;
    assert_eq!(verified1 - verified0, 1, "argon2 ran once");
    assert_eq!(hit1 - hit0, 4);
}

#[tokio::test]
async fn a_refused_key_costs_one_verification_per_ttl() {
    let first = TestApp::spawn().await;
    let app = TestApp::spawn_on(&first.db_url, |c| c.auth_cache_ttl = Duration::from_millis(500)).await;
    let (key, _) = app.create_org("Target", "free").await;
    let prefix = apikey::prefix_of(&key).expect("prefix");
    let guess = format!("{prefix}_{}", "G".repeat(43));
    let unknown = format!("trg_live_abcdefabcdef_{}", "U".repeat(43));

    let [_, refused0, _, rejected0, unknown0, _] = counts(&app).await;
    for _ in 0..5 {
        assert_eq!(status_with(&app, &guess).await, 401);
        assert_eq!(status_with(&app, &unknown).await, 401);
    }
    let [_, refused1, _, rejected1, unknown1, _] = counts(&app).await;
    assert_eq!(rejected1 - rejected0, 1, "one argon2 for the wrong secret");
    assert_eq!(unknown1 - unknown0, 1, "one lookup for the unknown prefix");
    assert_eq!(refused1 - refused0, 8);

    // After the TTL the verdict is fetched again, once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..3 {
        assert_eq!(status_with(&app, &guess).await, 401);
    }
    let [_, _, _, rejected2, ..] = counts(&app).await;
    assert_eq!(rejected2 - rejected1, 1);
    // The real key was never disturbed.
    assert_eq!(status_with(&app, &key).await, 200);
}

#[tokio::test]
async fn concurrent_first_requests_with_one_key_share_one_verification() {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_org("Crowd", "free").await;
    let [_, _, verified0, ..] = counts(&app).await;
    let requests = (0..12).map(|_| status_with(&app, &key));
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let [_, _, verified1, ..] = counts(&app).await;
    assert_eq!(
        verified1 - verified0,
        1,
        "argon2 ran once for 12 concurrent requests"
    );
}

#[tokio::test]
async fn the_cache_empties_when_the_invalidation_listener_loses_its_connection() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Listener", "free").await;
    assert_eq!(status_with(&app, &key).await, 200);

    // Revoke behind the service's back (no notification): the cache still answers...
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE organization_id = $1::uuid")
        .bind(&org_id)
        .execute(&app.db)
        .await
        .expect("revoke");
    assert_eq!(status_with(&app, &key).await, 200, "served from the cache");

    // ...until the listener's connection drops: it may have missed notifications, so the
    // cache is emptied and the next request asks the database.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_all(&app.db)
    .await
    .expect("terminate the listener");
    assert_eq!(killed, [true], "exactly one listener connection");

    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while status_with(&app, &key).await != 401 {
        assert!(
            tokio::time::Instant::now() < until,
            "the revoked key is still cached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The listener comes back: a rotation on another instance is heard again.
    let (key2, _) = app.create_org("Listener 2", "free").await;
    let other = TestApp::spawn_on(&app.db_url, |_| {}).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    // Wait until this instance caches again (it does once it has resubscribed).
    loop {
        let [hit0, ..] = counts(&app).await;
        assert_eq!(status_with(&app, &key2).await, 200);
        assert_eq!(status_with(&app, &key2).await, 200);
        let [hit1, ..] = counts(&app).await;
        if hit1 > hit0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the listener did not resubscribe"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = other
        .client
        .post(other.url("/api/keys/rotate"))
        .header("X-API-Key", &key2)
        .send()
        .await
        .expect("rotate");
    assert_eq!(res.status(), 200);
    let _: Value = res.json().await.expect("json");
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while status_with(&app, &key2).await != 401 {
        assert!(
            tokio::time::Instant::now() < until,
            "rotation not heard after resubscribing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_database_outage_is_not_mistaken_for_an_invalid_key() {
    let test_db = triggers_shared::testing::TestDb::new().await.expect("db");
    let app = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let (key, _) = app.create_org("Outage", "free").await;

    test_db.cut_off().await.expect("cut off");
    let res = app
        .client
        .get(app.url("/api/webhook/config"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("request");
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    // 503 `unavailable` once `db::is_unavailable` knows SQLSTATE 55000 (how `cut_off` refuses
    // connections); what matters here is that it is not a 401.
    assert!(status.is_server_error(), "{status}: {body}");
    assert_ne!(body["code"], "invalid_api_key");

    // Nothing was remembered as refused: the key works as soon as the database is back.
    test_db.restore().await.expect("restore");
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while status_with(&app, &key).await != 200 {
        assert!(
            tokio::time::Instant::now() < until,
            "the key stayed refused after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_flood_of_wrong_secrets_for_one_prefix_is_throttled_after_its_burst() {
    let app = TestApp::spawn().await;
    let (target, _) = app.create_org("Attacked", "free").await;
    let prefix = apikey::prefix_of(&target).expect("prefix").to_owned();
    let rejected0 = outcome_count(&app, "rejected").await;
    let started = Instant::now();
    let guesses: Vec<_> = (0..200)
        .map(|n| {
            let req = app
                .client
                .get(app.url("/api/webhook/config"))
                .header("X-API-Key", format!("{prefix}_{n:G>43}"))
                .send();
            tokio::spawn(async move { req.await.expect("GET with a wrong secret").status().as_u16() })
        })
        .collect();
    for guess in guesses {
        assert_eq!(guess.await.expect("join"), 401);
    }
    // The budget is 10 failures, then one a second: never 200 hashes.
    let hashed = outcome_count(&app, "rejected").await - rejected0;
    let budget = 10 + started.elapsed().as_secs() + 2;
    assert!(
        hashed <= budget,
        "{hashed} wrong secrets were hashed (budget {budget})"
    );
    assert!(
        outcome_count(&app, "throttled").await > 0,
        "no guess was throttled"
    );
    // The real key is not locked out for longer than the budget takes to refill.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_with(&app, &target).await, 200);
}

#[tokio::test]
async fn rotating_one_organisations_keys_in_a_loop_leaves_the_others_cached() {
    let app = TestApp::spawn().await;
    let (bystander, _) = app.create_org("Steady", "free").await;
    let mut rotating = Vec::new();
    for n in 0..4 {
        rotating.push(app.create_org(&format!("Rotating {n}"), "free").await.0);
    }

    // Four organisations rotate their key back to back (each rotation announces a change).
    let stop = tokio_util::sync::CancellationToken::new();
    let rotated = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loops: Vec<_> = rotating
        .into_iter()
        .map(|mut key| {
            let (client, url, stop) = (app.client.clone(), app.url("/api/keys/rotate"), stop.clone());
            let rotated = rotated.clone();
            tokio::spawn(async move {
                let mut rotations = 0;
                while !stop.is_cancelled() {
                    let res = client.post(&url).header("X-API-Key", &key).send().await;
                    let res = res.expect("rotate");
                    assert_eq!(res.status(), 200);
                    let body: Value = res.json().await.expect("json");
                    key = body["api_key"].as_str().expect("api_key").to_owned();
                    rotations += 1;
                    rotated.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                rotations
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Meanwhile the bystander's key is verified once and then served from the cache: the
    // rotated keys are never presented twice, so every hit is the bystander's. It keeps asking
    // for at least 20 requests and 8 rotations, however slow the machine.
    let [hit0, ..] = counts(&app).await;
    let mut requests = 0;
    let until = Instant::now() + Duration::from_secs(60);
    while requests < 20 || rotated.load(std::sync::atomic::Ordering::SeqCst) < 8 {
        assert!(Instant::now() < until, "too few rotations ran");
        assert_eq!(status_with(&app, &bystander).await, 200);
        requests += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let [hit1, ..] = counts(&app).await;
    stop.cancel();
    let mut rotations = 0;
    for rotated in loops {
        rotations += rotated.await.expect("join");
    }
    assert!(rotations >= 8, "only {rotations} rotations ran alongside");
    assert_eq!(
        hit1 - hit0,
        requests - 1,
        "every request after the first was served from the cache"
    );
}
