//! `GET /api/inbox`, `POST /api/ack/{id}` and `POST /api/ack`.

use std::collections::HashSet;

use crate::common::TestApp;
use crate::common::fixtures::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// Post `n` events of `type`; returns their ids in order of acceptance.
async fn seed(app: &TestApp, key: &str, n: usize, event_type: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let e = accept(app, key, &json!({"type": event_type, "payload": {"i": i}})).await;
        ids.push(e["id"].as_str().expect("id").to_owned());
    }
    ids
}

fn ids_of(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn the_inbox_lists_oldest_first_with_offset_pagination() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let (other, _) = org_with_key(&app.db, "pro").await;
    let ids = seed(&app, &key, 7, "p").await;
    seed(&app, &other, 2, "p").await;

    let (status, page) = get_json(&app, &key, "/api/inbox?limit=3").await;
    assert_eq!(status, 200);
    assert_eq!(ids_of(&page), ids[..3]);
    assert_eq!(
        page["pagination"],
        json!({"limit": 3, "offset": 0, "total": 7, "has_more": true})
    );
    assert!(page["next_cursor"].is_string());
    let item = &page["events"][0];
    for field in INBOX_ITEM_FIELDS {
        assert!(item.get(field).is_some(), "missing {field}: {item}");
    }
    assert_eq!(item["payload"], json!({"i": 0}));
    assert_eq!(item["status"], "pending");

    let (_, page) = get_json(&app, &key, "/api/inbox?limit=3&offset=3").await;
    assert_eq!(ids_of(&page), ids[3..6]);
    let (_, page) = get_json(&app, &key, "/api/inbox?limit=3&offset=6").await;
    assert_eq!(ids_of(&page), ids[6..]);
    assert_eq!(page["pagination"]["has_more"], false);
    assert_eq!(page["next_cursor"], Value::Null);

    let (_, page) = get_json(&app, &key, "/api/inbox").await;
    assert_eq!(page["pagination"]["limit"], 100, "default limit");
    assert_eq!(ids_of(&page), ids, "only this organisation's events");
}

