//! The endpoints resource: `POST/GET /api/endpoints`, `GET/PATCH/DELETE /api/endpoints/{id}`.
//! Every answer is checked exactly, and so are the rows, the organisation's `endpoints_version`
//! and the notifications on `triggers_endpoints` behind it.

use std::time::Duration;

use crate::common::{TestApp, field_names};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use triggers_shared::{db::endpoints::CHANNEL, signing, testing::TestDb};
use uuid::Uuid;

/// The fields of every endpoint answer (`POST` adds `signing_secret`).
const ENDPOINT_FIELDS: [&str; 11] = [
    "created_at",
    "default",
    "description",
    "enabled",
    "event_types",
    "headers",
    "id",
    "rate_limit_per_second",
    "disabled_reason",
    "updated_at",
    "url",
];

/// One organisation's view of the API.
struct Tenant<'a> {
    app: &'a TestApp,
    key: String,
    org_id: Uuid,
}

impl<'a> Tenant<'a> {
    async fn new(app: &'a TestApp, name: &str) -> Self {
        let (key, org_id) = app.create_org(name, "pro").await;
        Self {
            app,
            key,
            org_id: Uuid::parse_str(&org_id).expect("organisation id"),
        }
    }

    /// A request with a JSON body (or none); the status, the headers and the JSON answer (`Null`
    /// for an empty body).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, header::HeaderMap, Value) {
        self.app.send_as(&self.key, method, path, body).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let (status, _, json) = self.send(method, path, body).await;
        (status, json)
    }

    /// Create an endpoint that must be accepted; its answer.
    async fn create(&self, body: Value) -> Value {
        let (status, answer) = self.call(Method::POST, "/api/endpoints", Some(&body)).await;
        assert_eq!(status, 201, "{answer}");
        answer
    }

    async fn version(&self) -> i64 {
        sqlx::query_scalar("SELECT endpoints_version FROM organizations WHERE id = $1")
            .bind(self.org_id)
            .fetch_one(&self.app.db)
            .await
            .expect("organisation row")
    }

    async fn rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM endpoints WHERE organization_id = $1")
            .bind(self.org_id)
            .fetch_one(&self.app.db)
            .await
            .expect("count")
    }
}

/// An endpoint's row as stored, in a form to compare.
async fn row(app: &TestApp, id: &str) -> Option<Value> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('organization_id', organization_id, 'url', url,
                    'description', description, 'event_types', to_jsonb(event_types),
                    'disabled_reason', disabled_reason, 'headers', headers,
                    'rate_limit_per_second', rate_limit_per_second, 'signing_secret', signing_secret,
                    'is_default', is_default, 'updated_at', updated_at)
         FROM endpoints WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await
    .expect("endpoint row")
}

fn instant(timestamp: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(timestamp.as_str().expect("a timestamp")).expect("RFC 3339")
}

fn id_of(endpoint: &Value) -> String {
    endpoint["id"].as_str().expect("id").to_owned()
}

fn path_of(endpoint: &Value) -> String {
    format!("/api/endpoints/{}", id_of(endpoint))
}

