//! The per-instance cache of API key verdicts, kept honest by the instance's listener.
//!
//! - Entries are keyed by the SHA-256 of the presented key, never by the key itself.
//! - A verified key is remembered until the TTL or the key's own `expires_at`, whichever comes
//!   first, so a key in its rotation grace period stops at its expiry even while cached.
//! - A refused key (unknown prefix or wrong secret) is remembered for the TTL in a bounded map,
//!   so repeating it costs no argon2 and no query.
//! - Misses for one prefix are verified one at a time: concurrent first requests with a key
//!   wait for one verification instead of each running argon2, and a flood of guesses for one
//!   prefix takes at most one slot of the process's hash pool ([`apikey::verify`]).
//! - Wrong secrets are throttled per prefix ([`throttle`](super::throttle)): past the budget, 401 without a query
//!   or argon2.
//! - The instance's listener ([`crate::listener`]) LISTENs on [`INVALIDATION_CHANNEL`](super::INVALIDATION_CHANNEL): a notification drops the named
//!   organisation's verified keys, and makes that organisation's verifications in flight
//!   uncacheable ([`invalidations`](super::invalidations)); other organisations' are not disturbed. While the
//!   listener is not subscribed (start-up, lost connection) notifications may be missed, so the
//!   cache is cleared and nothing is cached until it is subscribed again. The TTL bounds
//!   staleness should a connection die silently.
//!
//! `triggers_auth_cache_total{outcome}` counts `hit` and `refused_hit` (answered from the
//! cache), `verified` and `rejected` (argon2 ran), `unknown` (no key with that prefix) and
//! `throttled` (refused without looking: the prefix is out of its failure budget).

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio::sync::{Mutex, OwnedMutexGuard};
use triggers_shared::{apikey, config::IngestConfig, db, metrics::AUTH_CACHE_TOTAL};
use uuid::Uuid;

use super::{
    Org,
    invalidations::{Invalidations, Ticket},
    throttle::PrefixThrottle,
};
use crate::{error::ApiError, listener::Subscriber};

type KeyDigest = [u8; 32];

/// Verified keys kept at most (an instance serves far fewer live keys than this).
const VERIFIED_CAPACITY: usize = 100_000;
/// Refused keys kept at most: bounds the memory a flood of random keys can take.
const REFUSED_CAPACITY: usize = 10_000;
/// Size at which abandoned single-flight locks are swept.
const INFLIGHT_SWEEP_AT: usize = 1_024;

/// Caches of verified and refused keys, invalidated across instances by LISTEN/NOTIFY.
#[derive(Clone)]
pub struct AuthCache {
    inner: Arc<Inner>,
}

struct Inner {
    ttl: Duration,
    verified: DashMap<KeyDigest, Verified>,
    /// Refused keys and when that verdict expires.
    refused: DashMap<KeyDigest, Instant>,
    /// One lock per prefix being verified right now (single flight).
    inflight: DashMap<String, Arc<Mutex<()>>>,
    /// A verification overtaken by an invalidation of its organisation does not keep its
    /// result: it may have read a key that was revoked while it ran.
    invalidations: Invalidations,
    throttle: PrefixThrottle,
    /// True while the listener is subscribed; nothing is cached otherwise.
    listening: AtomicBool,
}

struct Verified {
    org: Org,
    until: Instant,
}

impl AuthCache {
    /// Create the cache. Nothing is cached until the invalidation listener
    /// ([`crate::listener`]) reports it is subscribed ([`Self::subscriber`]).
    pub fn new(config: &IngestConfig) -> Self {
        let inner = Arc::new(Inner {
            ttl: config.auth_cache_ttl,
            verified: DashMap::new(),
            refused: DashMap::new(),
            inflight: DashMap::new(),
            invalidations: Invalidations::new(),
            throttle: PrefixThrottle::new(),
            listening: AtomicBool::new(false),
        });
        Self { inner }
    }

