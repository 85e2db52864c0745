//! SQL of the worker: deliveries.
//!
//! What deliveries read before they send (the event and its organisation's webhook, for many
//! events at once), the last check before a request goes out, and what they write afterwards:
//! [`record_attempts`], one statement for a batch of attempts (their `delivery_attempts` rows and
//! their events' new state), run by the worker's recorder in its group-commit transaction.
//! Nothing here is held across the HTTP call.

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
    /// The payload as JSON text, as stored: put into the webhook body without being parsed
    /// into a tree and written out again.
    pub payload: String,
    pub status: EventStatus,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub webhook_url: Option<String>,
    pub signing_secret: Option<String>,
}

/// One finished attempt of an event, as the worker records it: its `delivery_attempts` row (the
/// attempt's number is the event's `attempts` after the update) and the status the event moves to.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub organization_id: Uuid,
    pub event_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    /// The state the event moves to: `Delivered`, `Pending` (another attempt is scheduled) or
    /// `Failed` (dead letter).
    pub next_status: EventStatus,
}

/// What [`record_attempts`] did with one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The attempt's number over the event's whole life (`events.attempts` after the update).
    pub attempt: i32,
    /// Whether the event took the new status. `false` when it was acknowledged, or moved out of
    /// `pending` by someone else, meanwhile: an ack always wins, and no retry may follow then.
    pub status_applied: bool,
}

/// The targets of many events at once (one query for every delivery starting together), each
/// with its organisation's id. Returns the targets found, in no particular order; an id that is
/// missing is gone.
pub async fn load_targets(
    conn: &mut PgConnection,
    event_ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, DeliveryTarget)>> {
    let rows: Vec<DeliveryTargetRow> = sqlx::query_as(
        "SELECT e.organization_id, e.id AS event_id, e.type, e.dedup_id, e.payload::text AS payload, e.status, e.attempts,
                e.created_at, e.acknowledged_at, o.webhook_url, o.signing_secret
         FROM events e JOIN organizations o ON o.id = e.organization_id
         WHERE e.id = ANY($1)",
    )
    .bind(event_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.organization_id, r.target)).collect())
}

#[derive(sqlx::FromRow)]
struct DeliveryTargetRow {
    organization_id: Uuid,
    #[sqlx(flatten)]
    target: DeliveryTarget,
}

/// Of `event_ids`, those still pending and not acknowledged: the check made right before a
/// request is sent, so an acknowledgement that committed after the event was loaded still
/// stops it.
pub async fn still_deliverable(conn: &mut PgConnection, event_ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM events WHERE id = ANY($1) AND acknowledged_at IS NULL AND status = 'pending'",
    )
    .bind(event_ids)
    .fetch_all(conn)
    .await
}

/// Record attempts in ONE statement: count each on its event, move the event to its
/// `next_status` unless it was acknowledged or left `pending` meanwhile, and insert the
/// `delivery_attempts` rows. The events must be distinct. Answers in input order; `None`: the
/// event no longer exists. Run it in the transaction that also enqueues any next attempt.
pub async fn record_attempts(
    conn: &mut PgConnection,
    attempts: &[AttemptRecord],
) -> sqlx::Result<Vec<Option<Recorded>>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&AttemptRecord) -> Option<i32>| attempts.iter().map(f).collect::<Vec<_>>();
    let event_ids: Vec<Uuid> = attempts.iter().map(|a| a.event_id).collect();
    let org_ids: Vec<Uuid> = attempts.iter().map(|a| a.organization_id).collect();
    let statuses = column(|a| a.response_status);
    let durations = column(|a| Some(a.duration_ms));
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.next_status.as_str()).collect();
    let started: Vec<DateTime<Utc>> = attempts.iter().map(|a| a.started_at).collect();
    // The CASEs see each row as it is when the UPDATE locks it, so an
    // ack that committed after the worker's reload is never overwritten. Rows are locked in id
    // order, so two workers' batches cannot deadlock each other.
    let rows: Vec<(Uuid, i32, bool)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::int4[])
                 AS t(event_id, organization_id, response_status, error, outcome, started_at, duration_ms)
         ),
         locked AS (
             SELECT e.id FROM events e JOIN input i ON i.event_id = e.id AND i.organization_id = e.organization_id
             ORDER BY e.id FOR UPDATE OF e
         ),
         updated AS (
             UPDATE events e SET
                 attempts = e.attempts + 1,
                 response_status = i.response_status,
                 last_error = i.error,
                 status = CASE WHEN e.acknowledged_at IS NULL AND e.status = 'pending' THEN i.outcome ELSE e.status END,
                 delivered_at = CASE WHEN e.acknowledged_at IS NULL AND e.status = 'pending' AND i.outcome = 'delivered'
                                     THEN now() ELSE e.delivered_at END,
                 updated_at = now()
             FROM input i, locked l
             WHERE e.id = i.event_id AND l.id = e.id
             RETURNING e.id, e.attempts, (e.acknowledged_at IS NULL AND e.status = i.outcome) AS applied
         ),
         inserted AS (
             INSERT INTO delivery_attempts
                 (event_id, organization_id, attempt, started_at, duration_ms, response_status, error)
             SELECT i.event_id, i.organization_id, u.attempts, i.started_at, i.duration_ms, i.response_status, i.error
             FROM input i JOIN updated u ON u.id = i.event_id
         )
         SELECT id, attempts, applied FROM updated",
    )
    .bind(&event_ids)
    .bind(&org_ids)
    .bind(&statuses)
    .bind(&errors)
    .bind(&outcomes)
    .bind(&started)
    .bind(&durations)
    .fetch_all(&mut *conn)
    .await?;
    let rows: std::collections::HashMap<Uuid, Recorded> = rows
        .into_iter()
        .map(|(id, attempt, status_applied)| {
            let recorded = Recorded {
                attempt,
                status_applied,
            };
            (id, recorded)
        })
        .collect();
    Ok(event_ids.iter().map(|id| rows.get(id).copied()).collect())
}
