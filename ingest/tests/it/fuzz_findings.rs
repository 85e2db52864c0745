//! What fuzzing the service against its OpenAPI document found where the service was wrong
//! (`deploy/local/api-check.sh`), each pinned by the request that showed it.

use crate::common::fixtures::get_json;
use crate::common::{TestApp, error_of, field_names};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

async fn get(app: &TestApp, key: &str, path: &str) -> (reqwest::StatusCode, Value) {
    let (status, body) = get_json(app, key, path).await;
    (reqwest::StatusCode::from_u16(status).expect("status"), body)
}

#[tokio::test]
async fn a_forged_cursor_before_4713_bc_lists_from_the_start_instead_of_answering_500() {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_org("cursors", "free").await;
    let res = app
        .client
        .post(app.url("/api/events"))
        .header("X-API-Key", &key)
        .json(&json!({"type": "a", "payload": {}}))
        .send()
        .await
        .expect("event");
    assert_eq!(res.status(), 202);
    let res = app
        .client
        .post(app.url("/api/endpoints"))
        .header("X-API-Key", &key)
        .json(&json!({"url": "http://127.0.0.1:9/"}))
        .send()
        .await
        .expect("endpoint");
    let (status, endpoint) = error_of(res).await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().expect("id");
    // Postgres' timestamptz starts in 4713 BC; chrono goes further back.
    let forged = URL_SAFE_NO_PAD.encode("-6000000000000000000.0190a0b0c0d0e0f00112233445566778");
    let (status, page) = get(&app, &key, &format!("/api/inbox?cursor={forged}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");
    let (status, page) = get(
        &app,
        &key,
        &format!("/api/endpoints/{endpoint}/deliveries?cursor={forged}"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["deliveries"], json!([]), "nothing is older than 4713 BC");
}

#[tokio::test]
async fn an_integer_written_with_a_fraction_or_an_exponent_is_an_integer() {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_org("integers", "free").await;
    let res = app
        .client
        .post(app.url("/api/endpoints"))
        .header("X-API-Key", &key)
        .header("Content-Type", "application/json")
        .body(r#"{"url": "http://127.0.0.1:9/", "rate_limit_per_second": 269.0}"#)
        .send()
        .await
        .expect("endpoint");
    let (status, endpoint) = error_of(res).await;
    assert_eq!(status, 201, "{endpoint}");
    assert_eq!(endpoint["rate_limit_per_second"], 269);
    let res = app
        .client
        .post(app.url("/api/keys/rotate"))
        .header("X-API-Key", &key)
        .header("Content-Type", "application/json")
        .body(r#"{"grace_period_seconds": 6e1}"#)
        .send()
        .await
        .expect("rotate");
    let (status, rotated) = error_of(res).await;
    assert_eq!(status, 200, "{rotated}");
    let rotated_at =
        chrono::DateTime::parse_from_rfc3339(rotated["rotated_at"].as_str().expect("rotated_at"));
    let expires =
        chrono::DateTime::parse_from_rfc3339(rotated["previous_key_expires_at"].as_str().expect("expires"));
    let grace = expires.expect("expires") - rotated_at.expect("rotated_at");
    assert_eq!(grace.num_seconds(), 60);
    let res = app
        .client
        .patch(app.url(&format!(
            "/api/endpoints/{}",
            endpoint["id"].as_str().expect("id")
        )))
        .header("X-API-Key", rotated["api_key"].as_str().expect("key"))
        .header("Content-Type", "application/json")
        .body(r#"{"rate_limit_per_second": 2.5}"#)
        .send()
        .await
        .expect("patch");
    let (status, body) = error_of(res).await;
    assert_eq!(
        (status.as_u16(), field_names(&body)),
        (422, vec!["code", "details", "error"])
    );
    assert_eq!(body["details"][0]["field"], "rate_limit_per_second");
}

#[tokio::test]
async fn a_json_null_body_is_no_body() {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_org("null-body", "free").await;
    let res = app
        .client
        .post(app.url("/api/keys/rotate"))
        .header("X-API-Key", &key)
        .header("Content-Type", "application/json")
        .body("null")
        .send()
        .await
        .expect("rotate");
    let (status, rotated) = error_of(res).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        rotated["rotated_at"], rotated["previous_key_expires_at"],
        "no grace"
    );
}

#[tokio::test]
async fn an_empty_text_parameter_is_absent_and_an_empty_number_or_boolean_is_refused() {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_org("empty-parameters", "free").await;
    for path in ["/api/inbox?status=&cursor=&type=", "/api/endpoints?cursor="] {
        let (status, body) = get(&app, &key, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for (path, field) in [
        ("/api/inbox?limit=", "limit"),
        ("/api/inbox?include_total=", "include_total"),
        ("/api/endpoints?limit=", "limit"),
    ] {
        let (status, body) = get(&app, &key, path).await;
        assert_eq!(
            (status.as_u16(), &body["details"][0]["field"]),
            (422, &json!(field)),
            "{path}"
        );
    }
}
