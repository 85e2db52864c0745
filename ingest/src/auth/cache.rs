//! The per-instance cache of API key verdicts, kept honest by the instance's listener.
//!
//! - Entries are keyed by the SHA-256 of the presented key, never by the key itself.
//! - A verified key is remembered until the TTL or the key's own `expires_at`, whichever comes
//!   first, so a key in its rotation grace period stops at its expiry even while cached.
//! - A refused key (unknown prefix or wrong secret) is remembered for the TTL in a bounded cache,
//!   so repeating it costs no argon2 and no query.
//! - Both verdict caches are `moka` caches: bounded, expiring per entry, evicting by TinyLFU in
//!   small amortised steps (no scan of a whole map on the request path when one is full).
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
use moka::{Expiry, future::Cache};
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
const VERIFIED_CAPACITY: u64 = 100_000;
/// Refused keys kept at most: bounds the memory a flood of random keys can take.
const REFUSED_CAPACITY: u64 = 10_000;
/// Size at which abandoned single-flight locks are swept.
const INFLIGHT_SWEEP_AT: usize = 1_024;

/// Caches of verified and refused keys, invalidated across instances by LISTEN/NOTIFY.
#[derive(Clone)]
pub struct AuthCache {
    inner: Arc<Inner>,
}

struct Inner {
    ttl: Duration,
    /// Verified keys, each until its `until`.
    verified: Cache<KeyDigest, Verified>,
    /// Refused keys, each for the TTL.
    refused: Cache<KeyDigest, ()>,
    /// One lock per prefix being verified right now (single flight).
    inflight: DashMap<String, Arc<Mutex<()>>>,
    /// A verification overtaken by an invalidation of its organisation does not keep its
    /// result: it may have read a key that was revoked while it ran.
    invalidations: Invalidations,
    throttle: PrefixThrottle,
    /// True while the listener is subscribed; nothing is cached otherwise.
    listening: AtomicBool,
}

#[derive(Clone)]
struct Verified {
    org: Org,
    until: Instant,
}

/// A verified key expires at its `until`.
struct Until;

impl Expiry<KeyDigest, Verified> for Until {
    fn expire_after_create(&self, _: &KeyDigest, verified: &Verified, now: Instant) -> Option<Duration> {
        Some(verified.until.saturating_duration_since(now))
    }

    /// A new verdict replacing one still stored (e.g. invalidated but not evicted yet) brings its
    /// own expiry: moka's default would keep the old entry's.
    fn expire_after_update(
        &self,
        _: &KeyDigest,
        verified: &Verified,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(verified.until.saturating_duration_since(now))
    }
}

impl AuthCache {
    /// Create the cache. Nothing is cached until the invalidation listener
    /// ([`crate::listener`]) reports it is subscribed ([`Self::subscriber`]).
    pub fn new(config: &IngestConfig) -> Self {
        let inner = Arc::new(Inner {
            ttl: config.auth_cache_ttl,
            verified: Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .expire_after(Until)
                .support_invalidation_closures()
                .build(),
            refused: Cache::builder()
                .max_capacity(REFUSED_CAPACITY)
                .time_to_live(config.auth_cache_ttl)
                .build(),
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
        if let Some(verdict) = self.inner.settled(&digest, prefix).await {
            return verdict;
        }
        let _flight = self.inner.single_flight(prefix).await;
        // Whoever held the flight before us may have just settled this key or spent the
        // prefix's budget.
        if let Some(verdict) = self.inner.settled(&digest, prefix).await {
            return verdict;
        }
        let ticket = self.inner.invalidations.ticket();
        let asked_at = Instant::now();
        let mut conn = db.acquire().await?;
        let row = db::api_keys::find_active_by_prefix(&mut conn, prefix).await?;
        drop(conn);
        let Some(row) = row else {
            record("unknown");
            self.inner.refuse(digest).await;
            return Err(ApiError::InvalidApiKey);
        };
        if !apikey::verify(key, &row.key_hash)
            .await
            .map_err(ApiError::internal)?
        {
            record("rejected");
            self.inner.refuse(digest).await;
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
            .remember(digest, org.clone(), asked_at + lifetime, ticket)
            .await;
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
    async fn settled(&self, digest: &KeyDigest, prefix: &str) -> Option<Result<Org, ApiError>> {
        if let Some(verdict) = self.cached(digest).await {
            return Some(verdict);
        }
        if self.throttle.is_blocked(prefix) {
            record("throttled");
            return Some(Err(ApiError::InvalidApiKey));
        }
        None
    }

    /// The cached verdict for a key, if one is still valid.
    async fn cached(&self, digest: &KeyDigest) -> Option<Result<Org, ApiError>> {
        if let Some(verified) = self.verified.get(digest).await {
            record("hit");
            return Some(Ok(verified.org));
        }
        if self.refused.contains_key(digest) {
            record("refused_hit");
            return Some(Err(ApiError::InvalidApiKey));
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

    async fn refuse(&self, digest: KeyDigest) {
        self.refused.insert(digest, ()).await;
    }

    async fn remember(&self, digest: KeyDigest, org: Org, until: Instant, ticket: Ticket) {
        if !self.listening.load(SeqCst) || until <= Instant::now() {
            return;
        }
        let org_id = org.id;
        self.verified.insert(digest, Verified { org, until }).await;
        // Insert first, check second: an invalidation either was recorded before this check
        // (we undo the insert) or registers its predicate after our insert (it applies to it).
        if self.invalidations.overtook(ticket, org_id) || !self.listening.load(SeqCst) {
            self.verified.invalidate(&digest).await;
        }
    }

    fn invalidate_org(&self, org_id: Uuid) {
        self.invalidations.org(org_id);
        // Applies to every entry inserted before this call; `get` never returns one of them.
        if let Err(e) = self
            .verified
            .invalidate_entries_if(move |_, v| v.org.id == org_id)
        {
            // Only if the cache was built without invalidation closures: drop everything.
            tracing::error!(error = %e, "auth cache: invalidating one organisation failed; clearing all");
            self.verified.invalidate_all();
        }
    }

    fn clear(&self) {
        self.invalidations.all();
        self.verified.invalidate_all();
        self.refused.invalidate_all();
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
