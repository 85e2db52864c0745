//! The application state handed to every handler.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use triggers_shared::{config::IngestConfig, service::Ops};

use crate::{
    auth::{AuthCache, INVALIDATION_CHANNEL},
    batcher::BatchWriter,
    console::Console,
    listener::{self, Listener},
    ratelimit::RateLimiter,
    refusals::RefusalBudget,
    routing::{ENDPOINTS_CHANNEL, RoutingCache},
};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub config: Arc<IngestConfig>,
    pub metrics: PrometheusHandle,
    pub auth: AuthCache,
    pub routing: RoutingCache,
    pub limiter: RateLimiter,
    /// Each organisation's budget of refused bodies before their answers are delayed.
    pub refusals: Arc<RefusalBudget>,
    pub batcher: BatchWriter,
    /// Where browsers reach this service (no trailing `/`): the base of console links.
    pub public_url: Arc<str>,
    pub console: Console,
    /// Keeps the caches' invalidation listener running.
    _listener: Arc<Listener>,
}

impl AppState {
    /// Build the state and start its background tasks (batch writer, cache invalidation).
    pub async fn start(config: Arc<IngestConfig>, db: PgPool, public_url: &str) -> anyhow::Result<Self> {
        let auth = AuthCache::new(&config);
        let routing = RoutingCache::new(db.clone());
        let listener = listener::start(
            config.common.database_url.clone(),
            vec![
                (INVALIDATION_CHANNEL, auth.subscriber()),
                (ENDPOINTS_CHANNEL, routing.subscriber()),
            ],
        )
        .await;
        Ok(Self {
            public_url: public_url.trim_end_matches('/').into(),
            console: Console::load()?,
            metrics: triggers_shared::metrics::install_recorder(),
            batcher: BatchWriter::start(db.clone(), routing.clone(), config.dedup_window),
            auth,
            routing,
            limiter: RateLimiter::new(db.clone()),
            refusals: Arc::default(),
            _listener: Arc::new(listener),
            db,
            config,
        })
    }

    /// Stop background tasks, flushing what is queued.
    pub async fn shutdown(&self) {
        self.batcher.shutdown().await;
    }
}

/// The operations routes (`triggers_shared::service::http`) take what they need from here.
impl FromRef<AppState> for Ops {
    fn from_ref(state: &AppState) -> Self {
        Ops {
            db: state.db.clone(),
            metrics: state.metrics.clone(),
        }
    }
}
