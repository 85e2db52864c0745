//! What a receiver gets, and how failures are retried, dead-lettered, cut short or cancelled.
//!
//! Deterministic: each test runs the deliverer on what is due (`TestDeliverer::run_due`) and
//! makes a scheduled retry due by moving its `run_at` (`run_retries`), never waiting on the
//! clock; "nothing more happens" is "no job is left to run".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use serde_json::Value;
use triggers_shared::{
    models::{DeliveryKey, DeliveryStatus},
    signing,
};
use triggers_worker::deliver::RECHECK_AFTER;

#[tokio::test]
async fn delivery_is_signed_over_the_exact_body_and_carries_the_documented_headers() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, secret) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let deliverer = TestDeliverer::new(&db, |_| {}).await;

    assert_eq!(deliverer.run_due().await, 1);
    assert_eq!(event(&db.pool, ids[0]).await.status, "delivered");
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
    assert_eq!(unfinished_jobs(&db.pool).await, 0);
}

#[tokio::test]
async fn two_failures_then_success_is_delivered_after_three_attempts() {
    let db = test_db().await;
    let receiver = Receiver::start(vec![Reply::status(500), Reply::status(500)], Reply::status(200)).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let deliverer = TestDeliverer::new(&db, |_| {}).await;

    assert_eq!(deliverer.run_due().await, 1);
    for attempts in [1, 2] {
        let row = event(&db.pool, ids[0]).await;
        assert_eq!((row.status.as_str(), row.attempts), ("pending", attempts));
        assert_eq!(deliverer.run_due().await, 0, "the retry is not due yet");
        assert_eq!(deliverer.run_retries().await, 1);
    }
    let row = event(&db.pool, ids[0]).await;
    assert_eq!(row.status, "delivered");
    assert_eq!((row.attempts, row.response_status), (3, Some(200)));
    assert_eq!(deliverer.run_retries().await, 0, "nothing is left to run");
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
    let deliverer = TestDeliverer::new(&db, |c| {
        c.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(3)];
    })
    .await;

    // Each failure schedules the next attempt its delay later (jitter is ±20%), and the retry
    // is not run before then.
    for (round, delay) in [Duration::from_secs(1), Duration::from_secs(3)]
        .into_iter()
        .enumerate()
    {
        let before = chrono::Utc::now();
        let ran = if round == 0 {
            deliverer.run_due().await
        } else {
            deliverer.run_retries().await
        };
        let after = chrono::Utc::now();
        assert_eq!(ran, 1);
        let next = deliveries(&db.pool, ids[0]).await[0]
            .next_attempt_at
            .expect("a retry is scheduled");
        let earliest = before + chrono::Duration::from_std(delay.mul_f64(0.8)).expect("delay");
        let latest = after + chrono::Duration::from_std(delay.mul_f64(1.2)).expect("delay");
        assert!(
            earliest <= next && next <= latest,
            "retry {round} due at {next}, not within {earliest}..{latest}"
        );
        assert_eq!(deliverer.run_due().await, 0, "retry {round} ran before its time");
    }
    assert_eq!(deliverer.run_retries().await, 1);
    assert_eq!(event(&db.pool, ids[0]).await.status, "delivered");
    assert_eq!(receiver.count(), 3);
}

