//! End to end, with both real binaries as processes: an event POSTed to `triggers-ingest`
//! reaches a webhook through `triggers-worker`, and an event acknowledged with a 202 survives
//! every process being killed at once.

use std::time::Duration;

use crate::common::{
    Receiver, ServiceProcess, eventually, ingest_binary, spawn_worker_process, test_db, unfinished_jobs,
};
use serde_json::{Value, json};
use triggers_shared::signing;

/// `triggers-ingest` as a process, once ready.
async fn start_ingest(db_url: &str) -> ServiceProcess {
    ServiceProcess::ingest(ingest_binary(), db_url)
        .env("TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", "true")
        .env("TRIGGERS_DB_POOL_SIZE", "10")
        .start()
        .await
}

async fn post_json(client: &reqwest::Client, url: String, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = client.post(url).json(&body);
    if let Some(key) = key {
        req = req.header("X-API-Key", key);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `GET /api/events/{id}`'s body.
async fn get_event(client: &reqwest::Client, ingest: &ServiceProcess, key: &str, id: &str) -> Value {
    client
        .get(ingest.url(&format!("/api/events/{id}")))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("get event")
        .json::<Value>()
        .await
        .expect("json")
}

/// Create an organisation through the API and point its webhook at `url`: its key and signing
/// secret.
async fn org_with_webhook(
    client: &reqwest::Client,
    ingest: &ServiceProcess,
    name: &str,
    url: &str,
) -> (String, String) {
    let (status, org) = post_json(
        client,
        ingest.url("/api/keys/generate"),
        None,
        json!({"organization_name": name, "tier": "pro"}),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    let key = org["api_key"].as_str().expect("api_key").to_string();
    let (status, hook) = post_json(
        client,
        ingest.url("/api/webhook/config"),
        Some(&key),
        json!({"webhook_url": url}),
    )
    .await;
    assert_eq!(status, 200, "{hook}");
    let secret = hook["signing_secret"]
        .as_str()
        .expect("signing_secret")
        .to_string();
    (key, secret)
}

#[tokio::test]
async fn an_event_posted_to_ingest_is_delivered_signed_by_the_worker() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let ingest = start_ingest(&db.url).await;
    let _worker = spawn_worker_process(&db.url, &[]);
    let client = reqwest::Client::new();

    let (key, secret) = org_with_webhook(&client, &ingest, "E2E", &receiver.url).await;

    let payload = json!({"order": 42, "note": "café ☕", "nested": {"ok": true}});
    let (status, accepted) = post_json(
        &client,
        ingest.url("/api/events"),
        Some(&key),
        json!({"type": "order.created", "payload": payload, "dedup_id": "order-42"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_string();

    eventually(
        "the webhook receives the event",
        Duration::from_secs(30),
        || async { receiver.count() >= 1 },
    )
    .await;
    let got = &receiver.requests()[0];
    assert_eq!(got.event_id(), id);
    let ts: i64 = got.header("webhook-timestamp").parse().expect("timestamp");
    assert!(signing::verify(
        &secret,
        &id,
        ts,
        &got.body,
        got.header("webhook-signature")
    ));
    let body: Value = serde_json::from_slice(&got.body).expect("json body");
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["dedup_id"], "order-42");
    assert_eq!(body["data"], payload);
    assert_eq!(body["timestamp"], accepted["created_at"]);

    let get = || get_event(&client, &ingest, &key, &id);
    eventually(
        "the event is recorded as delivered",
        Duration::from_secs(10),
        || async { get().await["status"] == "delivered" },
    )
    .await;
    let event = get().await;
    assert_eq!(event["attempts"], 1);
    assert_eq!(event["attempts_log"][0]["response_status"], 200);
}

#[tokio::test]
async fn accepted_events_survive_killing_every_process_and_are_still_delivered() {
    let db = test_db().await;
    let receiver = Receiver::answering(200).await;
    let mut ingest = start_ingest(&db.url).await;
    let client = reqwest::Client::new();
    let (_, org) = post_json(
        &client,
        ingest.url("/api/keys/generate"),
        None,
        json!({"organization_name": "Durable", "tier": "business"}),
    )
    .await;
    let key = org["api_key"].as_str().expect("api_key").to_string();
    let (status, _) = post_json(
        &client,
        ingest.url("/api/webhook/config"),
        Some(&key),
        json!({"webhook_url": receiver.url}),
    )
    .await;
    assert_eq!(status, 200);

    // 100 concurrent events (they share batches), then SIGKILL ingest the moment the last 202 lands.
    let posts = (0..100).map(|i| {
        let client = client.clone();
        let url = ingest.url("/api/events");
        let key = key.clone();
        tokio::spawn(async move {
            post_json(
                &client,
                url,
                Some(&key),
                json!({"type": "durable.test", "payload": {"i": i}}),
            )
            .await
        })
    });
    let mut accepted = Vec::new();
    for post in posts {
        let (status, body) = post.await.expect("join");
        assert_eq!(status, 202, "{body}");
        accepted.push(body["id"].as_str().expect("id").to_string());
    }
    ingest.kill();

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id::text = ANY($1)")
        .bind(&accepted)
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 100, "every 202 was committed before it was sent");

    // A worker started only now delivers every one of them.
    let _worker = spawn_worker_process(&db.url, &[]);
    eventually(
        "all 100 events are delivered",
        Duration::from_secs(60),
        || async {
            let seen: std::collections::HashSet<String> =
                receiver.requests().iter().map(|r| r.event_id()).collect();
            accepted.iter().all(|id| seen.contains(id))
        },
    )
    .await;
}

#[tokio::test]
async fn thirty_redeliveries_of_a_dead_lettered_event_start_one_delivery_chain_not_thirty() {
    let db = test_db().await;
    let receiver = Receiver::answering(500).await;
    let ingest = start_ingest(&db.url).await;
    // Two attempts in all, one second apart.
    let _worker = spawn_worker_process(&db.url, &[]);
    let client = reqwest::Client::new();
    let (key, _) = org_with_webhook(&client, &ingest, "Redeliver", &receiver.url).await;
    let (status, accepted) = post_json(
        &client,
        ingest.url("/api/events"),
        Some(&key),
        json!({"type": "order.created", "payload": {}}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_string();
    let get = || get_event(&client, &ingest, &key, &id);
    eventually("the event is dead-lettered", Duration::from_secs(30), || async {
        get().await["status"] == "failed"
    })
    .await;
    assert_eq!(receiver.count(), 2);

    let mut messages = Vec::new();
    for _ in 0..30 {
        let (status, body) = post_json(
            &client,
            ingest.url(&format!("/api/events/{id}/redeliver")),
            Some(&key),
            json!({}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "pending");
        messages.push(body["message"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(messages[0], "redelivery enqueued");
    assert!(
        messages[1..].iter().all(|m| m == "delivery already pending"),
        "{messages:?}"
    );
    eventually(
        "the event is dead-lettered again",
        Duration::from_secs(30),
        || async {
            let e = get().await;
            e["status"] == "failed" && e["attempts"] == 4
        },
    )
    .await;
    // A second chain would have a job left to run: once none is left, nothing more is sent.
    eventually("no job is left", Duration::from_secs(30), || async {
        unfinished_jobs(&db.pool).await == 0
    })
    .await;
    assert_eq!(receiver.count(), 4, "one chain of two attempts, not thirty");
    assert_eq!(get().await["attempts"], 4);
}
