//! SQL of the `delivery_attempts` table, read side: the attempt log of one event, over all its
//! deliveries. (The worker writes attempts; see `deliveries`.)

use sqlx::PgConnection;
use uuid::Uuid;

use crate::models::DeliveryAttempt;

/// Every recorded delivery attempt of an event of this organisation, in order.
pub async fn list_for_event(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_id: Uuid,
) -> sqlx::Result<Vec<DeliveryAttempt>> {
    sqlx::query_as!(
        DeliveryAttempt,
        "SELECT attempt, endpoint_id, started_at, duration_ms, response_status, error
         FROM delivery_attempts
         WHERE event_id = $1 AND organization_id = $2
         ORDER BY started_at, id",
        event_id,
        organization_id,
    )
    .fetch_all(conn)
    .await
}
