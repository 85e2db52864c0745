//! Console sessions over HTTP (API.md, "Console"): portal links that work once, session tokens
//! scoped to one organisation, read-only sessions, revocation and expiry, and the inbox's
//! `since` that the console's time filter uses.

use std::collections::BTreeSet;

use crate::common::{TestApp, detail_fields, error_of, field_names};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// An organisation seen from the outside: its key and id.
struct Org {
    key: String,
    id: String,
}

async fn org(app: &TestApp, name: &str) -> Org {
    let (key, id) = app.create_org(name, "pro").await;
    Org { key, id }
}

/// Assert that an answer is the error `code` with `status`; `context` says which call it was.
#[track_caller]
fn refused(answer: (StatusCode, Value), status: u16, code: &str, context: &str) {
    let (got, body) = answer;
    assert_eq!(
        (got.as_u16(), body["code"].as_str()),
        (status, Some(code)),
        "{context}: {body}"
    );
}

/// `POST /api/portal/sessions` with this body (`None`: no body): status and JSON.
async fn create_session(app: &TestApp, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = app
        .client
        .post(app.url("/api/portal/sessions"))
        .header("X-API-Key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    error_of(req.send().await.expect("request")).await
}

/// The token in a portal link's fragment.
fn link_token(created: &Value) -> String {
    let url = created["url"].as_str().expect("url");
    url.split_once("#portal=")
        .expect("a #portal= fragment")
        .1
        .to_owned()
}

/// `POST /api/portal/exchange`: status and JSON.
async fn exchange(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url("/api/portal/exchange"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("request");
    error_of(res).await
}

/// A live session of `org` (through a link and its exchange): (session id, session token).
async fn session_of(app: &TestApp, org: &Org, read_only: bool) -> (String, String) {
    let (status, created) = create_session(app, &org.key, Some(json!({ "read_only": read_only }))).await;
    assert_eq!(status, 201, "{created}");
    let (status, opened) = exchange(app, &link_token(&created)).await;
    assert_eq!(status, 200, "{opened}");
    (
        opened["id"].as_str().expect("id").to_owned(),
        opened["session_token"]
            .as_str()
            .expect("session_token")
            .to_owned(),
    )
}

/// A call with a bearer credential: status and body (JSON, or `Null` for an empty body).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(bearer);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered non-JSON: {text}"))
    };
    (status, body)
}

