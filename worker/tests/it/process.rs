//! The real `triggers-worker` binary: killed mid-delivery, its jobs are redelivered by another
//! worker; on SIGTERM it finishes what it has in flight before it exits.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use crate::common::*;

#[tokio::test]
async fn a_worker_killed_mid_delivery_has_its_jobs_redelivered_by_another() {
    let db = test_db().await;
    // Hang every request while the first worker lives.
    let receiver = Receiver::start(vec![], Reply::status(200).after(Duration::from_secs(120))).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 20).await;
    // Concurrency 5: five deliveries in flight, the rest of the fetched batch waiting in the
    // process's buffer. Both kinds must come back.
    let mut child = spawn_worker_process(
        &db.url,
        &[
            ("TRIGGERS_DELIVERY_TIMEOUT_SECS", "60"),
            ("TRIGGERS_WORKER_CONCURRENCY", "5"),
        ],
    );

    eventually(
        "the process has 5 deliveries in flight",
        Duration::from_secs(30),
        || async { receiver.inflight() == 5 },
    )
    .await;
    let claimed = queue::testing::count_claimed(&mut db.pool.acquire().await.expect("conn")).await;
    assert_eq!(claimed, 20, "the process should hold the whole batch");
    child.kill(); // SIGKILL
    let killed_at = Instant::now();
    receiver.set_default(Reply::status(200));

    // A survivor (heartbeat 1 s, so the dead worker's jobs are orphaned after ~3 s).
    let survivor = TestWorker::spawn(&db.url, |_| {}).await;
    eventually("every event is delivered", Duration::from_secs(60), || async {
        count_status(&db.pool, org, "delivered").await == 20
    })
    .await;
    let redelivered_after = killed_at.elapsed();
    let requests = receiver.requests();
    let sent = |id: &uuid::Uuid| requests.iter().filter(|r| r.event_id() == id.to_string()).count();
    let interrupted = ids.iter().filter(|id| sent(id) >= 2).count();
    assert_eq!(interrupted, 5, "the 5 interrupted deliveries are sent again");
    assert!(ids.iter().all(|id| sent(id) >= 1));
    assert!(
        redelivered_after < Duration::from_secs(30),
        "redelivery took {redelivered_after:?}"
    );
    survivor.stop().await.expect("survivor stops");
}

#[tokio::test]
async fn sigterm_drains_in_flight_deliveries_before_exit() {
    let db = test_db().await;
    let receiver = Receiver::start(vec![], Reply::status(200).after(Duration::from_secs(2))).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let ids = create_events(&db.pool, org, 3).await;
    let mut child = spawn_worker_process(&db.url, &[("TRIGGERS_DELIVERY_TIMEOUT_SECS", "10")]);

    eventually(
        "the process has 3 deliveries in flight",
        Duration::from_secs(30),
        || async { receiver.inflight() == 3 },
    )
    .await;
    child.sigterm();
    // A job enqueued after the signal must not be claimed by the stopping worker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = create_events(&db.pool, org, 1).await;

    let exit = child.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.success(), "the worker exited with {exit}");
    for id in &ids {
        let row = event(&db.pool, *id).await;
        assert_eq!(
            (row.status.as_str(), row.attempts),
            ("delivered", 1),
            "in-flight event {id} was not finished"
        );
    }
    assert_eq!(event(&db.pool, late[0]).await.status, "pending");
    let seen: HashSet<String> = receiver.requests().iter().map(|r| r.event_id()).collect();
    assert!(
        !seen.contains(&late[0].to_string()),
        "claimed a job after SIGTERM"
    );
    assert_eq!(receiver.count(), 3);
}
