//! The HTTP server's limits, black-box against the real `triggers-ingest` process: idle and
//! byte-by-byte connections neither starve a normal client nor hold up SIGTERM, the connection
//! cap holds, early answers close the connection so keep-alive clients do not reuse a dead one,
//! and a public listen address without an admin token is warned about. The request timeout's
//! `408` is counted in the request metrics (in process, with the timeout shortened).

use std::time::{Duration, Instant};

use crate::common::TestApp;
use crate::common::fixtures::org_with_key;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use triggers_shared::testing::TestDb;
use triggers_testkit::{ServiceProcess, process::Builder};

/// The drain bound of `ServerLimits` (the request timeout): SIGTERM must finish within it.
const DRAIN_BOUND: Duration = Duration::from_secs(30);

/// `triggers-ingest` as a process logging at `info`, its log collected.
fn ingest(db_url: &str, extra_env: &[(&str, &str)]) -> Builder {
    ServiceProcess::ingest(env!("CARGO_BIN_EXE_triggers-ingest"), db_url)
        .env("TRIGGERS_DB_POOL_SIZE", "10")
        .env("RUST_LOG", "info")
        .collect_log()
        .envs(extra_env)
}

/// [`ingest`] on a free loopback port, once it listens.
async fn start_on_loopback(db_url: &str, extra_env: &[(&str, &str)]) -> ServiceProcess {
    let ingest = ingest(db_url, extra_env).spawn();
    ingest.wait_for_log("ingest listening").await;
    ingest
}

