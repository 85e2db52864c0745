//! An endpoint's lifecycle through the API: secret rotation with a grace period
//! (`POST /api/endpoints/{id}/secret/rotate`), resending one delivery
//! (`POST /api/events/{id}/endpoints/{endpoint_id}/resend`) and recovering a time window
//! (`POST /api/endpoints/{id}/recover`, `GET /api/endpoints/{id}/recoveries/{recovery_id}`).
//! Answers are checked exactly, and so are the rows and queue jobs behind them; the worker's
//! side (signatures, batches, restarts) is `worker/tests/it/lifecycle.rs`.

use crate::common::{TestApp, detail_fields, field_names};
use chrono::{DateTime, Duration as Span, SubsecRound, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use triggers_shared::testing::store_events;
use uuid::Uuid;

/// One organisation's client.
struct Client<'a> {
    app: &'a TestApp,
    key: String,
    org: Uuid,
}

impl<'a> Client<'a> {
    async fn new(app: &'a TestApp, name: &str) -> Self {
        let (key, org) = app.create_org(name, "enterprise").await;
        Self {
            app,
            key,
            org: Uuid::parse_str(&org).expect("organisation id"),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, json) = self.app.send_as(&self.key, method, path, body.as_ref()).await;
        (status, json)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// An endpoint subscribed to everything; its id.
    async fn endpoint(&self) -> Uuid {
        let (status, body) = self
            .post("/api/endpoints", json!({"url": "http://127.0.0.1:9/hooks"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    async fn version(&self) -> i64 {
        sqlx::query_scalar("SELECT endpoints_version FROM organizations WHERE id = $1")
            .bind(self.org)
            .fetch_one(&self.app.db)
            .await
            .expect("organisation row")
    }
}

/// The `code` of an error answer, after checking its status and shape.
fn code(status: StatusCode, body: &Value, expected: u16) -> String {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"].is_string(), "{body}");
    body["code"].as_str().expect("code").to_owned()
}

/// The fields a `422 validation_failed` names.
fn bad_fields(status: StatusCode, body: &Value) -> Vec<String> {
    assert_eq!(code(status, body, 422), "validation_failed");
    detail_fields(body).into_iter().map(str::to_owned).collect()
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn assert_near(at: DateTime<Utc>, expected: DateTime<Utc>) {
    assert!(
        (at - expected).num_seconds().abs() <= 5,
        "{at} is not close to {expected}"
    );
}

/// The endpoint's current secret and its previous ones (secret, expiry), newest expiry first.
async fn secrets(pool: &PgPool, endpoint: Uuid) -> (String, Vec<(String, DateTime<Utc>)>) {
    let (current, previous): (String, Value) =
        sqlx::query_as("SELECT signing_secret, previous_secrets FROM endpoints WHERE id = $1")
            .bind(endpoint)
            .fetch_one(pool)
            .await
            .expect("endpoint row");
    let mut previous: Vec<(String, DateTime<Utc>)> = previous
        .as_array()
        .expect("an array")
        .iter()
        .map(|p| {
            (
                p["secret"].as_str().expect("secret").to_owned(),
                instant(&p["expires_at"]),
            )
        })
        .collect();
    previous.sort_by_key(|p| std::cmp::Reverse(p.1));
    (current, previous)
}

// ---------------------------------------------------------------- secret rotation

#[tokio::test]
async fn a_rotation_keeps_the_previous_secret_valid_for_its_grace_and_at_most_five_at_once() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let id = acme.endpoint().await;
    let path = format!("/api/endpoints/{id}/secret/rotate");
    let (first, _) = secrets(&app.db, id).await;

    // No body: a day of grace.
    let version = acme.version().await;
    let (status, body) = acme.call(Method::POST, &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        field_names(&body),
        ["previous_secret_expires_at", "signing_secret"]
    );
    let second = body["signing_secret"].as_str().expect("secret").to_owned();
    assert!(second.starts_with("whsec_") && second != first);
    let day = instant(&body["previous_secret_expires_at"]);
    assert_near(day, Utc::now() + Span::days(1));
    assert_eq!(
        secrets(&app.db, id).await,
        (second.clone(), vec![(first.clone(), day)])
    );
    assert_eq!(acme.version().await, version + 1, "the change is announced");

    // Three more with a minute each: five valid secrets, the most there may be.
    let mut current = second;
    let mut minute = Vec::new();
    for _ in 0..3 {
        let (status, body) = acme.post(&path, json!({"grace_period_seconds": 60})).await;
        assert_eq!(status, 200, "{body}");
        let expires = instant(&body["previous_secret_expires_at"]);
        assert_near(expires, Utc::now() + Span::seconds(60));
        minute.push((current, expires));
        current = body["signing_secret"].as_str().expect("secret").to_owned();
    }
    let (stored, previous) = secrets(&app.db, id).await;
    assert_eq!(stored, current);
    assert_eq!(previous.len(), 4);

    // A sixth is refused, naming when the oldest of the minute ones expires; nothing changes.
    let version = acme.version().await;
    let (status, body) = acme.post(&path, json!({"grace_period_seconds": 60})).await;
    assert_eq!(code(status, &body, 409), "too_many_secrets");
    assert_eq!(body["limit"], 5);
    assert_eq!(instant(&body["next_expires_at"]), minute[0].1);
    assert_eq!(secrets(&app.db, id).await, (stored.clone(), previous.clone()));
    assert_eq!(acme.version().await, version, "a refused rotation writes nothing");

    // Without grace the current secret stops at once, so it always works.
    let (status, body) = acme.post(&path, json!({"grace_period_seconds": 0})).await;
    assert_eq!(status, 200, "{body}");
    assert_near(instant(&body["previous_secret_expires_at"]), Utc::now());
    let (now_current, now_previous) = secrets(&app.db, id).await;
    assert_eq!(now_current, body["signing_secret"].as_str().expect("secret"));
    assert_eq!(now_previous, previous, "the replaced secret is not kept");

    // Expired secrets are dropped by the next rotation.
    sqlx::query(
        "UPDATE endpoints SET previous_secrets = (
             SELECT jsonb_agg(CASE WHEN s ->> 'secret' = $2 THEN s
                                   ELSE jsonb_set(s, '{expires_at}', to_jsonb(now() - interval '1 second')) END)
             FROM jsonb_array_elements(previous_secrets) s)
         WHERE id = $1",
    )
    .bind(id)
    .bind(&first)
    .execute(&app.db)
    .await
    .expect("expire the minute secrets");
    let (status, body) = acme.post(&path, json!({"grace_period_seconds": 10})).await;
    assert_eq!(status, 200, "{body}");
    let (_, previous) = secrets(&app.db, id).await;
    assert_eq!(
        previous.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        [first.as_str(), now_current.as_str()],
        "only the day-long secret and the one just replaced are left"
    );
}

#[tokio::test]
async fn a_rotation_refuses_a_bad_grace_and_another_organisations_endpoint() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let globex = Client::new(&app, "Globex").await;
    let id = acme.endpoint().await;
    let path = format!("/api/endpoints/{id}/secret/rotate");
    let before = secrets(&app.db, id).await;
    for bad in [json!(-1), json!(604_801), json!("60"), json!(1.5)] {
        let (status, body) = acme.post(&path, json!({"grace_period_seconds": bad})).await;
        assert_eq!(bad_fields(status, &body), ["grace_period_seconds"], "{bad}");
    }
    let (status, body) = acme.post(&path, json!([1])).await;
    assert_eq!(bad_fields(status, &body), ["body"]);
    let (status, body) = acme.post(&path, json!({"grace_period_seconds": 604_800})).await;
    assert_eq!(status, 200, "the longest grace is allowed: {body}");

    let (status, foreign) = globex.post(&path, json!({})).await;
    assert_eq!(code(status, &foreign, 404), "endpoint_not_found");
    let (status, unknown) = globex
        .post(
            &format!("/api/endpoints/{}/secret/rotate", Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_eq!((status, &unknown), (StatusCode::NOT_FOUND, &foreign));
    let (status, malformed) = globex.post("/api/endpoints/nope/secret/rotate", json!({})).await;
    assert_eq!((status, &malformed), (StatusCode::NOT_FOUND, &foreign));
    assert_ne!(
        secrets(&app.db, id).await.0,
        before.0,
        "only the owner's rotation applied"
    );
}

// ---------------------------------------------------------------- history fixtures

/// Events of `org` routed to its endpoints now, stored as ingest stores them, each then put in
/// the given status (its queue job gone, as after a finished chain) and created at the given
/// time. Returns the event ids in order.
async fn history(pool: &PgPool, org: Uuid, endpoint: Uuid, rows: &[(&str, DateTime<Utc>)]) -> Vec<Uuid> {
    let payloads: Vec<_> = (0..rows.len()).map(|i| (None, json!({"n": i}))).collect();
    let ids = store_events(pool, org, "order.created", &payloads)
        .await
        .expect("store events");
    for (id, (status, at)) in ids.iter().zip(rows) {
        sqlx::query("UPDATE events SET created_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(pool)
            .await
            .expect("event time");
        sqlx::query(
            "UPDATE deliveries SET status = $3, created_at = $4, updated_at = $4 - interval '1 second',
                    job_id = CASE WHEN $3 = 'pending' THEN job_id END
             WHERE event_id = $1 AND endpoint_id = $2",
        )
        .bind(id)
        .bind(endpoint)
        .bind(status)
        .bind(at)
        .execute(pool)
        .await
        .expect("delivery status");
    }
    sqlx::query(
        "DELETE FROM apalis.jobs j WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id)",
    )
    .execute(pool)
    .await
    .expect("finished chains");
    ids
}

/// A delivery's status and job, with the job's priority (`None` when it has none).
async fn delivery(pool: &PgPool, event: Uuid, endpoint: Uuid) -> (String, Option<String>, Option<i32>) {
    sqlx::query_as(
        "SELECT d.status, d.job_id, j.priority FROM deliveries d LEFT JOIN apalis.jobs j ON j.id = d.job_id
         WHERE d.event_id = $1 AND d.endpoint_id = $2",
    )
    .bind(event)
    .bind(endpoint)
    .fetch_one(pool)
    .await
    .expect("delivery row")
}

async fn jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(pool)
        .await
        .expect("count jobs")
}

// ---------------------------------------------------------------- resend

#[tokio::test]
async fn a_resend_restarts_one_delivery_whatever_its_status_and_is_idempotent_while_pending() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let (a, b) = (acme.endpoint().await, acme.endpoint().await);
    let now = Utc::now();
    let events = history(
        &app.db,
        acme.org,
        a,
        &[("failed", now), ("delivered", now), ("skipped", now)],
    )
    .await;
    // Endpoint b's deliveries of the same events are delivered.
    sqlx::query("UPDATE deliveries SET status = 'delivered', job_id = NULL WHERE endpoint_id = $1")
        .bind(b)
        .execute(&app.db)
        .await
        .expect("b delivered");
    sqlx::query("DELETE FROM apalis.jobs")
        .execute(&app.db)
        .await
        .expect("no jobs");

    for (event, before) in events.iter().zip(["failed", "delivered", "skipped"]) {
        let path = format!("/api/events/{event}/endpoints/{a}/resend");
        let (status, body) = acme.post(&path, json!({})).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            body,
            json!({"id": event, "status": "pending", "message": "resend enqueued"}),
            "{before}"
        );
        let (status_now, job, priority) = delivery(&app.db, *event, a).await;
        assert_eq!(
            (status_now.as_str(), priority),
            ("pending", Some(0)),
            "{before}: a live job"
        );
        // Again while pending: the same answer shape, no second chain.
        let (status, body) = acme.call(Method::POST, &path, None).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["message"], "delivery already pending");
        assert_eq!(
            delivery(&app.db, *event, a).await.1,
            job,
            "{before}: the same chain"
        );
        assert_eq!(
            delivery(&app.db, *event, b).await,
            ("delivered".to_owned(), None, None)
        );
    }
    assert_eq!(jobs(&app.db).await, 3, "one job per resent delivery");
    let (_, event) = acme
        .call(Method::GET, &format!("/api/events/{}", events[0]), None)
        .await;
    assert_eq!(event["status"], "pending", "{event}");
}

#[tokio::test]
async fn a_resend_answers_404_for_what_is_not_there_and_409_for_a_disabled_endpoint() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let globex = Client::new(&app, "Globex").await;
    let a = acme.endpoint().await;
    let event = history(&app.db, acme.org, a, &[("failed", Utc::now())]).await[0];
    let later = acme.endpoint().await; // created after the event: no delivery to it
    let resend = |event: &str, endpoint: &str| format!("/api/events/{event}/endpoints/{endpoint}/resend");

    let (status, unknown_event) = acme
        .post(&resend(&Uuid::now_v7().to_string(), &a.to_string()), json!({}))
        .await;
    assert_eq!(code(status, &unknown_event, 404), "event_not_found");
    for (who, path) in [
        (&globex, resend(&event.to_string(), &a.to_string())),
        (&acme, resend("not-a-uuid", &a.to_string())),
    ] {
        let (status, body) = who.post(&path, json!({})).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, unknown_event.clone()),
            "{path}"
        );
    }
    let (status, no_delivery) = acme
        .post(&resend(&event.to_string(), &later.to_string()), json!({}))
        .await;
    assert_eq!(code(status, &no_delivery, 404), "delivery_not_found");
    for endpoint in [Uuid::now_v7().to_string(), "nope".to_owned()] {
        let (status, body) = acme.post(&resend(&event.to_string(), &endpoint), json!({})).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, no_delivery.clone()),
            "{endpoint}"
        );
    }

    let (status, _) = acme
        .call(
            Method::PATCH,
            &format!("/api/endpoints/{a}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = acme
        .post(&resend(&event.to_string(), &a.to_string()), json!({}))
        .await;
    assert_eq!(code(status, &body, 409), "endpoint_disabled");
    assert_eq!(
        delivery(&app.db, event, a).await,
        ("failed".to_owned(), None, None),
        "nothing changed"
    );

    // A deleted endpoint's delivery cannot be resent.
    let (status, _) = acme
        .call(Method::DELETE, &format!("/api/endpoints/{a}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = acme
        .post(&resend(&event.to_string(), &a.to_string()), json!({}))
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, no_delivery));
    assert_eq!(jobs(&app.db).await, 0);
}

// ---------------------------------------------------------------- recover

/// Ten deliveries to `endpoint` over the last ten hours, one an hour (the newest first): four
/// failed, three skipped, two delivered and one pending.
async fn ten_hours(app: &TestApp, org: Uuid, endpoint: Uuid) -> (Vec<Uuid>, DateTime<Utc>) {
    // In whole microseconds, as Postgres stores them.
    let now = Utc::now().trunc_subsecs(6);
    let statuses = [
        "failed",
        "skipped",
        "delivered",
        "failed",
        "pending",
        "skipped",
        "failed",
        "delivered",
        "skipped",
        "failed",
    ];
    let rows: Vec<(&str, DateTime<Utc>)> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, now - Span::hours(i as i64) - Span::minutes(30)))
        .collect();
    (history(&app.db, org, endpoint, &rows).await, now)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test]
