//! One claimed job, start to finish: the apalis handler (a panic or a database error fails the
//! job back to apalis), the request slot (`fair`), the load of the delivery with every one
//! starting now, the checks that drop or close it without a request, the last look before
//! sending, and the attempt handed to the group commit (`recorder`), counted in the metrics.
//! Building the signed request is [`super::request`]'s, judging the answer
//! [`super::classify`]'s, waiting for a rate-limited start [`super::pace`]'s.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use apalis::prelude::{BoxDynError, Data, TaskId};
use chrono::Utc;
use futures::FutureExt;
use sqlx::PgPool;
use triggers_shared::{
    config::WorkerConfig,
    db::{
        deliveries::{self, AttemptRecord, DeliveryTarget},
        queue,
    },
    jobs::{DeliveryJob, JobId},
    metrics::{
        DELIVERIES_TOTAL, DELIVERY_DEFERRED_TOTAL, DELIVERY_DURATION_SECONDS, DELIVERY_END_TO_END_SECONDS,
        DELIVERY_INFLIGHT, EVENTS_DEAD_LETTERED_TOTAL,
    },
    models::{DeliveryKey, DeliveryStatus},
};

use super::{classify, request};
use crate::{
    client::WebhookClient,
    coalesce::Coalescer,
    fair::{Admission, Gate, Grant, Permit},
    rate::Limiter,
    recorder::{self, Write, Written},
    retry::{self, Next},
};

/// How many jobs one worker holds (claimed from the queue) per request it may have in flight.
pub const HOLD_PER_SLOT: usize = 16;

/// The most deliveries one load or re-check statement asks for.
const MAX_READ_BATCH: usize = 256;

/// How old the event's load may be when the request goes out before it is read again.
pub const RECHECK_AFTER: Duration = Duration::from_millis(50);

/// Shared by every delivery of one worker process.
pub struct Deliverer {
    pub(crate) pool: PgPool,
    client: WebhookClient,
    config: Arc<WorkerConfig>,
    gate: Gate,
    /// Loads the deliveries starting together, with their events and endpoints, in one query.
    loader: Coalescer<DeliveryKey, Option<DeliveryTarget>>,
    /// Right before sending: is the delivery still pending in this job's chain?
    pub(super) recheck: Coalescer<(DeliveryKey, String), bool>,
    recorder: Coalescer<Write, Written>,
    /// Start times of rate-limited endpoints' deliveries, for the whole fleet.
    pub(super) limiter: Limiter,
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
        let allow_private = self.config.common.allow_private_webhooks;
        let observed = match request::prepare(&job, &target, endpoint, allow_private).await {
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
                    Ok(answer) => classify::observe(&answer),
                    Err(error) => classify::failed(error),
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

    /// A request slot for `job`. `None`: the job was put back in the queue instead (its
    /// organisation or endpoint holds enough already, or the worker is stopping).
    pub(super) async fn acquire(&self, job: &DeliveryJob, task: &str) -> anyhow::Result<Option<Permit>> {
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
    pub(super) async fn write(&self, write: Write) -> anyhow::Result<Written> {
        self.recorder.call(write).await.map_err(share)
    }

    /// Nothing to send: finish the job (committed with others) and count it.
    pub(super) async fn drop_job(&self, task: String, reason: &'static str) -> anyhow::Result<()> {
        self.write(Write::Finish { task }).await?;
        dropped(reason)
    }
}

/// How many claimed jobs one worker holds: apalis' concurrency.
pub fn held_jobs(config: &WorkerConfig) -> usize {
    config.concurrency.max(1).saturating_mul(HOLD_PER_SLOT)
}

/// A batch's error for one of its requests.
pub(super) fn share(e: crate::coalesce::BatchError) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
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
