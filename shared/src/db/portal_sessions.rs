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
#[derive(Debug, Clone)]
pub struct PortalSession {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub read_only: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live session with what authentication needs of its organisation.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub read_only: bool,
    pub expires_at: DateTime<Utc>,
    pub rate_limit_per_minute: i32,
}

/// Delete the organisation's sessions that have ended; how many.
pub async fn purge_ended(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<u64> {
    sqlx::query!(
        "DELETE FROM portal_sessions WHERE organization_id = $1 AND expires_at <= now()",
        organization_id,
    )
    .execute(conn)
    .await
    .map(|done| done.rows_affected())
}

/// How many of the organisation's sessions are live (unexpired, exchanged or not).
pub async fn count_live(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM portal_sessions WHERE organization_id = $1 AND expires_at > now()"#,
        organization_id,
    )
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
    sqlx::query!(
        "INSERT INTO portal_sessions (organization_id, id, read_only, link_digest, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        organization_id,
        id,
        read_only,
        link_digest.as_slice(),
        lifetime.as_secs_f64(),
    )
    .execute(&mut *conn)
    .await?;
    find(conn, organization_id, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// One of the organisation's sessions, live or ended. (The one statement that reads a
/// [`PortalSession`].)
async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<PortalSession>> {
    sqlx::query_as!(
        PortalSession,
        "SELECT id, organization_id, read_only, created_at, expires_at
         FROM portal_sessions WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Trade an unused, unexpired link for a session token: the link stops working and the session
/// is reachable by `token_digest` from now on. `None` when no live session has that link.
pub async fn exchange(
    conn: &mut PgConnection,
    link_digest: &TokenDigest,
    token_digest: &TokenDigest,
) -> sqlx::Result<Option<PortalSession>> {
    let exchanged = sqlx::query!(
        "UPDATE portal_sessions
         SET link_digest = NULL, token_digest = $2, exchanged_at = now()
         WHERE link_digest = $1 AND expires_at > now()
         RETURNING organization_id, id",
        link_digest.as_slice(),
        token_digest.as_slice(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    match exchanged {
        Some(row) => find(conn, row.organization_id, row.id).await,
        None => Ok(None),
    }
}

/// The live session whose session token has `token_digest`.
pub async fn find_live_by_token(
    conn: &mut PgConnection,
    token_digest: &TokenDigest,
) -> sqlx::Result<Option<LiveSession>> {
    sqlx::query_as!(
        LiveSession,
        "SELECT s.id, s.organization_id, s.read_only, s.expires_at, o.rate_limit_per_minute
         FROM portal_sessions s JOIN organizations o ON o.id = s.organization_id
         WHERE s.token_digest = $1 AND s.expires_at > now()",
        token_digest.as_slice(),
    )
    .fetch_optional(conn)
    .await
}

/// Revoke one of the organisation's sessions (delete it, live or ended): false when it has none
/// with that id.
pub async fn delete(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM portal_sessions WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
    )
    .execute(conn)
    .await
    .map(|done| done.rows_affected() == 1)
}