async fn a_dry_run_counts_the_window_and_a_recovery_is_recorded_with_that_count() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let id = acme.endpoint().await;
    let (_, now) = ten_hours(&app, acme.org, id).await;
    let path = format!("/api/endpoints/{id}/recover");
    let day_ago = rfc3339(now - Span::days(1));
    let (acme, path) = (&acme, &path);
    let count = |body: Value| async move {
        let (status, answer) = acme.post(path, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(field_names(&answer), ["count"]);
        answer["count"].as_i64().expect("count")
    };
    assert_eq!(
        count(json!({"since": day_ago, "dry_run": true})).await,
        7,
        "failed and skipped"
    );
    assert_eq!(
        count(json!({"since": day_ago, "dry_run": true, "statuses": ["dead_letter"]})).await,
        4
    );
    assert_eq!(
        count(json!({"since": day_ago, "dry_run": true, "statuses": ["delivered", "failed", "failed"]}))
            .await,
        6
    );
    // The last four hours hold failed, skipped, delivered, failed: since is inclusive, until not.
    let window = json!({"since": rfc3339(now - Span::hours(4)), "until": rfc3339(now - Span::minutes(30)), "dry_run": true});
    assert_eq!(count(window).await, 2, "the newest (at until exactly) is outside");
    assert_eq!(
        jobs(&app.db).await,
        1,
        "a dry run writes nothing (the pending delivery's job)"
    );

    let (status, body) = acme.post(path, json!({"since": day_ago})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(field_names(&body), ["count", "recovery_id"]);
    assert_eq!(body["count"], 7);
    let recovery = body["recovery_id"].as_str().expect("id").to_owned();
    let (status, progress) = acme
        .call(
            Method::GET,
            &format!("/api/endpoints/{id}/recoveries/{recovery}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(
        (
            &progress["status"],
            &progress["total"],
            &progress["enqueued"],
            &progress["statuses"]
        ),
        (
            &json!("running"),
            &json!(7),
            &json!(0),
            &json!(["failed", "skipped"])
        )
    );
    assert_eq!(progress["finished_at"], Value::Null);
    assert_eq!(instant(&progress["since"]), instant(&json!(day_ago)));
    assert_near(instant(&progress["until"]), Utc::now());
    assert_eq!(
        jobs(&app.db).await,
        1,
        "the worker, not the request, restarts them"
    );

    // Nothing in the window: recorded as done at once.
    let (status, body) = acme
        .post(
            path,
            json!({"since": rfc3339(now - Span::days(3)), "until": rfc3339(now - Span::days(2))}),
        )
        .await;
    assert_eq!(
        (status, &body["count"]),
        (StatusCode::ACCEPTED, &json!(0)),
        "{body}"
    );
    let (_, progress) = acme
        .call(
            Method::GET,
            &format!(
                "/api/endpoints/{id}/recoveries/{}",
                body["recovery_id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(
        (&progress["status"], &progress["total"]),
        (&json!("done"), &json!(0))
    );
    assert!(progress["finished_at"].is_string());
}

#[tokio::test]
async fn a_recovery_over_100000_deliveries_is_422_with_the_count_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let id = acme.endpoint().await;
    // 100,001 failed deliveries of one event each, written in one statement.
    sqlx::query(
        "WITH e AS (
             INSERT INTO events (id, organization_id, type, payload, status, created_at)
             SELECT triggers_uuid_v7(), $1, 'order.created', '{}', 'failed', now() - interval '1 hour'
             FROM generate_series(1, 100001)
             RETURNING id, created_at
         )
         INSERT INTO deliveries (organization_id, event_id, endpoint_id, status, attempts, created_at, updated_at)
         SELECT $1, id, $2, 'failed', 6, created_at, created_at FROM e",
    )
    .bind(acme.org)
    .bind(id)
    .execute(&app.db)
    .await
    .expect("history");
    let path = format!("/api/endpoints/{id}/recover");
    let since = rfc3339(Utc::now() - Span::days(1));
    let (status, body) = acme.post(&path, json!({"since": since})).await;
    assert_eq!(code(status, &body, 422), "too_many_deliveries");
    assert_eq!(
        (&body["count"], &body["limit"]),
        (&json!(100_001), &json!(100_000))
    );
    let recoveries: i64 = sqlx::query_scalar("SELECT count(*) FROM recoveries")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(recoveries, 0);
    // A dry run still counts them all.
    let (status, body) = acme.post(&path, json!({"since": since, "dry_run": true})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"count": 100_001})));
}

