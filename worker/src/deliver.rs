//! One delivery attempt: what happens to an event once its job is claimed.
//!
//! Take a per-organisation slot (or defer the job), reload the event (acknowledged, delivered,
//! deleted or webhook removed: nothing to send), check the target, send the signed POST with no
//! transaction open, then in ONE short transaction record the attempt, move the event on and,
//! when another attempt is due, enqueue it as a new job whose `run_at` lies in the future. The
//! handler then returns `Ok`: apalis itself never retries a webhook failure (it would re-fetch
//! at once, with its backoff kept only in memory).

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use apalis::prelude::{BoxDynError, Data};
use chrono::{SecondsFormat, Utc};
use dashmap::DashMap;
use futures::FutureExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use triggers_shared::{
    config::WorkerConfig,
    db::deliveries::{self, AttemptRecord, DeliveryTarget},
    jobs::{self, DeliveryJob},
    metrics::{
        DELIVERIES_TOTAL, DELIVERY_DEFERRED_TOTAL, DELIVERY_DURATION_SECONDS, DELIVERY_INFLIGHT,
        EVENTS_DEAD_LETTERED_TOTAL,
    },
    models::EventStatus,
    net, signing,
};
use uuid::Uuid;

use crate::{
    client::{Answer, WebhookClient},
    retry::{self, Attempt, Next},
};

/// How long a job over its organisation's in-flight cap waits before it is tried again.
pub const DEFER_DELAY: Duration = Duration::from_secs(1);

/// How long a job may wait in the handler for its organisation's slot before it is deferred. A
/// healthy endpoint frees slots in milliseconds, so its bursts queue here instead of being
/// pushed back by a second; a slow one does not, so its jobs leave the worker soon.
pub const SLOT_WAIT: Duration = Duration::from_millis(300);

/// How often recording an attempt is tried before the job is failed back to apalis.
const RECORD_TRIES: usize = 4;

/// The longest `last_error` we store.
const MAX_ERROR_LEN: usize = 4096;

/// Shared by every delivery of one worker process.
pub struct Deliverer {
    pool: PgPool,
    client: WebhookClient,
    config: Arc<WorkerConfig>,
    /// In-flight deliveries per organisation: one slow endpoint cannot take every slot.
    org_slots: DashMap<Uuid, Arc<OrgSlots>>,
}

/// One organisation's share of a worker: `cap` deliveries in flight, and at most `cap` more jobs
/// briefly waiting for one. So an organisation holds at most `2 × cap` of the worker's
/// concurrency, however slow its endpoint (keep `concurrency` above that).
struct OrgSlots {
    inflight: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// The apalis handler.
pub async fn handle(job: DeliveryJob, deliverer: Data<Arc<Deliverer>>) -> Result<(), BoxDynError> {
    // A panic fails this job (apalis retries it a few times, then gives it up) instead of
    // unwinding through the consumer, so one poisonous job cannot crash-loop the fleet.
    match AssertUnwindSafe(deliverer.deliver(job)).catch_unwind().await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => {
            tracing::error!("delivery panicked");
            Err("delivery panicked".into())
        }
    }
}

/// The body a receiver gets, field for field as API.md has it.
#[derive(Serialize)]
struct WebhookBody<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    dedup_id: Option<&'a str>,
    data: &'a serde_json::Value,
}

/// What one attempt produced, before it is recorded.
struct Observed {
    attempt: Attempt,
    response_status: Option<i32>,
    error: Option<String>,
}

impl Deliverer {
    pub fn new(pool: PgPool, config: Arc<WorkerConfig>) -> anyhow::Result<Self> {
        let client = WebhookClient::new(
            config.delivery_timeout,
            config.allow_private_webhooks,
            config.concurrency,
        )
        .context("building the webhook HTTP client")?;
        Ok(Self {
            pool,
            client,
            config,
            org_slots: DashMap::new(),
        })
    }

