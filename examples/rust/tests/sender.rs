//! The example sender, run as a process against a scripted server on loopback: it waits for
//! `Retry-After` on 429/503, keeps one dedup id across retries, takes a `409 duplicate_event` as
//! the stored event, and does not retry the caller's own mistakes.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use serde_json::{Value, json};

type Reply = (u16, Option<&'static str>, Value);

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<Vec<Reply>>>,
    seen: Arc<Mutex<Vec<(Instant, Value)>>>,
}

async fn answer(State(script): State<Script>, Json(body): Json<Value>) -> impl IntoResponse {
    script.seen.lock().expect("lock").push((Instant::now(), body));
    let (status, retry_after, json) = script.replies.lock().expect("lock").remove(0);
    let mut response = (StatusCode::from_u16(status).expect("status"), Json(json)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.parse().expect("header"));
    }
    response
}

/// Serve `replies` in order, run the sender against them; (exit ok, stdout, requests seen).
async fn send_against(replies: Vec<Reply>) -> (bool, String, Vec<(Instant, Value)>) {
    let script = Script {
        replies: Arc::new(Mutex::new(replies)),
        ..Script::default()
    };
    let app = Router::new()
        .route("/api/events", post(answer))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut sender = std::process::Command::new(env!("CARGO_BIN_EXE_example-sender"));
    sender
        .env("TRIGGERS_URL", format!("http://{addr}"))
        .env("TRIGGERS_API_KEY", "trg_live_test")
        .args(["order.created", r#"{"order": 42}"#]);
    let output = tokio::task::spawn_blocking(move || sender.output())
        .await
        .expect("join")
        .expect("run the sender");
    let seen = script.seen.lock().expect("lock").clone();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        seen,
    )
}

#[tokio::test]
async fn the_sender_waits_for_retry_after_and_resends_the_same_dedup_id() {
    let (ok, stdout, seen) = send_against(vec![
        (503, Some("1"), json!({"error": "unavailable"})),
        (429, Some("1"), json!({"error": "rate_limited"})),
        (202, None, json!({"id": "evt-1", "status": "accepted"})),
    ])
    .await;
    assert!(ok);
    assert_eq!(stdout, "evt-1");
    assert_eq!(seen.len(), 3);
    let dedup: Vec<&Value> = seen.iter().map(|(_, body)| &body["dedup_id"]).collect();
    assert!(dedup[0].is_string());
    assert!(
        dedup.iter().all(|d| *d == dedup[0]),
        "one dedup id for every try: {dedup:?}"
    );
    for pair in seen.windows(2) {
        let waited = pair[1].0 - pair[0].0;
        assert!(
            waited >= Duration::from_millis(950),
            "retried after {waited:?}, not Retry-After"
        );
    }
}

#[tokio::test]
async fn a_duplicate_answer_means_an_earlier_try_was_stored() {
    let (ok, stdout, seen) = send_against(vec![(
        409,
        None,
        json!({"error": "duplicate_event", "dedup_id": "d", "event_id": "evt-stored"}),
    )])
    .await;
    assert!(ok);
    assert_eq!(stdout, "evt-stored");
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn a_validation_error_is_not_retried() {
    let (ok, stdout, seen) = send_against(vec![
        (422, None, json!({"error": "validation_failed"})),
        (202, None, json!({"id": "never"})),
    ])
    .await;
    assert!(!ok);
    assert_eq!(stdout, "");
    assert_eq!(seen.len(), 1);
}
