//! `POST /api/events/batch`: each event judged alone with one result per event in order, only
//! the `202` ones stored (with their deliveries), a `dedup_id` stored once whether repeated in
//! the batch or raced by single posts, the count and body limits, and one rate-limit decision
//! for the whole batch.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::fixtures::*;
use crate::common::{TestApp, field_names};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

async fn post_batch(app: &TestApp, key: &str, events: Vec<Value>) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url("/api/events/batch"))
        .header("X-API-Key", key)
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("post batch");
    let status = res.status();
    (status, res.json().await.expect("a JSON answer"))
}

/// The ids of the organisation's stored events.
async fn stored(app: &TestApp, org: Uuid) -> BTreeSet<Uuid> {
    sqlx::query_scalar("SELECT id FROM events WHERE organization_id = $1")
        .bind(org)
        .fetch_all(&app.db)
        .await
        .expect("stored events")
        .into_iter()
        .collect()
}

fn statuses(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect()
}

fn id_of(result: &Value, member: &str) -> Uuid {
    Uuid::parse_str(result[member].as_str().expect("an id")).expect("a UUID")
}

#[tokio::test]
async fn a_mixed_batch_answers_each_event_in_order_and_stores_only_the_valid_ones() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "enterprise").await;
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let deep: Value = serde_json::from_str(&deep).expect("deep JSON");
    let (status, body) = post_batch(
        &app,
        &key,
        vec![
            json!({"type": "order.created", "payload": {"n": 0}}),
            json!({"type": "", "payload": {"n": 1}}),
            json!({"type": "order.created", "payload": [1]}),
            json!({"type": "order.paid", "payload": {"n": 3}, "dedup_id": "pay-3"}),
            json!({"type": "big", "payload": {"s": "x".repeat(300_000)}}),
            json!({"type": "deep", "payload": {"d": deep}}),
            json!("not an object"),
            json!({"type": "last", "payload": {}}),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(statuses(&body), [202, 422, 422, 202, 413, 422, 422, 202]);
    assert_eq!(
        (
            body["accepted"].as_u64(),
            body["duplicates"].as_u64(),
            body["rejected"].as_u64()
        ),
        (Some(3), Some(0), Some(5))
    );
    let results = body["results"].as_array().expect("results");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], json!(i), "{r}");
    }
    assert_eq!(
        field_names(&results[0]),
        ["created_at", "dedup_id", "id", "index", "status", "type"]
    );
    assert_eq!(results[3]["dedup_id"], "pay-3");
    assert_eq!(results[3]["type"], "order.paid");
    assert_eq!(results[1]["code"], "validation_failed");
    assert_eq!(results[1]["details"][0]["field"], "type");
    assert_eq!(results[2]["details"][0]["field"], "payload");
    assert_eq!(results[4]["code"], "payload_too_large");
    assert_eq!(results[4]["limit_bytes"], 262_144);
    assert!(results[4]["details"].is_array(), "{}", results[4]);
    assert!(
        results[5]["details"][0]["message"]
            .as_str()
            .expect("message")
            .contains("64")
    );
    assert_eq!(results[6]["details"][0]["field"], "body");
    let accepted: BTreeSet<Uuid> = [0, 3, 7].iter().map(|&i| id_of(&results[i], "id")).collect();
    assert_eq!(stored(&app, org).await, accepted);
    // Each accepted event is there to fetch, with the payload sent.
    let res = app
        .client
        .get(app.url(&format!("/api/events/{}", id_of(&results[3], "id"))))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("get event");
    let event: Value = res.json().await.expect("event");
    assert_eq!(event["payload"], json!({"n": 3}));
}

