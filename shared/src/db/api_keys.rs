//! SQL of the `api_keys` table.

use sqlx::PgConnection;
use uuid::Uuid;

/// An active key's row with the organisation fields authentication needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyWithOrg {
    pub key_id: Uuid,
    pub key_hash: String,
    pub organization_id: Uuid,
    pub organization_name: String,
    pub tier: String,
    pub rate_limit_per_minute: i32,
}

/// The unrevoked, unexpired key with this public prefix.
pub async fn find_active_by_prefix(
    conn: &mut PgConnection,
    prefix: &str,
) -> sqlx::Result<Option<KeyWithOrg>> {
    sqlx::query_as::<_, KeyWithOrg>(
        "SELECT k.id AS key_id, k.key_hash, o.id AS organization_id, o.name AS organization_name,
                o.tier, o.rate_limit_per_minute
         FROM api_keys k JOIN organizations o ON o.id = k.organization_id
         WHERE k.prefix = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())",
    )
    .bind(prefix)
    .fetch_optional(conn)
    .await
}
