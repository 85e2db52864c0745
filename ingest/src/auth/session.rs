//! Console sessions (API.md, "Console"): the tokens of portal links and sessions, and the check
//! of a session token on every request that presents one.
//!
//! A portal link carries `trg_link_<secret>` in its URL fragment; the console trades it, once,
//! for `trg_session_<secret>`, which it sends as `Authorization: Bearer`. Each secret is 256
//! random bits and only its SHA-256 digest is stored (`db::portal_sessions`). A session token is
//! looked up on every request, uncached: revoking a session (deleting its row) or reaching its
//! expiry refuses its next request on every ingest instance, and the lookup is one indexed read.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use triggers_shared::db::{self, portal_sessions::TokenDigest};
use uuid::Uuid;

use super::Org;
use crate::error::ApiError;

/// What a portal link's token starts with.
pub const LINK_PREFIX: &str = "trg_link_";
/// What a session token starts with.
pub const SESSION_PREFIX: &str = "trg_session_";
/// Base64url characters of a token's 32 random bytes.
const SECRET_CHARS: usize = 43;

/// A new token, shown once, and the digest that is stored.
pub struct IssuedToken {
    pub token: String,
    pub digest: TokenDigest,
}

/// A fresh random token with this prefix.
pub fn issue(prefix: &str) -> IssuedToken {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret));
    IssuedToken {
        digest: digest_of(&token),
        token,
    }
}

/// The stored form of a token.
pub fn digest_of(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Is `token` shaped like a token this module issues with `prefix`? (Anything else is refused
/// without a query.)
pub fn is_well_formed(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|secret| {
        secret.len() == SECRET_CHARS
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The console session a request was made with.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub id: Uuid,
    /// A read-only session may only read (`GET`).
    pub read_only: bool,
}

/// The organisation and session of a live session token; `401 invalid_session` for an
/// expired, revoked, unknown or malformed one.
pub async fn authenticate(db: &PgPool, token: &str) -> Result<(Org, Session), ApiError> {
    if !is_well_formed(token, SESSION_PREFIX) {
        return Err(ApiError::InvalidSession);
    }
    let mut conn = db.acquire().await?;
    let live = db::portal_sessions::find_live_by_token(&mut conn, &digest_of(token))
        .await?
        .ok_or(ApiError::InvalidSession)?;
    Ok((
        Org {
            id: live.organization_id,
            rate_limit_per_minute: live.rate_limit_per_minute,
        },
        Session {
            id: live.id,
            read_only: live.read_only,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_well_formed_only_under_their_own_prefix() {
        let link = issue(LINK_PREFIX);
        assert!(is_well_formed(&link.token, LINK_PREFIX));
        assert!(!is_well_formed(&link.token, SESSION_PREFIX));
        assert_eq!(link.digest, digest_of(&link.token));
        assert_ne!(issue(LINK_PREFIX).token, link.token);
        assert!(!is_well_formed("trg_session_short", SESSION_PREFIX));
        let padded = format!("{SESSION_PREFIX}{}=", "a".repeat(42));
        assert!(!is_well_formed(&padded, SESSION_PREFIX));
    }
}
