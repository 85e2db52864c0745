//! SQL of the `organizations` table: creation and lookup. (Its webhook is now its default
//! endpoint: `db::endpoints`.) An organisation is created with its first key by
//! [`super::key_issuance::create_organization`].

use sqlx::PgConnection;
use uuid::Uuid;

use crate::models::{Organization, Tier};

/// Insert a new organisation; its rate limit follows from the tier.
pub async fn insert(conn: &mut PgConnection, id: Uuid, name: &str, tier: Tier) -> sqlx::Result<Organization> {
    sqlx::query!(
        "INSERT INTO organizations (id, name, tier, rate_limit_per_minute) VALUES ($1, $2, $3, $4)",
        id,
        name,
        tier.as_str(),
        tier.rate_limit_per_minute(),
    )
    .execute(&mut *conn)
    .await?;
    get(conn, id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// The organisation with this id. (The one statement that reads an [`Organization`].)
pub async fn get(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Option<Organization>> {
    sqlx::query_as!(
        Organization,
        r#"SELECT id, name, tier AS "tier: Tier", rate_limit_per_minute, created_at, updated_at
           FROM organizations WHERE id = $1"#,
        org_id,
    )
    .fetch_optional(conn)
    .await
}

/// Mark the organisation changed (e.g. its keys were rotated), taking its row lock until the
/// transaction ends: that serialises key rotations of one organisation, so two concurrent
/// rotations cannot both leave a "new" key active. `false`: there is no such organisation.
pub async fn touch(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE organizations SET updated_at = now() WHERE id = $1",
        org_id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
