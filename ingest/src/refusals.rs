//! Refused requests that come in a loop. A request to `POST /api/events` (or its batch) refused
//! for its body (`400`, `413`, `415`, `422`) costs the service the reading and checking of that
//! body and answers at once, without waiting for a commit; a client that resends it as soon as it
//! is answered keeps a core busy on its own. What a refusal costs grows with its body (receiving
//! and scanning 200 KB takes a hundred times what a small one does), so a refusal takes one unit
//! of its organisation's budget and one more for every [`UNIT_BYTES`] of the body's declared
//! length. Each organisation may spend [`BURST`] units at once and [`PER_SECOND`] a second after
//! that; past that budget, each further refusal is still answered the same (the same status and
//! body), but [`DELAY`] later. The delay holds no
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

/// Units (small refusals) an organisation may spend at once before its refusals are delayed.
pub const BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(99);
/// Units an organisation may spend a second after its burst before its refusals are delayed.
pub const PER_SECOND: NonZeroU32 = NonZeroU32::MIN.saturating_add(99);
/// A refused body costs one more unit for each of these bytes of its length: a 256 KiB payload
/// refused costs 17 units, so at most about 6 a second are answered at once.
pub const UNIT_BYTES: usize = 16 * 1024;
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

    /// Count one refusal of `org`, of a body of `body_len` bytes (its `Content-Length`; zero when
    /// not declared); how long to hold its answer (zero within the budget).
    pub fn refused(&self, org: Uuid, body_len: usize) -> Duration {
        if self.budgets.len() >= TRACKED_ORGANISATIONS {
            self.budgets.retain_recent();
            self.budgets.shrink_to_fit();
        }
        match self.budgets.check_key_n(&org, Self::units(body_len)) {
            Ok(Ok(())) => Duration::ZERO,
            // Over the budget now, or a body too large for any budget (not with these constants).
            Ok(Err(_)) | Err(_) => DELAY,
        }
    }

    /// The units a refusal of a body of `body_len` bytes costs: at most the whole burst.
    fn units(body_len: usize) -> NonZeroU32 {
        let extra = u32::try_from(body_len / UNIT_BYTES).unwrap_or(u32::MAX);
        NonZeroU32::MIN.saturating_add(extra).min(BURST)
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
            assert_eq!(budget.refused(loud, 100), Duration::ZERO);
        }
        // One token comes back every 10 ms: unless this thread stalls for 50 ms, most of the
        // next ten are over the budget.
        let over: Vec<Duration> = (0..10).map(|_| budget.refused(loud, 100)).collect();
        assert!(over.iter().filter(|d| **d == DELAY).count() >= 5, "{over:?}");
        assert_eq!(
            budget.refused(quiet, 100),
            Duration::ZERO,
            "another organisation is not"
        );
    }

    #[test]
    fn a_refusal_costs_more_the_larger_its_body() {
        assert_eq!(RefusalBudget::units(0).get(), 1);
        assert_eq!(RefusalBudget::units(UNIT_BYTES - 1).get(), 1);
        assert_eq!(RefusalBudget::units(UNIT_BYTES).get(), 2);
        // The bench's 200,000-digit number: 13 units, so its burst is 7 refusals, not 100.
        assert_eq!(RefusalBudget::units(200_040).get(), 13);
        assert_eq!(RefusalBudget::units(usize::MAX), BURST);

        let budget = RefusalBudget::default();
        let large = Uuid::now_v7();
        let at_once = (0..20)
            .take_while(|_| budget.refused(large, 200_040).is_zero())
            .count();
        assert!(
            (7..=8).contains(&at_once),
            "{at_once} large refusals answered at once"
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
