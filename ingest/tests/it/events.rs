//! `POST /api/events`, `GET /api/events/{id}` and redelivery, against the real database.

use std::time::{Duration, Instant};

use crate::common::fixtures::*;
use crate::common::{TestApp, detail_fields, field_names};
use serde_json::{Value, json};
use triggers_ingest::{
    batcher::{NewEvent, Outcome},
    routing::Fanout,
};
use triggers_shared::{
    db::queue,
    models::{DedupId, EventType, Payload},
    testing::TestDb,
};
use uuid::Uuid;

#[tokio::test]
async fn accepted_event_is_committed_with_its_dedup_key_and_job_when_a_webhook_is_configured() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    let endpoint = set_webhook(&app.db, org).await;

    let res = post_event(
        &app,
        &key,
        &json!({"type": "order.created", "payload": {"n": 1}, "dedup_id": "d-1"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body: Value = res.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    let uuid = Uuid::parse_str(&id).expect("uuid");
    assert_eq!(uuid.get_version_num(), 7, "ids are time-ordered v7");
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["dedup_id"], "d-1");
    assert_eq!(body["status"], "accepted");
    assert!(
        body["created_at"].as_str().expect("created_at").ends_with('Z'),
        "{body}"
    );
    assert_eq!(location.as_deref(), Some(format!("/api/events/{id}").as_str()));

    // Right after the 202, without waiting: event, dedup key, delivery and job are there.
    let (org_of, status, payload): (Uuid, String, Value) =
        sqlx::query_as("SELECT organization_id, status, payload FROM events WHERE id = $1")
            .bind(uuid)
            .fetch_one(&app.db)
            .await
            .expect("event row");
    assert_eq!(
        (org_of, status.as_str(), payload),
        (org, "pending", json!({"n": 1}))
    );
    let holder: Uuid = sqlx::query_scalar(
        "SELECT event_id FROM dedup_keys WHERE organization_id = $1 AND dedup_id = 'd-1' AND expires_at > now() + interval '23 hours'",
    )
    .bind(org)
    .fetch_one(&app.db)
    .await
    .expect("dedup key");
    assert_eq!(holder, uuid);
    assert_eq!(job_count(&app.db).await, 1);
    let mut conn = app.db.acquire().await.expect("connection");
    let jobs = queue::testing::jobs_of_event(&mut conn, uuid).await;
    let delivery: (Uuid, String, Option<String>) =
        sqlx::query_as("SELECT endpoint_id, status, job_id FROM deliveries WHERE event_id = $1")
            .bind(uuid)
            .fetch_one(&mut *conn)
            .await
            .expect("one delivery");
    assert_eq!(
        delivery,
        (endpoint, "pending".to_owned(), jobs.first().cloned()),
        "one pending delivery to the webhook, named by its job ({jobs:?})"
    );
}

#[tokio::test]
async fn accepted_event_without_a_webhook_gets_no_job_and_waits_in_the_inbox() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let body = accept(&app, &key, &json!({"type": "a", "payload": {}})).await;
    assert_eq!(body["dedup_id"], Value::Null);
    assert_eq!(job_count(&app.db).await, 0);
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(deliveries, 0);
    let (status, inbox) = get_json(&app, &key, "/api/inbox").await;
    assert_eq!(status, 200);
    assert_eq!(inbox["events"][0]["id"], body["id"]);
}

#[tokio::test]
async fn duplicate_dedup_id_within_24h_is_rejected_with_409_naming_the_original() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    set_webhook(&app.db, org).await;
    let first = accept(
        &app,
        &key,
        &json!({"type": "a", "payload": {"v": 1}, "dedup_id": "same"}),
    )
    .await;

    let res = post_event(
        &app,
        &key,
        &json!({"type": "a", "payload": {"v": 2}, "dedup_id": "same"}),
    )
    .await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "duplicate_event");
    assert_eq!(body["dedup_id"], "same");
    assert_eq!(body["event_id"], first["id"]);
    assert!(body["error"].is_string());

    let events = count_events(&app.db).await;
    assert_eq!(events, 1, "the duplicate is not stored");
    assert_eq!(job_count(&app.db).await, 1, "and gets no job");
}