    /// Deliver one job. `Err` only for database trouble (apalis then retries the job).
    #[tracing::instrument(skip_all, fields(event_id = %job.event_id, org_id = %job.organization_id, attempt = job.attempt))]
    pub async fn deliver(&self, job: DeliveryJob) -> anyhow::Result<()> {
        let Some(_slot) = self.slot(job.organization_id).await else {
            return self.defer(job).await;
        };
        let _inflight = InflightGuard::new();

        let target = {
            let mut conn = self.pool.acquire().await?;
            deliveries::load_target(&mut conn, job.organization_id, job.event_id).await?
        };
        let Some(target) = target else {
            return dropped("event no longer exists");
        };
        if target.acknowledged_at.is_some() {
            return dropped("event acknowledged");
        }
        if target.status != EventStatus::Pending.as_str() {
            return dropped("event is no longer pending");
        }
        let (Some(url), Some(secret)) = (target.webhook_url.as_deref(), target.signing_secret.as_deref())
        else {
            // Without a webhook the event waits in the inbox for pull consumers.
            return dropped("organisation has no webhook");
        };

        let started_at = Utc::now();
        let clock = Instant::now();
        let observed = self.attempt(&target, url, secret).await;
        let elapsed = clock.elapsed();
        metrics::histogram!(DELIVERY_DURATION_SECONDS).record(elapsed.as_secs_f64());

        let next = retry::next(
            job.attempt,
            observed.attempt,
            &self.config.retry_schedule,
            self.config.max_retry_after,
        );
        let record = AttemptRecord {
            started_at,
            duration_ms: i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
            response_status: observed.response_status,
            error: observed.error,
            outcome: match next {
                Next::Delivered => EventStatus::Delivered,
                Next::RetryAfter(_) => EventStatus::Pending,
                Next::GiveUp => EventStatus::Failed,
            },
        };
        // The request has been made: retry the write a little before giving the job back to
        // apalis, whose retry would send the webhook again.
        let mut pause = Duration::from_millis(250);
        for _ in 0..RECORD_TRIES - 1 {
            match self.record(&job, &record, next).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "recording the attempt failed; retrying"),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        self.record(&job, &record, next).await
    }

    /// Write the attempt, the event's new state and any next job in one short transaction.
    async fn record(&self, job: &DeliveryJob, record: &AttemptRecord, next: Next) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let recorded = deliveries::record_attempt(&mut tx, job.organization_id, job.event_id, record).await?;
        let Some(recorded) = recorded else {
            tx.commit().await?;
            return dropped("event deleted during the attempt");
        };
        let outcome = match next {
            Next::Delivered => "delivered",
            Next::RetryAfter(_) if !recorded.status_applied => "superseded",
            Next::RetryAfter(delay) => {
                let following = DeliveryJob {
                    attempt: job.attempt + 1,
                    ..job.clone()
                };
                jobs::enqueue(&mut tx, &[(following, delay)]).await?;
                tracing::info!(
                    event_attempt = recorded.attempt,
                    delay_ms = delay.as_millis() as u64,
                    error = record.error.as_deref().unwrap_or_default(),
                    "delivery failed; retry scheduled"
                );
                "retry"
            }
            Next::GiveUp => "failed",
        };
        tx.commit().await?;
        if outcome == "failed" && recorded.status_applied {
            metrics::counter!(EVENTS_DEAD_LETTERED_TOTAL).increment(1);
            tracing::warn!(
                event_attempt = recorded.attempt,
                error = record.error.as_deref().unwrap_or_default(),
                "delivery failed for good; event dead-lettered"
            );
        }
        metrics::counter!(DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
        Ok(())
    }

    /// Check the target, sign and send. Never fails: every problem is a failed attempt.
    async fn attempt(&self, target: &DeliveryTarget, url: &str, secret: &str) -> Observed {
        let failed = |error: String| Observed {
            attempt: Attempt::Failed { retry_after: None },
            response_status: None,
            error: Some(truncate(error)),
        };
        let url = match net::parse_webhook_url(url) {
            Ok(url) => url,
            Err(e) => return failed(format!("webhook URL refused: {e}")),
        };
        if let Err(e) = net::resolve_allowed(&url, self.config.allow_private_webhooks).await {
            return failed(format!("webhook target refused: {e}"));
        }
        let (headers, body) = match signed_request(target, secret) {
            Ok(request) => request,
            Err(e) => return failed(format!("{e:#}")),
        };
        match self.client.post(url, headers, body).await {
            Ok(answer) => observe(&answer),
            Err(error) => failed(error),
        }
    }