#[tokio::test]
async fn an_endpoint_that_always_fails_dead_letters_the_event_after_the_last_attempt() {
    let db = test_db().await;
    let receiver = Receiver::answering(500).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let deliverer = TestDeliverer::new(&db, |_| {}).await; // schedule 1s,1s: 3 attempts

    assert_eq!(deliverer.run_due().await, 1);
    assert_eq!(deliverer.run_retries().await, 1);
    assert_eq!(event(&db.pool, ids[0]).await.status, "pending");
    assert_eq!(deliverer.run_retries().await, 1);
    assert_eq!(event(&db.pool, ids[0]).await.status, "failed");
    // Nothing is left to run, however long one waits.
    assert_eq!(unfinished_jobs(&db.pool).await, 0);
    assert_eq!(deliverer.run_retries().await, 0);
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
    let deliverer = TestDeliverer::new(&db, |_| {}).await;

    assert_eq!(deliverer.run_due().await, 1);
    assert_eq!(event(&db.pool, ids[0]).await.status, "failed");
    // No retry was scheduled: nothing is left to run.
    assert_eq!(unfinished_jobs(&db.pool).await, 0);
    assert_eq!(deliverer.run_retries().await, 0);
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
    let deliverer = TestDeliverer::new(&db, |_| {}).await; // the schedule says 1 s

    let before = chrono::Utc::now();
    assert_eq!(deliverer.run_due().await, 1);
    let next = deliveries(&db.pool, ids[0]).await[0]
        .next_attempt_at
        .expect("a retry is scheduled");
    assert!(
        next - before >= chrono::Duration::milliseconds(2900),
        "retry due {} after the attempt, not after Retry-After: 3",
        next - before
    );
    assert_eq!(deliverer.run_due().await, 0, "the retry ran before Retry-After");
    assert_eq!(deliverer.run_retries().await, 1);
    assert_eq!(event(&db.pool, ids[0]).await.status, "delivered");
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn acknowledging_an_event_cancels_its_pending_retries() {
    let db = test_db().await;
    let receiver = Receiver::answering(500).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 1).await;
    let deliverer = TestDeliverer::new(&db, |_| {}).await;

    assert_eq!(deliverer.run_due().await, 1);
    assert_eq!(event(&db.pool, ids[0]).await.attempts, 1);
    // What `POST /api/ack/{id}` does.
    let mut conn = db.pool.acquire().await.expect("connection");
    triggers_shared::db::events::acknowledge(&mut conn, org, ids[0])
        .await
        .expect("ack")
        .expect("the event exists");
    drop(conn);
    // The scheduled retry comes due, is claimed, and is dropped without a request.
    assert_eq!(deliverer.run_retries().await, 1);
    assert_eq!(unfinished_jobs(&db.pool).await, 0);
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
    let deliverer = TestDeliverer::new(&db, |c| {
        c.common.allow_private_webhooks = false;
        c.retry_schedule = vec![];
    })
    .await;

    assert_eq!(deliverer.run_due().await, 2);
    for id in [ids[0], ids2[0]] {
        let row = event(&db.pool, id).await;
        assert_eq!(row.status, "failed");
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
    let deliverer = TestDeliverer::new(&db, |_| {}).await;

    deliverer.run_due().await;
    assert_eq!(unfinished_jobs(&db.pool).await, 0);
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
    let deliverer = TestDeliverer::new(&db, |c| c.retry_schedule = vec![]).await;

    assert_eq!(deliverer.run_due().await, 1);
    let row = event(&db.pool, ids[0]).await;
    assert_eq!(row.status, "failed");
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
    let deliverer = TestDeliverer::new(&db, |c| {
        c.delivery_timeout = Duration::from_secs(1);
        c.retry_schedule = vec![];
    })
    .await;

    assert_eq!(deliverer.run_due().await, 1);
    let row = event(&db.pool, ids[0]).await;
    assert_eq!(row.status, "failed");
    assert!(row.last_error.expect("error").contains("timed out"));
    let log = attempts(&db.pool, ids[0]).await;
    assert!(log[0].duration_ms >= 900, "{:?}", log[0]);
}

#[tokio::test]
async fn the_check_before_sending_sees_an_ack_that_committed_after_the_delivery_was_loaded() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 3).await;
    let deliverer = TestDeliverer::new(&db, |_| {}).await;
    // After the deliveries are loaded and their requests prepared, the client acknowledges the
    // second event, and preparing took longer than the re-check threshold (a slow DNS answer).
    let (pool, acked) = (db.pool.clone(), ids[1]);
    deliverer.deliverer.before_send(move |key: DeliveryKey| {
        let pool = pool.clone();
        async move {
            if key.event_id == acked {
                // What `POST /api/ack/{id}` does.
                let mut conn = pool.acquire().await.expect("connection");
                triggers_shared::db::events::acknowledge(&mut conn, org, acked)
                    .await
                    .expect("ack")
                    .expect("the event exists");
            }
            tokio::time::sleep(RECHECK_AFTER * 2).await;
        }
    });

    assert_eq!(deliverer.run_due().await, 3);
    let mut sent: Vec<String> = receiver.requests().iter().map(|r| r.event_id()).collect();
    sent.sort();
    let mut expected = vec![ids[0].to_string(), ids[2].to_string()];
    expected.sort();
    assert_eq!(sent, expected, "the acknowledged event was sent");
    assert!(attempts(&db.pool, acked).await.is_empty());
    let row = event(&db.pool, acked).await;
    assert_eq!((row.status.as_str(), row.attempts), ("delivered", 0));
    assert_eq!(unfinished_jobs(&db.pool).await, 0);
}