#[tokio::test]
async fn the_same_dedup_id_in_two_organisations_does_not_collide() {
    let app = TestApp::spawn().await;
    let (key_a, _) = org_with_key(&app.db, "pro").await;
    let (key_b, _) = org_with_key(&app.db, "pro").await;
    let a = accept(
        &app,
        &key_a,
        &json!({"type": "a", "payload": {}, "dedup_id": "shared"}),
    )
    .await;
    let b = accept(
        &app,
        &key_b,
        &json!({"type": "a", "payload": {}, "dedup_id": "shared"}),
    )
    .await;
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn a_concurrent_burst_with_one_dedup_id_accepts_exactly_one() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    set_webhook(&app.db, org).await;
    let body = json!({"type": "burst", "payload": {"x": 1}, "dedup_id": "burst-1"});
    let results = futures::future::join_all((0..20).map(|_| async {
        let res = post_event(&app, &key, &body).await;
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.expect("json"))
    }))
    .await;
    let accepted: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    let duplicates: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted.len(), 1, "{results:?}");
    assert_eq!(duplicates.len(), 19, "{results:?}");
    for d in duplicates {
        assert_eq!(d["event_id"], accepted[0]["id"]);
    }
    assert_eq!(job_count(&app.db).await, 1);
}

#[tokio::test]
async fn dedup_holds_across_two_instances_on_one_database() {
    let test_db = TestDb::new().await.expect("db");
    let one = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let two = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let (key, _) = org_with_key(&one.db, "pro").await;
    let body = json!({"type": "x", "payload": {}, "dedup_id": "across"});
    let results = futures::future::join_all((0..10).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        let (key, body) = (key.clone(), body.clone());
        async move { post_event(app, &key, &body).await.status().as_u16() }
    }))
    .await;
    assert_eq!(results.iter().filter(|s| **s == 202).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|s| **s == 409).count(), 9, "{results:?}");
    let res = post_event(&two, &key, &body).await;
    assert_eq!(res.status(), 409);
}

#[tokio::test]
async fn a_dedup_id_can_be_reused_after_it_expires() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    let first = accept(
        &app,
        &key,
        &json!({"type": "a", "payload": {}, "dedup_id": "old"}),
    )
    .await;
    sqlx::query("UPDATE dedup_keys SET expires_at = now() - interval '1 second' WHERE organization_id = $1")
        .bind(org)
        .execute(&app.db)
        .await
        .expect("expire");
    let second = accept(
        &app,
        &key,
        &json!({"type": "a", "payload": {}, "dedup_id": "old"}),
    )
    .await;
    assert_ne!(first["id"], second["id"]);
    let holder: String =
        sqlx::query_scalar("SELECT event_id::text FROM dedup_keys WHERE organization_id = $1")
            .bind(org)
            .fetch_one(&app.db)
            .await
            .expect("key");
    assert_eq!(
        Value::String(holder),
        second["id"],
        "the key now names the new event"
    );
    let res = post_event(
        &app,
        &key,
        &json!({"type": "a", "payload": {}, "dedup_id": "old"}),
    )
    .await;
    assert_eq!(res.status(), 409, "and is fresh for another 24 hours");
}

