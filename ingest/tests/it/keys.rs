//! Organisations and API keys: creation, authentication, the admin guard, validation and
//! rotation (on one instance and across two).

use std::time::Duration;

use crate::common::fixtures::get_keys;
use crate::common::{TestApp, error_of, field_names};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use reqwest::header;
use serde_json::{Value, json};
use triggers_shared::{apikey, config::SecretString};

async fn generate(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/keys/generate"))
        .json(&body)
        .send()
        .await
        .expect("POST /api/keys/generate")
}

async fn rotate(app: &TestApp, key: &str, body: Option<Value>) -> reqwest::Response {
    let req = app
        .client
        .post(app.url("/api/keys/rotate"))
        .header("X-API-Key", key);
    let req = match body {
        Some(body) => req.json(&body),
        None => req,
    };
    req.send().await.expect("POST /api/keys/rotate")
}

/// Poll until `GET /api/keys` with `key` answers `want`, or the deadline passes.
async fn wait_for_status(app: &TestApp, key: &str, want: u16, deadline: Duration) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if get_keys(app, key).await.status() == want {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn timestamp(body: &Value, field: &str) -> DateTime<Utc> {
    let text = body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string: {body}"));
    assert!(text.ends_with('Z'), "{field} is UTC with a Z: {text}");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{field} is RFC 3339: {text}: {e}"))
        .with_timezone(&Utc)
}

/// The part of a key after its public prefix (base64url: it may itself contain `_`).
fn secret_of(key: &str) -> &str {
    let prefix = apikey::prefix_of(key).expect("a well-formed key");
    &key[prefix.len() + 1..]
}

#[tokio::test]
async fn generate_answers_201_with_the_documented_shape() {
    let app = TestApp::spawn().await;
    let res = generate(&app, json!({"organization_name": "Acme Inc"})).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        field_names(&body),
        [
            "api_key",
            "created_at",
            "organization_id",
            "organization_name",
            "rate_limit_per_minute",
            "tier",
            "warning"
        ]
    );
    assert_eq!(body["organization_name"], "Acme Inc");
    assert_eq!(body["tier"], "free", "tier defaults to free");
    assert_eq!(body["rate_limit_per_minute"], 100);
    assert_eq!(
        body["warning"],
        "Store this API key securely; it will not be shown again."
    );
    let id = uuid::Uuid::parse_str(body["organization_id"].as_str().expect("id")).expect("uuid");
    assert_eq!(id.get_version_num(), 7, "ids are time-ordered v7");
    let created = timestamp(&body, "created_at");
    assert!((Utc::now() - created).num_seconds().abs() < 60);

    // trg_live_<12 hex prefix>_<base64url of 32 random bytes>: at least 256 bits of randomness.
    let key = body["api_key"].as_str().expect("api_key");
    let rest = key.strip_prefix("trg_live_").expect("trg_live_ prefix");
    let (lookup, secret) = rest.split_once('_').expect("prefix_secret");
    assert_eq!(lookup.len(), 12);
    assert!(lookup.bytes().all(|b| b.is_ascii_hexdigit()));
    let secret_bytes = URL_SAFE_NO_PAD.decode(secret).expect("base64url secret");
    assert!(secret_bytes.len() * 8 >= 256, "{} bits", secret_bytes.len() * 8);

    // The key works at once.
    assert_eq!(get_keys(&app, key).await.status(), 200);
}

#[tokio::test]
async fn each_tier_gets_its_rate_limit() {
    let app = TestApp::spawn().await;
    for (tier, limit) in [
        ("free", 100),
        ("pro", 1_000),
        ("business", 10_000),
        ("enterprise", 100_000),
    ] {
        let res = generate(&app, json!({"organization_name": tier, "tier": tier})).await;
        assert_eq!(res.status(), 201, "{tier}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["tier"], tier);
        assert_eq!(body["rate_limit_per_minute"], limit, "{tier}");
        let row: (String, i32) =
            sqlx::query_as("SELECT tier, rate_limit_per_minute FROM organizations WHERE name = $1")
                .bind(tier)
                .fetch_one(&app.db)
                .await
                .expect("row");
        assert_eq!(row, (tier.to_string(), limit));
    }
}

#[tokio::test]
async fn only_a_hash_and_a_prefix_of_the_key_are_stored() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Hashing Ltd", "pro").await;
    let secret = secret_of(&key);

    let (prefix, hash): (String, String) =
        sqlx::query_as("SELECT prefix, key_hash FROM api_keys WHERE organization_id = $1::uuid")
            .bind(&org_id)
            .fetch_one(&app.db)
            .await
            .expect("key row");
    assert_eq!(Some(prefix.as_str()), apikey::prefix_of(&key));
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(apikey::verify(&key, &hash).await.expect("hash pool"));

    // Nothing anywhere in the key's or the organisation's rows contains the secret.
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(k)::text FROM api_keys k
         UNION ALL SELECT row_to_json(o)::text FROM organizations o",
    )
    .fetch_all(&app.db)
    .await
    .expect("rows");
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(!row.contains(secret), "secret stored in {row}");
        assert!(!row.contains(&key), "key stored in {row}");
    }
}

