//! One delivery attempt: what happens to a delivery (an event to one endpoint) once its job is
//! claimed.
//!
//! The job waits in the worker for a slot (`fair`), or is put back in the queue for later when
//! its organisation or endpoint holds enough already. With a slot: load the delivery with its
//! event and endpoint (batched with every delivery starting now). Nothing is sent when the
//! delivery is no longer pending or this job is not its chain's (acknowledged, resent,
//! finished, purged); a deleted endpoint closes it `cancelled`, a disabled one `skipped`.
//! Otherwise check the target and sign (one signature per valid secret), check once more that
//! the delivery is still pending in this chain if that took over [`RECHECK_AFTER`] (batched
//! too); an endpoint with a `rate_limit_per_second` first gets its start from the fleet's
//! limiter (`rate`): one reserved within a second is waited for without the request slot
//! (taken again just before it, for that check), one further out puts the job back in the
//! queue, neither counted as an attempt. Then send the signed POST with the endpoint's custom headers and no transaction open, then
//! hand the attempt to the group commit (`recorder`): it records the attempt, moves the
//! delivery on, enqueues any next attempt as a new job whose `run_at` lies in the future (named
//! by the delivery) and finishes (deletes) this job, in one transaction shared with other
//! deliveries. The handler returns after that commit. apalis itself never retries a webhook
//! failure (it would re-fetch at once, with its backoff kept only in memory).

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use apalis::prelude::{BoxDynError, Data, TaskId};
use chrono::{SecondsFormat, Utc};
use futures::FutureExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use sqlx::PgPool;
use triggers_shared::{
    config::WorkerConfig,
    db::{
        deliveries::{self, AttemptRecord, DeliveryKey, DeliveryTarget, EndpointTarget},
        queue,
    },
    jobs::{DeliveryJob, JobId},
    metrics::{
        DELIVERIES_TOTAL, DELIVERY_DEFERRED_TOTAL, DELIVERY_DURATION_SECONDS, DELIVERY_END_TO_END_SECONDS,
        DELIVERY_INFLIGHT, DELIVERY_RATE_LIMITED_TOTAL, EVENTS_DEAD_LETTERED_TOTAL,
    },
    models::DeliveryStatus,
    net, signing,
};
use uuid::Uuid;

use crate::{
    client::{Answer, WebhookClient},
    coalesce::Coalescer,
    fair::{Admission, Gate, Grant, Permit},
    rate::{Limiter, Slot},
    recorder::{self, Write, Written},
    retry::{self, Next, Outcome},
};

/// How many jobs one worker holds (claimed from the queue) per request it may have in flight.
pub const HOLD_PER_SLOT: usize = 16;

/// The most deliveries one load or re-check statement asks for.
const MAX_READ_BATCH: usize = 256;

/// How old the event's load may be when the request goes out before it is read again.
pub const RECHECK_AFTER: Duration = Duration::from_millis(50);

/// How long before its reserved start a rate-limited delivery takes its request slot again, for
/// the last look (`recheck`) to be done by then.
const PACE_LEAD: Duration = Duration::from_millis(30);

/// How late a rate-limited delivery may start after its reserved start before it reserves
/// another instead: bounds how far a busy machine can crowd one second with late requests.
const PACE_LATE: Duration = Duration::from_millis(20);

/// How many starts one delivery reserves before its job goes back to the queue.
const PACE_TRIES: usize = 4;

/// A rate-limited delivery at its start, holding a request slot.
struct Paced {
    permit: Permit,
    /// Whether it had the last look (`recheck`) right before its start.
    rechecked: bool,
}

/// The longest `last_error` we store.
const MAX_ERROR_LEN: usize = 4096;

/// Shared by every delivery of one worker process.
pub struct Deliverer {
    pub(crate) pool: PgPool,
    client: WebhookClient,
    config: Arc<WorkerConfig>,
    gate: Gate,
    /// Loads the deliveries starting together, with their events and endpoints, in one query.
    loader: Coalescer<DeliveryKey, Option<DeliveryTarget>>,
    /// Right before sending: is the delivery still pending in this job's chain?
    recheck: Coalescer<(DeliveryKey, String), bool>,
    recorder: Coalescer<Write, Written>,
    /// Start times of rate-limited endpoints' deliveries, for the whole fleet.
    limiter: Limiter,
    /// Tests only: what happens between preparing a request and the last look before it.
    #[cfg(feature = "testing")]
    pub(crate) before_send: crate::testing::Hook,
}

/// The apalis handler.
pub async fn handle(
    job: DeliveryJob,
    task: TaskId,
    deliverer: Data<Arc<Deliverer>>,
) -> Result<(), BoxDynError> {
    deliverer.run(job, task.to_string()).await.map_err(Into::into)
}

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

