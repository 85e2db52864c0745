//! A webhook receiver that verifies Triggers' Standard Webhooks signature and timestamp.
//!
//!     WEBHOOK_SECRET=whsec_... PORT=4000 cargo run -p triggers-examples --bin example-receiver
//!
//! Prints `verified <webhook-id> <type>` per accepted delivery and answers 204; a bad signature
//! or a timestamp more than 5 minutes off answers 401. Deliveries are at-least-once, so a
//! repeated `webhook-id` is acknowledged again but processed only once.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TOLERANCE_SECS: i64 = 5 * 60;

struct Receiver {
    key: Vec<u8>,
    seen: Mutex<HashSet<String>>,
}

/// The `webhook-id` of an authentic, fresh delivery, or why it is refused.
fn check(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<String, &'static str> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or("missing header")
    };
    let (id, timestamp, signatures) = (
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
    );
    let sent: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock")?
        .as_secs() as i64;
    if (now - sent).abs() > TOLERANCE_SECS {
        return Err("timestamp outside tolerance");
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "bad key")?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    // Several space-separated signatures may be sent during a secret rotation.
    let valid = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok()); // constant-time comparison
    if valid {
        Ok(id.to_string())
    } else {
        Err("bad signature")
    }
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = match check(&rx.key, &headers, &body) {
        Ok(id) => id,
        Err(why) => {
            eprintln!("refused: {why}");
            return StatusCode::UNAUTHORIZED;
        }
    };
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let first_time = rx
        .seen
        .lock()
        .map(|mut seen| seen.insert(id.clone()))
        .unwrap_or(true);
    if first_time {
        println!("verified {id} {}", event["type"].as_str().unwrap_or("?"));
    }
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("WEBHOOK_SECRET")?;
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(&secret))?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "4000".into());
    let state = Arc::new(Receiver {
        key,
        seen: Mutex::default(),
    });
    let app = Router::new()
        .route("/{*path}", post(receive))
        .route("/", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    eprintln!("receiver listening on http://127.0.0.1:{port}/");
    axum::serve(listener, app).await?;
    Ok(())
}
