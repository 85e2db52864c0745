//! Which endpoints an event goes to: each organisation's endpoints ([`Routes`]), cached per
//! instance with the version they were read at.
//!
//! The cache is never the judge: the batch statement stores an event only while its
//! organisation's endpoints are still at the version its fan-out was computed from
//! (`db::queue::event_batch`), and the batcher reloads and recomputes an event answered
//! "stale". So a change of endpoints applies to every event whose request starts after the
//! change's answer, on every instance. The LISTEN/NOTIFY subscription (channel
//! [`ENDPOINTS_CHANNEL`], via [`crate::listener`]) only keeps stale answers rare; while it is not
//! subscribed, nothing is cached (every event reads its organisation's endpoints).

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

use moka::future::Cache;
use sqlx::PgPool;
use triggers_shared::db;
use uuid::Uuid;

pub use triggers_shared::db::{
    endpoints::CHANNEL as ENDPOINTS_CHANNEL,
    routing::{Fanout, Routes},
};

use crate::{error::ApiError, listener::Subscriber};

/// Organisations whose endpoints one instance keeps at most.
const CAPACITY: u64 = 100_000;
/// An organisation not seen for this long is dropped from the cache.
const IDLE: Duration = Duration::from_secs(600);

/// Why an organisation's endpoints could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("reading the organisation's endpoints")]
    Database(#[from] sqlx::Error),
    #[error("organisation {0} does not exist")]
    NoOrganization(Uuid),
}

impl RoutingError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RoutingError::Database(e) if db::is_unavailable(e))
    }
}

/// As a request's answer: `503` when the database is unreachable.
impl From<Arc<RoutingError>> for ApiError {
    fn from(e: Arc<RoutingError>) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable
        } else {
            ApiError::internal(e)
        }
    }
}

/// The per-instance cache of organisations' endpoints. Cheap to clone.
#[derive(Clone)]
pub struct RoutingCache {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    routes: Cache<Uuid, Arc<Routes>>,
    /// True while the listener is subscribed; nothing is cached otherwise.
    listening: AtomicBool,
}

impl RoutingCache {
    pub fn new(db: PgPool) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                routes: Cache::builder().max_capacity(CAPACITY).time_to_idle(IDLE).build(),
                listening: AtomicBool::new(false),
            }),
        }
    }

    /// What the listener of [`ENDPOINTS_CHANNEL`] notifies.
    pub fn subscriber(&self) -> Weak<dyn Subscriber> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        weak
    }

    /// The organisation's endpoints: cached, or read (once for concurrent callers).
    pub async fn routes(&self, organization_id: Uuid) -> Result<Arc<Routes>, Arc<RoutingError>> {
        if !self.inner.listening.load(SeqCst) {
            return self.inner.load(organization_id).await.map_err(Arc::new);
        }
        let routes = self
            .inner
            .routes
            .try_get_with(organization_id, self.inner.load(organization_id))
            .await?;
        // A reset (lost subscription) may have raced with this load: then do not keep it.
        if !self.inner.listening.load(SeqCst) {
            self.inner.routes.invalidate(&organization_id).await;
        }
        Ok(routes)
    }

    /// Forget the organisation's endpoints: they changed (the batch statement said so).
    pub async fn invalidate(&self, organization_id: Uuid) {
        self.inner.routes.invalidate(&organization_id).await;
    }
}

impl Inner {
    async fn load(&self, organization_id: Uuid) -> Result<Arc<Routes>, RoutingError> {
        let mut conn = self.db.acquire().await?;
        let routes = db::routing::load(&mut conn, organization_id)
            .await?
            .ok_or(RoutingError::NoOrganization(organization_id))?;
        Ok(Arc::new(routes))
    }
}

impl Subscriber for Inner {
    fn notified(&self, payload: &str) {
        match Uuid::parse_str(payload) {
            Ok(org_id) => {
                // The cache's `invalidate` is async (the listener calls this from its task).
                let routes = self.routes.clone();
                tokio::spawn(async move { routes.invalidate(&org_id).await });
            }
            Err(_) => self.routes.invalidate_all(),
        }
    }

    fn reset(&self, listening: bool) {
        self.listening.store(listening, SeqCst);
        self.routes.invalidate_all();
    }
}