/// The `details` of a `422 validation_failed`, as (field, message) pairs.
fn details(status: StatusCode, body: &Value) -> Vec<(String, String)> {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "validation_failed", "{body}");
    body["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                d["field"].as_str().expect("field").to_owned(),
                d["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect()
}

fn fields(status: StatusCode, body: &Value) -> Vec<String> {
    details(status, body).into_iter().map(|(f, _)| f).collect()
}

async fn spawn_with_cap(cap: u32) -> TestApp {
    let db = TestDb::new().await.expect("test database");
    TestApp::spawn_on(&db.url, |c| c.max_endpoints_per_org = cap).await
}

#[tokio::test]
async fn an_endpoint_lives_from_create_to_delete_with_exact_answers_and_rows() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "Acme").await;

    // Create: every field given.
    let (status, headers, created) = acme
        .send(
            Method::POST,
            "/api/endpoints",
            Some(&json!({
                "url": "http://127.0.0.1:9/Billing?x=1",
                "description": "Billing service",
                "event_types": ["invoice.*", "order.created"],
                "enabled": true,
                "headers": {"X-Tenant": "acme"},
                "rate_limit_per_second": 25,
                "unknown_field": "ignored"
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let mut expected_fields = ENDPOINT_FIELDS.to_vec();
    expected_fields.push("signing_secret");
    expected_fields.sort_unstable();
    assert_eq!(field_names(&created), expected_fields);
    let id = id_of(&created);
    assert_eq!(Uuid::parse_str(&id).expect("uuid").get_version_num(), 7);
    assert_eq!(
        headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("/api/endpoints/{id}").as_str())
    );
    let secret = created["signing_secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(signing::secret_key(secret).map(|k| k.len()), Some(32));
    let created_at = created["created_at"].as_str().expect("created_at");
    assert!(created_at.ends_with('Z'), "{created_at}");
    assert_eq!(created["updated_at"], created_at);
    let shown = json!({
        "id": id,
        "url": "http://127.0.0.1:9/Billing?x=1",
        "description": "Billing service",
        "event_types": ["invoice.*", "order.created"],
        "enabled": true,
        "disabled_reason": null,
        "headers": {"X-Tenant": "acme"},
        "rate_limit_per_second": 25,
        "created_at": created_at,
        "updated_at": created_at,
        "default": false,
    });
    let mut with_secret = shown.clone();
    with_secret["signing_secret"] = json!(secret);
    assert_eq!(created, with_secret);
    let stored = row(&app, &id).await.expect("row");
    assert_eq!(stored["organization_id"], acme.org_id.to_string());
    assert_eq!(stored["signing_secret"], secret);
    assert_eq!(stored["event_types"], json!(["invoice.*", "order.created"]));
    assert_eq!(stored["headers"], json!({"X-Tenant": "acme"}));
    assert_eq!(stored["is_default"], false);
    assert_eq!(stored["disabled_reason"], Value::Null);

    // Read it back: the same, without the secret.
    assert_eq!(
        acme.call(Method::GET, &path_of(&created), None).await,
        (StatusCode::OK, shown.clone())
    );
    let (status, list) = acme.call(Method::GET, "/api/endpoints", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"endpoints": [shown], "pagination": {"limit": 100, "has_more": false}, "next_cursor": null})
    );

    // Defaults: only a URL (stored normalised).
    let minimal = acme.create(json!({"url": "http://LOCALHOST:9"})).await;
    assert_eq!(minimal["url"], "http://localhost:9/");
    assert_eq!(minimal["description"], "");
    assert_eq!(minimal["event_types"], json!(["*"]));
    assert_eq!(minimal["enabled"], true);
    assert_eq!(minimal["headers"], json!({}));
    assert_eq!(minimal["rate_limit_per_second"], Value::Null);
    assert_ne!(
        minimal["signing_secret"], secret,
        "each endpoint has its own secret"
    );
    // Created disabled.
    let off = acme
        .create(json!({"url": "http://127.0.0.1:9/off", "enabled": false}))
        .await;
    assert_eq!(
        (&off["enabled"], &off["disabled_reason"]),
        (&json!(false), &json!("manual"))
    );
    assert_eq!(acme.rows().await, 3);

    // Patch: disable, change the URL, patterns, description; the rest stays.
    let (status, patched) = acme
        .call(
            Method::PATCH,
            &path_of(&created),
            Some(
                &json!({"enabled": false, "url": "http://127.0.0.1:9/v2", "description": "",
                         "event_types": ["*", "*"]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(field_names(&patched), {
        let mut f = ENDPOINT_FIELDS.to_vec();
        f.sort_unstable();
        f
    });
    assert_eq!(patched["url"], "http://127.0.0.1:9/v2");
    assert_eq!(patched["description"], "");
    assert_eq!(patched["event_types"], json!(["*"]));
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["disabled_reason"], "manual");
    assert_eq!(patched["headers"], json!({"X-Tenant": "acme"}));
    assert_eq!(patched["rate_limit_per_second"], 25);
    assert_eq!(patched["created_at"], created_at);
    assert!(
        instant(&patched["updated_at"]) > instant(&created["created_at"]),
        "{patched}"
    );
    let stored = row(&app, &id).await.expect("row");
    assert_eq!(stored["url"], "http://127.0.0.1:9/v2");
    assert_eq!(stored["disabled_reason"], "manual");
    assert_eq!(stored["event_types"], json!(["*"]));
    assert_eq!(stored["signing_secret"], secret, "a PATCH keeps the secret");

    // A failing endpoint enabled again: the reason is cleared.
    sqlx::query("UPDATE endpoints SET disabled_reason = 'failing' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.db)
        .await
        .expect("mark failing");
    let (status, enabled) = acme
        .call(Method::PATCH, &path_of(&created), Some(&json!({"enabled": true})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&enabled["enabled"], &enabled["disabled_reason"]),
        (&json!(true), &Value::Null)
    );
    assert_eq!(row(&app, &id).await.expect("row")["disabled_reason"], Value::Null);

    // `null` removes the rate limit; an empty patch changes nothing but `updated_at`.
    let (status, unlimited) = acme
        .call(
            Method::PATCH,
            &path_of(&created),
            Some(&json!({"rate_limit_per_second": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(unlimited["rate_limit_per_second"], Value::Null);
    assert_eq!(
        row(&app, &id).await.expect("row")["rate_limit_per_second"],
        Value::Null
    );
    let (status, same) = acme
        .call(Method::PATCH, &path_of(&created), Some(&json!({})))
        .await;
    assert_eq!(status, 200);
    let mut unchanged = unlimited.clone();
    unchanged["updated_at"] = same["updated_at"].clone();
    assert_eq!(same, unchanged);

    // Delete: 204 with no body; the row is gone, and so is the endpoint.
    let (status, _, body) = acme.send(Method::DELETE, &path_of(&created), None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(row(&app, &id).await, None);
    assert_eq!(acme.rows().await, 2);
    for method in [Method::GET, Method::DELETE, Method::PATCH] {
        let body = (method == Method::PATCH).then(|| json!({}));
        let (status, answer) = acme.call(method.clone(), &path_of(&created), body.as_ref()).await;
        assert_eq!(status, 404, "{method}");
        assert_eq!(
            answer,
            json!({"error": "endpoint not found", "code": "endpoint_not_found"})
        );
    }
}

#[tokio::test]
async fn every_refused_header_name_is_422_naming_the_header_whatever_its_case() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "Acme").await;
    let target = acme.create(json!({"url": "http://127.0.0.1:9/"})).await;
    for name in [
        "content-type",
        "Content-Length",
        "HOST",
        "User-Agent",
        "connection",
        "Transfer-Encoding",
        "webhook-id",
        "Webhook-Signature",
        "webhook-anything",
        "X-Event-ID",
        "x-event-type",
        "x-event-",
    ] {
        let body = json!({"url": "http://127.0.0.1:9/", "headers": {"X-Fine": "ok", name: "v"}});
        let (status, answer) = acme.call(Method::POST, "/api/endpoints", Some(&body)).await;
        let found = details(status, &answer);
        assert_eq!(found.len(), 1, "{name}: {answer}");
        assert_eq!(found[0].0, format!("headers.{name}"));
        assert!(found[0].1.starts_with("may not be set"), "{name}: {}", found[0].1);
        // PATCH refuses it the same way.
        let patch = json!({"headers": {name: "v"}});
        let (status, answer) = acme.call(Method::PATCH, &path_of(&target), Some(&patch)).await;
        assert_eq!(fields(status, &answer), [format!("headers.{name}")]);
    }
    // Other problems with headers, each named.
    let too_many: serde_json::Map<String, Value> = (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let cases = [
        (json!(too_many), vec!["headers"]),
        (json!(["X-A", "v"]), vec!["headers"]),
        (json!("X-A: v"), vec!["headers"]),
        (json!({"X-A": "1", "x-a": "2"}), vec!["headers.x-a"]),
        (
            json!({"bad name": "v", "X-Ok": 5}),
            vec!["headers.X-Ok", "headers.bad name"],
        ),
        (json!({"X-Nl": "a\r\nInjected: yes"}), vec!["headers.X-Nl"]),
        (json!({"X-Long": "v".repeat(1025)}), vec!["headers.X-Long"]),
        (json!({"": "v"}), vec!["headers."]),
    ];
    for (headers, expected) in cases {
        let body = json!({"url": "http://127.0.0.1:9/", "headers": headers});
        let (status, answer) = acme.call(Method::POST, "/api/endpoints", Some(&body)).await;
        assert_eq!(fields(status, &answer), expected, "{headers}");
    }
    // At the limits: 20 headers, values of 1,024 characters.
    let twenty: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("X-H{i}"), json!("v".repeat(1024))))
        .collect();
    acme.create(json!({"url": "http://127.0.0.1:9/", "headers": twenty}))
        .await;
    assert_eq!(acme.rows().await, 2, "nothing refused was stored");
    // A repeated key in the body itself is refused too.
    let raw = r#"{"url": "http://127.0.0.1:9/", "headers": {"X-A": "1", "X-A": "2"}}"#;
    let res = app
        .client
        .post(app.url("/api/endpoints"))
        .header("X-API-Key", &acme.key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(raw)
        .send()
        .await
        .expect("request");
    let status = res.status();
    let answer: Value = res.json().await.expect("json");
    assert_eq!(fields(status, &answer), ["headers.X-A"]);
}

#[tokio::test]
async fn each_bad_pattern_form_is_422_naming_the_pattern() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "Acme").await;
    let target = acme.create(json!({"url": "http://127.0.0.1:9/"})).await;
    for bad in [
        json!(""),
        json!("**"),
        json!("order*"),
        json!("*.created"),
        json!("order.*.added"),
        json!("order.**"),
        json!(".*"),
        json!("-x.*"),
        json!("order .*"),
        json!("ordér"),
        json!("order.*x"),
        json!("a\u{0}"),
        json!("a".repeat(256)),
        json!(5),
        json!(null),
        json!(["*"]),
    ] {
        let body = json!({"url": "http://127.0.0.1:9/", "event_types": ["ok.*", bad]});
        let (status, answer) = acme.call(Method::POST, "/api/endpoints", Some(&body)).await;
        assert_eq!(fields(status, &answer), ["event_types[1]"], "{bad}");
        let patch = json!({"event_types": [bad]});
        let (status, answer) = acme.call(Method::PATCH, &path_of(&target), Some(&patch)).await;
        assert_eq!(fields(status, &answer), ["event_types[0]"], "{bad}");
    }
    let hundred_and_one: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    for bad in [json!([]), json!("*"), json!({"*": true}), json!(hundred_and_one)] {
        let body = json!({"url": "http://127.0.0.1:9/", "event_types": bad});
        let (status, answer) = acme.call(Method::POST, "/api/endpoints", Some(&body)).await;
        assert_eq!(fields(status, &answer), ["event_types"], "{bad}");
    }
    // The three forms, at the limit of 100, repeats folded.
    let mut hundred: Vec<String> = (0..97).map(|i| format!("t{i}")).collect();
    hundred.extend(["*".into(), "order.*".into(), "t0".into()]);
    let created = acme
        .create(json!({"url": "http://127.0.0.1:9/", "event_types": hundred}))
        .await;
    assert_eq!(created["event_types"].as_array().map(Vec::len), Some(99));
    assert_eq!(created["event_types"][97], "*");
    assert_eq!(created["event_types"][98], "order.*");
    assert_eq!(acme.rows().await, 2);
}

#[tokio::test]
async fn a_url_follows_the_rules_of_webhook_url() {
    let db = TestDb::new().await.expect("test database");
    let app = TestApp::spawn_on(&db.url, |c| c.common.allow_private_webhooks = false).await;
    let acme = Tenant::new(&app, "Acme").await;
    for bad in [
        json!("ftp://example.com/"),
        json!("https://user:pw@example.com/"),
        json!("not a url"),
        json!(format!("https://example.com/{}", "a".repeat(2100))),
        json!(5),
    ] {
        let (status, answer) = acme
            .call(Method::POST, "/api/endpoints", Some(&json!({"url": bad})))
            .await;
        assert_eq!(fields(status, &answer), ["url"], "{bad}");
    }
    let (status, answer) = acme.call(Method::POST, "/api/endpoints", Some(&json!({}))).await;
    assert_eq!(
        details(status, &answer),
        [("url".to_owned(), "is required".to_owned())]
    );
    for internal in [
        "http://127.0.0.1:9/",
        "http://10.0.0.1/",
        "http://localhost/",
        "http://[::1]/",
    ] {
        let (status, answer) = acme
            .call(Method::POST, "/api/endpoints", Some(&json!({"url": internal})))
            .await;
        assert_eq!(status, 422, "{internal}");
        assert_eq!(answer["code"], "webhook_url_not_allowed", "{internal}");
        assert!(
            !answer["error"].as_str().unwrap_or_default().contains("127.0"),
            "{answer}"
        );
    }
    assert_eq!(acme.rows().await, 0);
}

#[tokio::test]
async fn concurrent_creates_cannot_go_over_the_cap() {
    let app = spawn_with_cap(3).await;
    let acme = Tenant::new(&app, "Acme").await;
    let other = Tenant::new(&app, "Other").await;
    let creates = (0..12).map(|i| {
        let body = json!({"url": format!("http://127.0.0.1:9/{i}")});
        let acme = &acme;
        async move { acme.call(Method::POST, "/api/endpoints", Some(&body)).await }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 422)
        .map(|(_, b)| b)
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!((created, refused.len()), (3, 9), "{statuses:?}");
    for body in refused {
        assert_eq!(
            *body,
            json!({"error": "an organisation may have at most 3 endpoints: delete one first",
                   "code": "too_many_endpoints", "limit": 3})
        );
    }
    assert_eq!(acme.rows().await, 3);
    // Another organisation has a cap of its own.
    other.create(json!({"url": "http://127.0.0.1:9/"})).await;
    // Room again once one is deleted.
    let (_, list) = acme.call(Method::GET, "/api/endpoints", None).await;
    let first = &list["endpoints"][0];
    assert_eq!(acme.call(Method::DELETE, &path_of(first), None).await.0, 204);
    acme.create(json!({"url": "http://127.0.0.1:9/again"})).await;
    assert_eq!(acme.rows().await, 3);
}

#[tokio::test]
async fn sensitive_header_values_are_masked_on_every_read_and_a_mask_sent_back_keeps_them() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "Acme").await;
    let created = acme
        .create(json!({"url": "http://127.0.0.1:9/", "headers": {
            "Authorization": "Bearer s3cret", "X-Api-Key": "k3y", "Cookie": "session=abc",
            "X-Tenant": "acme"}}))
        .await;
    let masked = json!({"Authorization": "********", "Cookie": "********", "X-Api-Key": "********",
                        "X-Tenant": "acme"});
    assert_eq!(created["headers"], masked);
    let (_, one) = acme.call(Method::GET, &path_of(&created), None).await;
    assert_eq!(one["headers"], masked);
    let (_, list) = acme.call(Method::GET, "/api/endpoints", None).await;
    assert_eq!(list["endpoints"][0]["headers"], masked);
    let real = json!({"Authorization": "Bearer s3cret", "Cookie": "session=abc", "X-Api-Key": "k3y",
                      "X-Tenant": "acme"});
    assert_eq!(row(&app, &id_of(&created)).await.expect("row")["headers"], real);

    // Send the read's headers back with one change and one removal: the masked ones are kept.
    let (status, patched) = acme
        .call(
            Method::PATCH,
            &path_of(&created),
            Some(&json!({"headers": {
            "authorization": "********", "X-Api-Key": "********", "X-Tenant": "beta"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["headers"],
        json!({"X-Api-Key": "********", "X-Tenant": "beta", "authorization": "********"})
    );
    let kept = json!({"X-Api-Key": "k3y", "X-Tenant": "beta", "authorization": "Bearer s3cret"});
    assert_eq!(row(&app, &id_of(&created)).await.expect("row")["headers"], kept);

    // A new value replaces the secret; the mask for a header that is not stored is refused.
    let (status, _) = acme
        .call(
            Method::PATCH,
            &path_of(&created),
            Some(&json!({"headers": {"X-Api-Key": "new"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        row(&app, &id_of(&created)).await.expect("row")["headers"],
        json!({"X-Api-Key": "new"})
    );
    let (status, answer) = acme
        .call(
            Method::PATCH,
            &path_of(&created),
            Some(&json!({"headers": {"X-Auth-Token": "********"}})),
        )
        .await;
    assert_eq!(fields(status, &answer), ["headers.X-Auth-Token"]);
    let (status, answer) = acme
        .call(
            Method::POST,
            "/api/endpoints",
            Some(&json!({"url": "http://127.0.0.1:9/",
            "headers": {"Authorization": "********"}})),
        )
        .await;
    assert_eq!(fields(status, &answer), ["headers.Authorization"]);
    assert_eq!(
        row(&app, &id_of(&created)).await.expect("row")["headers"],
        json!({"X-Api-Key": "new"})
    );
    // The mask is an ordinary value for a header that is not sensitive.
    let (status, literal) = acme
        .call(
            Method::PATCH,
            &path_of(&created),
            Some(&json!({"headers": {"X-Stars": "********"}})),
        )
        .await;
    assert_eq!(
        (status, &literal["headers"]),
        (StatusCode::OK, &json!({"X-Stars": "********"}))
    );
    assert_eq!(acme.rows().await, 1);
}

#[tokio::test]
async fn another_organisations_endpoint_answers_exactly_as_an_unknown_one() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "Acme").await;
    let intruder = Tenant::new(&app, "Intruder").await;
    let theirs = acme
        .create(json!({"url": "http://127.0.0.1:9/", "description": "acme's"}))
        .await;
    let before = row(&app, &id_of(&theirs)).await.expect("row");
    let not_found = json!({"error": "endpoint not found", "code": "endpoint_not_found"});
    let unknown = format!("/api/endpoints/{}", Uuid::now_v7());
    for path in [
        path_of(&theirs),
        unknown,
        "/api/endpoints/not-a-uuid".into(),
        "/api/endpoints/%00".into(),
    ] {
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let body =
                (method == Method::PATCH).then(|| json!({"description": "mine now", "enabled": false}));
            let (status, answer) = intruder.call(method.clone(), &path, body.as_ref()).await;
            assert_eq!(
                (status, &answer),
                (StatusCode::NOT_FOUND, &not_found),
                "{method} {path}"
            );
        }
    }
    let (status, list) = intruder.call(Method::GET, "/api/endpoints", None).await;
    assert_eq!((status, &list["endpoints"]), (StatusCode::OK, &json!([])));
    assert_eq!(row(&app, &id_of(&theirs)).await, Some(before));
    assert_eq!(intruder.version().await, 0, "failed changes are not announced");
    // Without a key, as every other route.
    let res = app
        .client
        .get(app.url("/api/endpoints"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
    let answer: Value = res.json().await.expect("json");
    assert_eq!(answer["code"], "missing_api_key");
}

#[tokio::test]
async fn every_change_bumps_the_version_and_is_announced_on_the_channel() {
    let app = spawn_with_cap(2).await;
    let acme = Tenant::new(&app, "Acme").await;
    let mut listener = PgListener::connect(&app.db_url).await.expect("listener");
    listener.listen(CHANNEL).await.expect("LISTEN");
    assert_eq!(CHANNEL, "triggers_endpoints");

    async fn heard(listener: &mut PgListener, org_id: Uuid) {
        let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification within 5 s")
            .expect("notification");
        assert_eq!(
            (note.channel(), note.payload()),
            (CHANNEL, org_id.to_string().as_str())
        );
    }
    async fn silent(listener: &mut PgListener) {
        let note = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
        assert!(note.is_err(), "unexpected notification: {note:?}");
    }

    assert_eq!(acme.version().await, 0);
    let first = acme.create(json!({"url": "http://127.0.0.1:9/1"})).await;
    heard(&mut listener, acme.org_id).await;
    assert_eq!(acme.version().await, 1);
    acme.create(json!({"url": "http://127.0.0.1:9/2"})).await;
    heard(&mut listener, acme.org_id).await;
    assert_eq!(acme.version().await, 2);
    let (status, _) = acme
        .call(Method::PATCH, &path_of(&first), Some(&json!({"enabled": false})))
        .await;
    assert_eq!(status, 200);
    heard(&mut listener, acme.org_id).await;
    assert_eq!(acme.version().await, 3);
    let (status, _) = acme.call(Method::PATCH, &path_of(&first), Some(&json!({}))).await;
    assert_eq!(status, 200);
    heard(&mut listener, acme.org_id).await;
    assert_eq!(acme.version().await, 4);

    // What changes nothing is not announced: over the cap, unknown ids, invalid bodies, a mask
    // with nothing stored.
    let unknown = format!("/api/endpoints/{}", Uuid::now_v7());
    let first_path = path_of(&first);
    let failures: [(Method, &str, Value); 5] = [
        (
            Method::POST,
            "/api/endpoints",
            json!({"url": "http://127.0.0.1:9/3"}),
        ),
        (Method::PATCH, unknown.as_str(), json!({"enabled": true})),
        (Method::DELETE, unknown.as_str(), Value::Null),
        (Method::PATCH, first_path.as_str(), json!({"event_types": []})),
        (
            Method::PATCH,
            first_path.as_str(),
            json!({"headers": {"Authorization": "********"}}),
        ),
    ];
    for (method, path, body) in &failures {
        let body = (!body.is_null()).then_some(body);
        let (status, answer) = acme.call(method.clone(), path, body).await;
        assert!(
            status == 404 || status == 422,
            "{method} {path}: {status} {answer}"
        );
    }
    silent(&mut listener).await;
    assert_eq!(acme.version().await, 4);

    assert_eq!(acme.call(Method::DELETE, &path_of(&first), None).await.0, 204);
    heard(&mut listener, acme.org_id).await;
    assert_eq!(acme.version().await, 5);
    silent(&mut listener).await;
}

#[tokio::test]
async fn cursor_pagination_walks_every_endpoint_once_oldest_first() {
    let app = spawn_with_cap(150).await;
    let acme = Tenant::new(&app, "Acme").await;
    let other = Tenant::new(&app, "Other").await;
    let mut ids = Vec::new();
    for i in 0..103 {
        let created = acme
            .create(json!({"url": format!("http://127.0.0.1:9/{i}")}))
            .await;
        ids.push(id_of(&created));
        if i % 10 == 0 {
            other.create(json!({"url": "http://127.0.0.1:9/"})).await;
        }
    }
    let ids_in = |page: &Value| -> Vec<String> {
        page["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(id_of)
            .collect()
    };

    // The default page is 100.
    let (status, page) = acme.call(Method::GET, "/api/endpoints", None).await;
    assert_eq!(status, 200);
    assert_eq!(ids_in(&page), ids[..100]);
    assert_eq!(page["pagination"], json!({"limit": 100, "has_more": true}));
    let cursor = page["next_cursor"].as_str().expect("next_cursor");
    let (_, page) = acme
        .call(Method::GET, &format!("/api/endpoints?cursor={cursor}"), None)
        .await;
    assert_eq!(ids_in(&page), ids[100..]);
    assert_eq!(page["pagination"], json!({"limit": 100, "has_more": false}));
    assert_eq!(page["next_cursor"], Value::Null);

    // Small pages, with an endpoint created and one deleted while paging.
    let mut seen = Vec::new();
    let mut path = "/api/endpoints?limit=40".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = acme.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids_in(&page));
        pages += 1;
        if pages == 1 {
            let late = acme.create(json!({"url": "http://127.0.0.1:9/late"})).await;
            ids.push(id_of(&late));
            let gone = ids.remove(10);
            assert_eq!(
                acme.call(Method::DELETE, &format!("/api/endpoints/{gone}"), None)
                    .await
                    .0,
                204
            );
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["pagination"]["has_more"], true);
                path = format!("/api/endpoints?limit=40&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected = ids.clone();
    expected.insert(10, seen[10].clone()); // read before it was deleted
    assert_eq!(seen, expected);

    // Bad parameters.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=1e3",
        "cursor=nope",
        "cursor=%00",
    ] {
        let (status, answer) = acme
            .call(Method::GET, &format!("/api/endpoints?{query}"), None)
            .await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["code"], "validation_failed", "{query}");
    }
}

#[tokio::test]
async fn no_bad_input_answers_500() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "Acme").await;
    let target = acme.create(json!({"url": "http://127.0.0.1:9/"})).await;
    let huge = "1".repeat(400);
    let raw_bodies = [
        r#"{"url": "http://127.0.0.1:9/", "description": "a\u0000b"}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "event_types": ["a\u0000"]}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "headers": {"X-A\u0000": "v"}}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "headers": {"X-A": "v\u0000"}}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "rate_limit_per_second": 1e400}"#.to_owned(),
        format!(r#"{{"url": "http://127.0.0.1:9/", "rate_limit_per_second": {huge}}}"#),
        r#"{"url": "http://127.0.0.1:9/", "rate_limit_per_second": -9223372036854775809}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "rate_limit_per_second": 10.5}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "rate_limit_per_second": "5"}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "enabled": "true"}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "enabled": 1}"#.to_owned(),
        r#"{"url": ["http://127.0.0.1:9/"]}"#.to_owned(),
        r#"{"url": {"href": "x"}}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "description": ["x"]}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "event_types": "order.*"}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "event_types": [[["*"]]]}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "headers": {"X-A": {"nested": 1}}}"#.to_owned(),
        r#"{"url": "http://127.0.0.1:9/", "url": "http://127.0.0.1:9/"}"#.to_owned(),
        r#"[{"url": "http://127.0.0.1:9/"}]"#.to_owned(),
        r#""http://127.0.0.1:9/""#.to_owned(),
        "null".to_owned(),
        format!(
            r#"{{"url": "http://127.0.0.1:9/", "description": "{}"}}"#,
            "x".repeat(10_000)
        ),
        format!(
            r#"{{"url": "http://127.0.0.1:9/", "headers": {}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        ),
    ];
    for (i, body) in raw_bodies.iter().enumerate() {
        for (method, path) in [
            (Method::POST, "/api/endpoints".to_owned()),
            (Method::PATCH, path_of(&target)),
        ] {
            let res = app
                .client
                .request(method.clone(), app.url(&path))
                .header("X-API-Key", &acme.key)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("request");
            let status = res.status();
            let answer: Value = res.json().await.expect("JSON answer");
            assert!(
                status == 400 || status == 422,
                "{method} body #{i}: {status} {answer}"
            );
            let code = answer["code"].as_str().expect("code");
            assert!(
                code == "validation_failed" || code == "invalid_json",
                "{method} body #{i}: {answer}"
            );
        }
    }
    // Malformed JSON, the wrong content type, an oversized body.
    for (content_type, body, expected) in [
        ("application/json", "{\"url\": ".to_owned(), (400, "invalid_json")),
        (
            "text/plain",
            r#"{"url": "http://127.0.0.1:9/"}"#.to_owned(),
            (415, "unsupported_media_type"),
        ),
        (
            "application/json",
            format!(r#"{{"url": "{}"}}"#, "a".repeat(2 * 1024 * 1024)),
            (413, "payload_too_large"),
        ),
    ] {
        let res = app
            .client
            .post(app.url("/api/endpoints"))
            .header("X-API-Key", &acme.key)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let answer: Value = res.json().await.expect("JSON answer");
        assert_eq!(
            (status, answer["code"].as_str()),
            (expected.0, Some(expected.1)),
            "{answer}"
        );
    }
    assert_eq!(acme.rows().await, 1);
    assert_eq!(
        row(&app, &id_of(&target)).await.expect("row")["url"],
        "http://127.0.0.1:9/"
    );

    // A NUL in a URL's path is percent-encoded by normalisation, as for `webhook_url`: no NUL
    // reaches the database.
    let created = acme.create(json!({"url": "http://127.0.0.1:9/a\u{0}b"})).await;
    assert_eq!(created["url"], "http://127.0.0.1:9/a%00b");
}
