//! The OpenAPI document covers every route of API.md, with its tag and security, and `/docs`
//! is served from the binary (no CDN).

use crate::common::TestApp;
use serde_json::{Value, json};

/// Every route of API.md: method, path, tag, and the security scheme it documents ("" = none).
const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("post", "/api/keys/generate", "keys", "admin_token"),
    ("get", "/api/keys", "keys", "api_key"),
    ("post", "/api/keys/rotate", "keys", "api_key"),
    ("post", "/api/webhook/config", "webhook", "api_key"),
    ("get", "/api/webhook/config", "webhook", "api_key"),
    ("delete", "/api/webhook/config", "webhook", "api_key"),
    ("post", "/api/webhook/secret/rotate", "webhook", "api_key"),
    ("post", "/api/endpoints", "endpoints", "api_key"),
    ("get", "/api/endpoints", "endpoints", "api_key"),
    ("get", "/api/endpoints/{id}", "endpoints", "api_key"),
    ("patch", "/api/endpoints/{id}", "endpoints", "api_key"),
    ("delete", "/api/endpoints/{id}", "endpoints", "api_key"),
    ("get", "/api/endpoints/{id}/deliveries", "endpoints", "api_key"),
    ("get", "/api/endpoints/{id}/stats", "endpoints", "api_key"),
    (
        "post",
        "/api/endpoints/{id}/secret/rotate",
        "endpoints",
        "api_key",
    ),
    ("post", "/api/endpoints/{id}/recover", "endpoints", "api_key"),
    (
        "get",
        "/api/endpoints/{id}/recoveries/{recovery_id}",
        "endpoints",
        "api_key",
    ),
    ("post", "/api/events", "events", "api_key"),
    ("post", "/api/events/batch", "events", "api_key"),
    ("get", "/api/events/{id}", "events", "api_key"),
    ("post", "/api/events/{id}/redeliver", "events", "api_key"),
    ("post", "/api/events/redeliver", "events", "api_key"),
    (
        "post",
        "/api/events/{id}/endpoints/{endpoint_id}/resend",
        "events",
        "api_key",
    ),
    ("get", "/api/inbox", "inbox", "api_key"),
    ("post", "/api/ack/{id}", "inbox", "api_key"),
    ("post", "/api/ack", "inbox", "api_key"),
    ("post", "/api/portal/sessions", "portal", "api_key"),
    ("post", "/api/portal/exchange", "portal", ""),
    ("delete", "/api/portal/sessions/{id}", "portal", "api_key"),
    ("get", "/console", "console", ""),
    ("get", "/health", "operations", ""),
    ("get", "/health/live", "operations", ""),
    ("get", "/health/ready", "operations", ""),
    ("get", "/metrics", "operations", ""),
];

async fn document(app: &TestApp) -> Value {
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

#[tokio::test]
async fn every_route_of_the_api_is_in_the_openapi_document_with_its_tag_and_security() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], triggers_shared::VERSION);
    for (method, path, tag, scheme) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert_eq!(op["tags"][0], *tag, "{method} {path}");
        let schemes: Vec<&str> = op["security"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|s| s.as_object())
                    .flat_map(|s| s.keys())
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default();
        if scheme.is_empty() {
            assert!(
                schemes.is_empty(),
                "{method} {path} documents security {schemes:?}"
            );
        } else {
            assert!(
                schemes.contains(scheme),
                "{method} {path} lacks {scheme}: {schemes:?}"
            );
        }
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} responses"
        );
        // The request timeout can answer every API route (each reads a body or waits on the
        // database), not the operations routes.
        let timeout = &op["responses"]["408"];
        if path.starts_with("/api/") {
            assert!(
                timeout["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("`request_timeout`")),
                "{method} {path} does not document its 408: {timeout}"
            );
        } else {
            assert!(timeout.is_null(), "{method} {path} documents a 408");
        }
    }
}