#[tokio::test]
async fn cursor_pagination_neither_repeats_nor_skips_under_concurrent_inserts() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "enterprise").await;
    let initial = seed(&app, &key, 13, "c").await;

    // Keep inserting while paging.
    let writer = {
        let (app_url, key) = (app.url("/api/events"), key.clone());
        let client = app.client.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let res = client
                    .post(&app_url)
                    .header("X-API-Key", &key)
                    .json(&json!({"type": "c", "payload": {"late": i}}))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(res.status(), 202);
            }
        })
    };

    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut last_created: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/inbox?limit=4&cursor={c}"),
            None => "/api/inbox?limit=4".to_owned(),
        };
        let (status, page) = get_json(&app, &key, &path).await;
        assert_eq!(status, 200, "{page}");
        for e in page["events"].as_array().expect("events") {
            let created = e["created_at"].as_str().expect("created_at").to_owned();
            if let Some(prev) = &last_created {
                assert!(
                    chrono::DateTime::parse_from_rfc3339(prev).expect("ts")
                        <= chrono::DateTime::parse_from_rfc3339(&created).expect("ts"),
                    "oldest first"
                );
            }
            last_created = Some(created);
            seen.push(e["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    writer.await.expect("writer");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert_eq!(
        seen[..initial.len()],
        initial[..],
        "every pre-existing event, in order"
    );
}

#[tokio::test]
async fn the_status_filter_accepts_dead_letter_as_a_synonym_of_failed() {
    let app = TestApp::spawn().await;
    let (key, org) = org_with_key(&app.db, "pro").await;
    set_webhook(&app.db, org).await;
    let ids = seed(&app, &key, 4, "s").await;
    // The first one's delivery is dead-lettered, the second one's delivered; the others'
    // are pending (each event's status sums its delivery up).
    let id = |i: usize| -> Uuid { ids[i].parse().expect("uuid") };
    assert_eq!(dead_letter(&app.db, &[id(0)]).await, 1);
    assert_eq!(attempt(&app.db, &[id(1)], 200, false).await, 1);

    for (status, expected) in [
        ("failed", vec![ids[0].clone()]),
        ("dead_letter", vec![ids[0].clone()]),
        ("delivered", vec![ids[1].clone()]),
        ("pending", ids[2..].to_vec()),
    ] {
        let (code, page) = get_json(&app, &key, &format!("/api/inbox?status={status}")).await;
        assert_eq!(code, 200);
        assert_eq!(ids_of(&page), expected, "{status}");
        assert_eq!(page["pagination"]["total"], expected.len());
    }
    let (_, page) = get_json(&app, &key, "/api/inbox?status=dead_letter").await;
    assert_eq!(page["events"][0]["status"], "failed");
}

#[tokio::test]
async fn bad_query_parameters_are_422() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    for (query, field) in [
        ("status=archived", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=MTIzNDU2Lm5vdC1hLXV1aWQ", "cursor"),
    ] {
        let (status, body) = get_json(&app, &key, &format!("/api/inbox?{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
    let (status, body) = get_json(&app, &key, "/api/inbox?limit=0&status=x").await;
    assert_eq!(status, 422);
    assert_eq!(
        body["details"].as_array().map(Vec::len),
        Some(2),
        "every bad parameter: {body}"
    );
    let (status, _) = get_json(&app, &key, "/api/inbox?limit=1000&limit=1").await;
    assert!(status == 200 || status == 422);
}

#[tokio::test]
async fn the_type_filter_takes_sql_metacharacters_literally() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let a = seed(&app, &key, 2, "a.b").await;
    seed(&app, &key, 1, "aXb").await;
    let (status, page) = get_json(&app, &key, "/api/inbox?type=a.b").await;
    assert_eq!(status, 200);
    assert_eq!(ids_of(&page), a);
    let (status, page) = get_json(&app, &key, "/api/inbox?type=%27%20OR%20%271%27%3D%271").await;
    assert_eq!(status, 200);
    assert_eq!(ids_of(&page), Vec::<String>::new());
    let (status, page) = get_json(&app, &key, "/api/inbox?type=a%25").await;
    assert_eq!(status, 200);
    assert_eq!(page["pagination"]["total"], 0, "% is not a wildcard");
}

#[tokio::test]
async fn ack_marks_delivered_and_a_second_ack_returns_the_first_timestamp() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let ids = seed(&app, &key, 1, "k").await;
    let (status, first) = post_json(&app, &key, &format!("/api/ack/{}", ids[0]), None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["id"], ids[0]);
    assert_eq!(first["status"], "delivered");
    assert!(first["acknowledged_at"].as_str().expect("ts").ends_with('Z'));
    assert!(first["message"].is_string());

    let (status, second) = post_json(&app, &key, &format!("/api/ack/{}", ids[0]), None).await;
    assert_eq!(status, 200);
    assert_eq!(second["acknowledged_at"], first["acknowledged_at"]);
    assert_eq!(second["status"], "delivered");

    let (_, page) = get_json(&app, &key, "/api/inbox?status=delivered").await;
    assert_eq!(ids_of(&page), ids);
    assert_eq!(page["events"][0]["acknowledged_at"], first["acknowledged_at"]);
    assert!(page["events"][0]["delivered_at"].is_string());
    let (_, page) = get_json(&app, &key, "/api/inbox?status=pending").await;
    assert_eq!(page["pagination"]["total"], 0);
}

#[tokio::test]
async fn ack_of_an_unknown_malformed_or_foreign_id_is_404() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let (other, _) = org_with_key(&app.db, "pro").await;
    let theirs = seed(&app, &other, 1, "x").await;
    for id in [theirs[0].clone(), Uuid::now_v7().to_string(), "zzz".to_owned()] {
        let (status, body) = post_json(&app, &key, &format!("/api/ack/{id}"), None).await;
        assert_eq!(status, 404, "{id}");
        assert_eq!(body["code"], "event_not_found");
    }
    let ack: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT acknowledged_at FROM events WHERE id = $1::uuid")
            .bind(&theirs[0])
            .fetch_one(&app.db)
            .await
            .expect("row");
    assert_eq!(ack, None, "the other organisation's event is untouched");
}

#[tokio::test]
async fn batch_ack_lists_acknowledged_and_not_found_ids() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let (other, _) = org_with_key(&app.db, "pro").await;
    let mine = seed(&app, &key, 3, "b").await;
    let theirs = seed(&app, &other, 1, "b").await;
    // One of mine was acknowledged before: it still counts as acknowledged.
    let (status, _) = post_json(&app, &key, &format!("/api/ack/{}", mine[2]), None).await;
    assert_eq!(status, 200);
    let unknown = Uuid::now_v7().to_string();
    let body = json!({"event_ids": [mine[0], "not-a-uuid", mine[1], theirs[0], unknown, mine[2], mine[0]]});
    let (status, out) = post_json(&app, &key, "/api/ack", Some(&body)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["acknowledged"], json!([mine[0], mine[1], mine[2]]));
    assert_eq!(out["not_found"], json!(["not-a-uuid", theirs[0], unknown]));
    let acked: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE acknowledged_at IS NOT NULL")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(acked, 3);

    for bad in [
        json!({"event_ids": []}),
        json!({"event_ids": "x"}),
        json!({}),
        json!({"event_ids": [1]}),
        json!({"event_ids": vec!["x"; 1001]}),
    ] {
        let (status, body) = post_json(&app, &key, "/api/ack", Some(&bad)).await;
        assert_eq!(status, 422, "{bad}");
        assert_eq!(body["code"], "validation_failed");
    }
}

