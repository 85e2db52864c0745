//! Fleet-wide per-organisation rate limiting of `POST /api/events` and `POST /api/events/batch`
//! (sliding window, leased from Postgres; a batch takes one token per event, all or none).
//!
//! The budget lives in `rate_limit_windows` and is handed out by the SQL function
//! `triggers_lease_tokens`: grants per clock minute, judged as a sliding window (the previous
//! minute's grants weighted by how much of it still overlaps the last 60 seconds). Each instance
//! leases small slices (`limit / 50`, at least 1, at most [`MAX_SLICE`]) and spends them locally,
//! so most requests cost no database round trip. A lease counts as used in the minute it was
//! granted, so local tokens expire at the end of that minute (on the database's clock). The
//! sum of what all instances accept therefore never exceeds the limit; at worst a few leased
//! tokens go unspent.
//!
//! After a refusal, the instance remembers it for up to [`DENIAL_MEMORY`], so a flood of
//! over-limit requests costs at most about one database call per second per organisation.
//!
//! State is a `DashMap` of per-organisation `tokio::sync::Mutex`es: requests of one
//! organisation queue behind one lease call; no lock is shared by all requests.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use dashmap::DashMap;
use sqlx::PgPool;
use tokio::sync::Mutex;
use triggers_shared::db::rate_limits::{self, Lease};
use uuid::Uuid;

use crate::error::ApiError;

/// The most tokens one lease asks for.
pub const MAX_SLICE: i32 = 500;
/// How long a refusal is remembered before asking the database again.
pub const DENIAL_MEMORY: Duration = Duration::from_secs(1);
/// Bound on one request's whole wait here (the per-organisation queue plus the lease call), so a
/// hung database never hangs a request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed lease, requests without local tokens fail fast for this long instead of
/// queueing behind one more doomed database call each.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

static LIMIT_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The verdict on one request, with what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Approximate requests left in the window (never negative).
    pub remaining: u32,
    /// Seconds until the current window ends (allowed) or until capacity frees up (refused).
    pub reset_secs: u64,
}

impl Decision {
    /// The `X-RateLimit-*` headers.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(LIMIT_HEADER.clone(), HeaderValue::from(self.limit));
        h.insert(REMAINING_HEADER.clone(), HeaderValue::from(self.remaining));
        h.insert(RESET_HEADER.clone(), HeaderValue::from(self.reset_secs));
        h
    }

    /// What to report when the budget could not be consulted (database unreachable): nothing
    /// left until the client's retry.
    pub fn unknown(limit: i32) -> Self {
        Self {
            allowed: false,
            limit: limit.max(1) as u32,
            remaining: 0,
            reset_secs: crate::error::UNAVAILABLE_RETRY_AFTER_SECS,
        }
    }

    /// The `429` for a refused request.
    pub fn rejection(&self) -> ApiError {
        ApiError::RateLimited {
            limit: self.limit,
            retry_after: self.reset_secs.max(1),
        }
    }
}

/// Per-organisation local state.
#[derive(Debug, Default)]
struct Bucket {
    /// Leased, unspent tokens; valid until `expires`.
    tokens: u32,
    expires: Option<Instant>,
    /// When the current window (clock minute) ends, as of the last lease.
    window_end: Option<Instant>,
    /// Budget not yet leased by anyone, as of the last lease.
    unleased: f64,
    /// A remembered refusal: until when, the retry time it announced, and how many tokens it
    /// lacked (a request needing fewer may still fit).
    denied_until: Option<Instant>,
    denied_need: u32,
    /// A remembered lease failure (database unreachable).
    failed_until: Option<Instant>,
    retry_at: Option<Instant>,
}

#[derive(Clone)]
pub struct RateLimiter {
    db: PgPool,
    buckets: Arc<DashMap<Uuid, Arc<Mutex<Bucket>>>>,
    /// When idle buckets were last dropped (seconds since `epoch`).
    last_prune: Arc<AtomicU64>,
    epoch: Instant,
}

