//! A delivery to an endpoint with a `rate_limit_per_second` waits for the start the fleet's
//! limiter (`rate`) reserves for it: without its request slot while it waits, with a last look
//! right before the start, and back to the queue when its start is too far out. Waiting is
//! never an attempt.

use std::time::{Duration, Instant};

use triggers_shared::{jobs::DeliveryJob, metrics::DELIVERY_RATE_LIMITED_TOTAL, models::DeliveryKey};

use super::handler::{Deliverer, share};
use crate::{fair::Permit, rate::Slot, recorder::Write};

/// How long before its reserved start a rate-limited delivery takes its request slot again, for
/// the last look (`recheck`) to be done by then.
const PACE_LEAD: Duration = Duration::from_millis(30);

/// How late a rate-limited delivery may start after its reserved start before it reserves
/// another instead: bounds how far a busy machine can crowd one second with late requests.
const PACE_LATE: Duration = Duration::from_millis(20);

/// How many starts one delivery reserves before its job goes back to the queue.
const PACE_TRIES: usize = 4;

/// A rate-limited delivery at its start, holding a request slot.
pub(super) struct Paced {
    pub(super) permit: Permit,
    /// Whether it had the last look (`recheck`) right before its start.
    pub(super) rechecked: bool,
}

impl Deliverer {
    /// Wait for the reserved start of a delivery to an endpoint limited to `per_second` (see
    /// `rate`). Starting now: the permit back at once. Reserved within the horizon: the permit
    /// is given up until [`PACE_LEAD`] before the start, then taken again for the last look
    /// (done here); a delivery that still misses its start by over [`PACE_LATE`] (a busy
    /// machine) would crowd the next ones, so it reserves another, [`PACE_TRIES`] times at
    /// most. Not within the horizon, or late every time: the job goes back to the queue, due
    /// when its start would come. `None`: nothing more to do here (put back, or closed before
    /// sending). Waiting is never an attempt.
    pub(super) async fn pace(
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
}