#[tokio::test]
async fn the_configured_dedup_window_decides_when_an_id_may_be_reused() {
    let test_db = TestDb::new().await.expect("db");
    let app = TestApp::spawn_on(&test_db.url, |c| c.dedup_window = Duration::from_secs(1)).await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    accept(
        &app,
        &key,
        &json!({"type": "a", "payload": {}, "dedup_id": "short"}),
    )
    .await;
    let lifetime: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - now())::float8 FROM dedup_keys WHERE organization_id = $1",
    )
    .bind(org)
    .fetch_one(&app.db)
    .await
    .expect("key");
    assert!(
        lifetime <= 1.0,
        "the key lives for the configured window: {lifetime}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = post_event(
            &app,
            &key,
            &json!({"type": "a", "payload": {}, "dedup_id": "short"}),
        )
        .await;
        if res.status() == 202 {
            break;
        }
        assert_eq!(res.status(), 409);
        assert!(Instant::now() < deadline, "the id never became reusable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn invalid_fields_are_422_with_every_bad_field_listed() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let res = post_event(
        &app,
        &key,
        &json!({"type": "-bad type", "payload": [1], "dedup_id": ""}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "validation_failed");
    let fields = detail_fields(&body);
    assert_eq!(fields, ["type", "dedup_id", "payload"], "{body}");

    for (bad, field) in [
        (json!({"payload": {}}), "type"),
        (json!({"type": "a"}), "payload"),
        (json!({"type": 5, "payload": {}}), "type"),
        (json!({"type": "a".repeat(256), "payload": {}}), "type"),
        (json!({"type": "a", "payload": "text"}), "payload"),
        (
            json!({"type": "a", "payload": {}, "dedup_id": "d".repeat(256)}),
            "dedup_id",
        ),
        (json!({"type": "a", "payload": {"k": "nul\u{0}here"}}), "payload"),
        (json!({"type": "a", "payload": {}, "dedup_id": 7}), "dedup_id"),
    ] {
        let res = post_event(&app, &key, &bad).await;
        assert_eq!(res.status(), 422, "{bad}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["details"][0]["field"], field, "{bad} -> {body}");
    }
    let res = post_event(&app, &key, &json!(["not", "an", "object"])).await;
    assert_eq!(res.status(), 422);
    let ok = accept(
        &app,
        &key,
        &json!({"type": "a".repeat(255), "payload": {}, "dedup_id": "d".repeat(255)}),
    )
    .await;
    assert_eq!(ok["type"].as_str().map(str::len), Some(255));
}

#[tokio::test]
async fn a_payload_exactly_at_the_limit_is_accepted_and_one_byte_more_is_413() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    // {"s":"<fill>"} is 8 bytes of structure plus the fill.
    let at_limit = json!({"s": "x".repeat(262_144 - 8)});
    assert_eq!(serde_json::to_string(&at_limit).expect("ser").len(), 262_144);
    accept(&app, &key, &json!({"type": "big", "payload": at_limit})).await;

    let over = json!({"s": "x".repeat(262_144 - 7)});
    let res = post_event(&app, &key, &json!({"type": "big", "payload": over})).await;
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(body["limit_bytes"], 262_144);
}

#[tokio::test]
async fn malformed_bodies_get_the_documented_json_errors() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (
            Some("application/json"),
            b"{\"type\": \"a\", ".to_vec(),
            400,
            "invalid_json",
        ),
        (
            Some("application/json"),
            b"{\"type\": \"a\", \"payload\": {\"s\": \"\xff\xfe\"}}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            Some("text/plain"),
            b"{\"type\": \"a\", \"payload\": {}}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            None,
            b"{\"type\": \"a\", \"payload\": {}}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (Some("application/json"), vec![b'['; 100_000], 400, "invalid_json"),
        (
            Some("application/json"),
            vec![b' '; 1024 * 1024 + 10],
            413,
            "payload_too_large",
        ),
    ];
    for (ct, body, status, code) in cases {
        let res = post_raw(&app, &key, ct, body).await;
        assert_eq!(res.status().as_u16(), status, "{ct:?} {code}");
        assert!(
            res.headers().contains_key("x-ratelimit-limit"),
            "rate-limit headers on errors"
        );
        let json: Value = res.json().await.expect("json body");
        assert_eq!(json["code"], code);
        assert!(json["error"].is_string());
    }
    // Still healthy after the nesting bomb.
    let res = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(res.status(), 200);
    accept(&app, &key, &json!({"type": "after", "payload": {}})).await;
}

#[tokio::test]
async fn missing_or_invalid_keys_are_401() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/api/events"))
        .json(&json!({"type": "a", "payload": {}}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "missing_api_key");
    let res = post_event(
        &app,
        "trg_live_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &json!({}),
    )
    .await;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "invalid_api_key");
}

#[tokio::test]
async fn sql_metacharacters_are_stored_verbatim() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let dedup = "'; DROP TABLE events; -- \" \\ %_ $1";
    let payload = json!({"q": "' OR 1=1 --", "k'\"": ["%", "_", "\\", "$$"], "n": null});
    let body = accept(
        &app,
        &key,
        &json!({"type": "a:b.c-d_e", "payload": payload, "dedup_id": dedup}),
    )
    .await;
    assert_eq!(body["dedup_id"], dedup);
    let path = format!("/api/events/{}", body["id"].as_str().expect("id"));
    let (status, event) = get_json(&app, &key, &path).await;
    assert_eq!(status, 200);
    assert_eq!(event["payload"], payload);
    assert_eq!(event["dedup_id"], dedup);
    assert_eq!(event["type"], "a:b.c-d_e");
    let res = post_event(
        &app,
        &key,
        &json!({"type": "a", "payload": {}, "dedup_id": dedup}),
    )
    .await;
    assert_eq!(res.status(), 409, "the tricky dedup id deduplicates exactly");
}

