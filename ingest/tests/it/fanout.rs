//! Fan-out at ingest: an accepted event gets one delivery per endpoint whose `event_types` match
//! its type (with its first job), `skipped` for a disabled one, in the same transaction; a
//! change of endpoints applies to the next event on every instance; the read side shows the
//! deliveries per event and per endpoint.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{TestApp, field_names};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use triggers_ingest::{
    batcher::{BatchWriter, NewEvent, Outcome},
    routing::{Fanout, RoutingCache},
};
use triggers_shared::{
    db::queue::testing as q,
    models::{DedupId, DeliveryStatus, EventType, Payload},
    testing::TestDb,
};
use uuid::Uuid;

/// One organisation's client of an app.
struct Client<'a> {
    app: &'a TestApp,
    key: String,
    org: Uuid,
}

impl<'a> Client<'a> {
    async fn new(app: &'a TestApp) -> Self {
        let (key, org) = app.create_org("Fanout", "enterprise").await;
        Self {
            app,
            key,
            org: Uuid::parse_str(&org).expect("organisation id"),
        }
    }

    /// The same organisation, through another instance.
    fn on(&self, app: &'a TestApp) -> Self {
        Self {
            app,
            key: self.key.clone(),
            org: self.org,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, json) = self.app.send_as(&self.key, method, path, body.as_ref()).await;
        (status, json)
    }