/// Buckets kept before idle ones are dropped (at most once a minute).
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            buckets: Arc::new(DashMap::new()),
            last_prune: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    /// Drop buckets whose window has ended (their tokens are void anyway), so memory follows
    /// the number of recently active organisations. Runs at most once a minute.
    fn maybe_prune(&self, now: Instant) {
        if self.buckets.len() <= PRUNE_ABOVE {
            return;
        }
        let secs = now.duration_since(self.epoch).as_secs();
        let last = self.last_prune.load(Ordering::Relaxed);
        if secs < last + 60
            || self
                .last_prune
                .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.buckets.retain(|_, bucket| match bucket.try_lock() {
            Ok(b) => b.window_end.is_some_and(|end| end > now) || b.denied_until.is_some_and(|d| d > now),
            Err(_) => true,
        });
    }

    /// Take one token of the organisation's per-minute `limit`. `Err` only when the database
    /// cannot be asked (503).
    pub async fn check(&self, organization_id: Uuid, limit: i32) -> Result<Decision, ApiError> {
        self.check_many(organization_id, limit, 1).await
    }

    /// Take `n` tokens (at least one) at once, or none: a batch of `n` events is allowed whole
    /// or refused whole. Tokens leased for a refused batch stay with this instance for the
    /// requests that follow. `Err` only when the database cannot be asked (503).
    pub async fn check_many(
        &self,
        organization_id: Uuid,
        limit: i32,
        n: usize,
    ) -> Result<Decision, ApiError> {
        let limit = limit.max(1);
        let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        self.maybe_prune(Instant::now());
        // Clone the Arc out so the DashMap shard lock is released before awaiting.
        let bucket = self.buckets.entry(organization_id).or_default().value().clone();
        let deadline = tokio::time::Instant::now() + CHECK_TIMEOUT;
        let Ok(mut b) = tokio::time::timeout_at(deadline, bucket.lock()).await else {
            tracing::warn!("rate-limit check timed out waiting for this organisation's lease");
            return Err(ApiError::Unavailable);
        };
        let now = Instant::now();
        let ulimit = limit as u32;

        if b.expires.is_some_and(|e| now >= e) {
            b.tokens = 0;
            b.expires = None;
        }
        if b.tokens >= n {
            b.tokens -= n;
            return Ok(allowed(&b, ulimit, now));
        }
        if let (Some(until), Some(retry_at)) = (b.denied_until, b.retry_at)
            && now < until
            && n >= b.denied_need
        {
            return Ok(refused(ulimit, secs_until(retry_at, now)));
        }

        if b.failed_until.is_some_and(|until| now < until) {
            return Err(ApiError::Unavailable);
        }

        let need = n - b.tokens;
        let slice = (limit / 50).clamp(1, MAX_SLICE);
        let want = i32::try_from(need).unwrap_or(i32::MAX).max(slice);
        let lease = match self.lease(organization_id, limit, want, deadline).await {
            Ok(lease) => lease,
            Err(e) => {
                b.failed_until = Some(Instant::now() + FAILURE_MEMORY);
                return Err(e);
            }
        };
        b.failed_until = None;
        let now = Instant::now();
        let window_end = now + secs_f64(60.0 - lease.window_elapsed);
        b.window_end = Some(window_end);
        b.unleased = (f64::from(limit) - lease.window_used).max(0.0);
        if lease.tokens > 0 {
            b.tokens += lease.tokens as u32;
            b.expires = Some(window_end);
        }
        if b.tokens >= n {
            b.tokens -= n;
            b.denied_until = None;
            b.retry_at = None;
            Ok(allowed(&b, ulimit, now))
        } else {
            let retry = retry_after_secs(&lease, limit, n - b.tokens);
            let retry_at = now + secs_f64(retry);
            b.retry_at = Some(retry_at);
            b.denied_until = Some(now + DENIAL_MEMORY.min(secs_f64(retry)));
            b.denied_need = n - b.tokens;
            Ok(refused(ulimit, secs_until(retry_at, now)))
        }
    }

    async fn lease(
        &self,
        organization_id: Uuid,
        limit: i32,
        want: i32,
        deadline: tokio::time::Instant,
    ) -> Result<Lease, ApiError> {
        let call = async {
            let mut conn = self.db.acquire().await?;
            rate_limits::lease(&mut conn, organization_id, limit, want).await
        };
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rate-limit lease failed");
                Err(ApiError::Unavailable)
            }
            Err(_) => {
                tracing::warn!("rate-limit lease timed out");
                Err(ApiError::Unavailable)
            }
        }
    }
}

