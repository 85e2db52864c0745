//! Isolation between organisations, and several workers sharing one queue.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use crate::common::*;

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
    // A worker's concurrency no larger than the cap: an organisation alone may use every slot,
    // so only then is the slow one's share bounded by the cap from its very first request. The
    // healthy organisation gets slots over the concurrency (up to the cap) meanwhile.
    let _worker = TestWorker::spawn(&db.url, |c| {
        c.concurrency = cap;
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

    // Who claims what is visible only while jobs are claimed: sample it while delivering.
    let claimers = std::sync::Mutex::new(HashSet::new());
    eventually(
        "all 1,000 events are delivered",
        Duration::from_secs(90),
        || async {
            let mut conn = db.pool.acquire().await.expect("conn");
            let now = queue::testing::claiming_workers(&mut conn).await;
            claimers.lock().expect("claimers").extend(now);
            count_status(&db.pool, org, "delivered").await == 1000
        },
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
    let claimers = claimers.into_inner().expect("claimers").len();
    assert_eq!(claimers, 2, "both workers should have claimed some events");
    first.stop().await.expect("first stops");
    second.stop().await.expect("second stops");
}

#[tokio::test]
async fn a_slow_organisations_backlog_does_not_hold_up_another_organisations_burst() {
    let db = test_db().await;
    let slow = Receiver::start(vec![], Reply::status(200).after(Duration::from_millis(2500))).await;
    let fast = Receiver::answering(200).await;
    let (slow_org, _) = create_org(&db.pool, Some(&slow.url)).await;
    let (fast_org, _) = create_org(&db.pool, Some(&fast.url)).await;
    let backlog = 400;
    create_events(&db.pool, slow_org, backlog).await;
    let worker = TestWorker::spawn(&db.url, |c| {
        c.concurrency = 16;
        c.org_inflight_cap = 4;
        c.delivery_timeout = Duration::from_secs(10);
    })
    .await;
    // Alone, the slow organisation gets every slot, far above its cap of 4.
    eventually(
        "the slow organisation uses all 16 slots",
        Duration::from_secs(30),
        || async { slow.inflight() == 16 },
    )
    .await;

    let burst_at = Instant::now();
    let burst = create_events(&db.pool, fast_org, 100).await;
    eventually(
        "the other organisation's burst of 100 is delivered",
        Duration::from_secs(30),
        || async { count_status(&db.pool, fast_org, "delivered").await == 100 },
    )
    .await;
    let took = burst_at.elapsed();
    // ...while the slow backlog is still queued (it sends about 16 every 2.5 s).
    let slow_pending = count_status(&db.pool, slow_org, "pending").await;
    assert!(
        slow_pending > 300,
        "only {slow_pending} slow events left: the burst waited for the backlog"
    );
    assert!(took < Duration::from_secs(10), "the burst took {took:?}");
    let seen: HashSet<String> = fast.requests().iter().map(|r| r.event_id()).collect();
    assert!(burst.iter().all(|id| seen.contains(&id.to_string())));
    assert!(
        slow.max_inflight() <= 16,
        "{} requests in flight to one organisation",
        slow.max_inflight()
    );
    // The slow backlog was put back about once per event, not re-inserted in a loop.
    let deferred = metric(worker.admin, "triggers_delivery_deferred_total").await;
    assert!(
        deferred <= 2.0 * backlog as f64,
        "{deferred} deferrals for a backlog of {backlog}"
    );
    worker.stop().await.expect("worker stops");
}