    /// Create an endpoint subscribed to `patterns`; its id.
    async fn endpoint(&self, patterns: &[&str], enabled: bool) -> Uuid {
        let (status, body) = self
            .send(
                Method::POST,
                "/api/endpoints",
                Some(json!({"url": "http://127.0.0.1:9/hook", "event_types": patterns, "enabled": enabled})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid")
    }

    /// Post an event of `event_type`; its id.
    async fn event(&self, event_type: &str) -> Uuid {
        let (status, body) = self
            .send(
                Method::POST,
                "/api/events",
                Some(json!({"type": event_type, "payload": {"n": 1}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid")
    }
}

/// The deliveries of an event as stored: endpoint → (status, job id).
async fn stored_deliveries(pool: &sqlx::PgPool, event: Uuid) -> BTreeMap<Uuid, (String, Option<String>)> {
    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT endpoint_id, status, job_id FROM deliveries WHERE event_id = $1")
            .bind(event)
            .fetch_all(pool)
            .await
            .expect("deliveries");
    rows.into_iter().map(|(e, s, j)| (e, (s, j))).collect()
}

#[tokio::test]
async fn an_event_gets_one_delivery_per_matching_endpoint_with_its_job_and_a_skipped_one_for_a_disabled_endpoint()
 {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let all = client.endpoint(&["*"], true).await;
    let orders = client.endpoint(&["order.*", "order.created"], true).await;
    let invoices = client.endpoint(&["invoice.paid"], true).await;
    let paused = client.endpoint(&["order.*"], false).await;

    let order = client.event("order.created").await;
    let stored = stored_deliveries(&app.db, order).await;
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        {
            let mut expected = vec![all, orders, paused];
            expected.sort();
            expected
        },
        "one delivery per matching endpoint, none for {invoices}"
    );
    assert_eq!(stored[&paused], ("skipped".to_owned(), None));
    // Each pending delivery names its job, and that job carries the delivery's key.
    let mut conn = app.db.acquire().await.expect("connection");
    let jobs: BTreeMap<String, _> = q::decoded_jobs(&mut conn).await.into_iter().collect();
    assert_eq!(jobs.len(), 2);
    for endpoint in [all, orders] {
        let (status, job) = &stored[&endpoint];
        assert_eq!(status, "pending");
        let job = &jobs[job.as_deref().expect("a job")];
        assert_eq!(
            (job.organization_id, job.event_id, job.endpoint_id),
            (client.org, order, endpoint)
        );
        assert_eq!(job.try_number, 1);
    }
    drop(conn);

    // The read side: the event's deliveries by endpoint id, its status summing them up.
    let (status, body) = client
        .send(Method::GET, &format!("/api/events/{order}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "pending");
    let deliveries = body["deliveries"].as_array().expect("deliveries");
    let shown: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| {
            (
                d["endpoint_id"].as_str().expect("id").to_owned(),
                d["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    let mut expected: Vec<(String, String)> = [(all, "pending"), (orders, "pending"), (paused, "skipped")]
        .iter()
        .map(|(id, s)| (id.to_string(), (*s).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(shown, expected);
    for d in deliveries {
        assert_eq!(d["attempts"], 0);
        let pending = d["status"] == "pending";
        assert_eq!(d["next_attempt_at"].is_string(), pending, "{d}");
    }
    assert_eq!(body["attempts_log"], json!([]));

    // Other types: only their subscribers.
    let invoice = client.event("invoice.paid").await;
    let mut expected = vec![all, invoices];
    expected.sort();
    assert_eq!(
        stored_deliveries(&app.db, invoice)
            .await
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        expected
    );
    let signup = client.event("user.signup").await;
    assert_eq!(
        stored_deliveries(&app.db, signup)
            .await
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [all]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_event_no_endpoint_matches_waits_in_the_inbox_with_no_delivery_and_no_job() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    client.endpoint(&["invoice.*"], true).await;
    let event = client.event("order.created").await;
    assert!(stored_deliveries(&app.db, event).await.is_empty());
    let mut conn = app.db.acquire().await.expect("connection");
    assert!(q::decoded_jobs(&mut conn).await.is_empty());
    drop(conn);
    let (_, inbox) = client.send(Method::GET, "/api/inbox?status=pending", None).await;
    assert_eq!(inbox["events"][0]["id"], event.to_string());
    let (status, body) = client
        .send(Method::POST, &format!("/api/events/{event}/redeliver"), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("webhook_not_configured"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_change_of_endpoints_applies_to_the_next_event_on_another_instance() {
    let db = TestDb::new().await.expect("test database");
    let a = TestApp::spawn_on(&db.url, |_| {}).await;
    let b = TestApp::spawn_on(&db.url, |_| {}).await;
    let on_a = Client::new(&a).await;
    let on_b = on_a.on(&b);
    // Instance b has read (and cached) the organisation's endpoints: none.
    let first = on_b.event("order.created").await;
    assert!(stored_deliveries(&db.pool, first).await.is_empty());
    for round in 0..10 {
        // Each change is answered by a; the very next event, accepted by b, follows it.
        let endpoint = on_a.endpoint(&["order.*"], true).await;
        let event = on_b.event("order.created").await;
        let stored = stored_deliveries(&db.pool, event).await;
        assert_eq!(
            stored.get(&endpoint).map(|d| d.0.as_str()),
            Some("pending"),
            "round {round}: created"
        );

        let (status, _) = on_a
            .send(
                Method::PATCH,
                &format!("/api/endpoints/{endpoint}"),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let event = on_b.event("order.created").await;
        let stored = stored_deliveries(&db.pool, event).await;
        assert_eq!(
            stored.get(&endpoint).map(|d| d.0.as_str()),
            Some("skipped"),
            "round {round}: disabled"
        );

        let (status, _) = on_a
            .send(Method::DELETE, &format!("/api/endpoints/{endpoint}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let event = on_b.event("order.created").await;
        assert!(
            !stored_deliveries(&db.pool, event).await.contains_key(&endpoint),
            "round {round}: deleted"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_event_routed_by_endpoints_that_changed_since_is_rerouted_before_it_is_stored() {
    // The judge is the statement, not the cache: a fan-out computed at a version that is no
    // longer current is refused and computed again, whatever any cache says.
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let endpoint = client.endpoint(&["*"], true).await;
    let writer = BatchWriter::start(
        app.db.clone(),
        RoutingCache::new(app.db.clone()),
        Duration::from_secs(60),
    );
    let event = NewEvent {
        id: Uuid::now_v7(),
        organization_id: client.org,
        event_type: EventType::parse("order.created").expect("type"),
        dedup_id: Some(DedupId::parse("stale-1").expect("dedup id")),
        payload: Payload::try_from("{}".to_owned()).expect("payload"),
        // As routed before the endpoint existed.
        fanout: Fanout {
            version: 0,
            deliveries: vec![],
        },
    };
    let id = event.id;
    let outcome = writer.submit(event).await.expect("stored");
    assert!(
        matches!(outcome, Outcome::Accepted { id: stored, .. } if stored == id),
        "{outcome:?}"
    );
    let stored = stored_deliveries(&app.db, id).await;
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), [endpoint]);
    let key: Option<Uuid> = sqlx::query_scalar("SELECT event_id FROM dedup_keys WHERE dedup_id = 'stale-1'")
        .fetch_optional(&app.db)
        .await
        .expect("dedup key");
    assert_eq!(
        key,
        Some(id),
        "the dedup key was claimed once, by the rerouted write"
    );
    writer.shutdown().await;
    app.stop().await;
}

#[tokio::test]
async fn acknowledging_cancels_pending_deliveries_and_deleting_an_endpoint_cancels_its_own() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let first = client.endpoint(&["*"], true).await;
    let second = client.endpoint(&["*"], true).await;
    let acked = client.event("order.created").await;
    let kept = client.event("order.created").await;

    let (status, body) = client
        .send(Method::POST, &format!("/api/ack/{acked}"), None)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("delivered"))
    );
    let stored = stored_deliveries(&app.db, acked).await;
    assert!(
        stored.values().all(|(s, job)| s == "cancelled" && job.is_none()),
        "{stored:?}"
    );

    let (status, _) = client
        .send(Method::DELETE, &format!("/api/endpoints/{second}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stored = stored_deliveries(&app.db, kept).await;
    assert_eq!(stored[&first].0, "pending");
    assert_eq!(stored[&second], ("cancelled".to_owned(), None));
    let (_, body) = client
        .send(Method::GET, &format!("/api/events/{kept}"), None)
        .await;
    assert_eq!(
        body["status"], "pending",
        "the first endpoint's delivery is still pending"
    );

    // A redelivery restarts what is not pending (the cancelled one; its endpoint is gone, so
    // the worker will cancel it again) and leaves the pending one alone.
    let (status, body) = client
        .send(Method::POST, &format!("/api/events/{kept}/redeliver"), None)
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::ACCEPTED, Some("redelivery enqueued"))
    );
    let stored = stored_deliveries(&app.db, kept).await;
    assert!(
        stored.values().all(|(s, job)| s == "pending" && job.is_some()),
        "{stored:?}"
    );
    let (status, body) = client
        .send(Method::POST, &format!("/api/events/{kept}/redeliver"), None)
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::ACCEPTED, Some("delivery already pending"))
    );
    app.stop().await;
}

#[tokio::test]
async fn an_endpoints_deliveries_are_listed_newest_first_filtered_and_paged_and_only_for_its_organisation() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let orders = client.endpoint(&["order.*"], true).await;
    let _other = client.endpoint(&["*"], true).await;
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(client.event("order.created").await);
    }
    client.event("invoice.paid").await; // not this endpoint's
    // One of them failed (as the worker leaves a dead letter).
    sqlx::query(
        "UPDATE deliveries SET status = 'failed', job_id = NULL WHERE event_id = $1 AND endpoint_id = $2",
    )
    .bind(events[1])
    .bind(orders)
    .execute(&app.db)
    .await
    .expect("fail one");

    let path = format!("/api/endpoints/{orders}/deliveries");
    let (status, body) = client.send(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<&str> = body["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["event_id"].as_str().expect("id"))
        .collect();
    let newest_first: Vec<String> = events.iter().rev().map(Uuid::to_string).collect();
    assert_eq!(listed, newest_first);
    let one = &body["deliveries"][0];
    let fields = field_names(one);
    assert_eq!(
        fields,
        [
            "attempts",
            "created_at",
            "delivered_at",
            "event_id",
            "last_error",
            "next_attempt_at",
            "response_status",
            "status",
            "type"
        ]
    );
    assert_eq!(one["type"], "order.created");

    let (_, failed) = client
        .send(Method::GET, &format!("{path}?status=dead_letter"), None)
        .await;
    let failed: Vec<&Value> = failed["deliveries"].as_array().expect("list").iter().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["event_id"], events[1].to_string());

    // Two at a time, by cursor: every delivery once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{path}?limit=2&cursor={c}"),
            None => format!("{path}?limit=2"),
        };
        let (status, page) = client.send(Method::GET, &page_path, None).await;
        assert_eq!(status, StatusCode::OK);
        for d in page["deliveries"].as_array().expect("list") {
            seen.push(d["event_id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    // A window: `until` is exclusive, `since` inclusive.
    let (_, third) = client
        .send(Method::GET, &format!("/api/events/{}", events[2]), None)
        .await;
    let created = third["created_at"].as_str().expect("created_at").to_owned();
    let encoded = created.replace('+', "%2B");
    let (_, window) = client
        .send(
            Method::GET,
            &format!("{path}?since={encoded}&until={encoded}"),
            None,
        )
        .await;
    assert_eq!(window["deliveries"], json!([]));

    for bad in [
        "status=sent",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "limit=0",
        "limit=1001",
        "cursor=nope",
        "status=%00",
    ] {
        let (status, body) = client.send(Method::GET, &format!("{path}?{bad}"), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{bad}"
        );
    }

    // Another organisation's endpoint answers as an unknown one.
    let stranger = Client::new(&app).await;
    let (status, foreign) = stranger.send(Method::GET, &path, None).await;
    let (_, unknown) = stranger
        .send(
            Method::GET,
            &format!("/api/endpoints/{}/deliveries", Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(foreign, unknown);
    assert_eq!(foreign["code"], "endpoint_not_found");
    app.stop().await;
}

#[tokio::test]
async fn listing_an_endpoints_deliveries_reads_an_index_range_not_the_table() {
    let db = TestDb::new().await.expect("test database");
    let app = TestApp::spawn_on(&db.url, |_| {}).await;
    let client = Client::new(&app).await;
    let mut endpoints = Vec::new();
    for _ in 0..8 {
        endpoints.push(client.endpoint(&["*"], true).await);
    }
    // 2,000 events × 8 endpoints: 16,000 deliveries, stored as ingest stores them.
    let events: Vec<_> = (0..2000).map(|i| (None, json!({"n": i}))).collect();
    for chunk in events.chunks(500) {
        triggers_shared::testing::store_events(&db.pool, client.org, "order.created", chunk)
            .await
            .expect("store");
    }
    sqlx::query("ANALYZE deliveries, events")
        .execute(&db.pool)
        .await
        .expect("analyze");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT d.event_id FROM deliveries d
         JOIN events e ON e.id = d.event_id AND e.organization_id = d.organization_id
         WHERE d.organization_id = $1 AND d.endpoint_id = $2
           AND ($3::text IS NULL OR d.status = $3)
           AND d.created_at >= coalesce($4, '-infinity'::timestamptz)
           AND d.created_at < coalesce($5, 'infinity'::timestamptz)
           AND (d.created_at, d.event_id)
               < (coalesce($6, 'infinity'::timestamptz), coalesce($7, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))
         ORDER BY d.created_at DESC, d.event_id DESC
         LIMIT 101",
    )
    .bind(client.org)
    .bind(endpoints[3])
    .bind(Some(DeliveryStatus::Failed.as_str()))
    .bind(None::<chrono::DateTime<chrono::Utc>>)
    .bind(None::<chrono::DateTime<chrono::Utc>>)
    .bind(None::<chrono::DateTime<chrono::Utc>>)
    .bind(None::<Uuid>)
    .fetch_all(&db.pool)
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(plan.contains("deliveries_endpoint_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan on deliveries"), "{plan}");
    app.stop().await;
}