    /// A delivery slot of `org`: at once, or after a short wait if few others are waiting.
    /// `None`: the organisation is at its cap; defer the job.
    async fn slot(&self, org: Uuid) -> Option<OwnedSemaphorePermit> {
        let cap = self.config.org_inflight_cap.max(1);
        let slots = self
            .org_slots
            .entry(org)
            .or_insert_with(|| {
                Arc::new(OrgSlots {
                    inflight: Arc::new(Semaphore::new(cap)),
                    waiting: AtomicUsize::new(0),
                })
            })
            .clone();
        if let Ok(permit) = slots.inflight.clone().try_acquire_owned() {
            return Some(permit);
        }
        // Counted down on drop, so a cancelled wait does not leak.
        let _waiting = Waiting::enter(&slots.waiting, cap)?;
        let permit = tokio::time::timeout(SLOT_WAIT, slots.inflight.clone().acquire_owned()).await;
        permit.ok().and_then(Result::ok)
    }

    /// Over the organisation's cap: put the same job back a little later. Not an attempt.
    async fn defer(&self, job: DeliveryJob) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        jobs::enqueue(&mut conn, &[(job, DEFER_DELAY)]).await?;
        metrics::counter!(DELIVERY_DEFERRED_TOTAL).increment(1);
        tracing::debug!("organisation at its in-flight cap; job deferred");
        Ok(())
    }
}

/// The headers and exact body bytes of one delivery (signed over those bytes).
fn signed_request(target: &DeliveryTarget, secret: &str) -> anyhow::Result<(HeaderMap, Vec<u8>)> {
    let body = serde_json::to_vec(&WebhookBody {
        id: target.event_id,
        event_type: &target.event_type,
        timestamp: target.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        dedup_id: target.dedup_id.as_deref(),
        data: &target.payload,
    })?;
    let id = target.event_id.to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let timestamp = i64::try_from(now).unwrap_or(i64::MAX);
    let signature =
        signing::sign(secret, &id, timestamp, &body).context("the signing secret is not valid base64")?;
    let mut headers = HeaderMap::new();
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
    put("webhook-signature", signature)?;
    Ok((headers, body))
}

/// Classify a receiver's answer.
fn observe(answer: &Answer) -> Observed {
    let status = answer.status;
    let code = status.as_u16();
    if status.is_success() {
        return Observed {
            attempt: Attempt::Delivered,
            response_status: Some(i32::from(code)),
            error: None,
        };
    }
    let excerpt = String::from_utf8_lossy(&answer.body);
    let mut error = format!("HTTP {code}");
    if status.is_redirection() {
        error.push_str(" (redirects are not followed)");
    }
    if !excerpt.trim().is_empty() {
        error.push_str(": ");
        error.push_str(excerpt.trim());
    }
    let attempt = if code == 410 {
        Attempt::Gone
    } else {
        let retry_after = if code == 429 || code == 503 {
            answer
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, Utc::now()))
        } else {
            None
        };
        Attempt::Failed { retry_after }
    };
    Observed {
        attempt,
        response_status: Some(i32::from(code)),
        error: Some(truncate(error)),
    }
}

/// Cut `text` to at most [`MAX_ERROR_LEN`] bytes on a character boundary.
fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn dropped(reason: &'static str) -> anyhow::Result<()> {
    tracing::debug!(reason, "job dropped without a request");
    metrics::counter!(DELIVERIES_TOTAL, "outcome" => "dropped").increment(1);
    Ok(())
}

/// One job waiting for its organisation's slot.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// `None` when `max` jobs are waiting already.
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        let guard = Self(count);
        (count.fetch_add(1, Ordering::SeqCst) < max).then_some(guard)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps the in-flight gauge right whichever way a delivery ends (even if it is cancelled).
struct InflightGuard;

impl InflightGuard {
    fn new() -> Self {
        metrics::gauge!(DELIVERY_INFLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        metrics::gauge!(DELIVERY_INFLIGHT).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_ERROR_LEN); // two bytes each
        let cut = truncate(text);
        assert_eq!(cut.len(), MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
        let odd = format!("a{}", "é".repeat(MAX_ERROR_LEN));
        assert_eq!(truncate(odd).len(), MAX_ERROR_LEN - 1);
        assert_eq!(truncate("short".into()), "short");
    }
}
