//! Test entry points, compiled only with the `testing` feature (which only this crate's
//! dev-dependency on itself turns on): deliver what is due now and return once it is recorded,
//! instead of waiting for the consumer's poll (crates.io's `run_pending_background_jobs`), and a
//! hook to act between a delivery's preparation and its request.

use std::{future::Future, pin::Pin, sync::Arc};

use futures::future::join_all;
use triggers_shared::{db::queue, models::DeliveryKey};

use crate::deliver::Deliverer;

/// The worker name [`Deliverer::run_due`] claims jobs as.
pub const TEST_WORKER: &str = "test-run-due";

/// How many jobs one claim of [`Deliverer::run_due`] takes.
const CLAIM: i32 = 256;

/// Claims in one [`Deliverer::run_due`] at most (a job put back due at once would loop).
const MAX_ROUNDS: usize = 100;

type HookFn = dyn Fn(DeliveryKey) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// An optional hook the deliverer awaits between preparing a request and its last look.
#[derive(Default)]
pub(crate) struct Hook(std::sync::Mutex<Option<Arc<HookFn>>>);

impl Hook {
    pub(crate) async fn run(&self, key: DeliveryKey) {
        let hook = self.0.lock().ok().and_then(|hook| hook.clone());
        if let Some(hook) = hook {
            hook(key).await;
        }
    }
}

impl Deliverer {
    /// Claim every job due now (by apalis' fetch, as the consumer claims), run them together as
    /// the consumer would, and return once each has finished and its outcome is committed; then
    /// again for what became due meanwhile (a retry due at once), until nothing is due. Returns
    /// how many jobs ran. A retry scheduled later stays in the queue: move its `run_at`
    /// (`queue::testing::make_scheduled_due`) to run it.
    pub async fn run_due(&self) -> anyhow::Result<usize> {
        let mut ran = 0;
        for _ in 0..MAX_ROUNDS {
            let claimed = {
                let mut conn = self.pool.acquire().await?;
                queue::testing::claim_due(&mut conn, TEST_WORKER, CLAIM).await
            };
            if claimed.is_empty() {
                return Ok(ran);
            }
            ran += claimed.len();
            for result in join_all(claimed.into_iter().map(|(task, job)| self.run(job, task))).await {
                result?;
            }
        }
        anyhow::bail!("jobs were still due after {MAX_ROUNDS} rounds")
    }

    /// Await `hook` in every delivery between preparing its request and the last look before
    /// sending it (to commit an acknowledgement meanwhile, or to be slow).
    pub fn before_send<F, Fut>(&self, hook: F)
    where
        F: Fn(DeliveryKey) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook: Arc<HookFn> = Arc::new(move |key| Box::pin(hook(key)));
        if let Ok(mut slot) = self.before_send.0.lock() {
            *slot = Some(hook);
        }
    }
}
