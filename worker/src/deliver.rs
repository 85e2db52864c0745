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
//! queue, neither counted as an attempt. Then send the signed POST with the endpoint's custom
//! headers and no transaction open, then hand the attempt to the group commit (`recorder`): it
//! records the attempt, moves the delivery on, enqueues any next attempt as a new job whose
//! `run_at` lies in the future (named by the delivery) and finishes (deletes) this job, in one
//! transaction shared with other deliveries. The handler returns after that commit. apalis
//! itself never retries a webhook failure (it would re-fetch at once, with its backoff kept
//! only in memory).
//!
//! One module a step: `handler` runs a claimed job through all of it, `pace` waits for a
//! rate-limited start, `request` builds the signed request, `classify` judges the answer.

mod classify;
mod handler;
mod pace;
mod request;

pub use handler::{Deliverer, HOLD_PER_SLOT, RECHECK_AFTER, handle, held_jobs};