#[tokio::test]
async fn get_event_shows_the_inbox_shape_its_deliveries_and_the_attempts_log() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    let endpoint = set_webhook(&app.db, org).await;
    let created = accept(
        &app,
        &key,
        &json!({"type": "t", "payload": {"a": [1, 2]}, "dedup_id": "g"}),
    )
    .await;
    let id = created["id"].as_str().expect("id");
    let uuid = Uuid::parse_str(id).expect("uuid");
    // The webhook answers the first attempt 500, the retry 200.
    assert_eq!(attempt(&app.db, &[uuid], 500, false).await, 1);
    assert_eq!(attempt(&app.db, &[uuid], 200, false).await, 1);

    let (status, body) = get_json(&app, &key, &format!("/api/events/{id}")).await;
    assert_eq!(status, 200);
    let mut fields: Vec<&str> = INBOX_ITEM_FIELDS
        .into_iter()
        .chain(["attempts_log", "deliveries"])
        .collect();
    fields.sort_unstable();
    assert_eq!(field_names(&body), fields);
    assert_eq!(body["id"], created["id"]);
    assert_eq!(body["created_at"], created["created_at"]);
    assert_eq!(body["status"], "delivered");
    assert_eq!(body["attempts"], 2);
    assert_eq!(body["response_status"], 200);
    assert_eq!(body["last_error"], Value::Null);
    assert_eq!(body["payload"], json!({"a": [1, 2]}));
    let deliveries = body["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{body}");
    let delivery = &deliveries[0];
    assert_eq!(
        field_names(delivery),
        [
            "attempts",
            "delivered_at",
            "endpoint_id",
            "last_error",
            "next_attempt_at",
            "response_status",
            "status"
        ]
    );
    assert_eq!(delivery["endpoint_id"], endpoint.to_string());
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["response_status"], 200);
    assert_eq!(delivery["last_error"], Value::Null);
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert!(
        delivery["delivered_at"]
            .as_str()
            .expect("delivered_at")
            .ends_with('Z')
    );
    let log = body["attempts_log"].as_array().expect("log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["endpoint_id"], endpoint.to_string());
    assert_eq!(log[0]["duration_ms"], 120);
    assert_eq!(log[0]["response_status"], 500);
    assert_eq!(log[0]["error"], "HTTP 500");
    assert_eq!(log[1]["attempt"], 2);
    assert_eq!(log[1]["endpoint_id"], endpoint.to_string());
    assert_eq!(log[1]["response_status"], 200);
    assert_eq!(log[1]["error"], Value::Null);
    assert!(log[0]["started_at"].as_str().expect("started_at").ends_with('Z'));
}

#[tokio::test]
async fn unknown_malformed_and_foreign_event_ids_are_the_same_404() {
    let app = TestApp::spawn().await;
    let (key_a, _) = org_with_key(&app.db, "pro").await;
    let (key_b, _) = org_with_key(&app.db, "pro").await;
    let theirs = accept(&app, &key_b, &json!({"type": "secret", "payload": {"p": 1}})).await;
    let foreign = theirs["id"].as_str().expect("id").to_owned();
    let mut bodies = Vec::new();
    for id in [
        foreign.as_str(),
        &Uuid::now_v7().to_string(),
        "not-a-uuid",
        "'%20OR%201=1",
        "%FF%FE",
    ] {
        for (method, path) in [
            ("GET", format!("/api/events/{id}")),
            ("POST", format!("/api/events/{id}/redeliver")),
            ("POST", format!("/api/ack/{id}")),
        ] {
            let req = if method == "GET" {
                app.client.get(app.url(&path))
            } else {
                app.client.post(app.url(&path))
            };
            let res = req.header("X-API-Key", &key_a).send().await.expect("request");
            assert_eq!(res.status(), 404, "{method} {path}");
            bodies.push(res.json::<Value>().await.expect("json"));
        }
    }
    for b in &bodies {
        assert_eq!(b, &json!({"error": "event not found", "code": "event_not_found"}));
    }
    let (status, _) = get_json(&app, &key_b, &format!("/api/events/{foreign}")).await;
    assert_eq!(status, 200, "the owner still sees it");
}

