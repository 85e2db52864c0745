//! The worker's admin port: the same operations routes, metrics format and JSON fallbacks as
//! ingest, with build info and the database-pool gauges exported.

use std::time::{Duration, Instant};

use crate::common::{TestWorker, test_db};
use serde_json::Value;

#[tokio::test]
async fn the_admin_port_shows_build_info_and_the_database_pool() {
    let db = test_db().await;
    let worker = TestWorker::spawn(&db.url, |_| {}).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/metrics", worker.admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = client.get(&url).send().await.expect("request");
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = res.text().await.expect("text");
        assert!(text.contains("triggers_build_info{"), "{text}");
        assert!(text.contains(r#"service="worker""#), "{text}");
        let open: f64 = text
            .lines()
            .filter(|l| l.starts_with("triggers_db_pool_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if open >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no pool connections reported:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().await.expect("stop");
}

#[tokio::test]
async fn the_admin_port_answers_unknown_routes_and_wrong_methods_with_json() {
    let db = test_db().await;
    let worker = TestWorker::spawn(&db.url, |_| {}).await;
    let client = reqwest::Client::new();
    let res = client
        .get(format!("http://{}/nope", worker.admin))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["error"], "no route for GET /nope");

    let res = client
        .post(format!("http://{}/health", worker.admin))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 405);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "method_not_allowed");

    let res = client
        .get(format!("http://{}/health/ready", worker.admin))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    worker.stop().await.expect("stop");
}

#[tokio::test]
async fn stopping_is_not_held_up_by_idle_or_trickling_admin_connections() {
    let db = test_db().await;
    let worker = TestWorker::spawn(&db.url, |_| {}).await;
    let mut idle = Vec::new();
    let mut trickling = Vec::new();
    for _ in 0..200 {
        idle.push(
            tokio::net::TcpStream::connect(worker.admin)
                .await
                .expect("connect"),
        );
        let mut slow = tokio::net::TcpStream::connect(worker.admin)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /metr")
            .await
            .expect("write");
        trickling.push(slow);
    }
    let res = reqwest::get(format!("http://{}/health", worker.admin))
        .await
        .expect("a normal client gets through");
    assert_eq!(res.status(), 200);

    let started = Instant::now();
    worker.stop().await.expect("stop");
    // Nothing to drain in the queue: only the admin port's bound (5 s) may be spent.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "stopping took {took:?}");
}
