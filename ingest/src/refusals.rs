//! Refused requests that come in a loop. A request to `POST /api/events` (or its batch) refused
//! for its body (`400`, `413`, `415`, `422`) costs the service the reading and checking of that
//! body and answers at once, without waiting for a commit; a client that resends it as soon as it
//! is answered keeps a core busy on its own. Each organisation may have [`BURST`] such refusals
//! at once and [`PER_SECOND`] a second after that; past that budget, each further refusal is
//! still answered the same (the same status and body), but [`DELAY`] later. The delay holds no
//! resource but the client's own connection, so a client refused in a loop slows to a few
//! requests a second per connection, and other organisations keep the CPU (issue 15: a stream
//! beside a client sending unstorable payloads from 4 connections).
//!
//! Accepted events, duplicates (`409`, what a retry is told) and rate-limited requests (`429`,
//! which are answered before the body is read) do not count. Memory is bounded: budgets are
//! pruned of full ones when [`TRACKED_ORGANISATIONS`] is reached.

use std::{num::NonZeroU32, time::Duration};

use axum::http::StatusCode;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

/// Refusals an organisation may have at once before they are delayed.
pub const BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(99);
/// Refusals a second an organisation may have after its burst before they are delayed.
pub const PER_SECOND: NonZeroU32 = NonZeroU32::MIN.saturating_add(99);
/// How much later a refusal over the budget is answered.
pub const DELAY: Duration = Duration::from_millis(250);
/// Organisations whose budget is tracked at most before full budgets are dropped.
const TRACKED_ORGANISATIONS: usize = 10_000;

pub struct RefusalBudget {
    budgets: DefaultKeyedRateLimiter<Uuid>,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        Self {
            budgets: RateLimiter::keyed(Quota::per_second(PER_SECOND).allow_burst(BURST)),
        }
    }
}

impl RefusalBudget {
    /// Whether a response with `status` counts as a refusal of the request's body.
    pub fn counts(status: StatusCode) -> bool {
        matches!(
            status,
            StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
                | StatusCode::UNPROCESSABLE_ENTITY
        )
    }

    /// Count one refusal of `org`; how long to hold its answer (zero within the budget).
    pub fn refused(&self, org: Uuid) -> Duration {
        if self.budgets.len() >= TRACKED_ORGANISATIONS {
            self.budgets.retain_recent();
            self.budgets.shrink_to_fit();
        }
        match self.budgets.check_key(&org) {
            Ok(()) => Duration::ZERO,
            Err(_) => DELAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_organisation_is_delayed_only_past_its_burst_and_alone() {
        let budget = RefusalBudget::default();
        let (loud, quiet) = (Uuid::now_v7(), Uuid::now_v7());
        for _ in 0..BURST.get() {
            assert_eq!(budget.refused(loud), Duration::ZERO);
        }
        // One token comes back every 10 ms: unless this thread stalls for 50 ms, most of the
        // next ten are over the budget.
        let over: Vec<Duration> = (0..10).map(|_| budget.refused(loud)).collect();
        assert!(over.iter().filter(|d| **d == DELAY).count() >= 5, "{over:?}");
        assert_eq!(
            budget.refused(quiet),
            Duration::ZERO,
            "another organisation is not"
        );
    }

    #[test]
    fn only_refusals_of_the_body_count() {
        for status in [400, 413, 415, 422] {
            assert!(RefusalBudget::counts(
                StatusCode::from_u16(status).expect("status")
            ));
        }
        for status in [200, 202, 401, 403, 409, 429, 503] {
            assert!(!RefusalBudget::counts(
                StatusCode::from_u16(status).expect("status")
            ));
        }
    }
}
