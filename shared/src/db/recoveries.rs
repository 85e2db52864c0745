//! SQL of the `recoveries` table: an endpoint's deliveries of a time window, in chosen
//! statuses, given new chains in the background.
//!
//! - The API counts the matching deliveries and writes the recovery in one transaction
//!   ([`start`]; [`count`] alone is the dry run), at most [`MAX_DELIVERIES`] per call.
//! - A worker processes it in bounded batches ([`run_batch`]), each one transaction that holds
//!   the recovery's row lock (so one worker at a time works on it; others skip it), locks the
//!   batch's deliveries in key order, starts their chains at the recovered priority
//!   (`queue::recovered`) and commits the cursor it reached with them. A worker killed mid-batch
//!   loses nothing: its transaction rolls back and the next batch starts from the last cursor.
//! - A recovery is the deliveries that matched when it was counted and have not changed since
//!   (`updated_at <= as_of`): one resent, recovered by another call or newly failed meanwhile
//!   is not restarted twice, so `enqueued` never exceeds `total`.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{deliveries, queue::QueueError};
use crate::models::{DeliveryKey, DeliveryStatus};

/// The most deliveries one recovery may restart (API.md).
pub const MAX_DELIVERIES: i64 = 100_000;

/// Which deliveries of an endpoint a recovery restarts.
#[derive(Debug, Clone)]
pub struct RecoveryFilter {
    pub endpoint_id: Uuid,
    /// Created at or after.
    pub since: DateTime<Utc>,
    /// Created before.
    pub until: DateTime<Utc>,
    /// Distinct; never `pending` (a pending delivery has a chain already).
    pub statuses: Vec<DeliveryStatus>,
}

impl RecoveryFilter {
    fn status_texts(&self) -> Vec<&'static str> {
        self.statuses.iter().map(|s| s.as_str()).collect()
    }
}

/// A recovery as the API shows it.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub statuses: Vec<String>,
    /// `running` or `done`.
    pub status: String,
    pub total: i32,
    pub enqueued: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// How many deliveries of the organisation's endpoint match `filter`, among those unchanged
/// since `as_of` (all of them when `None`). A range of `deliveries_endpoint_idx`.
pub async fn count(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: &RecoveryFilter,
    as_of: Option<DateTime<Utc>>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM deliveries
           WHERE organization_id = $1 AND endpoint_id = $2 AND created_at >= $3 AND created_at < $4
             AND status = ANY($5) AND ($6::timestamptz IS NULL OR updated_at <= $6)"#,
        organization_id,
        filter.endpoint_id,
        filter.since,
        filter.until,
        &filter.status_texts() as &[&str],
        as_of,
    )
    .fetch_one(conn)
    .await
}

/// What [`start`] did.
#[derive(Debug)]
pub enum Started {
    /// Written; `done` already when nothing matched.
    Recovery(Recovery),
    /// More than [`MAX_DELIVERIES`] match (this many): nothing was written.
    TooMany(i64),
}

/// Count the deliveries `filter` matches now and, unless there are more than
/// [`MAX_DELIVERIES`], write a running recovery of them, in one transaction (a savepoint
/// inside the caller's).
pub async fn start(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: &RecoveryFilter,
) -> sqlx::Result<Started> {
    let mut tx = conn.begin().await?;
    let as_of = sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "as_of!""#)
        .fetch_one(&mut *tx)
        .await?;
    let total = count(&mut tx, organization_id, filter, Some(as_of)).await?;
    if total > MAX_DELIVERIES {
        return Ok(Started::TooMany(total));
    }
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO recoveries (organization_id, id, endpoint_id, since, until, statuses, as_of, total,
                                 status, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                 CASE WHEN $8 = 0 THEN 'done' ELSE 'running' END, CASE WHEN $8 = 0 THEN now() END)",
        organization_id,
        id,
        filter.endpoint_id,
        filter.since,
        filter.until,
        &filter.status_texts() as &[&str],
        as_of,
        i32::try_from(total).unwrap_or(i32::MAX),
    )
    .execute(&mut *tx)
    .await?;
    let recovery = find(&mut tx, organization_id, filter.endpoint_id, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok(Started::Recovery(recovery))
}

/// One recovery of the organisation's endpoint.
pub async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    endpoint_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Recovery>> {
    sqlx::query_as!(
        Recovery,
        "SELECT id, endpoint_id, since, until, statuses, status, total, enqueued, created_at, finished_at
         FROM recoveries
         WHERE organization_id = $1 AND id = $2 AND endpoint_id = $3",
        organization_id,
        id,
        endpoint_id,
    )
    .fetch_optional(conn)
    .await
}

