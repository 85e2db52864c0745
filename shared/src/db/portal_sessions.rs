//! SQL of the `portal_sessions` table: the console's sessions (API.md, "Console").
//!
//! A session is created with a link token and, once, exchanged for a session token; only the
//! SHA-256 digests of both are stored. A session is live until `expires_at`; revoking it deletes
//! its row. [`find_live_by_token`] and [`exchange`] look a token up before its organisation is
//! known (as `api_keys::find_active_by_prefix` does); every other function takes the
//! organisation id.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A SHA-256 digest of a token.
pub type TokenDigest = [u8; 32];

/// A session as stored (never its tokens).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PortalSession {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub read_only: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live session with what authentication needs of its organisation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveSession {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub read_only: bool,
    pub expires_at: DateTime<Utc>,
    pub rate_limit_per_minute: i32,
}

const COLUMNS: &str = "id, organization_id, read_only, created_at, expires_at";

/// Delete the organisation's sessions that have ended; how many.
pub async fn purge_ended(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<u64> {
    sqlx::query("DELETE FROM portal_sessions WHERE organization_id = $1 AND expires_at <= now()")
        .bind(organization_id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
}

/// How many of the organisation's sessions are live (unexpired, exchanged or not).
pub async fn count_live(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM portal_sessions WHERE organization_id = $1 AND expires_at > now()",
    )
    .bind(organization_id)
    .fetch_one(conn)
    .await
}

/// Store a new session whose link token has `link_digest`; it ends `lifetime` from now (the
/// database's clock).
pub async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    link_digest: &TokenDigest,
    read_only: bool,
    lifetime: Duration,
) -> sqlx::Result<PortalSession> {
    let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_as::<_, PortalSession>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO portal_sessions (organization_id, id, read_only, link_digest, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::double precision / 1000))
         RETURNING {COLUMNS}"
    )))
    .bind(organization_id)
    .bind(id)
    .bind(read_only)
    .bind(link_digest.as_slice())
    .bind(lifetime_ms)
    .fetch_one(conn)
    .await
}

/// Trade an unused, unexpired link for a session token: the link stops working and the session
/// is reachable by `token_digest` from now on. `None` when no live session has that link.
pub async fn exchange(
    conn: &mut PgConnection,
    link_digest: &TokenDigest,
    token_digest: &TokenDigest,
) -> sqlx::Result<Option<PortalSession>> {
    sqlx::query_as::<_, PortalSession>(sqlx::AssertSqlSafe(format!(
        "UPDATE portal_sessions
         SET link_digest = NULL, token_digest = $2, exchanged_at = now()
         WHERE link_digest = $1 AND expires_at > now()
         RETURNING {COLUMNS}"
    )))
    .bind(link_digest.as_slice())
    .bind(token_digest.as_slice())
    .fetch_optional(conn)
    .await
}

/// The live session whose session token has `token_digest`.
pub async fn find_live_by_token(
    conn: &mut PgConnection,
    token_digest: &TokenDigest,
) -> sqlx::Result<Option<LiveSession>> {
    sqlx::query_as::<_, LiveSession>(
        "SELECT s.id, s.organization_id, s.read_only, s.expires_at, o.rate_limit_per_minute
         FROM portal_sessions s JOIN organizations o ON o.id = s.organization_id
         WHERE s.token_digest = $1 AND s.expires_at > now()",
    )
    .bind(token_digest.as_slice())
    .fetch_optional(conn)
    .await
}

/// Revoke one of the organisation's sessions (delete it, live or ended): false when it has none
/// with that id.
pub async fn delete(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query("DELETE FROM portal_sessions WHERE organization_id = $1 AND id = $2")
        .bind(organization_id)
        .bind(id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected() == 1)
}
