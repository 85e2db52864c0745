//! Wrong secrets per key prefix: a prefix may see [`FAILURE_BURST`] wrong secrets at once, then
//! one a second; past that budget, attempts on the prefix are refused without a query or argon2
//! until it refills.
//!
//! Only failures count: a correct key is never throttled by its own traffic. Together with the
//! cache's one-verification-at-a-time per prefix, a flood of guesses for one prefix costs at
//! most `FAILURE_BURST` hashes and then one a second, and never more than one hash slot at a
//! time, so it cannot starve the hash pool other organisations' first requests need. (The
//! budget is in failures, not failures per second of hashing, so it bites just as well on a
//! machine where one hash takes longer than a tenth of a second.) A correct key presented while
//! its prefix is throttled is refused too (it cannot be told apart without hashing); a key
//! already cached is unaffected.
//!
//! Memory is bounded: the failure budgets (`governor`, keyed by prefix) are pruned of full
//! budgets when [`TRACKED_PREFIXES`] is reached, and blocked prefixes expire within a second.

use std::{num::NonZeroU32, time::Duration};

use dashmap::DashMap;
use governor::{
    Quota, RateLimiter, clock::Clock, middleware::NoOpMiddleware, state::keyed::DashMapStateStore,
};
use tokio::time::Instant;

/// Wrong secrets a prefix may see at once before it is throttled (then one a second).
pub const FAILURE_BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(9);
/// Prefixes whose failure budget is tracked at most before full budgets are dropped.
const TRACKED_PREFIXES: usize = 10_000;

/// Tokio's monotonic clock (the system's, but for a test that pauses and advances it).
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

pub(super) struct PrefixThrottle {
    failures: RateLimiter<String, DashMapStateStore<String>, TokioClock, NoOpMiddleware<std::time::Instant>>,
    /// Prefixes out of budget, and until when.
    blocked: DashMap<String, Instant>,
}

impl PrefixThrottle {
    pub(super) fn new() -> Self {
        Self {
            failures: RateLimiter::dashmap_with_clock(
                Quota::per_second(NonZeroU32::MIN).allow_burst(FAILURE_BURST),
                TokioClock,
            ),
            blocked: DashMap::new(),
        }
    }

    /// Is this prefix out of budget right now (answer 401 without looking further)?
    pub(super) fn is_blocked(&self, prefix: &str) -> bool {
        let Some(until) = self.blocked.get(prefix).map(|e| *e) else {
            return false;
        };
        let now = Instant::now();
        if until > now {
            return true;
        }
        self.blocked.remove_if(prefix, |_, u| *u <= now);
        false
    }

    /// Count a wrong secret for this prefix; block the prefix once its budget is spent.
    pub(super) fn failed(&self, prefix: &str) {
        if self.failures.len() >= TRACKED_PREFIXES {
            self.failures.retain_recent();
            self.failures.shrink_to_fit();
        }
        let Err(not_until) = self.failures.check_key(&prefix.to_owned()) else {
            return;
        };
        let wait = not_until.wait_time_from(self.failures.clock().now());
        let now = Instant::now();
        if self.blocked.len() >= TRACKED_PREFIXES {
            self.blocked.retain(|_, until| *until > now);
        }
        // Never less than a millisecond, so a block is never a no-op.
        self.blocked
            .insert(prefix.to_owned(), now + wait.max(Duration::from_millis(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_prefix_is_blocked_only_after_its_burst_of_failures() {
        let throttle = PrefixThrottle::new();
        let burst = FAILURE_BURST.get();
        for _ in 0..burst {
            throttle.failed("trg_live_aaaaaaaaaaaa");
        }
        assert!(
            !throttle.is_blocked("trg_live_aaaaaaaaaaaa"),
            "the burst itself is allowed"
        );
        throttle.failed("trg_live_aaaaaaaaaaaa");
        assert!(throttle.is_blocked("trg_live_aaaaaaaaaaaa"));
        assert!(
            !throttle.is_blocked("trg_live_bbbbbbbbbbbb"),
            "other prefixes are not"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_prefix_is_released_when_its_budget_refills() {
        let throttle = PrefixThrottle::new();
        for _ in 0..=FAILURE_BURST.get() {
            throttle.failed("trg_live_cccccccccccc");
        }
        assert!(throttle.is_blocked("trg_live_cccccccccccc"));
        tokio::time::advance(Duration::from_millis(950)).await;
        assert!(
            throttle.is_blocked("trg_live_cccccccccccc"),
            "released before a second"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!throttle.is_blocked("trg_live_cccccccccccc"));
        assert!(throttle.blocked.is_empty(), "the expired block was dropped");
    }
}