#[tokio::test]
async fn a_dedup_id_repeated_inside_a_batch_is_stored_once_and_the_later_events_name_the_first() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "enterprise").await;
    let (status, body) = post_batch(
        &app,
        &key,
        vec![
            json!({"type": "bad", "payload": 1, "dedup_id": "k"}),
            json!({"type": "a", "payload": {"n": 1}, "dedup_id": "k"}),
            json!({"type": "b", "payload": {"n": 2}}),
            json!({"type": "c", "payload": {"n": 3}, "dedup_id": "k"}),
            json!({"type": "d", "payload": {"n": 4}, "dedup_id": "other"}),
            json!({"type": "e", "payload": {"n": 5}, "dedup_id": "k"}),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An invalid event claims nothing: the first valid one wins.
    assert_eq!(statuses(&body), [422, 202, 202, 409, 202, 409]);
    assert_eq!(body["duplicates"], 2);
    let results = body["results"].as_array().expect("results");
    let first = id_of(&results[1], "id");
    for later in [&results[3], &results[5]] {
        assert_eq!(later["code"], "duplicate_event");
        assert_eq!(later["dedup_id"], "k");
        assert_eq!(id_of(later, "event_id"), first);
    }
    let keyed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE organization_id = $1 AND dedup_id = 'k'")
            .bind(org)
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(keyed, 1);
    assert_eq!(stored(&app, org).await.len(), 3);

    // A later batch and a later single post meet the stored one.
    let (_, again) = post_batch(
        &app,
        &key,
        vec![json!({"type": "a", "payload": {}, "dedup_id": "k"})],
    )
    .await;
    assert_eq!(statuses(&again), [409]);
    assert_eq!(id_of(&again["results"][0], "event_id"), first);
    let res = post_event(
        &app,
        &key,
        &json!({"type": "a", "payload": {}, "dedup_id": "other"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_batch_racing_single_posts_of_the_same_dedup_ids_stores_each_exactly_once() {
    let test_db = triggers_shared::testing::TestDb::new().await.expect("db");
    let one = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let two = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let (key, org) = org_with_key(&one.db, "enterprise").await;
    let keys: Vec<String> = (0..40).map(|i| format!("race-{i}")).collect();
    let batch: Vec<Value> = keys
        .iter()
        .flat_map(|k| {
            [
                json!({"type": "batch", "payload": {"k": k}, "dedup_id": k}),
                json!({"type": "batch", "payload": {}}),
            ]
        })
        .collect();
    let singles = keys.iter().enumerate().map(|(i, k)| {
        let app = if i % 2 == 0 { &one } else { &two };
        let key = key.clone();
        let k = k.clone();
        async move {
            let res = post_event(
                app,
                &key,
                &json!({"type": "single", "payload": {}, "dedup_id": k}),
            )
            .await;
            let status = res.status();
            let body: Value = res.json().await.expect("answer");
            (k, status, body)
        }
    });
    let (batch_answer, single_answers) =
        tokio::join!(post_batch(&two, &key, batch), futures::future::join_all(singles));
    let (status, body) = batch_answer;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The winner of each key, as the answers tell it: exactly one 202, every 409 naming it.
    let mut winners: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    let mut named: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for (k, status, answer) in &single_answers {
        match *status {
            StatusCode::ACCEPTED => winners.entry(k.clone()).or_default().push(id_of(answer, "id")),
            StatusCode::CONFLICT => named
                .entry(k.clone())
                .or_default()
                .push(id_of(answer, "event_id")),
            other => panic!("single post answered {other}: {answer}"),
        }
    }
    let results = body["results"].as_array().expect("results");
    for (i, k) in keys.iter().enumerate() {
        let r = &results[2 * i];
        match r["status"].as_u64() {
            Some(202) => winners.entry(k.clone()).or_default().push(id_of(r, "id")),
            Some(409) => named.entry(k.clone()).or_default().push(id_of(r, "event_id")),
            _ => panic!("batch event answered {r}"),
        }
        assert_eq!(results[2 * i + 1]["status"], 202, "{}", results[2 * i + 1]);
    }
    for k in &keys {
        let rows: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM events WHERE organization_id = $1 AND dedup_id = $2")
                .bind(org)
                .bind(k)
                .fetch_all(&one.db)
                .await
                .expect("rows");
        assert_eq!(rows.len(), 1, "{k}: {rows:?}");
        assert_eq!(winners.get(k), Some(&rows), "{k}");
        assert_eq!(named.get(k).map(Vec::len), Some(1), "{k}");
        assert!(named[k].iter().all(|id| *id == rows[0]), "{k}");
    }
}

#[tokio::test]
async fn a_batch_holds_1_to_1000_events_in_at_most_5_mib() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "enterprise").await;
    let event = json!({"type": "t", "payload": {"n": 1}});

    let (status, body) = post_batch(&app, &key, vec![event.clone(); 1001]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["details"][0]["field"], "events");
    let (status, body) = post_batch(&app, &key, vec![]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(stored(&app, org).await.is_empty());

    // 1,000 is allowed, and so is a body well over the single route's 1 MiB.
    let (status, body) = post_batch(&app, &key, vec![event; 1000]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1000);
    let big = json!({"type": "t", "payload": {"s": "x".repeat(250_000)}});
    let (status, body) = post_batch(&app, &key, vec![big.clone(); 20]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 20);
    assert_eq!(stored(&app, org).await.len(), 1020);

    // Over 5 MiB: 413 as a whole, nothing stored.
    let (status, body) = post_batch(&app, &key, vec![big; 22]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["limit_bytes"], 5 * 1024 * 1024);
    assert_eq!(stored(&app, org).await.len(), 1020);

    let res = app
        .client
        .post(app.url("/api/events/batch"))
        .header("X-API-Key", &key)
        .json(&json!({"events": "many"}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_rate_limit_takes_one_token_per_event_and_refuses_a_batch_that_does_not_fit_whole() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "free").await;
    let events = |n: usize| {
        (0..n)
            .map(|i| json!({"type": "rl", "payload": {"i": i}}))
            .collect::<Vec<_>>()
    };

    let (status, body) = post_batch(&app, &key, events(60)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 60);

    // 40 of the free tier's 100 are left: 60 more do not fit, so none is stored.
    let res = app
        .client
        .post(app.url("/api/events/batch"))
        .header("X-API-Key", &key)
        .json(&json!({ "events": events(60) }))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    for header in [
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(res.headers().contains_key(header), "{header}");
    }
    let body: Value = res.json().await.expect("body");
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["limit"], 100);
    assert_eq!(stored(&app, org).await.len(), 60);

    // The 40 left still fit, whole.
    let (status, body) = post_batch(&app, &key, events(40)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 40);
    assert_eq!(stored(&app, org).await.len(), 100);
    let (status, _) = post_batch(&app, &key, events(1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn each_accepted_event_of_a_batch_gets_a_delivery_per_matching_endpoint() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "enterprise").await;
    let mut endpoints = Vec::new();
    for (patterns, enabled) in [
        (json!(["order.*"]), true),
        (json!(["*"]), true),
        (json!(["order.*"]), false),
    ] {
        let res = app
            .client
            .post(app.url("/api/endpoints"))
            .header("X-API-Key", &key)
            .json(&json!({"url": "http://127.0.0.1:9/hook", "event_types": patterns, "enabled": enabled}))
            .send()
            .await
            .expect("create endpoint");
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.expect("endpoint");
        endpoints.push(id_of(&body, "id"));
    }
    let (status, body) = post_batch(
        &app,
        &key,
        vec![
            json!({"type": "order.created", "payload": {}}),
            json!({"type": "user.signed_up", "payload": {}}),
            json!({"type": "order.created", "payload": 5}),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(statuses(&body), [202, 202, 422]);
    let deliveries = |event: Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_as::<_, (Uuid, String, bool)>(
                "SELECT endpoint_id, status, job_id IS NOT NULL FROM deliveries
                 WHERE organization_id = $1 AND event_id = $2 ORDER BY endpoint_id",
            )
            .bind(org)
            .bind(event)
            .fetch_all(&db)
            .await
            .expect("deliveries")
            .into_iter()
            .map(|(e, s, job)| (e, (s, job)))
            .collect::<BTreeMap<_, _>>()
        }
    };
    let order = deliveries(id_of(&body["results"][0], "id")).await;
    let expected: BTreeMap<Uuid, (String, bool)> = [
        (endpoints[0], ("pending".to_owned(), true)),
        (endpoints[1], ("pending".to_owned(), true)),
        (endpoints[2], ("skipped".to_owned(), false)),
    ]
    .into_iter()
    .collect();
    assert_eq!(order, expected);
    let user = deliveries(id_of(&body["results"][1], "id")).await;
    assert_eq!(
        user,
        [(endpoints[1], ("pending".to_owned(), true))]
            .into_iter()
            .collect()
    );
}
