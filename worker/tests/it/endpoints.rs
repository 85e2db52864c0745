//! Delivery per endpoint: each endpoint receives exactly the events its patterns match, signed
//! with its own secret and carrying its custom headers; a delivery whose endpoint was disabled or
//! deleted by the time it is sent is not sent (`skipped`, `cancelled`); one endpoint's slow
//! receiver does not hold back another endpoint of the same organisation.

use std::{collections::HashSet, time::Duration};

use crate::common::*;
use triggers_shared::{
    db::endpoints::{self, EndpointPatch},
    models::DeliveryStatus,
    signing,
};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);

/// The event ids a receiver got.
fn received(receiver: &Receiver) -> HashSet<String> {
    receiver.requests().iter().map(Received::event_id).collect()
}

#[tokio::test]
async fn each_endpoint_receives_the_events_it_subscribed_to_signed_with_its_secret_and_with_its_headers() {
    let db = test_db().await;
    let billing = Receiver::answering(200).await;
    let analytics = Receiver::answering(204).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (_, billing_secret) = create_endpoint(
        &db.pool,
        org,
        &billing.url,
        &["invoice.*"],
        &[("Authorization", "Bearer billing-token"), ("X-Tenant", "acme")],
    )
    .await;
    let (_, analytics_secret) = create_endpoint(&db.pool, org, &analytics.url, &["*"], &[]).await;
    let invoices = create_events_of(&db.pool, org, "invoice.paid", 3).await;
    let orders = create_events_of(&db.pool, org, "order.created", 2).await;
    let _worker = TestWorker::spawn(&db.url, |_| {}).await;

    eventually("every delivery is made", PATIENCE, || async {
        billing.count() == 3 && analytics.count() == 5
    })
    .await;
    let ids = |ids: &[Uuid]| ids.iter().map(Uuid::to_string).collect::<HashSet<_>>();
    assert_eq!(received(&billing), ids(&invoices));
    assert_eq!(
        received(&analytics),
        ids(&[invoices.clone(), orders.clone()].concat())
    );
    for (receiver, secret) in [(&billing, &billing_secret), (&analytics, &analytics_secret)] {
        for r in receiver.requests() {
            let timestamp: i64 = r.header("webhook-timestamp").parse().expect("timestamp");
            assert!(
                signing::verify(
                    secret,
                    &r.event_id(),
                    timestamp,
                    &r.body,
                    r.header("webhook-signature")
                ),
                "signed with the endpoint's own secret"
            );
        }
    }
    for r in billing.requests() {
        assert_eq!(r.header("authorization"), "Bearer billing-token");
        assert_eq!(r.header("x-tenant"), "acme");
        assert_eq!(r.header("content-type"), "application/json");
    }
    assert!(
        analytics
            .requests()
            .iter()
            .all(|r| r.headers.get("x-tenant").is_none())
    );
    // Each event sums its deliveries up: delivered once all are.
    for id in invoices.iter().chain(&orders) {
        eventually("the event is delivered", PATIENCE, || async {
            event(&db.pool, *id).await.status == "delivered"
        })
        .await;
        let statuses: Vec<DeliveryStatus> =
            deliveries(&db.pool, *id).await.iter().map(|d| d.status).collect();
        assert!(
            statuses.iter().all(|s| *s == DeliveryStatus::Delivered),
            "{statuses:?}"
        );
    }
}

#[tokio::test]
async fn a_delivery_whose_endpoint_was_disabled_or_deleted_before_sending_is_skipped_or_cancelled_unsent() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (disabled, _) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    let (deleted, _) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    let (raced, _) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    // Routed while all were enabled; changed before any worker ran.
    let ids = create_events_of(&db.pool, org, "order.created", 2).await;
    let mut conn = db.pool.acquire().await.expect("connection");
    let patch = EndpointPatch {
        enabled: Some(false),
        ..EndpointPatch::default()
    };
    endpoints::update(&mut conn, org, disabled, patch)
        .await
        .expect("disable");
    // Deleting cancels the pending deliveries at once; the worker finds them closed.
    assert!(endpoints::delete(&mut conn, org, deleted).await.expect("delete"));
    // What an ingest statement that ran concurrently with a deletion leaves: a pending delivery
    // whose endpoint is gone (the deletion's cancel could not see it yet).
    sqlx::query("DELETE FROM endpoints WHERE id = $1")
        .bind(raced)
        .execute(&mut *conn)
        .await
        .expect("delete behind the API's back");
    drop(conn);
    let worker = TestWorker::spawn(&db.url, |_| {}).await;

    eventually("the jobs have run", PATIENCE, || async {
        unfinished_jobs(&db.pool).await == 0
    })
    .await;
    assert_eq!(receiver.count(), 0, "nothing was sent");
    for id in &ids {
        let by_endpoint: Vec<(Uuid, DeliveryStatus, i32)> = deliveries(&db.pool, *id)
            .await
            .iter()
            .map(|d| (d.endpoint_id, d.status, d.attempts))
            .collect();
        let mut expected = vec![
            (disabled, DeliveryStatus::Skipped, 0),
            (deleted, DeliveryStatus::Cancelled, 0),
            (raced, DeliveryStatus::Cancelled, 0),
        ];
        expected.sort_by_key(|(endpoint, ..)| *endpoint);
        assert_eq!(by_endpoint, expected);
        let row = event(&db.pool, *id).await;
        assert_eq!(
            row.status, "pending",
            "only skipped or cancelled: it waits to be acknowledged"
        );
    }
    let skipped = metric(worker.admin, "triggers_deliveries_total{outcome=\"skipped\"}").await;
    let cancelled = metric(worker.admin, "triggers_deliveries_total{outcome=\"cancelled\"}").await;
    // The deleted endpoint's deliveries were cancelled by the deletion (their jobs found them
    // closed); the raced ones by the worker.
    assert_eq!((skipped, cancelled), (2.0, 2.0));
}

#[tokio::test]
async fn a_slow_endpoints_backlog_does_not_hold_back_another_endpoint_of_the_same_organisation() {
    let db = test_db().await;
    let slow = Receiver::start(vec![], Reply::status(200).after(Duration::from_secs(3))).await;
    let fast = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, None).await;
    create_endpoint(&db.pool, org, &slow.url, &["slow.*"], &[]).await;
    create_endpoint(&db.pool, org, &fast.url, &["fast.*"], &[]).await;
    let _worker = TestWorker::spawn(&db.url, |c| {
        c.concurrency = 16;
        c.org_inflight_cap = 4;
    })
    .await;
    // The slow endpoint's backlog is being worked on: every slot the organisation has is on it.
    create_events_of(&db.pool, org, "slow.thing", 400).await;
    eventually("the slow endpoint is busy", PATIENCE, || async {
        slow.inflight() >= 4
    })
    .await;
    let burst = create_events_of(&db.pool, org, "fast.thing", 100).await;
    // Served one after the other behind 3 s answers, the burst would take minutes.
    eventually(
        "the fast endpoint's burst is delivered",
        Duration::from_secs(10),
        || async { fast.count() == burst.len() },
    )
    .await;
    assert!(slow.count() < 400, "the slow backlog is still being worked on");
}