fn allowed(b: &Bucket, limit: u32, now: Instant) -> Decision {
    let remaining = (b.unleased.floor() + f64::from(b.tokens)).clamp(0.0, f64::from(limit)) as u32;
    Decision {
        allowed: true,
        limit,
        remaining,
        reset_secs: b.window_end.map(|e| secs_until(e, now)).unwrap_or(60),
    }
}

fn refused(limit: u32, reset_secs: u64) -> Decision {
    Decision {
        allowed: false,
        limit,
        remaining: 0,
        reset_secs: reset_secs.max(1),
    }
}

fn secs_until(t: Instant, now: Instant) -> u64 {
    let d = t.saturating_duration_since(now);
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn secs_f64(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.clamp(0.0, 3600.0) } else { 0.0 })
}

/// Seconds until `need` tokens free up, assuming nobody else takes them: the previous minute's
/// weight decays linearly, and at the minute's end this minute becomes the previous one. (More
/// than the limit never fits: the answer is then the end of the next minute.)
fn retry_after_secs(lease: &Lease, limit: i32, need: u32) -> f64 {
    let lim = f64::from(limit);
    let need = f64::from(need).min(lim);
    let prev = f64::from(lease.prev_used);
    let cur = f64::from(lease.cur_used);
    let s = lease.window_elapsed.clamp(0.0, 60.0);
    // Need prev * (1 - t/60) + cur <= lim - need at some t in [s, 60).
    if cur <= lim - need {
        let t = if prev > 0.0 {
            60.0 * (1.0 - (lim - need - cur) / prev)
        } else {
            0.0
        };
        if t < 60.0 {
            return (t - s).max(0.0);
        }
    }
    // Otherwise in the next minute: cur * (1 - t/60) <= lim - need.
    let t = if cur > 0.0 {
        60.0 * (1.0 - (lim - need) / cur)
    } else {
        0.0
    };
    (60.0 - s) + t.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(prev: i32, cur: i32, elapsed: f64) -> Lease {
        Lease {
            tokens: 0,
            window_used: 0.0,
            prev_used: prev,
            cur_used: cur,
            window_elapsed: elapsed,
        }
    }

    #[test]
    fn a_full_current_minute_waits_for_the_next_one() {
        let r = retry_after_secs(&lease(0, 100, 20.0), 100, 1);
        // 40 s to the end of the minute, then 0.6 s until 99 of 100 weigh under the limit.
        assert!((r - 40.6).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_full_previous_minute_frees_capacity_as_it_decays() {
        let r = retry_after_secs(&lease(100, 0, 0.0), 100, 1);
        assert!((r - 0.6).abs() < 1e-9, "{r}");
        let r = retry_after_secs(&lease(100, 50, 10.0), 100, 1);
        // prev weight must fall to 49/100: t = 30.6 s into the minute.
        assert!((r - 20.6).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_batch_waits_until_all_its_tokens_fit() {
        // 60 of 100 used this minute, 20 s in: 40 fit now, 50 only once the minute has turned
        // and this minute's 60 weigh 50 or less (10 s into the next one).
        assert_eq!(retry_after_secs(&lease(0, 60, 20.0), 100, 40), 0.0);
        let r = retry_after_secs(&lease(0, 60, 20.0), 100, 50);
        assert!((r - 50.0).abs() < 1e-9, "{r}");
    }
}