#[tokio::test]
async fn get_keys_describes_the_organisation_and_never_returns_the_key() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Reader Co", "business").await;
    let res = get_keys(&app, &key).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    let secret = secret_of(&key);
    assert!(!text.contains(secret), "secret in {text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        field_names(&body),
        [
            "created_at",
            "key_prefix",
            "organization_id",
            "organization_name",
            "rate_limit_per_minute",
            "tier",
            "updated_at",
            "webhook_url"
        ]
    );
    assert_eq!(body["organization_id"], org_id.as_str());
    assert_eq!(body["organization_name"], "Reader Co");
    assert_eq!(body["tier"], "business");
    assert_eq!(body["rate_limit_per_minute"], 10_000);
    assert_eq!(body["webhook_url"], Value::Null);
    assert_eq!(body["key_prefix"].as_str(), apikey::prefix_of(&key));
    timestamp(&body, "created_at");
    timestamp(&body, "updated_at");
}

#[tokio::test]
async fn a_missing_key_is_401_missing_api_key_with_www_authenticate() {
    let app = TestApp::spawn().await;
    for req in [
        app.client.get(app.url("/api/keys")),
        app.client.get(app.url("/api/keys")).header("X-API-Key", ""),
        app.client
            .get(app.url("/api/keys"))
            .header(header::AUTHORIZATION, "Basic Zm9vOmJhcg=="),
    ] {
        let res = req.send().await.expect("request");
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
        let (status, body) = error_of(res).await;
        assert_eq!(status, 401);
        assert_eq!(body["code"], "missing_api_key", "{body}");
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn invalid_keys_are_401_invalid_api_key_with_www_authenticate() {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_org("Victim", "free").await;
    let prefix = apikey::prefix_of(&key).expect("prefix");
    let wrong_secret = format!("{prefix}_{}", "A".repeat(43));
    let unknown_prefix = format!("trg_live_000000000000_{}", "B".repeat(43));
    for bad in [
        "nonsense",
        "trg_live_",
        wrong_secret.as_str(),
        unknown_prefix.as_str(),
        &key[..key.len() - 1],
    ] {
        let res = get_keys(&app, bad).await;
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE), "{bad}");
        let (status, body) = error_of(res).await;
        assert_eq!(status, 401, "{bad}");
        assert_eq!(body["code"], "invalid_api_key", "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_bearer_authorization_header_is_accepted() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Bearer Co", "free").await;
    let res = app
        .client
        .get(app.url("/api/keys"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["organization_id"], org_id.as_str());

    let res = app
        .client
        .get(app.url("/api/keys"))
        .bearer_auth("trg_live_nope")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn generate_requires_the_admin_token_when_one_is_configured() {
    let first = TestApp::spawn().await;
    let app = TestApp::spawn_on(&first.db_url, |c| {
        c.admin_token = Some(SecretString::from("let-me-in-0123456789"));
    })
    .await;
    let body = json!({"organization_name": "Guarded"});
    let url = app.url("/api/keys/generate");

    let refused = [
        app.client.post(&url).json(&body),
        app.client
            .post(&url)
            .json(&body)
            .bearer_auth("let-me-in-012345678"),
        app.client.post(&url).json(&body).header("X-Admin-Token", "wrong"),
        app.client.post(&url).json(&body).header("X-Admin-Token", ""),
        app.client
            .post(&url)
            .json(&body)
            .header("X-API-Key", "let-me-in-0123456789"),
    ];
    for req in refused {
        let res = req.send().await.expect("request");
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
        let (status, err) = error_of(res).await;
        assert_eq!(status, 401);
        assert_eq!(err["code"], "admin_token_required", "{err}");
    }
    // The admin check comes before validation: an unauthorised caller learns nothing.
    let res = app
        .client
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, 0, "no organisation was created by a refused request");

    for req in [
        app.client
            .post(&url)
            .json(&body)
            .bearer_auth("let-me-in-0123456789"),
        app.client
            .post(&url)
            .json(&body)
            .header("X-Admin-Token", "let-me-in-0123456789"),
    ] {
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 201);
    }
    // The instance without a configured token stays open (development).
    assert_eq!(generate(&first, body).await.status(), 201);
}

#[tokio::test]
async fn invalid_generate_bodies_are_422_with_details() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(256);
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["organization_name"]),
        (json!({"organization_name": null}), vec!["organization_name"]),
        (json!({"organization_name": ""}), vec!["organization_name"]),
        (json!({"organization_name": "   \t "}), vec!["organization_name"]),
        (json!({"organization_name": long}), vec!["organization_name"]),
        (
            json!({"organization_name": "nul\u{0}byte"}),
            vec!["organization_name"],
        ),
        (json!({"organization_name": 42}), vec!["organization_name"]),
        (json!({"organization_name": ["a"]}), vec!["organization_name"]),
        (json!({"organization_name": "ok", "tier": "gold"}), vec!["tier"]),
        (json!({"organization_name": "ok", "tier": "Pro"}), vec!["tier"]),
        (json!({"organization_name": "ok", "tier": 1}), vec!["tier"]),
        (
            json!({"organization_name": 7, "tier": "platinum"}),
            vec!["organization_name", "tier"],
        ),
        (json!([]), vec!["body"]),
        (json!("a string"), vec!["body"]),
    ];
    for (body, fields) in cases {
        let (status, err) = error_of(generate(&app, body.clone()).await).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(err["code"], "validation_failed", "{body}: {err}");
        let details = err["details"].as_array().expect("details list");
        let got: Vec<&str> = details
            .iter()
            .map(|d| d["field"].as_str().expect("field"))
            .collect();
        assert_eq!(got, fields, "{body}: {err}");
        assert!(
            details
                .iter()
                .all(|d| d["message"].as_str().is_some_and(|m| !m.is_empty()))
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, 0);

    // The bounds themselves are accepted.
    let res = generate(&app, json!({"organization_name": "y".repeat(255)})).await;
    assert_eq!(res.status(), 201);
    let res = generate(&app, json!({"organization_name": "z", "tier": null})).await;
    assert_eq!(res.status(), 201, "a null tier is the default");
}

