//! The request one delivery sends: its target checked (a public address unless private ones are
//! allowed), its body built from the stored event, its headers (the endpoint's custom ones, then
//! ours) and its Standard Webhooks signatures, one per valid secret.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chrono::SecondsFormat;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use triggers_shared::{
    db::deliveries::{DeliveryTarget, EndpointTarget},
    jobs::DeliveryJob,
    net, signing,
};
use uuid::Uuid;

use super::classify::{Observed, failed};

/// The body a receiver gets, field for field as API.md has it.
#[derive(Serialize)]
struct WebhookBody<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    dedup_id: Option<&'a str>,
    data: &'a serde_json::value::RawValue,
}

/// Check the target and sign. `Err`: the attempt already failed (recorded as such).
pub(super) async fn prepare(
    job: &DeliveryJob,
    target: &DeliveryTarget,
    endpoint: &EndpointTarget,
    allow_private_webhooks: bool,
) -> Result<(url::Url, HeaderMap, Vec<u8>), Observed> {
    let url =
        net::parse_webhook_url(&endpoint.url).map_err(|e| failed(format!("webhook URL refused: {e}")))?;
    if let Err(e) = net::resolve_allowed(&url, allow_private_webhooks).await {
        return Err(failed(format!("webhook target refused: {e}")));
    }
    let (headers, body) =
        signed_request(job.event_id, target, endpoint).map_err(|e| failed(format!("{e:#}")))?;
    Ok((url, headers, body))
}

/// Secrets that sign one request at most (API.md: at most 5 valid at once).
const MAX_SIGNATURES: usize = 5;

/// The headers and exact body bytes of one delivery: the endpoint's custom headers, then ours
/// (which they cannot replace: the names are refused when an endpoint is saved, and ours are
/// set last), signed over those bytes with every valid secret.
fn signed_request(
    event_id: Uuid,
    target: &DeliveryTarget,
    endpoint: &EndpointTarget,
) -> anyhow::Result<(HeaderMap, Vec<u8>)> {
    // Checked, not parsed into a tree: the stored text goes into the body as it is.
    let data: &serde_json::value::RawValue =
        serde_json::from_str(&target.payload).context("the stored payload is not JSON")?;
    let body = serde_json::to_vec(&WebhookBody {
        id: event_id,
        event_type: &target.event_type,
        timestamp: target.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        dedup_id: target.dedup_id.as_deref(),
        data,
    })?;
    let id = event_id.to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let timestamp = i64::try_from(now).unwrap_or(i64::MAX);
    let signatures = endpoint
        .secrets
        .iter()
        .take(MAX_SIGNATURES)
        .map(|secret| signing::sign(secret, &id, timestamp, &body))
        .collect::<Option<Vec<String>>>()
        .context("a signing secret is not valid base64")?;
    let mut headers = HeaderMap::new();
    for (name, value) in &endpoint.headers {
        let name = HeaderName::try_from(name.as_str()).with_context(|| format!("custom header {name:?}"))?;
        let value = HeaderValue::try_from(value.as_str()).with_context(|| format!("custom header {name}"))?;
        headers.insert(name, value);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut put = |name: &'static str, value: String| -> anyhow::Result<()> {
        let value = HeaderValue::try_from(value).with_context(|| format!("{name} is not a valid header"))?;
        headers.insert(HeaderName::from_static(name), value);
        Ok(())
    };
    put("x-event-id", id.clone())?;
    put("x-event-type", target.event_type.clone())?;
    put("webhook-id", id)?;
    put("webhook-timestamp", timestamp.to_string())?;
    put("webhook-signature", signatures.join(" "))?;
    Ok((headers, body))
}