/// A running recovery, as a batch reads it.
struct Claimed {
    organization_id: Uuid,
    id: Uuid,
    endpoint_id: Uuid,
    until: DateTime<Utc>,
    statuses: Vec<String>,
    as_of: DateTime<Utc>,
    total: i32,
    enqueued: i32,
    cursor_created_at: DateTime<Utc>,
    cursor_event_id: Uuid,
    endpoint_exists: bool,
}

/// What one [`run_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchDone {
    pub organization_id: Uuid,
    pub recovery_id: Uuid,
    /// Deliveries given a new chain by this batch.
    pub enqueued: u64,
    /// The recovery is done now.
    pub finished: bool,
}

/// Process the next batch (at most `batch` deliveries) of the running recovery that progressed
/// least recently and that no other worker holds, in one transaction; `None` when there is
/// none. The recovery is done once its window is exhausted, `total` deliveries were restarted,
/// or its endpoint is gone.
pub async fn run_batch(conn: &mut PgConnection, batch: i64) -> Result<Option<BatchDone>, QueueError> {
    let mut tx = conn.begin().await?;
    let claimed = sqlx::query_as!(
        Claimed,
        r#"SELECT r.organization_id, r.id, r.endpoint_id, r.until, r.statuses, r.as_of, r.total, r.enqueued,
                  coalesce(r.cursor_created_at, r.since) AS "cursor_created_at!",
                  coalesce(r.cursor_event_id, '00000000-0000-0000-0000-000000000000') AS "cursor_event_id!",
                  EXISTS (SELECT 1 FROM endpoints ep
                          WHERE ep.organization_id = r.organization_id AND ep.id = r.endpoint_id)
                      AS "endpoint_exists!"
           FROM recoveries r
           WHERE r.status = 'running'
           ORDER BY r.updated_at
           LIMIT 1
           FOR UPDATE OF r SKIP LOCKED"#,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(r) = claimed else {
        return Ok(None);
    };
    let room = i64::from(r.total - r.enqueued).clamp(0, batch.max(1));
    // The next deliveries of the window after the cursor, in index order.
    let candidates: Vec<(Uuid, DateTime<Utc>)> = if r.endpoint_exists && room > 0 {
        sqlx::query!(
            "SELECT event_id, created_at FROM deliveries
             WHERE organization_id = $1 AND endpoint_id = $2
               AND (created_at, event_id) > ($3, $4) AND created_at < $5
               AND status = ANY($6) AND updated_at <= $7
             ORDER BY created_at, event_id
             LIMIT $8",
            r.organization_id,
            r.endpoint_id,
            r.cursor_created_at,
            r.cursor_event_id,
            r.until,
            &r.statuses,
            r.as_of,
            room,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|c| (c.event_id, c.created_at))
        .collect()
    } else {
        Vec::new()
    };
    // Locked in key order (every writer of several deliveries does); one that changed since
    // the read above no longer matches and is left alone.
    let ids: Vec<Uuid> = candidates.iter().map(|(id, _)| *id).collect();
    let locked = sqlx::query_scalar!(
        "SELECT event_id FROM deliveries
         WHERE organization_id = $1 AND endpoint_id = $2 AND event_id = ANY($3)
           AND status = ANY($4) AND updated_at <= $5
         ORDER BY event_id
         FOR UPDATE",
        r.organization_id,
        r.endpoint_id,
        &ids,
        &r.statuses,
        r.as_of,
    )
    .fetch_all(&mut *tx)
    .await?;
    let keys: Vec<DeliveryKey> = locked
        .into_iter()
        .map(|event_id| DeliveryKey {
            organization_id: r.organization_id,
            event_id,
            endpoint_id: r.endpoint_id,
        })
        .collect();
    let enqueued = deliveries::new_recovered_chains(&mut tx, &keys).await?;
    let restarted = i32::try_from(enqueued).unwrap_or(i32::MAX);
    let finished = (candidates.len() as i64) < room || r.enqueued.saturating_add(restarted) >= r.total;
    let (cursor_at, cursor_id) = candidates
        .last()
        .map_or((r.cursor_created_at, r.cursor_event_id), |(id, at)| (*at, *id));
    sqlx::query!(
        "UPDATE recoveries
         SET enqueued = enqueued + $3, cursor_created_at = $4, cursor_event_id = $5, updated_at = now(),
             status = CASE WHEN $6 THEN 'done' ELSE status END,
             finished_at = CASE WHEN $6 THEN now() END
         WHERE organization_id = $1 AND id = $2",
        r.organization_id,
        r.id,
        restarted,
        cursor_at,
        cursor_id,
        finished,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(BatchDone {
        organization_id: r.organization_id,
        recovery_id: r.id,
        enqueued,
        finished,
    }))
}