/// What one attempt produced, before it is recorded.
struct Observed {
    outcome: Outcome,
    response_status: Option<i32>,
    error: Option<String>,
}

impl Deliverer {
    pub fn new(pool: PgPool, config: Arc<WorkerConfig>) -> anyhow::Result<Self> {
        let client = WebhookClient::new(
            config.delivery_timeout,
            config.common.allow_private_webhooks,
            config.concurrency,
        )
        .context("building the webhook HTTP client")?;
        let gate = Gate::new(config.concurrency, config.org_inflight_cap, held_jobs(&config));
        let loader = {
            let pool = pool.clone();
            Coalescer::spawn(MAX_READ_BATCH, move |keys: Vec<DeliveryKey>| {
                let pool = pool.clone();
                async move {
                    let mut conn = pool.acquire().await?;
                    let found: HashMap<DeliveryKey, DeliveryTarget> =
                        deliveries::load_targets(&mut conn, &keys)
                            .await?
                            .into_iter()
                            .collect();
                    Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
                }
            })
        };
        let recheck = {
            let pool = pool.clone();
            Coalescer::spawn(MAX_READ_BATCH, move |asked: Vec<(DeliveryKey, String)>| {
                let pool = pool.clone();
                async move {
                    let mut conn = pool.acquire().await?;
                    let open = deliveries::still_deliverable(&mut conn, &asked).await?;
                    Ok(asked.iter().map(|(key, _)| open.contains(key)).collect())
                }
            })
        };
        let limiter = Limiter::spawn(pool.clone());
        gate.spawn_shedder();
        let recorder = recorder::spawn(
            pool.clone(),
            deliveries::DisablePolicy::after(config.endpoint_disable_after),
        );
        Ok(Self {
            pool,
            client,
            config,
            gate,
            loader,
            recheck,
            recorder,
            limiter,
            #[cfg(feature = "testing")]
            before_send: crate::testing::Hook::default(),
        })
    }

