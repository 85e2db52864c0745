//! Test harness: the real ingest app on port 0 against a fresh database of its own.

pub mod browser;
pub mod fixtures;

use std::net::SocketAddr;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use triggers_ingest::Application;
use triggers_shared::{config::IngestConfig, testing::TestDb};
use triggers_testkit::prometheus;

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub db: PgPool,
    pub db_url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// A fresh database and an app on it.
    pub async fn spawn() -> Self {
        let db = TestDb::new().await.expect("test database");
        Self::spawn_on(&db.url, |_| {}).await
    }

    /// An app on an existing database (a second instance), with a config tweak.
    pub async fn spawn_on(db_url: &str, tweak: impl FnOnce(&mut IngestConfig)) -> Self {
        let mut config = IngestConfig::for_tests(db_url);
        tweak(&mut config);
        let app = Application::build(config).await.expect("build app");
        let addr = app.local_addr();
        let db = app.state().db.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            base: format!("http://{addr}"),
            db,
            db_url: db_url.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stop serving and wait for the graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }

    /// The value of a series of `/metrics`, summed over the lines that start with `series` (a
    /// name, or a name and the start of its labels); 0 when there is none.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = prometheus::scrape(&self.client, &self.url("/metrics")).await;
        prometheus::sum(&text, series)
    }

    /// Create an organisation; returns (api_key, organization_id).
    /// A request as the holder of `key`, with a JSON body (or none); the status, the headers and
    /// the JSON answer (`Null` for an empty body).
    pub async fn send_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("X-API-Key", key);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request");
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"))
        };
        (status, headers, json)
    }

    pub async fn create_org(&self, name: &str, tier: &str) -> (String, String) {
        let res = self
            .client
            .post(self.url("/api/keys/generate"))
            .json(&json!({"organization_name": name, "tier": tier}))
            .send()
            .await
            .expect("generate");
        assert_eq!(res.status(), 201, "generate failed");
        let body: Value = res.json().await.expect("json");
        (
            body["api_key"].as_str().expect("api_key").to_string(),
            body["organization_id"]
                .as_str()
                .expect("organization_id")
                .to_string(),
        )
    }
}

/// A response's status and its JSON body (every answer of the API, errors included, is JSON).
pub async fn error_of(res: reqwest::Response) -> (reqwest::StatusCode, Value) {
    let status = res.status();
    let body: Value = res.json().await.expect("error body is JSON");
    (status, body)
}

/// The fields a `422 validation_failed` answer names in its `details`, in order.
pub fn detail_fields(body: &Value) -> Vec<&str> {
    body["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field"))
        .collect()
}

/// The keys of a JSON object, sorted: to assert a response's exact shape.
pub fn field_names(body: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = body
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}
