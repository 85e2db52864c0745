//! SQL of the `organizations` table: creation and lookup. (Its webhook is now its default
//! endpoint: `db::endpoints`.) [`create_with_key`] is the one transaction that
//! creates an organisation, for the API and the operator command alike.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::api_keys;
use crate::{
    apikey::GeneratedKey,
    models::{Organization, OrganizationName, Tier},
};

/// Create an organisation with its first API key, in one transaction. The key's secret is in
/// the returned [`GeneratedKey`] only: show it once.
pub async fn create_with_key(
    pool: &PgPool,
    name: &OrganizationName,
    tier: Tier,
) -> anyhow::Result<(Organization, GeneratedKey)> {
    let org_id = Uuid::now_v7();
    api_keys::with_fresh_key(|key| async move {
        let created = async {
            let mut tx = pool.begin().await?;
            let organization = insert(&mut tx, org_id, name.as_str(), tier).await?;
            api_keys::insert(&mut tx, Uuid::now_v7(), org_id, &key.prefix, &key.hash).await?;
            tx.commit().await?;
            Ok(organization)
        }
        .await;
        (created, key)
    })
    .await
}

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
