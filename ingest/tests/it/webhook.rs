//! Webhook configuration: URL validation and the SSRF policy, the signing secret's life, and
//! tenancy.

use crate::common::{TestApp, error_of, field_names};
use reqwest::header;
use serde_json::{Value, json};
use triggers_shared::{db::endpoints, signing};

async fn set_config(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/webhook/config"))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .expect("POST /api/webhook/config")
}

async fn get_config(app: &TestApp, key: &str) -> Value {
    let res = app
        .client
        .get(app.url("/api/webhook/config"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("GET /api/webhook/config");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

async fn rotate_secret(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/webhook/secret/rotate"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("POST /api/webhook/secret/rotate")
}

/// The stored webhook URL and signing secret: those of the organisation's default endpoint.
async fn stored(app: &TestApp, org_id: &str) -> (Option<String>, Option<String>) {
    let org_id = org_id.parse().expect("an organisation id");
    let mut conn = app.db.acquire().await.expect("connection");
    let endpoint = endpoints::find_default(&mut conn, org_id)
        .await
        .expect("read the default endpoint");
    endpoint.map_or((None, None), |e| (Some(e.url), Some(e.signing_secret)))
}

fn assert_valid_secret(secret: &str) {
    assert!(secret.starts_with("whsec_"), "{secret}");
    let key = signing::secret_key(secret).expect("base64 secret");
    assert!(key.len() >= 24, "{} bytes", key.len());
}

#[tokio::test]
async fn configuring_a_webhook_returns_the_url_and_a_new_signing_secret() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Hooked", "free").await;
    let url = "http://127.0.0.1:9/hooks/triggers?source=test";
    let res = set_config(&app, &key, json!({"webhook_url": url})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        field_names(&body),
        [
            "message",
            "organization_id",
            "signing_secret",
            "updated_at",
            "webhook_url"
        ]
    );
    assert_eq!(body["organization_id"], org_id.as_str());
    assert_eq!(body["webhook_url"], url);
    let secret = body["signing_secret"].as_str().expect("secret");
    assert_valid_secret(secret);
    assert!(body["updated_at"].as_str().is_some_and(|t| t.ends_with('Z')));

    assert_eq!(
        stored(&app, &org_id).await,
        (Some(url.to_string()), Some(secret.to_string()))
    );
    // GET /api/keys shows the URL too.
    let keys: Value = app
        .client
        .get(app.url("/api/keys"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(keys["webhook_url"], url);

    // The stored URL is the normalised one: exactly what was checked and will be called.
    let res = set_config(&app, &key, json!({"webhook_url": "HTTP://127.0.0.1:9"})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["webhook_url"], "http://127.0.0.1:9/");
    assert_eq!(
        stored(&app, &org_id).await.0.as_deref(),
        Some("http://127.0.0.1:9/")
    );
}

#[tokio::test]
async fn the_secret_is_kept_on_url_change_replaced_on_rotation_and_never_read_back() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Secretive", "free").await;

    let unset = get_config(&app, &key).await;
    assert_eq!(unset, json!({"webhook_url": null, "updated_at": null}));

    let first: Value = set_config(&app, &key, json!({"webhook_url": "http://127.0.0.1:9/a"}))
        .await
        .json()
        .await
        .expect("json");
    let secret = first["signing_secret"].as_str().expect("secret").to_string();

    let second: Value = set_config(&app, &key, json!({"webhook_url": "http://127.0.0.1:9/b"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["webhook_url"], "http://127.0.0.1:9/b");
    assert_eq!(second["signing_secret"], secret.as_str(), "kept on URL change");

    let read = get_config(&app, &key).await;
    let fields = field_names(&read);
    assert_eq!(fields, ["updated_at", "webhook_url"]);
    assert_eq!(read["webhook_url"], "http://127.0.0.1:9/b");
    assert_eq!(read["updated_at"], second["updated_at"]);
    assert!(
        !read.to_string().contains(&secret["whsec_".len()..]),
        "no secret in GET"
    );

    let res = rotate_secret(&app, &key).await;
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().await.expect("json");
    assert_eq!(rotated["organization_id"], org_id.as_str());
    let new_secret = rotated["signing_secret"].as_str().expect("secret").to_string();
    assert_valid_secret(&new_secret);
    assert_ne!(new_secret, secret);
    assert_eq!(stored(&app, &org_id).await.1, Some(new_secret.clone()));

    let third: Value = set_config(&app, &key, json!({"webhook_url": "http://127.0.0.1:9/c"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        third["signing_secret"],
        new_secret.as_str(),
        "the rotated secret is kept"
    );
}

#[tokio::test]
async fn deleting_the_webhook_clears_url_and_secret() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Leaver", "free").await;
    let first: Value = set_config(&app, &key, json!({"webhook_url": "http://127.0.0.1:9/x"}))
        .await
        .json()
        .await
        .expect("json");

    for _ in 0..2 {
        let res = app
            .client
            .delete(app.url("/api/webhook/config"))
            .header("X-API-Key", &key)
            .send()
            .await
            .expect("DELETE");
        assert_eq!(res.status(), 200, "DELETE is idempotent");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["webhook_url"], Value::Null);
        assert_eq!(body["organization_id"], org_id.as_str());
    }
    assert_eq!(stored(&app, &org_id).await, (None, None));
    assert_eq!(get_config(&app, &key).await["webhook_url"], Value::Null);

    let (status, err) = error_of(rotate_secret(&app, &key).await).await;
    assert_eq!(status, 404);
    assert_eq!(err["code"], "webhook_not_configured");

    let again: Value = set_config(&app, &key, json!({"webhook_url": "http://127.0.0.1:9/x"}))
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(
        again["signing_secret"], first["signing_secret"],
        "a new configuration gets a new secret"
    );
}

#[tokio::test]
async fn rotating_the_secret_without_a_webhook_is_404() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Nothing Yet", "free").await;
    let (status, err) = error_of(rotate_secret(&app, &key).await).await;
    assert_eq!(status, 404);
    assert_eq!(err["code"], "webhook_not_configured");
    assert_eq!(stored(&app, &org_id).await, (None, None));
}

#[tokio::test]
async fn internal_targets_are_refused_unless_private_webhooks_are_allowed() {
    let open = TestApp::spawn().await; // for_tests allows private targets
    let strict = TestApp::spawn_on(&open.db_url, |c| c.common.allow_private_webhooks = false).await;
    let (key, org_id) = strict.create_org("Careful", "free").await;

    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
    ] {
        let (status, err) = error_of(set_config(&strict, &key, json!({"webhook_url": url})).await).await;
        assert_eq!(status, 422, "{url}");
        assert_eq!(err["code"], "webhook_url_not_allowed", "{url}: {err}");
        assert!(err["error"].is_string());
    }
    assert_eq!(stored(&strict, &org_id).await, (None, None));

    // The same organisation on an instance that allows private targets.
    let res = set_config(&open, &key, json!({"webhook_url": "http://127.0.0.1:8080/hook"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        stored(&open, &org_id).await.0.as_deref(),
        Some("http://127.0.0.1:8080/hook")
    );
}

#[tokio::test]
async fn malformed_urls_and_bodies_are_422_validation_failed() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Sloppy", "free").await;
    let too_long = format!("https://example.com/{}", "a".repeat(2048));
    for body in [
        json!({"webhook_url": "ftp://example.com/hook"}),
        json!({"webhook_url": "https://user:pass@example.com/hook"}),
        json!({"webhook_url": "https://user@example.com/hook"}),
        json!({"webhook_url": too_long}),
        json!({"webhook_url": "not a url"}),
        json!({"webhook_url": "javascript:alert(1)"}),
        json!({"webhook_url": ""}),
        json!({"webhook_url": 42}),
        json!({"webhook_url": null}),
        json!({}),
    ] {
        let (status, err) = error_of(set_config(&app, &key, body.clone()).await).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(err["code"], "validation_failed", "{body}: {err}");
        assert_eq!(err["details"][0]["field"], "webhook_url", "{body}: {err}");
    }
    assert_eq!(stored(&app, &org_id).await, (None, None));

    let res = app
        .client
        .post(app.url("/api/webhook/config"))
        .header("X-API-Key", &key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"webhook_url": "#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let res = app
        .client
        .post(app.url("/api/webhook/config"))
        .header("X-API-Key", &key)
        .body(r#"{"webhook_url": "http://127.0.0.1:9/"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn an_organisation_sees_and_changes_only_its_own_configuration() {
    let app = TestApp::spawn().await;
    let (key_a, org_a) = app.create_org("Tenant A", "free").await;
    let (key_b, org_b) = app.create_org("Tenant B", "free").await;
    let a: Value = set_config(&app, &key_a, json!({"webhook_url": "http://127.0.0.1:9/a"}))
        .await
        .json()
        .await
        .expect("json");

    assert_eq!(
        get_config(&app, &key_b).await,
        json!({"webhook_url": null, "updated_at": null})
    );
    let (status, _) = error_of(rotate_secret(&app, &key_b).await).await;
    assert_eq!(status, 404, "B has no webhook, whatever A has");

    let b: Value = set_config(&app, &key_b, json!({"webhook_url": "http://127.0.0.1:9/b"}))
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(a["signing_secret"], b["signing_secret"]);
    let res = app
        .client
        .delete(app.url("/api/webhook/config"))
        .header("X-API-Key", &key_b)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(res.status(), 200);

    assert_eq!(
        stored(&app, &org_a).await,
        (
            Some("http://127.0.0.1:9/a".to_string()),
            a["signing_secret"].as_str().map(String::from)
        ),
        "A's configuration is untouched by B"
    );
    assert_eq!(stored(&app, &org_b).await, (None, None));
    assert_eq!(
        get_config(&app, &key_a).await["webhook_url"],
        "http://127.0.0.1:9/a"
    );
}

#[tokio::test]
async fn webhook_routes_require_a_key() {
    let app = TestApp::spawn().await;
    for req in [
        app.client.get(app.url("/api/webhook/config")),
        app.client.delete(app.url("/api/webhook/config")),
        app.client
            .post(app.url("/api/webhook/config"))
            .json(&json!({"webhook_url": "http://127.0.0.1:9/"})),
        app.client.post(app.url("/api/webhook/secret/rotate")),
        app.client
            .post(app.url("/api/webhook/secret/rotate"))
            .header("X-API-Key", "trg_live_bogus"),
    ] {
        let res = req.send().await.expect("request");
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
        let (status, err) = error_of(res).await;
        assert_eq!(status, 401);
        assert!(
            err["code"] == "missing_api_key" || err["code"] == "invalid_api_key",
            "{err}"
        );
    }
}

#[tokio::test]
async fn refusals_never_reveal_an_address_and_ipv6_tunnels_to_ipv4_are_refused() {
    let open = TestApp::spawn().await;
    let strict = TestApp::spawn_on(&open.db_url, |c| c.common.allow_private_webhooks = false).await;
    let (key, org_id) = strict.create_org("Tunnels", "free").await;
    for (url, address) in [
        ("http://10.96.0.1/hook", "10.96.0.1"),
        ("http://localhost.:9/hook", "127.0.0.1"),
        ("http://[2002:a60:1::1]/hook", "2002:"), // 6to4 of 10.96.0.1
        ("http://[2001:0:a60:1::1]/hook", "2001:"), // Teredo
        ("http://[64:ff9b:1::a60:1]/hook", "64:ff9b"), // NAT64 local-use
        ("http://[2002:808:808::1]/hook", "2002:"), // 6to4 even of a public address
        ("http://no-such-host.invalid/hook", "invalid"),
    ] {
        let (status, err) = error_of(set_config(&strict, &key, json!({"webhook_url": url})).await).await;
        assert_eq!(status, 422, "{url}: {err}");
        assert_eq!(err["code"], "webhook_url_not_allowed", "{url}: {err}");
        let message = err["error"].as_str().expect("error");
        assert!(!message.contains(address), "{url}: {message}");
        assert!(message.contains("not allowed"), "{url}: {message}");
    }
    assert_eq!(stored(&strict, &org_id).await, (None, None));
}

#[tokio::test]
async fn a_url_that_normalisation_makes_longer_than_2048_characters_is_422() {
    let app = TestApp::spawn().await;
    let (key, org_id) = app.create_org("Spaces", "free").await;
    // 1,900 characters as sent; each space becomes `%20` once normalised (~5,700).
    let url = format!("http://127.0.0.1:9/{}x", " ".repeat(1_880));
    assert!(url.len() <= 2048);
    let (status, err) = error_of(set_config(&app, &key, json!({"webhook_url": url})).await).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["code"], "validation_failed", "{err}");
    assert_eq!(err["details"][0]["field"], "webhook_url", "{err}");
    assert_eq!(stored(&app, &org_id).await, (None, None));
}