#[tokio::test]
async fn malformed_json_is_400_and_a_wrong_content_type_is_415() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/keys/generate");
    let res = app
        .client
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"organization_name": "#)
        .send()
        .await
        .expect("request");
    let (status, err) = error_of(res).await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], "invalid_json");

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app.client.post(&url).body(r#"{"organization_name": "x"}"#);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let (status, err) = error_of(req.send().await.expect("request")).await;
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(err["code"], "unsupported_media_type");
    }
}

#[tokio::test]
async fn sql_metacharacters_and_unicode_in_names_are_stored_verbatim() {
    let app = TestApp::spawn().await;
    let names = [
        "'; DROP TABLE organizations; --",
        r#"Robert"); DELETE FROM api_keys; --"#,
        r"back\slash \\ and \' quote",
        "O'Brien & \"Sons\" % _ $1",
        "Zürich Ünïcödé 東京 🚀 עברית",
    ];
    for name in names {
        let res = generate(&app, json!({"organization_name": name})).await;
        assert_eq!(res.status(), 201, "{name}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["organization_name"], name);
        let key = body["api_key"].as_str().expect("key");

        let read: Value = get_keys(&app, key).await.json().await.expect("json");
        assert_eq!(read["organization_name"], name);

        let stored: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1::uuid")
            .bind(body["organization_id"].as_str().expect("id"))
            .fetch_one(&app.db)
            .await
            .expect("row");
        assert_eq!(stored, name);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&app.db)
        .await
        .expect("tables still exist");
    assert_eq!(count, names.len() as i64);
}

#[tokio::test]
async fn rotation_without_grace_stops_the_old_key_at_once_on_every_instance() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(&app.db_url, |_| {}).await;
    let (old_key, org_id) = app.create_org("Rotator", "pro").await;
    // Both instances verify (and cache) the old key.
    for instance in [&app, &other] {
        for _ in 0..2 {
            assert_eq!(get_keys(instance, &old_key).await.status(), 200);
        }
    }

    let res = rotate(&app, &old_key, None).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        field_names(&body),
        [
            "api_key",
            "organization_id",
            "organization_name",
            "previous_key_expires_at",
            "rotated_at",
            "warning"
        ]
    );
    assert_eq!(body["organization_id"], org_id.as_str());
    assert_eq!(body["organization_name"], "Rotator");
    assert_eq!(
        timestamp(&body, "previous_key_expires_at"),
        timestamp(&body, "rotated_at"),
        "grace 0: the previous key stopped when the rotation happened"
    );
    let new_key = body["api_key"].as_str().expect("api_key").to_string();
    assert_ne!(new_key, old_key);

    // The instance that rotated refuses the old key immediately...
    let (status, err) = error_of(get_keys(&app, &old_key).await).await;
    assert_eq!(status, 401);
    assert_eq!(err["code"], "invalid_api_key");
    // ...and the other one within a second, although it had the key cached.
    assert!(
        wait_for_status(&other, &old_key, 401, Duration::from_secs(1)).await,
        "the second instance still accepts the old key"
    );

    for instance in [&app, &other] {
        let res = get_keys(instance, &new_key).await;
        assert_eq!(res.status(), 200);
        let read: Value = res.json().await.expect("json");
        assert_eq!(read["key_prefix"].as_str(), apikey::prefix_of(&new_key));
    }
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE organization_id = $1::uuid AND revoked_at IS NOT NULL",
    )
    .bind(&org_id)
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn rotation_with_a_grace_period_keeps_both_keys_until_it_ends() {
    let app = TestApp::spawn().await;
    let (old_key, _) = app.create_org("Graceful", "free").await;
    assert_eq!(get_keys(&app, &old_key).await.status(), 200);

    let res = rotate(&app, &old_key, Some(json!({"grace_period_seconds": 2}))).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let rotated_at = timestamp(&body, "rotated_at");
    let expires_at = timestamp(&body, "previous_key_expires_at");
    assert_eq!((expires_at - rotated_at).num_milliseconds(), 2_000);
    let new_key = body["api_key"].as_str().expect("api_key").to_string();

    // Both work (and the old one is cached again by these requests).
    assert_eq!(get_keys(&app, &old_key).await.status(), 200);
    assert_eq!(get_keys(&app, &new_key).await.status(), 200);
    let read: Value = get_keys(&app, &old_key).await.json().await.expect("json");
    assert_eq!(
        read["key_prefix"].as_str(),
        apikey::prefix_of(&new_key),
        "the newest key is the one described"
    );

    // The cache TTL is 60 s, yet the old key stops at its expiry.
    assert!(
        wait_for_status(&app, &old_key, 401, Duration::from_secs(6)).await,
        "the old key outlived its grace period"
    );
    assert!(Utc::now() >= expires_at);
    assert_eq!(get_keys(&app, &new_key).await.status(), 200);
}