#[tokio::test]
async fn a_nul_in_any_query_parameter_is_422_not_500() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    for (query, field) in [
        ("type=a%00b", "type"),
        ("status=pending%00", "status"),
        ("cursor=%00", "cursor"),
        ("limit=1&unknown=%00", "unknown"),
    ] {
        let (status, body) = get_json(&app, &key, &format!("/api/inbox?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["code"], "validation_failed", "{query}: {body}");
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn offset_is_bounded_at_10000_and_the_cursor_pages_deeper() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    let (status, body) = get_json(&app, &key, "/api/inbox?offset=10001").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["field"], "offset", "{body}");
    let (status, page) = get_json(&app, &key, "/api/inbox?offset=10000").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["pagination"]["offset"], 10_000);
}

#[tokio::test]
async fn include_total_false_answers_a_null_total_and_anything_else_is_422() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "pro").await;
    seed(&app, &key, 3, "t").await;
    let (status, page) = get_json(&app, &key, "/api/inbox?limit=2&include_total=false").await;
    assert_eq!(status, 200);
    assert_eq!(
        page["pagination"],
        json!({"limit": 2, "offset": 0, "total": null, "has_more": true})
    );
    let (_, page) = get_json(&app, &key, "/api/inbox?include_total=true").await;
    assert_eq!(page["pagination"]["total"], 3);
    let (status, body) = get_json(&app, &key, "/api/inbox?include_total=yes").await;
    assert_eq!(status, 422);
    assert_eq!(body["details"][0]["field"], "include_total", "{body}");
}

#[tokio::test]
async fn a_page_of_large_payloads_ends_at_8_mib_and_the_cursor_serves_the_rest_once() {
    let app = TestApp::spawn().await;
    let (key, org_id) = org_with_key(&app.db, "pro").await;
    // 40 payloads of ~384 KB as Postgres prints them: ~15 MB, two or three pages.
    insert_large_events(&app.db, org_id, 40).await;

    let mut seen = Vec::new();
    let mut path = "/api/inbox?limit=1000".to_owned();
    let mut pages = 0;
    loop {
        let res = app
            .client
            .get(app.url(&path))
            .header("X-API-Key", &key)
            .send()
            .await
            .expect("inbox");
        assert_eq!(res.status(), 200);
        let bytes = res.bytes().await.expect("body");
        assert!(bytes.len() < 9 * 1024 * 1024, "a page of {} bytes", bytes.len());
        let page: Value = serde_json::from_slice(&bytes).expect("json");
        pages += 1;
        let events = page["events"].as_array().expect("events");
        assert!(!events.is_empty());
        assert_eq!(
            events[0]["payload"]["data"].as_array().map(Vec::len),
            Some(LARGE_PAYLOAD_ITEMS as usize)
        );
        seen.extend(ids_of(&page));
        if page["pagination"]["has_more"] == false {
            assert!(page["next_cursor"].is_null());
            break;
        }
        assert!(events.len() < 40, "the first page was not cut by bytes");
        let cursor = page["next_cursor"].as_str().expect("next_cursor");
        path = format!("/api/inbox?limit=1000&cursor={cursor}");
    }
    assert!(pages >= 2, "{pages} pages");
    assert_eq!(seen.len(), 40);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 40);
}