#[tokio::test]
async fn redeliver_resets_the_event_to_pending_and_enqueues_a_job() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    let inbox_only = accept(&app, &key, &json!({"type": "t", "payload": {}})).await;
    let inbox_only = inbox_only["id"].as_str().expect("id");

    // Without a webhook there is nowhere to deliver to.
    let path = format!("/api/events/{inbox_only}/redeliver");
    let (status, body) = post_json(&app, &key, &path, None).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "webhook_not_configured");
    assert_eq!(job_count(&app.db).await, 0);
    // An event's deliveries are fixed when it is accepted: one accepted before the webhook
    // existed still has none.
    set_webhook(&app.db, org).await;
    let (status, body) = post_json(&app, &key, &path, None).await;
    assert_eq!((status, &body["code"]), (409, &json!("webhook_not_configured")));
    assert_eq!(job_count(&app.db).await, 0);

    // An event delivered to the webhook, dead-lettered, then acknowledged.
    let created = accept(&app, &key, &json!({"type": "t", "payload": {}})).await;
    let id = created["id"].as_str().expect("id");
    assert_eq!(dead_letter(&app.db, &[id.parse().expect("uuid")]).await, 1);
    let (status, _) = post_json(&app, &key, &format!("/api/ack/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, body) = post_json(&app, &key, &format!("/api/events/{id}/redeliver"), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], created["id"]);
    assert_eq!(body["status"], "pending");
    let (st, acked): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT status, acknowledged_at FROM events WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .expect("row");
    assert_eq!(st, "pending");
    assert_eq!(acked, None);
    assert_eq!(jobs_for_event(&app.db, id).await, 1);
}

#[tokio::test]
async fn bulk_redeliver_replays_every_failed_event_and_counts_them() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    let (other_key, other_org) = org_with_key(&app.db, "pro").await;
    set_webhook(&app.db, org).await;
    set_webhook(&app.db, other_org).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = accept(&app, &key, &json!({"type": "t", "payload": {"i": i}})).await;
        ids.push(e["id"].as_str().expect("id").to_owned());
    }
    let theirs = accept(&app, &other_key, &json!({"type": "t", "payload": {}})).await;
    let failing: Vec<Uuid> = ids[..3]
        .iter()
        .map(String::as_str)
        .chain([theirs["id"].as_str().expect("id")])
        .map(|id| id.parse().expect("uuid"))
        .collect();
    assert_eq!(dead_letter(&app.db, &failing).await, 4);
    let jobs_before = job_count(&app.db).await;

    let (status, body) = post_json(
        &app,
        &key,
        "/api/events/redeliver",
        Some(&json!({"status": "failed"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"count": 3}));
    assert_eq!(job_count(&app.db).await, jobs_before + 3);
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE status = 'failed'")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(failed, 1, "the other organisation's failed event is untouched");

    let (status, body) = post_json(
        &app,
        &key,
        "/api/events/redeliver",
        Some(&json!({"status": "dead_letter"})),
    )
    .await;
    assert_eq!((status, body), (202, json!({"count": 0})));
    for bad in [json!({"status": "pending"}), json!({"status": 1}), json!({})] {
        let (status, body) = post_json(&app, &key, "/api/events/redeliver", Some(&bad)).await;
        assert_eq!(status, 422, "{bad}");
        assert_eq!(body["code"], "validation_failed");
    }
}

