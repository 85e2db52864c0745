//! When the next attempt happens: the retry schedule with jitter, `Retry-After`, and which
//! answers end retrying at once. Pure functions, so the policy is testable without a network.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// How one attempt ended, as far as the schedule cares (what the event becomes is
/// [`Next`]'s business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Any 2xx.
    Delivered,
    /// `410 Gone`: the receiver says never again.
    Gone,
    /// Any other failure: a non-2xx status, a timeout, a refused or unreachable target. A
    /// `Retry-After` the receiver sent with 429 or 503 is carried along.
    Failed { retry_after: Option<Duration> },
}

/// What follows an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Another attempt after this delay.
    RetryAfter(Duration),
    /// No more attempts: the event is dead-lettered.
    GiveUp,
}

/// Decide what follows the job's try number `try_number` (from 1; see `DeliveryJob::try_number`),
/// given the configured delays before each retry (`1 + schedule.len()` tries in all).
pub fn next(try_number: u32, outcome: Outcome, schedule: &[Duration], max_retry_after: Duration) -> Next {
    let retry_after = match outcome {
        Outcome::Delivered => return Next::Delivered,
        Outcome::Gone => return Next::GiveUp,
        Outcome::Failed { retry_after } => retry_after,
    };
    let index = try_number.saturating_sub(1) as usize;
    let Some(&planned) = schedule.get(index) else {
        return Next::GiveUp;
    };
    match retry_after {
        // The receiver knows best when it can take more, within our cap.
        Some(wait) => Next::RetryAfter(wait.min(max_retry_after)),
        None => Next::RetryAfter(jitter(planned)),
    }
}

/// `delay` ±20%, so receivers that failed together are not retried in lockstep.
pub fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::rng().random_range(0.8..=1.2))
}

/// Parse a `Retry-After` value: delay-seconds or an HTTP date (`None`: neither).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(30)];
    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn failures_follow_the_schedule_then_give_up() {
        let failed = Outcome::Failed { retry_after: None };
        let Next::RetryAfter(d) = next(1, failed, &S, CAP) else {
            panic!("expected a retry")
        };
        assert!(
            d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
            "{d:?}"
        );
        let Next::RetryAfter(d) = next(2, failed, &S, CAP) else {
            panic!("expected a retry")
        };
        assert!(
            d >= Duration::from_secs(24) && d <= Duration::from_secs(36),
            "{d:?}"
        );
        assert_eq!(next(3, failed, &S, CAP), Next::GiveUp);
        assert_eq!(next(1, failed, &[], CAP), Next::GiveUp);
    }

    #[test]
    fn gone_stops_and_success_delivers() {
        assert_eq!(next(1, Outcome::Gone, &S, CAP), Next::GiveUp);
        assert_eq!(next(1, Outcome::Delivered, &S, CAP), Next::Delivered);
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let ra = |s| Outcome::Failed {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(next(1, ra(7), &S, CAP), Next::RetryAfter(Duration::from_secs(7)));
        assert_eq!(next(1, ra(7200), &S, CAP), Next::RetryAfter(CAP));
        assert_eq!(next(3, ra(1), &S, CAP), Next::GiveUp);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