    /// The slots of this worker: `queue` closes them while a consumer stops.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Run one claimed job as the consumer does: [`Deliverer::deliver`], with a panic or a
    /// database error failing the job back to apalis (it retries it a few times, then gives it
    /// up) instead of unwinding through the consumer, so one poisonous job cannot crash-loop the
    /// fleet.
    pub(crate) async fn run(&self, job: DeliveryJob, task: String) -> anyhow::Result<()> {
        let result = match AssertUnwindSafe(self.deliver(job, task.clone()))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(_) => {
                tracing::error!("delivery panicked");
                Err(anyhow::anyhow!("delivery panicked"))
            }
        };
        if let Err(e) = &result {
            // The worker acknowledges its jobs itself (apalis' result sink is off): count the
            // failed run so apalis fetches the job again, up to its attempt limit.
            let failed = async {
                let mut conn = self.pool.acquire().await?;
                queue::fail_job(&mut conn, &task, &format!("{e:#}")).await
            };
            if let Err(db) = failed.await {
                // The job stays claimed; once this consumer restarts, apalis re-queues it.
                tracing::error!(error = %db, "marking a failed job failed");
            }
        }
        result
    }

    /// Deliver one job. `Err` only for database trouble (the job is then failed back to apalis).
    #[tracing::instrument(skip_all, fields(
        event_id = %job.event_id, endpoint_id = %job.endpoint_id, org_id = %job.organization_id,
        try_number = job.try_number,
    ))]
    pub async fn deliver(&self, job: DeliveryJob, task: String) -> anyhow::Result<()> {
        let Some(mut permit) = self.acquire(&job, &task).await? else {
            return Ok(());
        };

        let key = DeliveryKey::from(&job);
        let target = self.loader.call(key).await.map_err(share)?;
        let loaded = Instant::now();
        let Some(target) = target else {
            return self.drop_job(task, "delivery no longer exists").await;
        };
        if target.status != DeliveryStatus::Pending {
            return self.drop_job(task, "delivery is no longer pending").await;
        }
        if target.job_id.as_deref() != Some(task.as_str()) {
            return self
                .drop_job(task, "delivery was resent: another chain carries it")
                .await;
        }
        let endpoint = match &target.endpoint {
            None => return self.close(key, task, DeliveryStatus::Cancelled).await,
            Some(endpoint) if !endpoint.enabled => {
                return self.close(key, task, DeliveryStatus::Skipped).await;
            }
            Some(endpoint) => endpoint,
        };
        let _inflight = InflightGuard::new();
        let mut started_at = Utc::now();
        let mut clock = Instant::now();
        let observed = match self.prepare(&job, &target, endpoint).await {
            Ok((url, headers, body)) => {
                // The start comes last but for the last look, so the limit holds where the
                // requests leave, not where they were loaded.
                let mut rechecked = false;
                if let Some(per_second) = endpoint.rate_limit_per_second {
                    let Some(paced) = self.pace(&job, &task, per_second, permit).await? else {
                        return Ok(());
                    };
                    permit = paced.permit;
                    rechecked = paced.rechecked;
                    if rechecked {
                        started_at = Utc::now();
                        clock = Instant::now();
                    }
                }
                #[cfg(feature = "testing")]
                self.before_send.run(key).await;
                // Last look before the request, when preparing took a while (a slow DNS answer):
                // an ack, a deletion or a resend that committed since the load wins. Right after
                // the load a second read would only narrow a window that is as wide between any
                // read and the send.
                if !rechecked
                    && loaded.elapsed() >= RECHECK_AFTER
                    && !self.recheck.call((key, task.clone())).await.map_err(share)?
                {
                    return self.drop_job(task, "delivery closed before sending").await;
                }
                match self.client.post(url, headers, body).await {
                    Ok(answer) => observe(&answer),
                    Err(error) => failed(error),
                }
            }
            Err(observed) => observed,
        };
        let elapsed = clock.elapsed();
        drop(permit);
        metrics::histogram!(DELIVERY_DURATION_SECONDS).record(elapsed.as_secs_f64());

        let next = retry::next(
            job.try_number,
            observed.outcome,
            &self.config.retry_schedule,
            self.config.max_retry_after,
        );
        let (next_status, retry) = match next {
            Next::Delivered => (DeliveryStatus::Delivered, None),
            Next::RetryAfter(delay) => {
                let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                (DeliveryStatus::Pending, Some((JobId::new(), due)))
            }
            Next::GiveUp => (DeliveryStatus::Failed, None),
        };
        let record = AttemptRecord {
            key,
            task_id: task,
            started_at,
            duration_ms: i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
            response_status: observed.response_status,
            error: observed.error,
            next_status,
            retry,
        };
        let error = record.error.clone();
        let written = self
            .write(Write::Attempt {
                job: job.clone(),
                record,
                next,
            })
            .await?;
        let Written::Attempt(Some(recorded)) = written else {
            return dropped("delivery deleted during the attempt");
        };
        let outcome = match next {
            _ if !recorded.status_applied => "superseded",
            Next::Delivered => {
                let since = (Utc::now() - target.created_at).to_std().unwrap_or_default();
                metrics::histogram!(DELIVERY_END_TO_END_SECONDS).record(since.as_secs_f64());
                "delivered"
            }
            Next::RetryAfter(delay) => {
                tracing::info!(
                    delivery_attempt = recorded.attempt,
                    delay_ms = delay.as_millis() as u64,
                    error = error.as_deref().unwrap_or_default(),
                    "delivery failed; retry scheduled"
                );
                "retry"
            }
            Next::GiveUp => {
                metrics::counter!(EVENTS_DEAD_LETTERED_TOTAL).increment(1);
                tracing::warn!(
                    delivery_attempt = recorded.attempt,
                    error = error.as_deref().unwrap_or_default(),
                    "delivery failed for good; dead-lettered"
                );
                "failed"
            }
        };
        metrics::counter!(DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
        Ok(())
    }

    /// Wait for the reserved start of a delivery to an endpoint limited to `per_second` (see
    /// `rate`). Starting now: the permit back at once. Reserved within the horizon: the permit
    /// is given up until [`PACE_LEAD`] before the start, then taken again for the last look
    /// (done here); a delivery that still misses its start by over [`PACE_LATE`] (a busy
    /// machine) would crowd the next ones, so it reserves another, [`PACE_TRIES`] times at
    /// most. Not within the horizon, or late every time: the job goes back to the queue, due
    /// when its start would come. `None`: nothing more to do here (put back, or closed before
    /// sending). Waiting is never an attempt.
    async fn pace(
        &self,
        job: &DeliveryJob,
        task: &str,
        per_second: i32,
        mut permit: Permit,
    ) -> anyhow::Result<Option<Paced>> {
        let mut delay = Duration::ZERO;
        for _ in 0..PACE_TRIES {
            let slot = self
                .limiter
                .slot(job.organization_id, job.endpoint_id, per_second)
                .await
                .map_err(share)?;
            let wait = match slot {
                Slot::Now => {
                    return Ok(Some(Paced {
                        permit,
                        rechecked: false,
                    }));
                }
                Slot::After(wait) => wait,
                Slot::Later(later) => {
                    delay = later;
                    break;
                }
            };
            let due = Instant::now() + wait;
            // The request slot is for others meanwhile.
            drop(permit);
            tokio::time::sleep_until(due.checked_sub(PACE_LEAD).unwrap_or(due).into()).await;
            permit = match self.acquire(job, task).await? {
                Some(permit) => permit,
                None => return Ok(None),
            };
            if !self
                .recheck
                .call((DeliveryKey::from(job), task.to_owned()))
                .await
                .map_err(share)?
            {
                self.drop_job(task.to_owned(), "delivery closed before sending")
                    .await?;
                return Ok(None);
            }
            tokio::time::sleep_until(due.into()).await;
            if due.elapsed() <= PACE_LATE {
                return Ok(Some(Paced {
                    permit,
                    rechecked: true,
                }));
            }
        }
        drop(permit);
        let task = task.to_owned();
        self.write(Write::Release { task, delay }).await?;
        metrics::counter!(DELIVERY_RATE_LIMITED_TOTAL).increment(1);
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "endpoint at its rate limit; job deferred"
        );
        Ok(None)
    }

    /// A request slot for `job`. `None`: the job was put back in the queue instead (its
    /// organisation or endpoint holds enough already, or the worker is stopping).
    async fn acquire(&self, job: &DeliveryJob, task: &str) -> anyhow::Result<Option<Permit>> {
        let admission = match self.gate.admit(job.organization_id, job.endpoint_id) {
            Admission::Wait(slot) => slot.await.ok(),
            Admission::Defer(delay) => Some(Grant::Defer(delay)),
            Admission::Closed => None,
        };
        let delay = match admission {
            Some(Grant::Go(permit)) => return Ok(Some(permit)),
            Some(Grant::Defer(delay)) => {
                metrics::counter!(DELIVERY_DEFERRED_TOTAL).increment(1);
                tracing::debug!(
                    delay_ms = delay.as_millis() as u64,
                    "organisation or endpoint holds enough; job deferred"
                );
                delay
            }
            // The consumer is stopping: this job was never started; the queue gets it back.
            None => Duration::ZERO,
        };
        let task = task.to_owned();
        self.write(Write::Release { task, delay }).await?;
        Ok(None)
    }

    /// Close a delivery that will not be sent (its endpoint is disabled or gone) and finish its
    /// job, committed with others.
    async fn close(&self, key: DeliveryKey, task: String, status: DeliveryStatus) -> anyhow::Result<()> {
        self.write(Write::Close { task, key, status }).await?;
        let outcome = if status == DeliveryStatus::Skipped {
            "skipped"
        } else {
            "cancelled"
        };
        tracing::debug!(outcome, "delivery closed without a request");
        metrics::counter!(DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
        Ok(())
    }

    /// Hand `write` to the next group commit and wait until it is committed.
    async fn write(&self, write: Write) -> anyhow::Result<Written> {
        self.recorder.call(write).await.map_err(share)
    }

    /// Nothing to send: finish the job (committed with others) and count it.
    async fn drop_job(&self, task: String, reason: &'static str) -> anyhow::Result<()> {
        self.write(Write::Finish { task }).await?;
        dropped(reason)
    }

    /// Check the target and sign. `Err`: the attempt already failed (recorded as such).
    async fn prepare(
        &self,
        job: &DeliveryJob,
        target: &DeliveryTarget,
        endpoint: &EndpointTarget,
    ) -> Result<(url::Url, HeaderMap, Vec<u8>), Observed> {
        let url =
            net::parse_webhook_url(&endpoint.url).map_err(|e| failed(format!("webhook URL refused: {e}")))?;
        if let Err(e) = net::resolve_allowed(&url, self.config.common.allow_private_webhooks).await {
            return Err(failed(format!("webhook target refused: {e}")));
        }
        let (headers, body) =
            signed_request(job.event_id, target, endpoint).map_err(|e| failed(format!("{e:#}")))?;
        Ok((url, headers, body))
    }
}

/// How many claimed jobs one worker holds: apalis' concurrency.
pub fn held_jobs(config: &WorkerConfig) -> usize {
    config.concurrency.max(1).saturating_mul(HOLD_PER_SLOT)
}

/// A failed attempt that never reached the receiver.
fn failed(error: String) -> Observed {
    Observed {
        outcome: Outcome::Failed { retry_after: None },
        response_status: None,
        error: Some(truncate(error)),
    }
}

/// A batch's error for one of its requests.
fn share(e: crate::coalesce::BatchError) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
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

/// Classify a receiver's answer.
fn observe(answer: &Answer) -> Observed {
    let status = answer.status;
    let code = status.as_u16();
    if status.is_success() {
        return Observed {
            outcome: Outcome::Delivered,
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
    let outcome = if code == 410 {
        Outcome::Gone
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
        Outcome::Failed { retry_after }
    };
    Observed {
        outcome,
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
