//! The application state handed to every handler.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use triggers_shared::{config::IngestConfig, service::Ops};

use crate::{auth::AuthCache, batcher::BatchWriter, console::Console, ratelimit::RateLimiter};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub config: Arc<IngestConfig>,
    pub metrics: PrometheusHandle,
    pub auth: AuthCache,
    pub limiter: RateLimiter,
    pub batcher: BatchWriter,
    /// Where browsers reach this service (no trailing `/`): the base of console links.
    pub public_url: Arc<str>,
    pub console: Console,
}

impl AppState {
    /// Build the state and start its background tasks (batch writer, cache invalidation).
    pub async fn start(config: Arc<IngestConfig>, db: PgPool, public_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            public_url: public_url.trim_end_matches('/').into(),
            console: Console::load()?,
            metrics: triggers_shared::metrics::install_recorder(),
            auth: AuthCache::start(&config).await?,
            limiter: RateLimiter::new(db.clone()),
            batcher: BatchWriter::start_with_window(db.clone(), config.dedup_window),
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
