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
    let reply = script.replies.lock().expect("lock").remove(0);
    respond(reply)
}

/// A scripted reply as a response.
fn respond((status, retry_after, json): Reply) -> axum::response::Response {
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

/// Answers `POST /api/events/batch` from `replies` in order (`None`: every event accepted, with
/// the id `evt-<dedup_id>`), recording what was sent.
async fn answer_batch(State(script): State<BatchScript>, Json(body): Json<Value>) -> impl IntoResponse {
    script
        .seen
        .lock()
        .expect("lock")
        .push((Instant::now(), body.clone()));
    let reply = {
        let mut replies = script.replies.lock().expect("lock");
        if replies.is_empty() {
            None
        } else {
            replies.remove(0)
        }
    };
    match reply {
        Some(reply) => respond(reply),
        None => {
            let results: Vec<Value> = body["events"]
                .as_array()
                .expect("events")
                .iter()
                .enumerate()
                .map(|(i, e)| json!({"index": i, "status": 202, "id": format!("evt-{}", e["dedup_id"].as_str().expect("dedup_id"))}))
                .collect();
            Json(json!({"results": results})).into_response()
        }
    }
}

#[derive(Clone, Default)]
struct BatchScript {
    replies: Arc<Mutex<Vec<Option<Reply>>>>,
    seen: Arc<Mutex<Vec<(Instant, Value)>>>,
}

/// Run `example-sender --batch --max 3 --linger-ms 300` against `replies`, writing `input` to
/// its stdin as (lines, pause after them) steps; (exit ok, stdout lines, requests seen).
async fn batch_against(
    replies: Vec<Option<Reply>>,
    input: Vec<(Vec<Value>, Duration)>,
) -> (bool, Vec<String>, Vec<(Instant, Value)>) {
    use std::io::Write;
    let script = BatchScript {
        replies: Arc::new(Mutex::new(replies)),
        ..BatchScript::default()
    };
    let app = Router::new()
        .route("/api/events/batch", post(answer_batch))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let output = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_example-sender"))
            .env("TRIGGERS_URL", format!("http://{addr}"))
            .env("TRIGGERS_API_KEY", "trg_live_test")
            .args(["--batch", "--max", "3", "--linger-ms", "300"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run the sender");
        let mut stdin = child.stdin.take().expect("stdin");
        for (lines, pause) in input {
            for line in lines {
                writeln!(stdin, "{line}").expect("write a line");
            }
            stdin.flush().expect("flush");
            std::thread::sleep(pause);
        }
        drop(stdin);
        child.wait_with_output().expect("sender output")
    })
    .await
    .expect("join");
    let seen = script.seen.lock().expect("lock").clone();
    let stdout = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (output.status.success(), stdout, seen)
}

fn events_of(request: &Value) -> Vec<Value> {
    request["events"].as_array().expect("events").clone()
}

#[tokio::test]
async fn the_batching_sender_flushes_by_count_and_by_time_whichever_comes_first() {
    let event = |n: u32| json!({"type": "order.created", "payload": {"n": n}});
    let (ok, stdout, seen) = batch_against(
        vec![],
        vec![
            // Four at once: three go by count, the fourth waits for the linger...
            (
                vec![event(1), event(2), event(3), event(4)],
                Duration::from_millis(1200),
            ),
            // ...and is sent while stdin is still open; the last goes at the end of input.
            (vec![event(5)], Duration::ZERO),
        ],
    )
    .await;
    assert!(ok, "{stdout:?}");
    let sizes: Vec<usize> = seen.iter().map(|(_, r)| events_of(r).len()).collect();
    assert_eq!(sizes, [3, 1, 1]);
    let gap = seen[1].0 - seen[0].0;
    assert!(
        gap >= Duration::from_millis(250) && gap < Duration::from_millis(1100),
        "the fourth event went {gap:?} after the first three, not after the 300 ms linger"
    );
    let sent: Vec<String> = seen
        .iter()
        .flat_map(|(_, r)| events_of(r))
        .map(|e| format!("evt-{}", e["dedup_id"].as_str().expect("a dedup id was chosen")))
        .collect();
    assert_eq!(stdout, sent, "one id per event, in input order");
}

#[tokio::test]
async fn the_batching_sender_retries_the_batch_then_only_the_events_that_were_not_stored() {
    let event = |n: u32| json!({"type": "order.created", "payload": {"n": n}});
    let (ok, stdout, seen) = batch_against(
        vec![
            Some((503, Some("1"), json!({"error": "unavailable"}))),
            Some((
                200,
                None,
                json!({"results": [
                    {"index": 0, "status": 202, "id": "evt-a"},
                    {"index": 1, "status": 503, "code": "unavailable"},
                    {"index": 2, "status": 422, "code": "validation_failed"},
                ]}),
            )),
            Some((
                200,
                None,
                json!({"results": [{"index": 0, "status": 409, "code": "duplicate_event", "event_id": "evt-b"}]}),
            )),
        ],
        vec![(vec![event(1), event(2), event(3)], Duration::ZERO)],
    )
    .await;
    assert!(!ok, "a refused event makes the run fail");
    assert_eq!(stdout, ["evt-a", "evt-b", "-"]);
    assert_eq!(seen.len(), 3);
    assert!(
        seen[1].0 - seen[0].0 >= Duration::from_millis(950),
        "Retry-After was not waited"
    );
    let first = events_of(&seen[0].1);
    assert_eq!(
        events_of(&seen[1].1),
        first,
        "the whole batch again, same dedup ids"
    );
    assert_eq!(
        events_of(&seen[2].1),
        [first[1].clone()],
        "only the event not stored"
    );
}
