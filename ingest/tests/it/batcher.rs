//! The event writer on its own (no HTTP): what a waiter learns when its batch fails, and what a
//! failing event costs the others of its batch.

// The fixtures reach the harness through the crate root.
#[allow(unused_imports)]
use crate::common::TestApp;
use crate::common::fixtures::{
    event_statements, job_count, org_with_key, poison_events, set_webhook, writer_of,
};
use triggers_ingest::{
    batcher::{NewEvent, Outcome},
    error::ApiError,
    routing::{Fanout, RoutingCache},
};
use triggers_shared::{
    models::{DeliveryStatus, EventType, Payload},
    testing::TestDb,
};
use uuid::Uuid;

/// An event of `org` delivered to each of `endpoints` (the organisation's endpoints were never
/// changed: version 0).
fn event(org: Uuid, endpoints: &[Uuid]) -> NewEvent {
    event_with(org, endpoints, r#"{"n":1}"#)
}

fn event_with(org: Uuid, endpoints: &[Uuid], payload: &str) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        organization_id: org,
        event_type: EventType::parse("batch.test").expect("event type"),
        dedup_id: None,
        payload: Payload::try_from(payload.to_owned()).expect("JSON"),
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

#[tokio::test]
async fn events_the_database_refuses_are_split_out_in_log_n_statements_and_answered_422() {
    let test_db = TestDb::new().await.expect("db");
    let pool = &test_db.pool;
    let (_, org) = org_with_key(pool, "enterprise").await;
    set_webhook(pool, org).await;
    poison_events(pool).await;
    let writer = writer_of(pool);
    // Routed as ingest routes them, so no event needs a second statement for a stale fan-out.
    let routes = RoutingCache::new(pool.clone()).routes(org).await.expect("routes");
    let routed = |payload: &str| NewEvent {
        fanout: routes.fanout("batch.test"),
        ..event_with(org, &[], payload)
    };
    // A data exception (class 22) and a too-deep value (54001), anywhere in a batch of 64.
    let poison = [(9, "22003"), (40, "54001")];
    let events: Vec<NewEvent> = (0..64)
        .map(|i| match poison.iter().find(|(at, _)| *at == i) {
            Some((_, code)) => routed(&format!(r#"{{"poison":"{code}"}}"#)),
            None => routed(r#"{"n":1}"#),
        })
        .collect();
    let before = event_statements(pool).await;
    // On the test's single thread every submit is queued before the writer runs: one batch.
    let answers = futures::future::join_all(events.iter().cloned().map(|e| writer.submit(e))).await;
    let statements = event_statements(pool).await - before;

    for (i, (sent, answer)) in events.iter().zip(answers).enumerate() {
        if poison.iter().any(|(at, _)| *at == i) {
            assert!(
                matches!(answer, Err(ApiError::PayloadNotStorable)),
                "event {i}: {answer:?}"
            );
        } else {
            assert!(
                matches!(answer, Ok(Outcome::Accepted { id, .. }) if id == sent.id),
                "event {i}: {answer:?}"
            );
        }
    }
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("events");
    let mut expected: Vec<Uuid> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| !poison.iter().any(|(at, _)| at == i))
        .map(|(_, e)| e.id)
        .collect();
    expected.sort_unstable();
    assert_eq!(stored, expected);
    assert_eq!(job_count(pool).await, 62, "one delivery job per stored event");
    // The whole batch once, then at each of the log2(64) = 6 levels of halving at most two
    // parts hold a poisoned event and are written as two halves: at most 1 + 2·2·6 = 25
    // statements (here 23). Retrying every event alone, as before, took 1 + 64.
    assert!(
        (13..=25).contains(&statements),
        "{statements} statements for a batch of 64 with 2 poisoned events"
    );
    writer.shutdown().await;
}