#[tokio::test]
async fn redelivering_an_event_thirty_times_at_once_enqueues_one_delivery() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    set_webhook(&app.db, org).await;
    let created = accept(&app, &key, &json!({"type": "t", "payload": {}})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    // Dead-lettered, as the worker leaves it: failed, its job finished.
    assert_eq!(dead_letter(&app.db, &[id.parse().expect("uuid")]).await, 1);
    let mut conn = app.db.acquire().await.expect("conn");

    let path = format!("/api/events/{id}/redeliver");
    let answers = futures::future::join_all((0..30).map(|_| post_json(&app, &key, &path, None))).await;
    let mut enqueued = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        assert_eq!(body["status"], "pending");
        match body["message"].as_str() {
            Some("redelivery enqueued") => enqueued += 1,
            Some("delivery already pending") => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert_eq!(enqueued, 1, "{answers:?}");
    assert_eq!(
        jobs_for_event(&app.db, &id).await,
        1,
        "one new job (the finished one is gone)"
    );
    assert_eq!(queue::testing::count_live(&mut conn).await, 1);

    // The bulk replay: three more dead letters, thirty replays at once, three new deliveries.
    let mut dead = Vec::new();
    for _ in 0..3 {
        let e = accept(&app, &key, &json!({"type": "t", "payload": {}})).await;
        dead.push(e["id"].as_str().expect("id").parse().expect("uuid"));
    }
    assert_eq!(dead_letter(&app.db, &dead).await, 3);
    let body = json!({"status": "failed"});
    let answers = futures::future::join_all(
        (0..30).map(|_| post_json(&app, &key, "/api/events/redeliver", Some(&body))),
    )
    .await;
    let mut replayed = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        replayed += body["count"].as_i64().expect("count");
    }
    assert_eq!(replayed, 3, "{answers:?}");
    assert_eq!(queue::testing::count_live(&mut conn).await, 4);
}

#[tokio::test]
async fn a_database_outage_answers_503_with_retry_after_and_recovers_without_restart() {
    let test_db = TestDb::new().await.expect("db");
    let app = TestApp::spawn_on(&test_db.url, |_| {}).await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    accept(&app, &key, &json!({"type": "before", "payload": {}})).await;

    test_db.cut_off().await.expect("cut off");
    let started = Instant::now();
    let res = post_event(&app, &key, &json!({"type": "during", "payload": {}})).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded wait: {:?}",
        started.elapsed()
    );
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    // (No X-RateLimit-* assertion: the auth cache clears itself when its listener loses the
    // database, so this 503 may come from authentication, before any organisation is known.)
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "unavailable");

    test_db.restore().await.expect("restore");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = post_event(&app, &key, &json!({"type": "after", "payload": {}})).await;
        if res.status() == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {}", res.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'during'")
        .fetch_one(&test_db.pool)
        .await
        .expect("count");
    assert_eq!(during, 0, "no event behind a 503");
}

#[tokio::test]
async fn queued_events_are_written_before_shutdown_completes() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let db = app.db.clone();
    let results = futures::future::join_all((0..30).map(|i| {
        let (app, key) = (&app, &key);
        async move { post_event(app, key, &json!({"type": "s", "payload": {"i": i}})).await }
    }))
    .await;
    let accepted = results.iter().filter(|r| r.status() == 202).count() as i64;
    app.stop().await;
    let stored = count_events(&db).await;
    assert_eq!(stored, accepted);
    assert_eq!(accepted, 30);
}

#[tokio::test]
async fn ingest_metrics_count_accepted_and_rejected_events_and_batches() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    accept(&app, &key, &json!({"type": "m", "payload": {}})).await;
    let res = post_event(&app, &key, &json!({"type": "", "payload": {}})).await;
    assert_eq!(res.status(), 422);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "triggers_events_accepted_total",
        "triggers_events_rejected_total{reason=\"validation_failed\"}",
        "triggers_ingest_batch_size",
        "triggers_ingest_batch_commit_seconds",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics");
    }
}

fn new_event(org: Uuid, dedup_id: Option<&str>) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        organization_id: org,
        event_type: EventType::parse("direct").expect("event type"),
        dedup_id: dedup_id.map(|d| DedupId::parse(d).expect("dedup id")),
        payload: Payload::try_from("{}".to_owned()).expect("payload"),
        // The organisation has no endpoint and its endpoints were never changed.
        fanout: Fanout {
            version: 0,
            deliveries: vec![],
        },
    }
}

