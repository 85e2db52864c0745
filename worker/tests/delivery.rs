//! What a receiver gets, and how failures are retried, dead-lettered, cut short or cancelled.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;
use triggers_shared::{db::deliveries::DeliveryKey, models::DeliveryStatus, signing};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn delivery_is_signed_over_the_exact_body_and_carries_the_documented_headers() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, secret) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let worker = TestWorker::spawn(&db.url, |_| {}).await;

    eventually("the event is delivered", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "delivered"
    })
    .await;
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "exactly one request");
    let req = &got[0];
    let id = ids[0].to_string();

    // Signature: over exactly the bytes received.
    let ts: i64 = req.header("webhook-timestamp").parse().expect("unix seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - ts).abs() < 30, "timestamp {ts} is not now ({now})");
    assert!(
        signing::verify(&secret, &id, ts, &req.body, req.header("webhook-signature")),
        "signature does not verify"
    );
    assert!(!signing::verify(
        &signing::generate_secret(),
        &id,
        ts,
        &req.body,
        req.header("webhook-signature")
    ));

    // Headers.
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(
        req.header("user-agent"),
        format!("Triggers/{}", triggers_shared::VERSION)
    );
    assert_eq!(req.header("x-event-id"), id);
    assert_eq!(req.header("x-event-type"), "order.created");
    assert_eq!(req.header("webhook-id"), id);

    // Body: exactly the five documented fields.
    let body: Value = serde_json::from_slice(&req.body).expect("JSON body");
    let obj = body.as_object().expect("object");
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "dedup_id", "id", "timestamp", "type"]);
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["type"], "order.created");
    assert!(
        body["dedup_id"]
            .as_str()
            .expect("dedup_id")
            .starts_with("dedup-0-")
    );
    assert_eq!(
        body["data"],
        serde_json::json!({"n": 0, "note": "snow ☃ \"quoted\"", "nested": {"a": [1, 2.5, null]}})
    );
    let stamp = body["timestamp"].as_str().expect("timestamp");
    assert!(stamp.ends_with('Z'), "{stamp} is not UTC with Z");
    let created: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT created_at FROM events WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&db.pool)
            .await
            .expect("created_at");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(stamp).expect("RFC 3339"),
        created
    );

    let row = event(&db.pool, ids[0]).await;
    assert_eq!((row.attempts, row.response_status), (1, Some(200)));
    assert!(row.delivered_at.is_some() && row.last_error.is_none());
    worker.stop().await.expect("clean stop");
}

#[tokio::test]
async fn two_failures_then_success_is_delivered_after_three_attempts() {
    let db = test_db().await;
    let receiver = Receiver::start(vec![Reply::status(500), Reply::status(500)], Reply::status(200)).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |_| {}).await;

    eventually("the event is delivered", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "delivered"
    })
    .await;
    let row = event(&db.pool, ids[0]).await;
    assert_eq!((row.attempts, row.response_status), (3, Some(200)));
    let log = attempts(&db.pool, ids[0]).await;
    let summary: Vec<_> = log.iter().map(|a| (a.attempt, a.response_status)).collect();
    assert_eq!(summary, [(1, Some(500)), (2, Some(500)), (3, Some(200))]);
    assert!(log[0].error.as_deref().expect("error").starts_with("HTTP 500"));
    assert!(log[2].error.is_none());
    assert_eq!(receiver.count(), 3);
}

#[tokio::test]
async fn retries_wait_at_least_the_scheduled_delays() {
    let db = test_db().await;
    let receiver = Receiver::start(vec![Reply::status(500), Reply::status(502)], Reply::status(204)).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |c| {
        c.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(3)];
    })
    .await;

    eventually("the event is delivered", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "delivered"
    })
    .await;
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    // Jitter is ±20% of each delay.
    assert!(gap1 >= Duration::from_millis(800), "first retry after {gap1:?}");
    assert!(gap2 >= Duration::from_millis(2400), "second retry after {gap2:?}");
}

#[tokio::test]
async fn an_endpoint_that_always_fails_dead_letters_the_event_after_the_last_attempt() {
    let db = test_db().await;
    let receiver = Receiver::answering(500).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |_| {}).await; // schedule 1s,1s: 3 attempts

    eventually("the event is dead-lettered", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "failed"
    })
    .await;
    eventually("the queue is drained", PATIENCE, || async {
        unfinished_jobs(&db.pool).await == 0
    })
    .await;
    // Longer than a retry delay plus a poll: nothing more may arrive.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.count(), 3, "1 + len(schedule) requests, then none");
    let row = event(&db.pool, ids[0]).await;
    assert_eq!((row.attempts, row.response_status), (3, Some(500)));
    assert!(row.last_error.expect("last_error").starts_with("HTTP 500"));
    assert_eq!(attempts(&db.pool, ids[0]).await.len(), 3);
}

#[tokio::test]
async fn gone_410_stops_retrying_at_once() {
    let db = test_db().await;
    let receiver = Receiver::answering(410).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |_| {}).await;

    eventually("the event fails", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "failed"
    })
    .await;
    eventually("the queue is drained", PATIENCE, || async {
        unfinished_jobs(&db.pool).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.count(), 1);
    let row = event(&db.pool, ids[0]).await;
    assert_eq!((row.attempts, row.response_status), (1, Some(410)));
}

#[tokio::test]
async fn retry_after_on_503_is_honoured() {
    let db = test_db().await;
    let receiver = Receiver::start(
        vec![Reply::status(503).header("retry-after", "3")],
        Reply::status(200),
    )
    .await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |_| {}).await; // the schedule says 1 s

    eventually("the event is delivered", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "delivered"
    })
    .await;
    let got = receiver.requests();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(2900),
        "retried after {gap:?}, not after Retry-After: 3"
    );
}

