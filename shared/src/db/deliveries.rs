//! SQL of the worker: deliveries.
//!
//! What a delivery reads before it sends (the event and its organisation's webhook), and the one
//! short transaction it writes afterwards (an attempt row and the event's new state). Nothing
//! here is held across the HTTP call.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::models::EventStatus;

/// Everything needed to send one event: the event and its organisation's current webhook.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryTarget {
    pub event_id: Uuid,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub dedup_id: Option<String>,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub webhook_url: Option<String>,
    pub signing_secret: Option<String>,
}

/// Load event `event_id` of `organization_id` with its organisation's webhook (`None`: gone).
pub async fn load_target(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_id: Uuid,
) -> sqlx::Result<Option<DeliveryTarget>> {
    sqlx::query_as::<_, DeliveryTarget>(
        "SELECT e.id AS event_id, e.type, e.dedup_id, e.payload, e.status, e.attempts, e.created_at,
                e.acknowledged_at, o.webhook_url, o.signing_secret
         FROM events e JOIN organizations o ON o.id = e.organization_id
         WHERE e.id = $1 AND e.organization_id = $2",
    )
    .bind(event_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// One finished attempt, as the worker observed it.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    /// The state the event moves to: `Delivered`, `Pending` (another attempt is scheduled) or
    /// `Failed` (dead letter).
    pub outcome: EventStatus,
}

/// What [`record_attempt`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The attempt's number over the event's whole life (`events.attempts` after the update).
    pub attempt: i32,
    /// Whether the event took the new status. `false` when it was acknowledged, or moved out of
    /// `pending` by someone else, meanwhile: an ack always wins, and no retry may follow then.
    pub status_applied: bool,
}

/// Record an attempt: count it on the event, move the event to `record.outcome` unless it was
/// acknowledged or left `pending` meanwhile, and insert the `delivery_attempts` row. `None` when
/// the event no longer exists. Run it in the transaction that also enqueues any next attempt.
pub async fn record_attempt(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_id: Uuid,
    record: &AttemptRecord,
) -> sqlx::Result<Option<Recorded>> {
    // The CASE sees the row as it is when the UPDATE locks it, so an ack that committed after the
    // worker's reload is never overwritten.
    let row: Option<(i32, bool)> = sqlx::query_as(
        "UPDATE events SET
             attempts = attempts + 1,
             response_status = $3,
             last_error = $4,
             status = CASE WHEN acknowledged_at IS NULL AND status = 'pending' THEN $5 ELSE status END,
             delivered_at = CASE WHEN acknowledged_at IS NULL AND status = 'pending' AND $5 = 'delivered'
                                 THEN now() ELSE delivered_at END,
             updated_at = now()
         WHERE id = $1 AND organization_id = $2
         RETURNING attempts, (acknowledged_at IS NULL AND status = $5)",
    )
    .bind(event_id)
    .bind(organization_id)
    .bind(record.response_status)
    .bind(record.error.as_deref())
    .bind(record.outcome.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((attempt, status_applied)) = row else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO delivery_attempts
             (event_id, organization_id, attempt, started_at, duration_ms, response_status, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event_id)
    .bind(organization_id)
    .bind(attempt)
    .bind(record.started_at)
    .bind(record.duration_ms)
    .bind(record.response_status)
    .bind(record.error.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(Some(Recorded {
        attempt,
        status_applied,
    }))
}