/// A connection that sends the start of a request one byte at a time, and what it saw.
async fn trickle(port: u16, gap: Duration) -> Option<Duration> {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let head = b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n";
    for byte in head.iter().cycle() {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    // The server closed it: when, from the opening?
    Some(opened.elapsed())
}

/// `n` connections that send nothing and `n` that send headers a byte every 200 ms.
async fn open_slow_connections(port: u16, n: usize) -> (Vec<TcpStream>, Vec<JoinHandle<Option<Duration>>>) {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    let trickling = (0..n)
        .map(|_| tokio::spawn(trickle(port, Duration::from_millis(200))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (idle, trickling)
}

/// A client that must get through: `GET /health` answers within `patience`.
async fn health_within(client: &reqwest::Client, ingest: &ServiceProcess, patience: Duration) -> Value {
    let started = Instant::now();
    let res = tokio::time::timeout(patience, client.get(ingest.url("/health")).send())
        .await
        .unwrap_or_else(|_| panic!("no answer to GET /health within {patience:?}"))
        .expect("request");
    assert_eq!(res.status(), 200, "after {:?}", started.elapsed());
    res.json().await.expect("json")
}

#[tokio::test]
async fn two_thousand_idle_or_trickling_connections_neither_stop_a_client_nor_hold_up_sigterm() {
    let db = TestDb::new().await.expect("db");
    let mut ingest = start_on_loopback(&db.url, &[]).await;

    let (mut idle, trickling) = open_slow_connections(ingest.addr.port(), 1000).await;

    let client = reqwest::Client::new();
    for _ in 0..20 {
        let body = health_within(&client, &ingest, Duration::from_secs(3)).await;
        assert_eq!(body["status"], "healthy");
    }

    // The header-read timeout (10 s) drops connections that never finish their headers.
    let mut closed_after = Vec::new();
    for handle in trickling.into_iter().take(20) {
        let after = tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("the server closes a trickling connection")
            .expect("task")
            .expect("connected");
        closed_after.push(after);
    }
    for after in &closed_after {
        assert!(
            *after >= Duration::from_secs(9) && *after < Duration::from_secs(20),
            "closed after {after:?}"
        );
    }
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf))
        .await
        .expect("an idle connection is closed by the header-read timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // New idle and trickling connections, then SIGTERM: the process exits within its bound.
    let _late = open_slow_connections(ingest.addr.port(), 1000).await;
    health_within(&client, &ingest, Duration::from_secs(3)).await;
    let (_, took) = ingest.terminate(DRAIN_BOUND + Duration::from_secs(15)).await;
    eprintln!("SIGTERM with 2,000 idle or trickling connections open took {took:?}");
    assert!(took < DRAIN_BOUND, "SIGTERM took {took:?}");
    assert!(
        ingest.log_text().contains("ingest stopped"),
        "{}",
        ingest.log_text()
    );
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let db = TestDb::new().await.expect("db");
    let ingest = start_on_loopback(&db.url, &[("TRIGGERS_MAX_CONNECTIONS", "5")]).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(
            TcpStream::connect(("127.0.0.1", ingest.addr.port()))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = reqwest::Client::new();
    let waiting =
        tokio::time::timeout(Duration::from_secs(2), client.get(ingest.url("/health")).send()).await;
    assert!(waiting.is_err(), "a sixth connection was served: {waiting:?}");

    drop(idle);
    health_within(&client, &ingest, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_a_json_408() {
    let db = TestDb::new().await.expect("db");
    let ingest = start_on_loopback(&db.url, &[]).await;
    let mut stream = TcpStream::connect(("127.0.0.1", ingest.addr.port()))
        .await
        .expect("connect");
    // Complete headers, then a body that never finishes.
    stream
        .write_all(b"POST /api/keys/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(45), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(40),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_body_trickled_past_the_request_timeout_gets_a_json_408_that_the_request_metrics_count() {
    let app = TestApp::spawn_on(&TestDb::new().await.expect("db").url, |config| {
        config.request_timeout = Duration::from_secs(1);
    })
    .await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let series = r#"{route="/api/events",method="POST",status="408"}"#;
    let counted = app.metric(&format!("triggers_http_requests_total{series}")).await;
    let timed = app
        .metric(&format!("triggers_http_request_duration_seconds_count{series}"))
        .await;
    let seconds = app
        .metric(&format!("triggers_http_request_duration_seconds_sum{series}"))
        .await;

    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    // A byte every 100 ms: the body would take 20 s to arrive.
    let trickle = async {
        for byte in br#"{"type": "slow", "payload": {"s": ""#.iter().cycle() {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut answer = Vec::new();
    tokio::select! {
        () = trickle => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => panic!("no answer within 10 s"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Counted once, and timed: the histogram holds its second.
    assert_eq!(
        app.metric(&format!("triggers_http_requests_total{series}")).await - counted,
        1.0
    );
    assert_eq!(
        app.metric(&format!("triggers_http_request_duration_seconds_count{series}"))
            .await
            - timed,
        1.0
    );
    let waited = app
        .metric(&format!("triggers_http_request_duration_seconds_sum{series}"))
        .await
        - seconds;
    assert!((0.9..5.0).contains(&waited), "{waited} s");
}

#[tokio::test]
async fn a_keep_alive_client_reuses_its_connection_after_a_413_under_load() {
    let db = TestDb::new().await.expect("db");
    let ingest = start_on_loopback(&db.url, &[]).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let res = client
        .post(ingest.url("/api/keys/generate"))
        .json(&json!({"organization_name": "big", "tier": "enterprise"}))
        .send()
        .await
        .expect("generate");
    assert_eq!(res.status(), 201);
    let key: Value = res.json().await.expect("json");
    let key = key["api_key"].as_str().expect("api_key").to_owned();

    // Load: other clients keep the server busy meanwhile.
    let load: Vec<_> = (0..8)
        .map(|_| {
            let url = ingest.url("/health/ready");
            tokio::spawn(async move {
                let other = reqwest::Client::new();
                for _ in 0..200 {
                    let _ = other.get(&url).send().await;
                }
            })
        })
        .collect();

    // A request whose body was read keeps its connection.
    let res = client
        .post(ingest.url("/api/events"))
        .header("X-API-Key", &key)
        .json(&json!({"type": "order.created", "payload": {"n": 1}}))
        .send()
        .await
        .expect("event");
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers().get("connection"), None, "{:?}", res.headers());

    let big = vec![b' '; 5 * 1024 * 1024];
    for round in 0..10 {
        let res = client
            .post(ingest.url("/api/events"))
            .header("X-API-Key", &key)
            .header("Content-Type", "application/json")
            .body(big.clone())
            .send()
            .await;
        // The 413 itself may be cut short by the close on a loaded machine; what must never
        // happen is the next request failing on a reused, already closed connection.
        if let Ok(res) = res {
            assert_eq!(res.status(), 413, "round {round}");
            assert_eq!(
                res.headers().get("connection").and_then(|v| v.to_str().ok()),
                Some("close"),
                "round {round}"
            );
        }
        let next = client
            .get(ingest.url("/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next request failed: {e:?}"));
        assert_eq!(next.status(), 200, "round {round}");
    }
    for task in load {
        task.await.expect("load");
    }
}

#[tokio::test]
async fn a_public_listen_address_without_an_admin_token_is_warned_about() {
    let db = TestDb::new().await.expect("db");
    let open = ingest(&db.url, &[("TRIGGERS_INGEST_ADDR", "0.0.0.0:0")]).spawn();
    open.wait_for_log("ingest listening").await;
    assert!(
        open.log_text().contains("TRIGGERS_ADMIN_TOKEN is not set"),
        "{}",
        open.log_text()
    );

    let guarded = ingest(
        &db.url,
        &[
            ("TRIGGERS_INGEST_ADDR", "0.0.0.0:0"),
            ("TRIGGERS_ADMIN_TOKEN", "a-long-enough-admin-token"),
        ],
    )
    .spawn();
    guarded.wait_for_log("ingest listening").await;
    let loopback = start_on_loopback(&db.url, &[]).await;
    for quiet in [&guarded, &loopback] {
        assert!(
            !quiet.log_text().contains("TRIGGERS_ADMIN_TOKEN is not set"),
            "{}",
            quiet.log_text()
        );
    }
}