#[tokio::test]
async fn the_document_has_no_route_the_api_does_not_have() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");
    for (path, ops) in paths {
        for method in ops.as_object().expect("operations").keys() {
            assert!(
                ROUTES.iter().any(|(m, p, _, _)| m == method && p == path),
                "{method} {path} is documented but not in API.md's list"
            );
            // And the router really serves it: an unknown route would answer `not_found`.
            let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
            let res = app
                .client
                .request(method.to_uppercase().parse().expect("method"), app.url(&concrete))
                .send()
                .await
                .expect("request");
            if res.status() == 404 {
                let body: Value = res.json().await.expect("json");
                assert_ne!(
                    body["code"], "not_found",
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/docs/")).send().await.expect("request");
    assert_eq!(res.status(), 200);
    let html = res.text().await.expect("text");
    assert!(html.contains("swagger"), "docs page: {html}");
    assert!(
        !html.contains("cdn") && !html.contains("unpkg"),
        "the page must not load from a CDN"
    );
    // The script the page loads is served here too.
    let res = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("bundle");
    assert_eq!(res.status(), 200);
    assert!(res.text().await.expect("js").len() > 100_000);
}

#[tokio::test]
async fn the_document_describes_the_types_that_are_really_parsed_and_the_inbox_bounds() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let mut required: Vec<&str> = schemas["EventIn"]["required"]
        .as_array()
        .expect("EventIn.required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["payload", "type"], "{}", schemas["EventIn"]);
    let tiers = schemas["Tier"]["enum"].as_array().expect("Tier enum");
    assert_eq!(tiers.len(), 4, "{}", schemas["Tier"]);
    let statuses = schemas["EventStatus"]["enum"]
        .as_array()
        .expect("EventStatus enum");
    assert_eq!(statuses.len(), 3, "{}", schemas["EventStatus"]);

    let params = doc["paths"]["/api/inbox"]["get"]["parameters"]
        .as_array()
        .expect("inbox parameters");
    let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
    for name in [
        "status",
        "limit",
        "offset",
        "cursor",
        "type",
        "include_total",
        "since",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let offset = params.iter().find(|p| p["name"] == "offset").expect("offset");
    assert_eq!(offset["schema"]["maximum"], 10_000, "{offset}");
    let total = doc["components"]["schemas"]["Pagination"]["properties"]["total"].to_string();
    assert!(total.contains("null"), "total must be nullable: {total}");
}

#[tokio::test]
async fn every_authenticated_change_documents_why_a_console_session_may_be_refused() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let mut changes = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let authenticated = op["responses"].get("401").is_some();
            if method == "get" || !authenticated {
                continue;
            }
            changes += 1;
            let forbidden = op["responses"]["403"]["description"].as_str().unwrap_or_default();
            assert!(
                forbidden.contains("read_only_session") || forbidden.contains("api_key_required"),
                "{method} {path} does not document its 403: {forbidden:?}"
            );
            // A media type object (OpenAPI 3.1), not a bare reference to the schema.
            assert_eq!(
                op["responses"]["403"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}: its 403 body is not an ErrorBody media type"
            );
        }
    }
    assert!(changes >= 10, "{changes} authenticated changes");
    let bearer = doc["components"]["securitySchemes"]["bearer"]["description"].to_string();
    assert!(bearer.contains("trg_session_"), "{bearer}");
}

#[tokio::test]
async fn the_endpoints_routes_document_the_parsed_bodies_and_every_answer() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["EndpointIn"]["required"], json!(["url"]));
    assert_eq!(schemas["EndpointPatchIn"].get("required"), None);
    for (schema, field) in [
        ("EndpointIn", "url"),
        ("EndpointIn", "event_types"),
        ("EndpointIn", "headers"),
        ("EndpointIn", "rate_limit_per_second"),
        ("EndpointPatchIn", "enabled"),
        ("EndpointOut", "default"),
        ("EndpointOut", "disabled_reason"),
        ("EndpointListOut", "next_cursor"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field}"
        );
    }
    assert!(
        schemas["EndpointOut"]["properties"]["headers"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("********")),
        "the masking rule is documented"
    );
    let statuses = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    };
    // Every change also documents the 403 of a read-only console session.
    let expected = [
        (
            "/api/endpoints",
            "post",
            &["201", "400", "401", "403", "408", "413", "415", "422", "503"][..],
        ),
        ("/api/endpoints", "get", &["200", "401", "408", "422", "503"][..]),
        (
            "/api/endpoints/{id}",
            "get",
            &["200", "401", "404", "408", "503"][..],
        ),
        (
            "/api/endpoints/{id}",
            "patch",
            &[
                "200", "400", "401", "403", "404", "408", "413", "415", "422", "503",
            ][..],
        ),
        (
            "/api/endpoints/{id}",
            "delete",
            &["204", "401", "403", "404", "408", "503"][..],
        ),
    ];
    for (path, method, codes) in expected {
        assert_eq!(statuses(path, method), codes, "{method} {path}");
        assert_eq!(doc["paths"][path][method]["tags"], json!(["endpoints"]));
    }
}

#[tokio::test]
async fn the_batch_route_documents_its_bounds_and_each_result() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let op = &doc["paths"]["/api/events/batch"]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BatchIn"
    );
    let events = &doc["components"]["schemas"]["BatchIn"]["properties"]["events"];
    assert_eq!(
        (events["minItems"].as_u64(), events["maxItems"].as_u64()),
        (Some(1), Some(1000))
    );
    // Items are judged one by one (an invalid one is a result, not a refusal): any value.
    assert!(
        events["items"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("EventIn")),
        "{}",
        events["items"]
    );
    assert_eq!(
        doc["components"]["schemas"]["BatchIn"]["required"],
        json!(["events"])
    );
    for status in ["200", "413", "422", "429"] {
        assert!(op["responses"][status].is_object(), "{status}");
    }
    assert!(
        op["responses"]["413"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("5 MiB")),
        "{}",
        op["responses"]["413"]
    );
    let item = &doc["components"]["schemas"]["BatchItemOut"];
    assert!(item.is_object(), "BatchItemOut is described");
}
