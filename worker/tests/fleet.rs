//! Isolation between organisations, and several workers sharing one queue.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;

#[tokio::test]
async fn a_hanging_endpoint_does_not_stall_other_organisations() {
    let db = test_db().await;
    let hanging = Receiver::start(vec![], Reply::status(200).after(Duration::from_secs(60))).await;
    let healthy = Receiver::answering(200).await;
    let (slow_org, _) = create_org(&db.pool, Some(&hanging.url)).await;
    let (fast_org, _) = create_org(&db.pool, Some(&healthy.url)).await;
    // The slow organisation's events are older, so they are claimed first.
    let slow = create_events(&db.pool, slow_org, 60).await;
    let fast = create_events(&db.pool, fast_org, 200).await;
    let cap = 8;
    let _worker = TestWorker::spawn(&db.url, |c| {
        c.concurrency = 32;
        c.org_inflight_cap = cap;
        c.delivery_timeout = Duration::from_secs(10);
    })
    .await;

    eventually(
        "the other organisation's 200 events are delivered",
        Duration::from_secs(30),
        || async { count_status(&db.pool, fast_org, "delivered").await == 200 },
    )
    .await;
    // All of that happened while the slow endpoint was still holding its requests: none of the
    // slow organisation's attempts has even finished (timed out) yet.
    let slow_attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE organization_id = $1")
            .bind(slow_org)
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(slow_attempts, 0, "the fast organisation waited for the slow one");
    assert!(hanging.count() > 0, "the slow endpoint was being called");
    assert!(
        hanging.max_inflight() <= cap,
        "{} requests in flight to one organisation, cap {cap}",
        hanging.max_inflight()
    );
    let seen: HashSet<String> = healthy.requests().iter().map(|r| r.event_id()).collect();
    assert!(fast.iter().all(|id| seen.contains(&id.to_string())));
    // Deferred jobs are not attempts: the slow events are still pending with no attempt counted.
    assert_eq!(
        count_status(&db.pool, slow_org, "pending").await,
        slow.len() as i64
    );
}

#[tokio::test]
async fn two_workers_deliver_a_thousand_events_without_losing_one() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let first = TestWorker::spawn(&db.url, |c| {
        c.batch_size = 20;
        c.org_inflight_cap = 64;
    })
    .await;
    let second = TestWorker::spawn(&db.url, |c| {
        c.batch_size = 20;
        c.org_inflight_cap = 64;
    })
    .await;
    let ids = create_events(&db.pool, org, 1000).await;

    eventually(
        "all 1,000 events are delivered",
        Duration::from_secs(90),
        || async { count_status(&db.pool, org, "delivered").await == 1000 },
    )
    .await;
    let seen: HashSet<String> = receiver.requests().iter().map(|r| r.event_id()).collect();
    let missing: Vec<_> = ids.iter().filter(|id| !seen.contains(&id.to_string())).collect();
    assert!(missing.is_empty(), "never received: {missing:?}");
    // Both workers took part.
    eventually("jobs are acknowledged", Duration::from_secs(10), || async {
        unfinished_jobs(&db.pool).await == 0
    })
    .await;
    let claimers = queue::testing::count_finishing_workers(&mut db.pool.acquire().await.expect("conn")).await;
    assert_eq!(claimers, 2, "both workers should have delivered some events");
    first.stop().await.expect("first stops");
    second.stop().await.expect("second stops");
}