    /// What the listener of [`INVALIDATION_CHANNEL`](super::INVALIDATION_CHANNEL) notifies.
    pub fn subscriber(&self) -> Weak<dyn Subscriber> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        weak
    }

    /// Resolve a presented key to its organisation.
    pub async fn authenticate(&self, db: &PgPool, key: &str) -> Result<Org, ApiError> {
        // Malformed keys cost neither a query nor argon2, so they need no cache entry.
        let prefix = apikey::prefix_of(key).ok_or(ApiError::InvalidApiKey)?;
        let digest: KeyDigest = Sha256::digest(key.as_bytes()).into();
        if let Some(verdict) = self.inner.settled(&digest, prefix) {
            return verdict;
        }
        let _flight = self.inner.single_flight(prefix).await;
        // Whoever held the flight before us may have just settled this key or spent the
        // prefix's budget.
        if let Some(verdict) = self.inner.settled(&digest, prefix) {
            return verdict;
        }
        let ticket = self.inner.invalidations.ticket();
        let asked_at = Instant::now();
        let mut conn = db.acquire().await?;
        let row = db::api_keys::find_active_by_prefix(&mut conn, prefix).await?;
        drop(conn);
        let Some(row) = row else {
            record("unknown");
            self.inner.refuse(digest);
            return Err(ApiError::InvalidApiKey);
        };
        if !apikey::verify(key, &row.key_hash)
            .await
            .map_err(ApiError::internal)?
        {
            record("rejected");
            self.inner.refuse(digest);
            self.inner.throttle.failed(prefix);
            return Err(ApiError::InvalidApiKey);
        }
        record("verified");
        let org = Org {
            id: row.organization_id,
            rate_limit_per_minute: row.rate_limit_per_minute,
        };
        let mut lifetime = self.inner.ttl;
        if let Some(ms) = row.expires_in_ms {
            lifetime = lifetime.min(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
        self.inner
            .remember(digest, org.clone(), asked_at + lifetime, ticket);
        Ok(org)
    }

    /// Forget the cached keys of one organisation (after this instance rotated its keys; other
    /// instances hear about it through the notification).
    pub fn invalidate_org(&self, org_id: Uuid) {
        self.inner.invalidate_org(org_id);
    }
}

impl Inner {
    /// The verdict that needs no verification: a cached one, or a refusal because the
    /// prefix is out of its failure budget (not cached: the key was not looked at).
    fn settled(&self, digest: &KeyDigest, prefix: &str) -> Option<Result<Org, ApiError>> {
        if let Some(verdict) = self.cached(digest) {
            return Some(verdict);
        }
        if self.throttle.is_blocked(prefix) {
            record("throttled");
            return Some(Err(ApiError::InvalidApiKey));
        }
        None
    }

    /// The cached verdict for a key, if one is still valid.
    fn cached(&self, digest: &KeyDigest) -> Option<Result<Org, ApiError>> {
        let now = Instant::now();
        if let Some(entry) = self.verified.get(digest) {
            if entry.until > now {
                record("hit");
                return Some(Ok(entry.org.clone()));
            }
            drop(entry);
            self.verified.remove_if(digest, |_, e| e.until <= now);
        }
        if let Some(until) = self.refused.get(digest).map(|e| *e) {
            if until > now {
                record("refused_hit");
                return Some(Err(ApiError::InvalidApiKey));
            }
            self.refused.remove_if(digest, |_, u| *u <= now);
        }
        None
    }

    /// Wait for our turn to verify a key with this prefix; the turn ends when the returned
    /// guard drops.
    async fn single_flight(self: &Arc<Self>, prefix: &str) -> Flight {
        if self.inflight.len() >= INFLIGHT_SWEEP_AT {
            // Locks nobody holds or awaits (left by cancelled requests).
            self.inflight.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        let lock = self.inflight.entry(prefix.to_owned()).or_default().clone();
        let mut flight = Flight {
            inner: Arc::clone(self),
            prefix: prefix.to_owned(),
            guard: None,
        };
        flight.guard = Some(lock.lock_owned().await);
        flight
    }

    fn refuse(&self, digest: KeyDigest) {
        let now = Instant::now();
        make_room(&self.refused, REFUSED_CAPACITY, |until| *until <= now);
        self.refused.insert(digest, now + self.ttl);
    }

    fn remember(&self, digest: KeyDigest, org: Org, until: Instant, ticket: Ticket) {
        if !self.listening.load(SeqCst) || until <= Instant::now() {
            return;
        }
        let now = Instant::now();
        let org_id = org.id;
        make_room(&self.verified, VERIFIED_CAPACITY, |v| v.until <= now);
        self.verified.insert(digest, Verified { org, until });
        // Insert first, check second: an invalidation either was recorded before this check
        // (we undo the insert) or runs its removal after our insert (it removes it).
        if self.invalidations.overtook(ticket, org_id) || !self.listening.load(SeqCst) {
            self.verified.remove(&digest);
        }
    }

    fn invalidate_org(&self, org_id: Uuid) {
        self.invalidations.org(org_id);
        self.verified.retain(|_, v| v.org.id != org_id);
    }

    fn clear(&self) {
        self.invalidations.all();
        self.verified.clear();
        self.refused.clear();
    }
}

/// Keep a map under `capacity`: drop expired entries, then (still full) an arbitrary tenth.
fn make_room<V>(map: &DashMap<KeyDigest, V>, capacity: usize, expired: impl Fn(&V) -> bool) {
    if map.len() < capacity {
        return;
    }
    map.retain(|_, v| !expired(v));
    let excess = map.len().saturating_sub(capacity - capacity / 10);
    if excess > 0 {
        let victims: Vec<KeyDigest> = map.iter().take(excess).map(|e| *e.key()).collect();
        for key in victims {
            map.remove(&key);
        }
    }
}

/// A turn at verifying a key of one prefix; dropping it lets the next waiter in and removes the
/// lock once nobody waits for it.
struct Flight {
    inner: Arc<Inner>,
    prefix: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.guard = None;
        self.inner
            .inflight
            .remove_if(&self.prefix, |_, lock| Arc::strong_count(lock) == 1);
    }
}

fn record(outcome: &'static str) {
    metrics::counter!(AUTH_CACHE_TOTAL, "outcome" => outcome).increment(1);
}

impl Subscriber for Inner {
    fn notified(&self, payload: &str) {
        match Uuid::parse_str(payload) {
            Ok(org_id) => self.invalidate_org(org_id),
            Err(_) => self.clear(),
        }
    }

    fn reset(&self, listening: bool) {
        self.listening.store(listening, SeqCst);
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> KeyDigest {
        Sha256::digest(n.to_be_bytes()).into()
    }

    #[test]
    fn a_full_map_drops_expired_entries_first() {
        let map: DashMap<KeyDigest, bool> = DashMap::new();
        for n in 0..10 {
            map.insert(digest(n), n % 2 == 0); // `true` = expired
        }
        make_room(&map, 10, |expired| *expired);
        assert_eq!(map.len(), 5);
        assert!(map.iter().all(|e| !*e.value()), "only live entries remain");
    }

    #[test]
    fn a_full_map_of_live_entries_sheds_a_tenth() {
        let map: DashMap<KeyDigest, bool> = DashMap::new();
        for n in 0..100 {
            map.insert(digest(n), false);
        }
        make_room(&map, 100, |expired| *expired);
        assert_eq!(map.len(), 90);
        make_room(&map, 100, |expired| *expired);
        assert_eq!(map.len(), 90, "below capacity: nothing to do");
    }
}