#[tokio::test]
async fn duplicates_inside_one_batch_do_not_fail_it_and_only_later_ones_are_duplicates() {
    let test_db = TestDb::new().await.expect("db");
    let (_, org_a) = org_with_key(&test_db.pool, "pro").await;
    let (_, org_b) = org_with_key(&test_db.pool, "pro").await;
    let writer = writer_of(&test_db.pool);
    let events = [
        new_event(org_a, Some("k")),
        new_event(org_a, None),
        new_event(org_a, Some("k")),
        new_event(org_b, Some("k")),
        new_event(org_a, Some("other")),
        new_event(org_a, Some("k")),
    ];
    // Submitted together, they share a batch (or a few): the answers must not depend on it.
    let outcomes = futures::future::join_all(events.iter().cloned().map(|e| writer.submit(e))).await;
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.expect("outcome")).collect();
    let first_k = match &outcomes[0] {
        Outcome::Accepted { id, .. } => *id,
        other => panic!("the first k is accepted: {other:?}"),
    };
    assert_eq!(first_k, events[0].id);
    assert!(matches!(outcomes[1], Outcome::Accepted { .. }));
    assert_eq!(outcomes[2], Outcome::Duplicate { event_id: first_k });
    assert!(
        matches!(outcomes[3], Outcome::Accepted { .. }),
        "another organisation"
    );
    assert!(matches!(outcomes[4], Outcome::Accepted { .. }));
    assert_eq!(outcomes[5], Outcome::Duplicate { event_id: first_k });
    let stored = count_events(&test_db.pool).await;
    assert_eq!(stored, 4);
    writer.shutdown().await;
}

#[tokio::test]
async fn shutdown_writes_what_is_queued_and_never_reports_unstored_events_as_accepted() {
    let test_db = TestDb::new().await.expect("db");
    let (_, org) = org_with_key(&test_db.pool, "pro").await;
    let writer = writer_of(&test_db.pool);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (writer, event) = (writer.clone(), new_event(org, None));
            let id = event.id;
            (id, tokio::spawn(async move { writer.submit(event).await }))
        })
        .collect();
    tokio::task::yield_now().await;
    writer.shutdown().await;
    let mut accepted = 0;
    for (id, task) in tasks {
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("no waiter hangs")
            .expect("join");
        let stored: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE id = $1)")
            .bind(id)
            .fetch_one(&test_db.pool)
            .await
            .expect("exists");
        match result {
            Ok(Outcome::Accepted { .. }) => {
                accepted += 1;
                assert!(stored, "accepted means stored");
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(!stored, "a refused event is not stored"),
        }
    }
    assert!(accepted > 0, "what was queued before shutdown is written");
    // After shutdown the writer refuses (503) instead of hanging.
    let late = writer.submit(new_event(org, None)).await;
    assert!(late.is_err());
}

#[tokio::test]
async fn concurrent_events_are_written_in_shared_transactions() {
    let test_db = TestDb::new().await.expect("db");
    let (_, org) = org_with_key(&test_db.pool, "pro").await;
    set_webhook(&test_db.pool, org).await;
    let writer = writer_of(&test_db.pool);
    let outcomes =
        futures::future::join_all((0..300).map(|i| writer.submit(new_event(org, Some(&format!("b-{i}"))))))
            .await;
    assert!(outcomes.iter().all(|o| matches!(o, Ok(Outcome::Accepted { .. }))));
    // Rows of one transaction share its now(): far fewer distinct timestamps than events.
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT created_at) FROM events")
        .fetch_one(&test_db.pool)
        .await
        .expect("count");
    assert!(transactions <= 10, "{transactions} transactions for 300 events");
    assert_eq!(job_count(&test_db.pool).await, 300, "one job per event");
    writer.shutdown().await;
}

#[tokio::test]
async fn a_payload_is_kept_as_json_text_so_numbers_keep_every_digit() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    // Decoded into a tree these would become f64s (1.2345678901234568e29) or fail outright.
    let body = r#"{"type": "t", "payload": {"big": 123456789012345678901234567890, "exact": 0.1000000000000000000001}}"#;
    let res = post_raw(&app, &key, Some("application/json"), body.as_bytes().to_vec()).await;
    assert_eq!(res.status(), 202);
    let created: Value = res.json().await.expect("json");
    let id = created["id"].as_str().expect("id");
    let res = app
        .client
        .get(app.url(&format!("/api/events/{id}")))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("body");
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    assert!(text.contains("0.1000000000000000000001"), "{text}");
    let res = app
        .client
        .get(app.url("/api/inbox"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("inbox");
    let text = res.text().await.expect("body");
    assert!(text.contains("123456789012345678901234567890"), "{text}");
}
