//! A database outage does not end the worker: it reconnects and delivers once Postgres is back.

use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn the_worker_resumes_delivering_after_a_database_outage() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, Some(&receiver.url)).await;
    let before = create_events(&db.pool, org, 1).await;
    let worker = TestWorker::spawn(&db.url, |_| {}).await;
    eventually(
        "the first event is delivered",
        Duration::from_secs(20),
        || async { event(&db.pool, before[0]).await.status == "delivered" },
    )
    .await;

    db.cut_off().await.expect("cut off");
    // Long enough for heartbeats and fetches to fail (heartbeat 1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    db.restore().await.expect("restore");

    let after = create_events(&db.pool, org, 3).await;
    for id in &after {
        eventually(
            "an event enqueued after the outage is delivered",
            Duration::from_secs(30),
            || async { event(&db.pool, *id).await.status == "delivered" },
        )
        .await;
    }
    worker.stop().await.expect("clean stop");
}
