//! SQL of the `organizations` table: creation and lookup. (Its webhook is now its default
//! endpoint: `db::endpoints`.) An organisation is created with its first key by
//! [`super::key_issuance::create_organization`].

use sqlx::PgConnection;
use uuid::Uuid;

use crate::models::{Organization, Tier};

/// Insert a new organisation; its rate limit follows from the tier.
pub async fn insert(conn: &mut PgConnection, id: Uuid, name: &str, tier: Tier) -> sqlx::Result<Organization> {
    sqlx::query_as::<_, Organization>(
        "INSERT INTO organizations (id, name, tier, rate_limit_per_minute)
         VALUES ($1, $2, $3, $4)
         RETURNING id, name, tier, rate_limit_per_minute, created_at, updated_at",
    )
    .bind(id)
    .bind(name)
    .bind(tier)
    .bind(tier.rate_limit_per_minute())
    .fetch_one(conn)
    .await
}

/// The organisation with this id.
pub async fn get(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Option<Organization>> {
    sqlx::query_as::<_, Organization>(
        "SELECT id, name, tier, rate_limit_per_minute, created_at, updated_at
         FROM organizations WHERE id = $1",
    )
    .bind(org_id)
    .fetch_optional(conn)
    .await
}

/// The organisation, row-locked until the transaction ends: serialises key rotations of one
/// organisation so two concurrent rotations cannot both leave a "new" key active.
pub async fn get_for_update(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Option<Organization>> {
    sqlx::query_as::<_, Organization>(
        "SELECT id, name, tier, rate_limit_per_minute, created_at, updated_at
         FROM organizations WHERE id = $1 FOR UPDATE",
    )
    .bind(org_id)
    .fetch_optional(conn)
    .await
}

/// Mark the organisation changed (e.g. its keys were rotated).
pub async fn touch(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE organizations SET updated_at = now() WHERE id = $1")
        .bind(org_id)
        .execute(conn)
        .await
        .map(|_| ())
}
