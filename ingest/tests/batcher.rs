//! The event writer on its own (no HTTP): what a waiter learns when its batch fails.

mod common;
#[path = "common/events_fixtures.rs"]
mod fixtures;

// The fixtures reach the harness through the crate root.
#[allow(unused_imports)]
use common::TestApp;
use fixtures::{org_with_key, writer_of};
use triggers_ingest::{
    batcher::{NewEvent, Outcome},
    error::ApiError,
    routing::Fanout,
};
use triggers_shared::{
    models::{DeliveryStatus, EventType, Payload},
    testing::TestDb,
};
use uuid::Uuid;

/// An event of `org` delivered to each of `endpoints` (the organisation's endpoints were never
/// changed: version 0).
fn event(org: Uuid, endpoints: &[Uuid]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        organization_id: org,
        event_type: EventType::parse("batch.test").expect("event type"),
        dedup_id: None,
        payload: Payload::try_from(r#"{"n":1}"#.to_owned()).expect("JSON"),
        fanout: Fanout {
            version: 0,
            deliveries: endpoints.iter().map(|&e| (e, DeliveryStatus::Pending)).collect(),
        },
    }
}

#[tokio::test]
async fn a_failed_event_reaches_its_waiter_with_the_database_error_and_spares_its_neighbours() {
    let test_db = TestDb::new().await.expect("db");
    let (_, org) = org_with_key(&test_db.pool, "pro").await;
    let writer = writer_of(&test_db.pool);
    // An event routed twice to one endpoint: the deliveries' primary key refuses its second row
    // (a data error, not an outage). Submitted together with good events, so they are likely to
    // share its batch.
    let endpoint = Uuid::now_v7();
    let twice = event(org, &[endpoint, endpoint]);
    let good: Vec<NewEvent> = (0..5).map(|_| event(org, &[endpoint])).collect();
    let (bad, goods) = tokio::join!(
        writer.submit(twice.clone()),
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
        chain.contains("deliveries_pkey"),
        "the database's own words reach the waiter's log line: {chain}"
    );
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(&test_db.pool)
        .await
        .expect("events");
    let mut expected: Vec<Uuid> = good.iter().map(|e| e.id).collect();
    expected.sort();
    assert_eq!(stored, expected, "nothing of the refused event is stored");
    let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&test_db.pool)
        .await
        .expect("deliveries");
    assert_eq!(delivered, 5, "one delivery per good event");
    writer.shutdown().await;
}