#[tokio::test]
async fn a_second_rotation_retires_a_key_still_in_its_grace_period() {
    let app = TestApp::spawn().await;
    let (first, _) = app.create_org("Twice", "free").await;
    let res = rotate(&app, &first, Some(json!({"grace_period_seconds": 3600}))).await;
    let second: Value = res.json().await.expect("json");
    let second = second["api_key"].as_str().expect("key").to_string();
    assert_eq!(get_keys(&app, &first).await.status(), 200);

    let res = rotate(&app, &second, Some(json!({"grace_period_seconds": 0}))).await;
    assert_eq!(res.status(), 200);
    let third: Value = res.json().await.expect("json");
    let third = third["api_key"].as_str().expect("key").to_string();
    assert_eq!(get_keys(&app, &first).await.status(), 401);
    assert_eq!(get_keys(&app, &second).await.status(), 401);
    assert_eq!(get_keys(&app, &third).await.status(), 200);
}

#[tokio::test]
async fn rotate_accepts_an_empty_body_and_refuses_bad_grace_periods() {
    let app = TestApp::spawn().await;
    let (mut key, _) = app.create_org("Picky", "free").await;
    for bad in [
        json!({"grace_period_seconds": -1}),
        json!({"grace_period_seconds": 604_801}),
        json!({"grace_period_seconds": 1.5}),
        json!({"grace_period_seconds": "60"}),
        json!({"grace_period_seconds": true}),
        json!([60]),
    ] {
        let (status, err) = error_of(rotate(&app, &key, Some(bad.clone())).await).await;
        assert_eq!(status, 422, "{bad}");
        assert_eq!(err["code"], "validation_failed");
        assert!(err["details"].as_array().is_some_and(|d| d.len() == 1), "{err}");
    }
    // Nothing was rotated by the refused requests.
    assert_eq!(get_keys(&app, &key).await.status(), 200);

    for ok in [
        None,
        Some(json!({})),
        Some(json!({"grace_period_seconds": 604_800})),
    ] {
        let res = rotate(&app, &key, ok.clone()).await;
        assert_eq!(res.status(), 200, "{ok:?}");
        let body: Value = res.json().await.expect("json");
        key = body["api_key"].as_str().expect("key").to_string();
    }
    let res = app
        .client
        .post(app.url("/api/keys/rotate"))
        .header("X-API-Key", &key)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let res = app
        .client
        .post(app.url("/api/keys/rotate"))
        .header("X-API-Key", &key)
        .body(r#"{"grace_period_seconds": 5}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn rotate_without_a_key_is_401() {
    let app = TestApp::spawn().await;
    let (status, err) = error_of(
        app.client
            .post(app.url("/api/keys/rotate"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(err["code"], "missing_api_key");
}
