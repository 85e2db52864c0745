//! No secret reaches a log: both real binaries run a full flow at `RUST_LOG=debug` (create an
//! organisation, configure a webhook, post events, deliver them with a retry, rotate the key,
//! rotate the signing secret, present wrong keys and a wrong admin token), and their captured
//! output must not contain any API key, any key's secret part, any signing secret or the admin
//! token.

use std::time::Duration;

use crate::common::{Receiver, Reply, ServiceProcess, eventually, ingest_binary, test_db};
use serde_json::{Value, json};
use triggers_testkit::process::Builder;

const ADMIN_TOKEN: &str = "admin-token-4b1d8e0c9f2a7d35e6c1";

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {value}"))
        .to_owned()
}

#[tokio::test]
async fn a_full_run_at_debug_level_logs_no_key_signing_secret_or_admin_token() {
    let db = test_db().await;
    // The first delivery fails, so the worker logs a retry too.
    let receiver = Receiver::start(vec![Reply::status(500)], Reply::status(200)).await;
    let logs = std::env::temp_dir().join(format!("triggers-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).expect("log dir");
    let (ingest_log, worker_log) = (logs.join("ingest.log"), logs.join("worker.log"));

    // Both processes as the test kit starts them, at debug level, with an admin token.
    let with_common_env = |builder: Builder| {
        builder
            .env("RUST_LOG", "debug")
            .env("TRIGGERS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env("TRIGGERS_DB_POOL_SIZE", "5")
    };
    let mut ingest = with_common_env(ServiceProcess::ingest(ingest_binary(), &db.url))
        .env("TRIGGERS_LOG_FORMAT", "json")
        .log_to(&ingest_log)
        .start()
        .await;
    let mut worker = with_common_env(ServiceProcess::worker(
        env!("CARGO_BIN_EXE_triggers-worker"),
        &db.url,
    ))
    .log_to(&worker_log)
    .spawn();
    let client = reqwest::Client::new();
    let url = |path: &str| ingest.url(path);

    let mut secrets: Vec<String> = vec![ADMIN_TOKEN.to_owned()];
    // A wrong admin token, then the right one.
    let (status, _) = call(
        client
            .post(url("/api/keys/generate"))
            .bearer_auth("admin-token-wrong-71c3a9")
            .json(&json!({"organization_name": "Logs"})),
    )
    .await;
    assert_eq!(status, 401);
    secrets.push("admin-token-wrong-71c3a9".to_owned());
    let (status, org) = call(
        client
            .post(url("/api/keys/generate"))
            .header("X-Admin-Token", ADMIN_TOKEN)
            .json(&json!({"organization_name": "Logs", "tier": "pro"})),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    let first_key = text(&org, "api_key");
    let org_id = text(&org, "organization_id");
    secrets.push(first_key.clone());

    let (status, hook) = call(
        client
            .post(url("/api/webhook/config"))
            .header("X-API-Key", &first_key)
            .json(&json!({"webhook_url": receiver.url})),
    )
    .await;
    assert_eq!(status, 200, "{hook}");
    secrets.push(text(&hook, "signing_secret"));

    for n in 0..3 {
        let (status, body) =
            call(client.post(url("/api/events")).bearer_auth(&first_key).json(
                &json!({"type": "order.created", "payload": {"n": n}, "dedup_id": format!("logs-{n}")}),
            ))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    eventually(
        "3 events delivered after a retry",
        Duration::from_secs(60),
        || async { receiver.count() >= 4 },
    )
    .await;

    let (status, rotated) = call(
        client
            .post(url("/api/keys/rotate"))
            .header("X-API-Key", &first_key)
            .json(&json!({"grace_period_seconds": 0})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let second_key = text(&rotated, "api_key");
    secrets.push(second_key.clone());
    // The retired key and a guessed secret are refused (and must not be logged either).
    let guess = format!("{}_{}", &second_key[..21], "Z".repeat(43));
    for wrong in [&first_key, &guess] {
        let (status, _) = call(client.get(url("/api/keys")).header("X-API-Key", wrong)).await;
        assert_eq!(status, 401);
    }
    secrets.push(guess);

    let (status, secret) = call(
        client
            .post(url("/api/webhook/secret/rotate"))
            .header("X-API-Key", &second_key),
    )
    .await;
    assert_eq!(status, 200, "{secret}");
    secrets.push(text(&secret, "signing_secret"));
    let (status, body) = call(
        client
            .post(url("/api/events"))
            .header("X-API-Key", &second_key)
            .json(&json!({"type": "order.updated", "payload": {"after": "rotation"}})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually(
        "the event after the rotations is delivered",
        Duration::from_secs(60),
        || async { receiver.count() >= 5 },
    )
    .await;

    // SIGTERM and wait, so everything each process logged is in its file.
    ingest.terminate(Duration::from_secs(30)).await;
    worker.terminate(Duration::from_secs(30)).await;
    let ingest_text = std::fs::read_to_string(&ingest_log).expect("ingest log");
    let worker_text = std::fs::read_to_string(&worker_log).expect("worker log");
    // The logs are real debug logs of this run, not empty files.
    assert!(
        ingest_text.contains("\"level\":\"DEBUG\""),
        "ingest logged nothing at debug"
    );
    assert!(
        ingest_text.contains(&org_id),
        "ingest did not log the organisation"
    );
    assert!(
        worker_text.contains("DEBUG"),
        "the worker logged nothing at debug"
    );

    for secret in &secrets {
        // The whole secret, and its secret part alone (after a key's public prefix
        // `trg_live_<12 hex>_`, or after `whsec_`).
        let mut needles = vec![secret.as_str()];
        if secret.starts_with("trg_live_") {
            needles.push(&secret[22..]);
        } else if let Some(tail) = secret.strip_prefix("whsec_") {
            needles.push(tail);
        }
        for needle in needles {
            for (name, text) in [("ingest", &ingest_text), ("worker", &worker_text)] {
                if let Some(at) = text.find(needle) {
                    let line = text[..at].lines().count();
                    panic!("the {name} log (line {line}) contains a secret: {needle}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
}