/// Send an event of `org`: its id.
async fn send_event(app: &TestApp, org: &Org, event_type: &str, payload: Value) -> String {
    let body = json!({ "type": event_type, "payload": payload });
    let (status, body) = call(app, Method::POST, "/api/events", &org.key, Some(body)).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// An event as its organisation's key reads it.
async fn event_of(app: &TestApp, org: &Org, id: &str) -> Value {
    let (status, event) = call(app, Method::GET, &format!("/api/events/{id}"), &org.key, None).await;
    assert_eq!(status, 200, "{event}");
    event
}

#[tokio::test]
async fn a_portal_link_carries_its_token_in_the_fragment_and_works_exactly_once() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme").await;
    let event = send_event(&app, &acme, "order.created", json!({"order": 1})).await;

    let before = chrono::Utc::now();
    let (status, created) = create_session(&app, &acme.key, None).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(field_names(&created), ["expires_at", "id", "read_only", "url"]);
    assert_eq!(created["read_only"], false);
    let url = created["url"].as_str().expect("url");
    let token = link_token(&created);
    assert_eq!(
        url,
        format!("{}/console#portal={token}", app.base),
        "the link opens this instance's console"
    );
    assert!(
        token.starts_with("trg_link_") && token.len() == "trg_link_".len() + 43,
        "{token}"
    );
    let expires: chrono::DateTime<chrono::Utc> = created["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    let lifetime = (expires - before).num_seconds();
    assert!(
        (3590..=3610).contains(&lifetime),
        "default lifetime is an hour, got {lifetime} s"
    );

    // Only a digest of the link's token is stored, never the token.
    let (link_digest, token_digest): (Option<Vec<u8>>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT link_digest, token_digest FROM portal_sessions WHERE id = $1")
            .bind(Uuid::parse_str(created["id"].as_str().expect("id")).expect("uuid"))
            .fetch_one(&app.db)
            .await
            .expect("the session's row");
    assert_eq!(
        link_digest.as_deref(),
        Some(Sha256::digest(token.as_bytes()).as_slice())
    );
    assert_eq!(token_digest, None);

    let (status, opened) = exchange(&app, &token).await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(
        field_names(&opened),
        [
            "expires_at",
            "id",
            "organization_id",
            "read_only",
            "session_token"
        ]
    );
    assert_eq!(opened["id"], created["id"]);
    assert_eq!(opened["organization_id"], acme.id.as_str());
    assert_eq!(opened["expires_at"], created["expires_at"]);
    let session = opened["session_token"].as_str().expect("session_token");
    assert!(session.starts_with("trg_session_"), "{session}");

    refused(
        exchange(&app, &token).await,
        401,
        "invalid_portal_link",
        "the link again",
    );
    refused(
        exchange(&app, "trg_link_not-a-token").await,
        401,
        "invalid_portal_link",
        "no link",
    );
    refused(
        exchange(&app, session).await,
        401,
        "invalid_portal_link",
        "a session token",
    );

    // The session token reads the organisation's data, as the API key does.
    let (status, inbox) = call(&app, Method::GET, "/api/inbox", session, None).await;
    assert_eq!(
        (status, &inbox["events"][0]["id"]),
        (StatusCode::OK, &json!(event)),
        "{inbox}"
    );
    let (status, keys) = call(&app, Method::GET, "/api/keys", session, None).await;
    assert_eq!(
        (status, &keys["organization_name"]),
        (StatusCode::OK, &json!("Acme"))
    );
    let (status, one) = call(&app, Method::GET, &format!("/api/events/{event}"), session, None).await;
    assert_eq!((status, &one["type"]), (StatusCode::OK, &json!("order.created")));
}

#[tokio::test]
async fn session_requests_are_validated_with_every_problem_in_one_422() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme").await;

    let both_bad = json!({"expires_in_seconds": 59, "read_only": "yes"});
    let (status, body) = create_session(&app, &acme.key, Some(both_bad)).await;
    let fields = detail_fields(&body);
    assert_eq!(fields, ["expires_in_seconds", "read_only"]);
    refused((status, body), 422, "validation_failed", "both fields bad");
    for bad in [json!(86_401), json!(-1), json!(600.5), json!("600")] {
        let answer = create_session(&app, &acme.key, Some(json!({"expires_in_seconds": bad}))).await;
        refused(answer, 422, "validation_failed", &bad.to_string());
    }

    for (lifetime, read_only) in [(60, true), (86_400, false)] {
        let before = chrono::Utc::now();
        let body = json!({"expires_in_seconds": lifetime, "read_only": read_only});
        let (status, body) = create_session(&app, &acme.key, Some(body)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["read_only"], read_only);
        let expires: chrono::DateTime<chrono::Utc> = body["expires_at"]
            .as_str()
            .expect("expires_at")
            .parse()
            .expect("time");
        let seconds = (expires - before).num_seconds();
        assert!(
            (lifetime - 10..=lifetime + 10).contains(&seconds),
            "{lifetime}: {seconds}"
        );
    }
    let nulls = json!({"expires_in_seconds": null, "read_only": null});
    let (status, body) = create_session(&app, &acme.key, Some(nulls)).await;
    assert_eq!(
        (status, &body["read_only"]),
        (StatusCode::CREATED, &json!(false)),
        "null is absent"
    );

    for (content_type, body, code) in [
        ("text/plain", "{}", "unsupported_media_type"),
        ("application/json", "{", "invalid_json"),
    ] {
        let res = app
            .client
            .post(app.url("/api/portal/sessions"))
            .header("X-API-Key", &acme.key)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(error_of(res).await.1["code"], code, "{content_type} {body}");
    }
    let answer = create_session(&app, "trg_live_000000000000_nope", None).await;
    refused(answer, 401, "invalid_api_key", "an unknown key");
}

#[tokio::test]
async fn a_read_only_session_reads_everything_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme").await;
    let event = send_event(&app, &acme, "order.created", json!({"order": 1})).await;
    let (id, session) = session_of(&app, &acme, true).await;

    for path in [
        "/api/inbox",
        "/api/keys",
        "/api/webhook/config",
        &format!("/api/events/{event}"),
    ] {
        let (status, body) = call(&app, Method::GET, path, &session, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let changes = [
        (Method::POST, format!("/api/ack/{event}"), None),
        (
            Method::POST,
            "/api/ack".to_owned(),
            Some(json!({"event_ids": [event]})),
        ),
        (Method::POST, format!("/api/events/{event}/redeliver"), None),
        (
            Method::POST,
            "/api/events".to_owned(),
            Some(json!({"type": "x", "payload": {}})),
        ),
        (
            Method::POST,
            "/api/webhook/config".to_owned(),
            Some(json!({"webhook_url": "http://127.0.0.1:9/"})),
        ),
        (Method::DELETE, "/api/webhook/config".to_owned(), None),
    ];
    for (method, path, body) in changes {
        let answer = call(&app, method.clone(), &path, &session, body).await;
        refused(answer, 403, "read_only_session", &format!("{method} {path}"));
    }
    let after = event_of(&app, &acme, &event).await;
    assert_eq!(
        (&after["status"], &after["acknowledged_at"]),
        (&json!("pending"), &Value::Null),
        "{after}"
    );

    // Signing out is allowed: it ends the session itself.
    let (status, body) = call(
        &app,
        Method::DELETE,
        &format!("/api/portal/sessions/{id}"),
        &session,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let answer = call(&app, Method::GET, "/api/inbox", &session, None).await;
    refused(answer, 401, "invalid_session", "after signing out");
}

#[tokio::test]
async fn a_session_cannot_rotate_keys_or_manage_portal_sessions_but_can_act_on_events() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme").await;
    let event = send_event(&app, &acme, "order.created", json!({"order": 1})).await;
    let (_, session) = session_of(&app, &acme, false).await;
    let (other_id, other) = session_of(&app, &acme, false).await;

    let refusals = [
        (Method::POST, "/api/keys/rotate".to_owned()),
        (Method::POST, "/api/portal/sessions".to_owned()),
        (Method::DELETE, format!("/api/portal/sessions/{other_id}")),
    ];
    for (method, path) in refusals {
        let answer = call(&app, method.clone(), &path, &session, None).await;
        refused(answer, 403, "api_key_required", &format!("{method} {path}"));
    }
    let (status, _) = call(&app, Method::GET, "/api/keys", &acme.key, None).await;
    assert_eq!(status, 200, "the key was not rotated");
    let (status, _) = call(&app, Method::GET, "/api/inbox", &other, None).await;
    assert_eq!(status, 200, "the other session was not revoked");

    let (status, body) = call(&app, Method::POST, &format!("/api/ack/{event}"), &session, None).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("delivered")),
        "{body}"
    );
}

