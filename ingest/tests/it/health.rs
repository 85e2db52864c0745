//! Liveness, readiness, metrics and migrations.

use crate::common::TestApp;
use serde_json::Value;
use triggers_shared::{db, testing::TestDb};

#[tokio::test]
async fn health_answers_healthy_with_the_version() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/health")).send().await.expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["version"], triggers_shared::VERSION);

    let res = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn ready_reports_the_database_connected() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "connected");
}

#[tokio::test]
async fn ready_is_503_when_the_database_is_gone() {
    let test_db = TestDb::new().await.expect("db");
    let app = TestApp::spawn_on(&test_db.url, |_| {}).await;
    test_db.cut_off().await.expect("cut off");
    let res = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "not_ready");

    test_db.restore().await.expect("restore");
    let res = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "recovers without a restart");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = TestApp::spawn().await;
    app.client.get(app.url("/health")).send().await.expect("warm up");
    let res = app.client.get(app.url("/metrics")).send().await.expect("request");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert!(text.contains("triggers_http_requests_total"), "{text}");
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_twice() {
    let test_db = TestDb::new().await.expect("db");
    // The template is already migrated; run again twice: both are no-ops without error.
    db::migrate(&test_db.pool).await.expect("first");
    db::migrate(&test_db.pool).await.expect("second");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&test_db.pool)
    .await
    .expect("tables");
    for t in [
        "api_keys",
        "dedup_keys",
        "delivery_attempts",
        "events",
        "organizations",
    ] {
        assert!(tables.iter().any(|x| x == t), "missing {t}: {tables:?}");
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/nope")).send().await.expect("request");
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "not_found");

    let res = app
        .client
        .delete(app.url("/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 405);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "method_not_allowed");
}

/// The sum of a gauge's samples whose line starts with `prefix`.
fn sum_of(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_show_build_info_and_the_database_pool() {
    let app = TestApp::spawn().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = app.client.get(app.url("/metrics")).send().await.expect("request");
        assert_eq!(
            res.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = res.text().await.expect("text");
        assert!(text.contains("triggers_build_info{"), "{text}");
        assert!(text.contains(r#"service="ingest""#), "{text}");
        assert!(
            text.contains(&format!(r#"version="{}""#, triggers_shared::VERSION)),
            "{text}"
        );
        // The pool has opened connections (migrations, the auth listener): upkeep reports them.
        let open = sum_of(&text, "triggers_db_pool_connections{");
        if open >= 1.0 {
            assert!(text.contains(r#"triggers_db_pool_connections{state="in_use"}"#));
            assert!(text.contains(r#"triggers_db_pool_connections{state="idle"}"#));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pool connections reported:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn invented_methods_and_paths_add_at_most_a_handful_of_series() {
    let app = TestApp::spawn().await;
    let scrape = || async {
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text");
        text.lines().filter(|l| !l.starts_with('#')).count()
    };
    // Warm up: the scrape's own series (recorded after it renders) first.
    scrape().await;
    let before = scrape().await;
    for i in 0..500 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).expect("method");
        let path = if i % 2 == 0 {
            format!("/made/up/{i}")
        } else {
            "/health".to_owned()
        };
        let res = app
            .client
            .request(method, app.url(&path))
            .send()
            .await
            .expect("request");
        assert!(matches!(res.status().as_u16(), 404 | 405), "{}", res.status());
    }
    let after = scrape().await;
    // Two new label sets at most (route unmatched or /health, method other): a counter and a
    // histogram each.
    assert!(
        after <= before + 40,
        "{} new series lines from 500 invented requests",
        after - before
    );
}
