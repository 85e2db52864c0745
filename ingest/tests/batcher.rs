//! The event writer on its own (no HTTP): what a waiter learns when its batch fails.

mod common;
#[path = "common/events_fixtures.rs"]
mod fixtures;

// The fixtures reach the harness through the crate root.
#[allow(unused_imports)]
use common::TestApp;
use fixtures::org_with_key;
use triggers_ingest::{
    batcher::{BatchWriter, NewEvent, Outcome},
    error::ApiError,
};
use triggers_shared::{
    models::{EventType, Payload},
    testing::TestDb,
};
use uuid::Uuid;

fn event(org: Uuid) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        organization_id: org,
        event_type: EventType::parse("batch.test").expect("event type"),
        dedup_id: None,
        payload: Payload::try_from(r#"{"n":1}"#.to_owned()).expect("JSON"),
    }
}

#[tokio::test]
async fn a_failed_event_reaches_its_waiter_with_the_database_error_and_spares_its_neighbours() {
    let test_db = TestDb::new().await.expect("db");
    let (_, org) = org_with_key(&test_db.pool, "pro").await;
    let writer = BatchWriter::start(test_db.pool.clone());
    // An organisation that does not exist: the foreign key refuses the row (a data error, not an
    // outage). Submitted together with good events, so they are likely to share its batch.
    let orphan = event(Uuid::now_v7());
    let good: Vec<NewEvent> = (0..5).map(|_| event(org)).collect();
    let (bad, goods) = tokio::join!(
        writer.submit(orphan.clone()),
        futures::future::join_all(good.iter().cloned().map(|e| writer.submit(e)))
    );
    for (sent, outcome) in good.iter().zip(goods) {
        assert!(
            matches!(outcome, Ok(Outcome::Accepted { id, .. }) if id == sent.id),
            "a good event is stored whatever its neighbour did"
        );
    }
    let Err(ApiError::Internal(cause)) = bad else {
        panic!("a data error is a 500 for its own request: {bad:?}");
    };
    let chain = format!("{cause:?}");
    assert!(chain.contains("event batch"), "{chain}");
    assert!(
        chain.contains("foreign key"),
        "the database's own words reach the waiter's log line: {chain}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&test_db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 5);
    writer.shutdown().await;
}