#[tokio::test]
async fn a_revoked_or_expired_session_is_refused_at_once_with_401_invalid_session() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme").await;
    let (id, session) = session_of(&app, &acme, false).await;
    let revoke = format!("/api/portal/sessions/{id}");

    let (status, body) = call(&app, Method::DELETE, &revoke, &acme.key, None).await;
    assert_eq!(status, 204, "{body}");
    let res = app
        .client
        .get(app.url("/api/inbox"))
        .bearer_auth(&session)
        .send()
        .await
        .expect("request");
    assert!(res.headers().contains_key("www-authenticate"));
    refused(error_of(res).await, 401, "invalid_session", "revoked");
    let answer = call(&app, Method::DELETE, &revoke, &acme.key, None).await;
    refused(answer, 404, "portal_session_not_found", "revoked twice");
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let answer = call(
            &app,
            Method::DELETE,
            &format!("/api/portal/sessions/{bad}"),
            &acme.key,
            None,
        )
        .await;
        refused(answer, 404, "portal_session_not_found", bad);
    }

    // Expiry, and a link whose session expired before it was opened.
    let (_, expiring) = session_of(&app, &acme, false).await;
    let (status, unopened) = create_session(&app, &acme.key, None).await;
    assert_eq!(status, 201);
    sqlx::query(
        "UPDATE portal_sessions
         SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 second'",
    )
    .execute(&app.db)
    .await
    .expect("expire every session");
    let answer = call(&app, Method::GET, "/api/inbox", &expiring, None).await;
    refused(answer, 401, "invalid_session", "expired");
    refused(
        exchange(&app, &link_token(&unopened)).await,
        401,
        "invalid_portal_link",
        "expired link",
    );

    let malformed = format!("trg_session_{}", "x".repeat(10));
    let answer = call(&app, Method::GET, "/api/inbox", &malformed, None).await;
    refused(answer, 401, "invalid_session", "malformed");

    // Creating a session deletes the ended ones.
    let (status, _) = create_session(&app, &acme.key, None).await;
    assert_eq!(status, 201);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM portal_sessions")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(rows, 1, "only the new session is left");
}

