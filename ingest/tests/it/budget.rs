//! The global budget of request bytes in flight (`TRIGGERS_REQUEST_BYTES_BUDGET`): a request
//! that does not fit is `503 unavailable` with `Retry-After`, and many large bodies at once keep
//! the real `triggers-ingest` process within its memory bound.

use std::{sync::Arc, time::Duration};

use crate::common::TestApp;
use crate::common::fixtures::org_with_key;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Barrier,
};
use triggers_shared::testing::TestDb;
use triggers_testkit::ServiceProcess;

const MIB: usize = 1024 * 1024;

/// Send the headers of a POST declaring a `length`-byte JSON body and only `sent` bytes of it:
/// the request holds its reservation while the rest is awaited.
async fn start_slow_post(app: &TestApp, key: &str, length: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&vec![b' '; sent])
        .await
        .expect("part of the body");
    stream
}

fn small_event() -> Value {
    json!({"type": "small", "payload": {"n": 1}})
}

#[tokio::test]
async fn a_request_over_the_bytes_budget_is_503_with_retry_after_until_the_budget_frees_up() {
    let test_db = TestDb::new().await.expect("db");
    let app = TestApp::spawn_on(&test_db.url, |c| c.request_bytes_budget = MIB + MIB / 2).await;
    let (key, _) = org_with_key(&app.db, "enterprise").await;

    // One request declaring 1 MiB holds 1 MiB of the 1.5 MiB budget while its body trickles.
    let mut slow = start_slow_post(&app, &key, MIB, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another declaring 1 MiB does not fit: refused before its body is read.
    let mut refused = start_slow_post(&app, &key, MIB, 0).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), refused.read_to_end(&mut answer))
        .await
        .expect("answered at once, and the connection closed")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("\r\nretry-after: 5\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nconnection: close\r\n"),
        "the unread body must not be taken for the next request: {answer}"
    );
    assert!(answer.contains(r#""code":"unavailable""#), "{answer}");

    // A small request still fits beside the slow one.
    let small = app
        .client
        .post(app.url("/api/events"))
        .header("X-API-Key", &key)
        .json(&small_event())
        .send()
        .await
        .expect("send");
    assert_eq!(small.status(), 202);

    // Once the slow request ends, its bytes are available again.
    slow.shutdown().await.expect("close the slow request");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    drop(slow);
    let mut status = 0;
    for _ in 0..50 {
        let padded = format!(
            "{{\"type\":\"big\",\"payload\":{{\"n\":1}}{}}}",
            " ".repeat(MIB - 100)
        );
        let response = app
            .client
            .post(app.url("/api/events"))
            .header("X-API-Key", &key)
            .header("Content-Type", "application/json")
            .body(padded)
            .send()
            .await
            .expect("send");
        status = response.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 202,
        "a large request fits again once the slow one is gone"
    );
    app.stop().await;
}

/// POST `body` over a raw connection, holding back its last byte until every client of the
/// barrier has sent the rest, so all bodies are in the server at once. Returns the status (0
/// when the connection was closed without an answer).
async fn post_together(base: std::net::SocketAddr, key: &str, body: &[u8], barrier: &Barrier) -> u16 {
    let Ok(mut stream) = TcpStream::connect(base).await else {
        barrier.wait().await;
        return 0;
    };
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {base}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (most, last) = body.split_at(body.len() - 1);
    let sent = stream.write_all(head.as_bytes()).await.is_ok() && stream.write_all(most).await.is_ok();
    barrier.wait().await;
    if sent {
        let _ = stream.write_all(last).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_hundred_concurrent_one_mib_bodies_keep_ingest_under_256_mb() {
    let test_db = TestDb::new().await.expect("db");
    let (key, _) = org_with_key(&test_db.pool, "enterprise").await;
    let ingest = ServiceProcess::ingest(env!("CARGO_BIN_EXE_triggers-ingest"), &test_db.url)
        .start()
        .await;
    let ingest_addr = ingest.addr;
    // Just under the 1 MiB body limit, over the payload limit, and of the shape that costs most
    // once decoded (an array of small numbers: ~16 bytes of tree per byte of text).
    let blob = "1,".repeat((MIB - 200) / 2);
    let body = Arc::new(format!("{{\"type\":\"big\",\"payload\":{{\"blob\":[{blob}1]}}}}").into_bytes());
    let barrier = Arc::new(Barrier::new(100));
    let requests = (0..100).map(|_| {
        let (key, body, barrier) = (key.clone(), body.clone(), barrier.clone());
        tokio::spawn(async move { post_together(ingest_addr, &key, &body, &barrier).await })
    });
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.expect("join"))
        .collect();
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    let peak = ingest.peak_rss_kb() * 1024;
    eprintln!(
        "peak RSS {} MiB; 413: {}, 503: {}, no answer: {}",
        peak / MIB as u64,
        count(413),
        count(503),
        count(0)
    );
    assert_eq!(
        count(413) + count(503),
        100,
        "over the payload limit or over the budget: {statuses:?}"
    );
    assert!(count(413) > 0, "some were read and judged");
    assert!(peak < 256 * MIB as u64, "peak RSS {} MiB", peak / MIB as u64);
}