#[tokio::test]
async fn a_recovery_refuses_bad_bodies_a_disabled_endpoint_and_other_organisations() {
    let app = TestApp::spawn().await;
    let acme = Client::new(&app, "Acme").await;
    let globex = Client::new(&app, "Globex").await;
    let id = acme.endpoint().await;
    let path = format!("/api/endpoints/{id}/recover");
    let since = rfc3339(Utc::now() - Span::hours(1));

    for (body, fields) in [
        (json!({}), vec!["since"]),
        (json!({"since": "yesterday"}), vec!["since"]),
        (json!({"since": since, "statuses": []}), vec!["statuses"]),
        (json!({"since": since, "statuses": ["pending"]}), vec!["statuses"]),
        (json!({"since": since, "statuses": "failed"}), vec!["statuses"]),
        (
            json!({"since": since, "statuses": ["failed", "gone"]}),
            vec!["statuses"],
        ),
        (json!({"since": since, "dry_run": "yes"}), vec!["dry_run"]),
        (
            json!({"since": 5, "until": false, "dry_run": 1}),
            vec!["since", "until", "dry_run"],
        ),
    ] {
        let (status, answer) = acme.post(&path, body.clone()).await;
        assert_eq!(bad_fields(status, &answer), fields, "{body}");
    }
    // A window that ends where it starts, or starts after now (`until`'s default), is empty.
    let future = rfc3339(Utc::now() + Span::hours(1));
    for body in [
        json!({"since": since, "until": since, "dry_run": true}),
        json!({"since": future, "dry_run": true}),
    ] {
        let (status, answer) = acme.post(&path, body.clone()).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({"count": 0})), "{body}");
    }
    let res = app
        .client
        .post(app.url(&path))
        .header("X-API-Key", &acme.key)
        .body("{")
        .header("Content-Type", "application/json")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);

    let (status, foreign) = globex.post(&path, json!({"since": since})).await;
    assert_eq!(code(status, &foreign, 404), "endpoint_not_found");
    let (status, unknown) = globex
        .post(
            &format!("/api/endpoints/{}/recover", Uuid::now_v7()),
            json!({"since": since}),
        )
        .await;
    assert_eq!((status, unknown), (StatusCode::NOT_FOUND, foreign.clone()));

    // A recovery is found only through its own endpoint and organisation.
    let (status, body) = acme.post(&path, json!({"since": since})).await;
    assert_eq!(status, 202, "{body}");
    let recovery = body["recovery_id"].as_str().expect("id");
    let other = acme.endpoint().await;
    let (status, not_found) = acme
        .call(
            Method::GET,
            &format!("/api/endpoints/{other}/recoveries/{recovery}"),
            None,
        )
        .await;
    assert_eq!(code(status, &not_found, 404), "recovery_not_found");
    for bad in [Uuid::now_v7().to_string(), "nope".to_owned()] {
        let (status, body) = acme
            .call(
                Method::GET,
                &format!("/api/endpoints/{id}/recoveries/{bad}"),
                None,
            )
            .await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found.clone()));
    }
    let (status, body) = globex
        .call(
            Method::GET,
            &format!("/api/endpoints/{id}/recoveries/{recovery}"),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, foreign));

    let (status, _) = acme
        .call(
            Method::PATCH,
            &format!("/api/endpoints/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = acme.post(&path, json!({"since": since})).await;
    assert_eq!(code(status, &body, 409), "endpoint_disabled");
    let (status, body) = acme.post(&path, json!({"since": since, "dry_run": true})).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"count": 0})),
        "a dry run still counts"
    );
}