/// Every `{param}` of a documented path, filled with the other organisation's id of that kind
/// (by the path segment before it); ids of kinds it has none of are random.
fn fill(path: &str, ids: &[(&str, &str)]) -> String {
    let mut previous = "";
    path.split('/')
        .map(|segment| {
            let filled = if segment.starts_with('{') {
                ids.iter()
                    .find(|(kind, _)| *kind == previous)
                    .map_or_else(|| Uuid::new_v4().to_string(), |(_, id)| (*id).to_owned())
            } else {
                segment.to_owned()
            };
            previous = segment;
            filled
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn a_session_of_one_organisation_reaches_nothing_of_another_through_any_route() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme").await;
    let globex = org(&app, "Globex Secret Name").await;
    let hook = json!({"webhook_url": "http://127.0.0.1:9/globex-hook"});
    let (status, body) = call(&app, Method::POST, "/api/webhook/config", &globex.key, Some(hook)).await;
    assert_eq!(status, 200, "{body}");
    let globex_event = send_event(
        &app,
        &globex,
        "globex.only",
        json!({"marker": "globex-payload-marker"}),
    )
    .await;
    let (globex_session_id, globex_session) = session_of(&app, &globex, false).await;
    let (_, session) = session_of(&app, &acme, false).await;
    send_event(&app, &acme, "acme.event", json!({"n": 1})).await;
    let (_, keys) = call(&app, Method::GET, "/api/keys", &globex.key, None).await;
    let globex_prefix = keys["key_prefix"].as_str().expect("key_prefix").to_owned();
    // Globex's endpoint: its webhook's.
    let (_, endpoints) = call(&app, Method::GET, "/api/endpoints", &globex.key, None).await;
    let globex_endpoint = endpoints["endpoints"][0]["id"]
        .as_str()
        .expect("Globex's default endpoint")
        .to_owned();
    // Globex's recovery of that endpoint (nothing to recover: done at once), and its stats.
    let since = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let recover = format!("/api/endpoints/{globex_endpoint}/recover");
    let (status, started) = call(
        &app,
        Method::POST,
        &recover,
        &globex.key,
        Some(json!({"since": since})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let globex_recovery = started["recovery_id"].as_str().expect("recovery_id").to_owned();
    let mut secrets = vec![
        globex.id.as_str(),
        globex_event.as_str(),
        globex_session_id.as_str(),
        "Globex Secret Name",
        "globex-payload-marker",
        "globex-hook",
        "globex.only",
        globex_prefix.as_str(),
    ];
    secrets.push(globex_endpoint.as_str());
    secrets.push(globex_recovery.as_str());
    let ids = [
        ("recoveries", globex_recovery.as_str()),
        ("events", globex_event.as_str()),
        ("ack", globex_event.as_str()),
        ("sessions", globex_session_id.as_str()),
        ("endpoints", globex_endpoint.as_str()),
    ];
    // Whatever a body of any route might name, it names Globex's ids.
    let body = json!({
        "event_ids": [globex_event],
        "event_id": globex_event,
        "id": globex_event,
        "status": "failed",
        "token": globex_session,
        "since": since,
        "dry_run": true,
    });

    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi");
    let doc: Value = res.json().await.expect("json");
    let mut reached = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let takes_bearer = op["security"]
                .as_array()
                .is_some_and(|list| list.iter().any(|s| s.get("bearer").is_some()));
            if !takes_bearer {
                continue;
            }
            let method: Method = method.to_uppercase().parse().expect("method");
            let url = fill(path, &ids);
            let with_body = [Method::POST, Method::PUT, Method::PATCH].contains(&method);
            let (status, mut answer) = call(
                &app,
                method.clone(),
                &url,
                &session,
                with_body.then(|| body.clone()),
            )
            .await;
            assert!(!status.is_server_error(), "{method} {url}: {status} {answer}");
            // A batch answers the ids it could not find: Globex's, echoed, reveal nothing.
            if let Some(not_found) = answer.as_object_mut().and_then(|o| o.remove("not_found")) {
                assert_eq!(not_found, json!([globex_event]), "{method} {url}");
            }
            let text = answer.to_string();
            for secret in &secrets {
                assert!(!text.contains(secret), "{method} {url} revealed {secret}: {text}");
            }
            if path.contains('{') {
                assert!(
                    matches!(status.as_u16(), 403 | 404 | 422),
                    "{method} {url} reached another organisation's resource: {status} {answer}"
                );
            }
            reached.insert(format!("{method} {path}"));
        }
    }
    for route in [
        "GET /api/events/{id}",
        "POST /api/ack/{id}",
        "POST /api/ack",
        "POST /api/events/{id}/redeliver",
        "GET /api/inbox",
        "DELETE /api/portal/sessions/{id}",
        "GET /api/endpoints/{id}",
        "PATCH /api/endpoints/{id}",
        "DELETE /api/endpoints/{id}",
        "GET /api/endpoints/{id}/deliveries",
        "GET /api/endpoints/{id}/stats",
        "POST /api/endpoints/{id}/recover",
        "GET /api/endpoints/{id}/recoveries/{recovery_id}",
        "POST /api/endpoints/{id}/secret/rotate",
        "POST /api/events/{id}/endpoints/{endpoint_id}/resend",
    ] {
        assert!(reached.contains(route), "{route} was not tried: {reached:?}");
    }
    // What the console reads of an endpoint: Globex's session gets it, Acme's gets the answer of
    // an unknown id, the same as for an id that does not exist at all.
    let unknown = Uuid::new_v4();
    for (path, code) in [
        (format!("/api/endpoints/{globex_endpoint}"), "endpoint_not_found"),
        (
            format!("/api/endpoints/{globex_endpoint}/deliveries"),
            "endpoint_not_found",
        ),
        (
            format!("/api/endpoints/{globex_endpoint}/stats"),
            "endpoint_not_found",
        ),
        (
            format!("/api/endpoints/{globex_endpoint}/recoveries/{globex_recovery}"),
            "endpoint_not_found",
        ),
    ] {
        let (status, answer) = call(&app, Method::GET, &path, &globex_session, None).await;
        assert_eq!(status, 200, "Globex's own session: {path} {answer}");
        let theirs = call(&app, Method::GET, &path, &session, None).await;
        let nobody = call(
            &app,
            Method::GET,
            &path.replace(&globex_endpoint, &unknown.to_string()),
            &session,
            None,
        )
        .await;
        assert_eq!(
            theirs, nobody,
            "{path}: another organisation's endpoint answers as an unknown one"
        );
        refused(theirs, 404, code, &path);
    }
    let (_, listed) = call(&app, Method::GET, "/api/endpoints", &session, None).await;
    assert_eq!(
        listed["endpoints"],
        json!([]),
        "Acme's session lists none of Globex's endpoints"
    );
    // Even with the key of its organisation, no session of Globex's can be revoked.
    let revoke = format!("/api/portal/sessions/{globex_session_id}");
    let answer = call(&app, Method::DELETE, &revoke, &acme.key, None).await;
    refused(
        answer,
        404,
        "portal_session_not_found",
        "Globex's session with Acme's key",
    );

    // Globex is as it was.
    let event = event_of(&app, &globex, &globex_event).await;
    assert_eq!(
        (&event["status"], &event["acknowledged_at"]),
        (&json!("pending"), &Value::Null),
        "{event}"
    );
    let (_, hook) = call(&app, Method::GET, "/api/webhook/config", &globex.key, None).await;
    assert_eq!(hook["webhook_url"], "http://127.0.0.1:9/globex-hook");
    let (status, inbox) = call(&app, Method::GET, "/api/inbox", &globex_session, None).await;
    assert_eq!(
        (status, inbox["pagination"]["total"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{inbox}"
    );
}

#[tokio::test]
async fn the_inbox_lists_the_events_created_since_an_instant() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme").await;
    let mut ids = Vec::new();
    let mut created = Vec::new();
    for n in 0..3 {
        let id = send_event(&app, &acme, "order.created", json!({"n": n})).await;
        let event = event_of(&app, &acme, &id).await;
        created.push(event["created_at"].as_str().expect("created_at").to_owned());
        ids.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let listed = |query: String| {
        let (app, key) = (&app, acme.key.clone());
        async move {
            let (status, page) = call(app, Method::GET, &format!("/api/inbox?{query}"), &key, None).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["pagination"]["total"], Value::Null, "not counted with since");
            let events = page["events"].as_array().expect("events");
            events
                .iter()
                .map(|e| e["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(format!("since={}", created[0])).await,
        ids,
        "since is inclusive"
    );
    assert_eq!(listed(format!("since={}", created[2])).await, ids[2..]);
    assert!(
        listed("since=2100-01-01T00:00:00%2B01:00".to_owned())
            .await
            .is_empty()
    );

    // With a cursor, listing starts after the later of the two.
    let (_, first) = call(&app, Method::GET, "/api/inbox?limit=1", &acme.key, None).await;
    let cursor = first["next_cursor"].as_str().expect("next_cursor");
    assert_eq!(
        listed(format!("cursor={cursor}&since={}", created[2])).await,
        ids[2..]
    );
    assert_eq!(
        listed(format!("since={}&cursor={cursor}", created[0])).await,
        ids[1..]
    );

    let (status, body) = call(&app, Method::GET, "/api/inbox?since=yesterday", &acme.key, None).await;
    assert_eq!(body["details"][0]["field"], "since");
    refused(
        (status, body),
        422,
        "validation_failed",
        "a since that is no time",
    );
}

#[tokio::test]
async fn a_link_starts_with_the_configured_public_url() {
    let db = triggers_shared::testing::TestDb::new()
        .await
        .expect("test database");
    let app = TestApp::spawn_on(&db.url, |config| {
        config.public_url =
            Some(triggers_shared::config::parse_public_url("https://triggers.example.com/").expect("url"));
    })
    .await;
    let acme = org(&app, "Acme").await;
    let (status, created) = create_session(&app, &acme.key, None).await;
    assert_eq!(status, 201, "{created}");
    let url = created["url"].as_str().expect("url");
    assert_eq!(
        url,
        format!(
            "https://triggers.example.com/console#portal={}",
            link_token(&created)
        )
    );
}
