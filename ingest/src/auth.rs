//! Authentication: `X-API-Key: <key>` or `Authorization: Bearer <key>` → the organisation, and
//! the operator's admin token that guards organisation creation.
//!
//! The credential is an API key or a console session token ([`session`]), told apart by its
//! prefix. Handlers take [`Org`] (either credential; a read-only session only on `GET`), or
//! [`KeyHolder`] where a console session must never reach (managing keys and portal sessions),
//! or [`Caller`] to see which credential was used.
//!
//! The prefix of a key finds its row; argon2id verifies the secret on the process's one hash
//! pool. Verified keys are cached (TTL) so argon2 runs only on a miss; refused keys are cached
//! too (bounded), so an unknown key costs at most one argon2 per TTL, and wrong secrets for one
//! prefix are throttled ([`throttle`]). Instances drop one organisation's cached entries when
//! another instance rotates its keys (LISTEN/NOTIFY on [`INVALIDATION_CHANNEL`]); see [`cache`].

mod cache;
mod invalidations;
pub mod session;
pub mod throttle;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use triggers_shared::config::ExposeSecret as _;
use uuid::Uuid;

pub use cache::AuthCache;
pub use session::Session;

use crate::{AppState, error::ApiError};

/// The Postgres channel on which key changes are announced (payload: organisation id).
/// Whoever revokes or rotates keys sends `pg_notify` on it in the same transaction.
pub const INVALIDATION_CHANNEL: &str = "triggers_auth_invalidate";

/// The authenticated organisation of a request.
#[derive(Clone, Debug)]
pub struct Org {
    pub id: Uuid,
    pub rate_limit_per_minute: i32,
}

/// The key a request presents, if any.
pub fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    bearer_token(&parts.headers)
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who is calling: the organisation, and the console session when the credential is one.
#[derive(Clone, Debug)]
pub struct Caller {
    pub org: Org,
    /// `None` for an API key.
    pub session: Option<Session>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = presented_key(parts)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::MissingApiKey)?;
        let caller = if presented.starts_with(session::SESSION_PREFIX) {
            let (org, session) = session::authenticate(&state.db, presented).await?;
            Caller {
                org,
                session: Some(session),
            }
        } else {
            Caller {
                org: state.auth.authenticate(&state.db, presented).await?,
                session: None,
            }
        };
        tracing::Span::current().record("org_id", tracing::field::display(caller.org.id));
        Ok(caller)
    }
}

/// The organisation of an API key or of a console session. A read-only session is refused
/// (`403 read_only_session`) on every method but `GET`, `HEAD` and `OPTIONS`, so every route
/// that changes state is closed to it without a check of its own.
impl FromRequestParts<AppState> for Org {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.session.is_some_and(|s| s.read_only) && !parts.method.is_safe() {
            return Err(ApiError::ReadOnlySession);
        }
        Ok(caller.org)
    }
}

/// The organisation of an API key: what creating and rotating keys and creating portal sessions
/// need. A console session, even a read-write one, is refused with `403 api_key_required`.
#[derive(Clone, Debug)]
pub struct KeyHolder(pub Org);

impl FromRequestParts<AppState> for KeyHolder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller { org, session: None } => Ok(KeyHolder(org)),
            Caller { session: Some(_), .. } => Err(ApiError::ApiKeyRequired),
        }
    }
}

/// Proof that the request carries the operator's admin token (`X-Admin-Token: <token>` or
/// `Authorization: Bearer <token>`), or that no admin token is configured (development).
/// A missing or wrong token is `401 admin_token_required`.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.config.admin_token else {
            return Ok(Admin);
        };
        let presented = parts
            .headers
            .get("x-admin-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .or_else(|| bearer_token(&parts.headers))
            .ok_or(ApiError::AdminTokenRequired)?;
        if same_secret(presented, expected.expose_secret()) {
            Ok(Admin)
        } else {
            Err(ApiError::AdminTokenRequired)
        }
    }
}

/// Compare two secrets in time independent of where they differ: both are hashed to fixed-size
/// digests first (which also hides the expected length), then compared in constant time.
fn same_secret(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret("s3cret-token", "s3cret-token"));
        assert!(!same_secret("s3cret-token", "s3cret-tokem"));
        assert!(!same_secret("", "s3cret-token"));
        assert!(!same_secret("s3cret-token-longer", "s3cret-token"));
    }
}
