//! SQL of the `api_keys` table. Only a key's public prefix and its argon2id hash are stored.
//!
//! A key is active while `revoked_at` is null and `expires_at` is null or in the future.
//! Rotation revokes (grace 0) or sets `expires_at` on (grace > 0) every active key of the
//! organisation, then inserts the new one; [`notify_change`] tells every ingest instance to
//! drop its cached keys of that organisation when the transaction commits. That whole
//! transaction is [`super::key_issuance::rotate`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// An active key's row with the organisation fields authentication needs.
#[derive(Debug, Clone)]
pub struct KeyWithOrg {
    pub key_id: Uuid,
    pub key_hash: String,
    pub organization_id: Uuid,
    pub rate_limit_per_minute: i32,
    /// Milliseconds until the key expires, measured by the database clock (so a cache can
    /// honour the expiry without trusting its own clock against the database's); `None` when
    /// the key does not expire.
    pub expires_in_ms: Option<i64>,
}

/// The unrevoked, unexpired key with this public prefix.
pub async fn find_active_by_prefix(
    conn: &mut PgConnection,
    prefix: &str,
) -> sqlx::Result<Option<KeyWithOrg>> {
    sqlx::query_as!(
        KeyWithOrg,
        "SELECT k.id AS key_id, k.key_hash, o.id AS organization_id, o.rate_limit_per_minute,
                (extract(epoch FROM k.expires_at - now()) * 1000)::bigint AS expires_in_ms
         FROM api_keys k JOIN organizations o ON o.id = k.organization_id
         WHERE k.prefix = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())",
        prefix,
    )
    .fetch_optional(conn)
    .await
}

/// Store a new key (prefix and hash only). Fails with a unique violation if the prefix is
/// taken (48 random bits: rare; the caller generates another key).
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    org_id: Uuid,
    prefix: &str,
    key_hash: &str,
) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar!(
        "INSERT INTO api_keys (id, organization_id, prefix, key_hash) VALUES ($1, $2, $3, $4)
         RETURNING created_at",
        id,
        org_id,
        prefix,
        key_hash,
    )
    .fetch_one(conn)
    .await
}

/// What [`retire_active`] did.
#[derive(Debug, Clone, Copy)]
pub struct Retired {
    /// The transaction's time: when the rotation happened.
    pub rotated_at: DateTime<Utc>,
    /// When the previous keys stop working (`rotated_at` for a grace period of 0).
    pub expires_at: DateTime<Utc>,
}

/// Retire every active key of the organisation: revoke it now (`grace` 0) or let it expire
/// after `grace` (never extending an earlier expiry).
pub async fn retire_active(conn: &mut PgConnection, org_id: Uuid, grace: Duration) -> sqlx::Result<Retired> {
    let retired = sqlx::query_as!(
        Retired,
        r#"SELECT now() AS "rotated_at!", now() + make_interval(secs => $1) AS "expires_at!""#,
        grace.as_secs_f64(),
    )
    .fetch_one(&mut *conn)
    .await?;
    if grace.is_zero() {
        sqlx::query!(
            "UPDATE api_keys SET revoked_at = now()
             WHERE organization_id = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())",
            org_id,
        )
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query!(
            "UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'), $2)
             WHERE organization_id = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())",
            org_id,
            retired.expires_at,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(retired)
}

/// The public part of the organisation's newest active key.
#[derive(Debug, Clone)]
pub struct KeySummary {
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The organisation's newest active key (the one a rotation issued last).
pub async fn newest_active(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Option<KeySummary>> {
    sqlx::query_as!(
        KeySummary,
        "SELECT prefix, created_at, expires_at FROM api_keys
         WHERE organization_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
         ORDER BY created_at DESC, id DESC LIMIT 1",
        org_id,
    )
    .fetch_optional(conn)
    .await
}

/// Announce on `channel` that the organisation's keys changed. `pg_notify` is transactional:
/// listeners hear it only when (and if) the surrounding transaction commits.
pub async fn notify_change(conn: &mut PgConnection, channel: &str, org_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("SELECT pg_notify($1, $2)", channel, org_id.to_string())
        .execute(conn)
        .await
        .map(|_| ())
}