#[tokio::test]
async fn acknowledging_an_event_cancels_its_pending_retries() {
    let db = test_db().await;
    let receiver = Receiver::answering(500).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |c| {
        c.retry_schedule = vec![Duration::from_secs(2), Duration::from_secs(2)];
    })
    .await;

    eventually("the first attempt is recorded", PATIENCE, || async {
        event(&db.pool, ids[0]).await.attempts == 1
    })
    .await;
    // What `POST /api/ack/{id}` does.
    let mut conn = db.pool.acquire().await.expect("connection");
    triggers_shared::db::events::acknowledge(&mut conn, org, ids[0])
        .await
        .expect("ack")
        .expect("the event exists");
    drop(conn);
    // The scheduled retry comes due, is claimed, and is dropped without a request.
    eventually("the retry job has run", PATIENCE, || async {
        unfinished_jobs(&db.pool).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1, "no request after the ack");
    let row = event(&db.pool, ids[0]).await;
    assert_eq!((row.status.as_str(), row.attempts), ("delivered", 1));
    let delivery = &deliveries(&db.pool, ids[0]).await[0];
    assert_eq!(delivery.status, DeliveryStatus::Cancelled);
}

#[tokio::test]
async fn a_private_target_is_refused_when_private_webhooks_are_not_allowed() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let localhost = format!("http://localhost:{}/hook", receiver.addr.port());
    let (org2, _) = create_org(&db.pool, Some(&localhost)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let ids2 = create_events(&db.pool, org2, 1).await;
    let _worker = TestWorker::spawn(&db.url, |c| {
        c.common.allow_private_webhooks = false;
        c.retry_schedule = vec![];
    })
    .await;

    for id in [ids[0], ids2[0]] {
        eventually("the event fails", PATIENCE, || async {
            event(&db.pool, id).await.status == "failed"
        })
        .await;
        let row = event(&db.pool, id).await;
        let error = row.last_error.expect("last_error");
        assert!(error.starts_with("webhook target refused"), "{error}");
        assert!(error.contains("internal"), "{error}");
        assert_eq!((row.attempts, row.response_status), (1, None));
    }
    assert_eq!(receiver.count(), 0, "no request reached the private address");
}

#[tokio::test]
async fn events_of_an_organisation_without_a_webhook_stay_pending() {
    let db = test_db().await;
    let (org, _) = create_org(&db.pool, None).await;
    let ids = create_events(&db.pool, org, 2).await;
    let _worker = TestWorker::spawn(&db.url, |_| {}).await;

    eventually("the jobs have run", PATIENCE, || async {
        unfinished_jobs(&db.pool).await == 0
    })
    .await;
    for id in ids {
        let row = event(&db.pool, id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("pending", 0));
    }
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let db = test_db().await;
    let target = Receiver::answering(200).await;
    let receiver = Receiver::answering(302).await;
    receiver.set_default(Reply::status(302).header("location", target.url.clone()));
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |c| c.retry_schedule = vec![]).await;

    eventually("the event fails", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "failed"
    })
    .await;
    let row = event(&db.pool, ids[0]).await;
    assert_eq!(row.response_status, Some(302));
    assert!(
        row.last_error
            .expect("error")
            .contains("redirects are not followed")
    );
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_as_a_failed_attempt() {
    let db = test_db().await;
    let receiver = Receiver::start(vec![], Reply::status(200).after(Duration::from_secs(30))).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let _worker = TestWorker::spawn(&db.url, |c| {
        c.delivery_timeout = Duration::from_secs(1);
        c.retry_schedule = vec![];
    })
    .await;

    eventually("the event fails", PATIENCE, || async {
        event(&db.pool, ids[0]).await.status == "failed"
    })
    .await;
    let row = event(&db.pool, ids[0]).await;
    assert!(row.last_error.expect("error").contains("timed out"));
    let log = attempts(&db.pool, ids[0]).await;
    assert!(log[0].duration_ms >= 900, "{:?}", log[0]);
}

#[tokio::test]
async fn the_check_before_sending_sees_an_ack_that_committed_after_the_delivery_was_loaded() {
    let db = test_db().await;
    let (org, _) = create_org(&db.pool, Some("http://127.0.0.1:9/")).await;
    let ids = create_events(&db.pool, org, 3).await;
    let mut conn = db.pool.acquire().await.expect("connection");
    let mut jobs = Vec::new();
    for (task, job) in queue::testing::decoded_jobs(&mut conn).await {
        jobs.push((DeliveryKey::from(&job), task));
    }
    let keys: Vec<DeliveryKey> = jobs.iter().map(|(k, _)| *k).collect();
    let loaded = triggers_shared::db::deliveries::load_targets(&mut conn, &keys)
        .await
        .expect("load");
    assert_eq!(loaded.len(), 3);
    assert!(
        loaded
            .iter()
            .all(|(k, t)| k.organization_id == org && t.status == DeliveryStatus::Pending)
    );
    // The client acknowledges one of them between the worker's load and its request.
    triggers_shared::db::events::acknowledge(&mut conn, org, ids[1])
        .await
        .expect("ack")
        .expect("the event exists");
    let open = triggers_shared::db::deliveries::still_deliverable(&mut conn, &jobs)
        .await
        .expect("re-check");
    let mut open: Vec<Uuid> = open.iter().map(|k| k.event_id).collect();
    open.sort();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(open, expected);
}
