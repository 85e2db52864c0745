//! SQL of an organisation's *default endpoint*: the one webhook of the API's first version,
//! which `/api/webhook/config` and `POST /api/webhook/secret/rotate` manage (patterns `{*}`,
//! `is_default`). Every change bumps the organisation's endpoints version and notifies ingest
//! ([`endpoints_changed`]), in the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::deliveries;

/// The NOTIFY channel of endpoint changes; the payload is the organisation id.
pub const ENDPOINTS_CHANNEL: &str = "triggers_endpoints";

/// The default endpoint's URL and secret.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DefaultEndpoint {
    pub id: Uuid,
    pub url: String,
    pub signing_secret: String,
    pub updated_at: DateTime<Utc>,
}

/// Record that the organisation's endpoints changed: bump its version (taking its row lock
/// until the transaction ends, which serialises endpoint changes of one organisation) and
/// notify every ingest instance once the transaction commits.
pub async fn endpoints_changed(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "WITH bumped AS (
             UPDATE organizations SET endpoints_version = endpoints_version + 1 WHERE id = $1
             RETURNING id)
         SELECT pg_notify($2, id::text) FROM bumped",
    )
    .bind(organization_id)
    .bind(ENDPOINTS_CHANNEL)
    .execute(conn)
    .await
    .map(drop)
}

/// The organisation's default endpoint, if it has one.
pub async fn find(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<Option<DefaultEndpoint>> {
    sqlx::query_as::<_, DefaultEndpoint>(
        "SELECT id, url, signing_secret, updated_at FROM endpoints
         WHERE organization_id = $1 AND is_default",
    )
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Point the default endpoint at `url`, creating it (with `new_secret`) when there is none. A
/// URL change keeps the existing secret, so receivers need not be reconfigured.
pub async fn set(
    conn: &mut PgConnection,
    organization_id: Uuid,
    url: &str,
    new_secret: &str,
) -> sqlx::Result<DefaultEndpoint> {
    endpoints_changed(&mut *conn, organization_id).await?;
    sqlx::query_as::<_, DefaultEndpoint>(
        "INSERT INTO endpoints (organization_id, id, url, signing_secret, is_default)
         VALUES ($1, $2, $3, $4, true)
         ON CONFLICT (organization_id) WHERE is_default
         DO UPDATE SET url = EXCLUDED.url, updated_at = now()
         RETURNING id, url, signing_secret, updated_at",
    )
    .bind(organization_id)
    .bind(Uuid::now_v7())
    .bind(url)
    .bind(new_secret)
    .fetch_one(conn)
    .await
}

/// Delete the default endpoint; its pending deliveries are cancelled. A later configuration
/// gets a fresh secret. `None`: there was none.
pub async fn delete(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<Option<DefaultEndpoint>> {
    endpoints_changed(&mut *conn, organization_id).await?;
    let deleted = sqlx::query_as::<_, DefaultEndpoint>(
        "DELETE FROM endpoints WHERE organization_id = $1 AND is_default
         RETURNING id, url, signing_secret, now() AS updated_at",
    )
    .bind(organization_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(endpoint) = &deleted {
        deliveries::cancel_for_endpoint(conn, organization_id, endpoint.id).await?;
    }
    Ok(deleted)
}

/// Replace the default endpoint's signing secret at once (no grace). `None`: there is none.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    organization_id: Uuid,
    new_secret: &str,
) -> sqlx::Result<Option<DefaultEndpoint>> {
    endpoints_changed(&mut *conn, organization_id).await?;
    sqlx::query_as::<_, DefaultEndpoint>(
        "UPDATE endpoints SET signing_secret = $2, previous_secrets = '[]', updated_at = now()
         WHERE organization_id = $1 AND is_default
         RETURNING id, url, signing_secret, updated_at",
    )
    .bind(organization_id)
    .bind(new_secret)
    .fetch_optional(conn)
    .await
}
