//! SQL of the `events` table and of its companion `dedup_keys`: the rows of the ingest path's
//! batch insert (the statement itself, which also writes each event's first delivery job, is
//! `db::queue::insert_batch`), the inbox listing, acknowledgement and redelivery (the whole
//! transaction of a bulk redelivery: [`redeliver_failed`]). Every function on tenant data takes
//! the organisation id.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::queue::QueueError;
use crate::{
    jobs::DeliveryJob,
    models::{Event, EventStatus},
};

/// The columns of [`Event`], in one place so every query returns the same shape. The payload is
/// read as the JSON text Postgres prints, never decoded on our side.
const EVENT_COLUMNS: &str = "id, organization_id, type, dedup_id, payload::text AS payload, status, attempts, \
     response_status, last_error, created_at, updated_at, delivered_at, acknowledged_at";

/// New events for one batch insert (parallel columns). `payloads` are JSON object texts, bound
/// as text and cast to `jsonb` by the statement, so nothing is decoded into a tree on the way.
///
/// Callers order the rows by `(organization_id, dedup_id)`, so two concurrent batches lock dedup
/// keys in the same order and cannot deadlock, and pass each dedup key at most once.
#[derive(Debug, Default)]
pub struct NewEvents<'a> {
    pub ids: Vec<Uuid>,
    pub organization_ids: Vec<Uuid>,
    pub types: Vec<&'a str>,
    pub dedup_ids: Vec<Option<&'a str>>,
    pub payloads: Vec<&'a str>,
}

/// What [`super::queue::insert_batch`] did with one row of [`NewEvents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored at `created_at`, with its delivery job when the organisation has a webhook.
    Inserted { id: Uuid, created_at: DateTime<Utc> },
    /// Its dedup key is held by another event: `owner`, or `None` when the holder committed
    /// after this statement's snapshot was taken (ask [`dedup_owners`]).
    Duplicate { id: Uuid, owner: Option<Uuid> },
}

/// The event currently holding each of these dedup keys: `(organization_id, dedup_id, event_id)`.
pub async fn dedup_owners(
    conn: &mut PgConnection,
    organization_ids: &[Uuid],
    dedup_ids: &[String],
) -> sqlx::Result<Vec<(Uuid, String, Uuid)>> {
    if organization_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as::<_, (Uuid, String, Uuid)>(
        "SELECT d.organization_id, d.dedup_id, d.event_id
         FROM dedup_keys d
         JOIN UNNEST($1::uuid[], $2::text[]) AS k(org, dedup)
           ON d.organization_id = k.org AND d.dedup_id = k.dedup",
    )
    .bind(organization_ids)
    .bind(dedup_ids)
    .fetch_all(conn)
    .await
}

/// Does this organisation have a webhook configured?
pub async fn has_webhook(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1 AND webhook_url IS NOT NULL)",
    )
    .bind(organization_id)
    .fetch_one(conn)
    .await
}

/// One event of one organisation.
pub async fn find(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> sqlx::Result<Option<Event>> {
    sqlx::query_as::<_, Event>(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 AND organization_id = $2"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Filters of the inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    /// `None` is all.
    pub status: Option<EventStatus>,
    /// Matched literally (any text without NUL).
    pub event_type: Option<String>,
}

/// A keyset position: events strictly after `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Which rows of the inbox one page may hold.
#[derive(Debug, Clone, Copy)]
pub struct PageBounds {
    /// Rows after this position (if any)...
    pub after: Option<Keyset>,
    /// ...skipping this many...
    pub offset: i64,
    /// ...at most this many...
    pub limit: i64,
    /// ...and no row may start once the payloads before it reach this many bytes of JSON text
    /// (the first row is always included, so every page makes progress).
    pub max_payload_bytes: i64,
}

/// One page of the inbox, oldest first.
#[derive(Debug)]
pub struct InboxPage {
    pub events: Vec<Event>,
    /// More rows match after the last one (the row or the byte bound ended the page).
    pub has_more: bool,
}

#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    event: Event,
    /// Rows the row bound let through, before the byte bound.
    fetched: i64,
}

/// A page of the inbox. Both bounds are applied by Postgres, so a page never brings more
/// than `limit` rows and about `max_payload_bytes` of payload into this process.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: &InboxFilter,
    bounds: PageBounds,
) -> sqlx::Result<InboxPage> {
    let rows = sqlx::query_as::<_, PageRow>(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (
             SELECT p.*,
                    sum(octet_length(p.payload)) OVER (ORDER BY p.created_at, p.id) AS running,
                    count(*) OVER () AS fetched
             FROM (
                 SELECT {EVENT_COLUMNS} FROM events
                 WHERE organization_id = $1
                   AND ($2::text IS NULL OR status = $2)
                   AND ($3::text IS NULL OR type = $3)
                   AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
                 ORDER BY created_at, id
                 LIMIT $6 OFFSET $7
             ) p
         ) w
         WHERE w.running - octet_length(w.payload) < $8
         ORDER BY w.created_at, w.id"
    )))
    .bind(organization_id)
    .bind(filter.status.map(EventStatus::as_str))
    .bind(filter.event_type.as_deref())
    .bind(bounds.after.map(|k| k.created_at))
    .bind(bounds.after.map(|k| k.id))
    .bind(bounds.limit + 1)
    .bind(bounds.offset)
    .bind(bounds.max_payload_bytes)
    .fetch_all(conn)
    .await?;
    let fetched = rows.first().map_or(0, |r| r.fetched);
    let mut events: Vec<Event> = rows.into_iter().map(|r| r.event).collect();
    let has_more = (events.len() as i64) < fetched || events.len() as i64 > bounds.limit;
    events.truncate(usize::try_from(bounds.limit).unwrap_or(0));
    Ok(InboxPage { events, has_more })
}

/// How many events match the filter (ignoring any cursor). An index-only count over the
/// organisation's events: callers may skip it (`include_total=false`).
pub async fn count(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: &InboxFilter,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events
         WHERE organization_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR type = $3)",
    )
    .bind(organization_id)
    .bind(filter.status.map(EventStatus::as_str))
    .bind(filter.event_type.as_deref())
    .fetch_one(conn)
    .await
}

/// An acknowledged event: its id, status and when it was (first) acknowledged.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Acked {
    pub id: Uuid,
    pub status: EventStatus,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// Acknowledge one event. Returns `(row, newly)`: `newly` is false when it had been acknowledged
/// before (the first `acknowledged_at` is kept); `None` when the organisation has no such event.
pub async fn acknowledge(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<(Acked, bool)>> {
    let updated = sqlx::query_as::<_, Acked>(
        "UPDATE events
         SET status = 'delivered', acknowledged_at = now(),
             delivered_at = coalesce(delivered_at, now()), updated_at = now()
         WHERE id = $1 AND organization_id = $2 AND acknowledged_at IS NULL
         RETURNING id, status, acknowledged_at",
    )
    .bind(id)
    .bind(organization_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = updated {
        return Ok(Some((row, true)));
    }
    // A separate statement: under READ COMMITTED it sees a concurrent ack that just committed.
    let existing = sqlx::query_as::<_, Acked>(
        "SELECT id, status, acknowledged_at FROM events
         WHERE id = $1 AND organization_id = $2 AND acknowledged_at IS NOT NULL",
    )
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await?;
    Ok(existing.map(|row| (row, false)))
}

/// Acknowledge many events; returns the ids (among `ids`) that exist for the organisation, now
/// or previously acknowledged.
pub async fn acknowledge_many(
    conn: &mut PgConnection,
    organization_id: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    let mut found: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE events
         SET status = 'delivered', acknowledged_at = now(),
             delivered_at = coalesce(delivered_at, now()), updated_at = now()
         WHERE organization_id = $1 AND id = ANY($2) AND acknowledged_at IS NULL
         RETURNING id",
    )
    .bind(organization_id)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let before: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM events
         WHERE organization_id = $1 AND id = ANY($2) AND acknowledged_at IS NOT NULL AND NOT (id = ANY($3))",
    )
    .bind(organization_id)
    .bind(ids)
    .bind(&found)
    .fetch_all(conn)
    .await?;
    found.extend(before);
    Ok(found)
}

/// Put one event back to `pending` for a new delivery (clearing any acknowledgement, so the
/// worker does not treat it as consumed). Returns whether it was `pending` already (a delivery
/// may be under way), or `None` when the organisation has no such event. The row stays locked
/// until the transaction ends, so concurrent redeliveries of one event take turns.
pub async fn reset_for_redelivery(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar(
        "UPDATE events e
         SET status = 'pending', delivered_at = NULL, acknowledged_at = NULL, updated_at = now()
         FROM (SELECT id, status FROM events WHERE id = $1 AND organization_id = $2 FOR UPDATE) old
         WHERE e.id = old.id
         RETURNING old.status = 'pending'",
    )
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Failed events put back per transaction by [`redeliver_failed`].
const REDELIVER_CHUNK: i64 = 1000;

/// Put every failed (dead-lettered) event of the organisation created at or after `since` (all
/// of them when `None`) back to `pending` with a first delivery job, oldest first, in chunks of
/// [`REDELIVER_CHUNK`] events, each chunk in its own transaction. Returns how many were put back.
/// The one redelivery of the API and the operator command alike.
pub async fn redeliver_failed(
    pool: &PgPool,
    organization_id: Uuid,
    since: Option<DateTime<Utc>>,
) -> Result<i64, QueueError> {
    let mut count = 0;
    loop {
        let mut tx = pool.begin().await?;
        let ids = reset_failed_for_redelivery(&mut tx, organization_id, since, REDELIVER_CHUNK).await?;
        let jobs: Vec<_> = ids
            .iter()
            .map(|id| (DeliveryJob::first(*id, organization_id), Duration::ZERO))
            .collect();
        super::queue::enqueue(&mut tx, &jobs).await?;
        tx.commit().await?;
        let put_back = ids.len() as i64;
        count += put_back;
        if put_back < REDELIVER_CHUNK {
            return Ok(count);
        }
    }
}

/// Put up to `limit` failed (dead-lettered) events of the organisation created at or after
/// `since` (any time when `None`) back to `pending`, oldest first; returns their ids. Rows locked
/// by someone else are skipped for this round.
async fn reset_failed_for_redelivery(
    conn: &mut PgConnection,
    organization_id: Uuid,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE events
         SET status = 'pending', delivered_at = NULL, acknowledged_at = NULL, updated_at = now()
         WHERE id IN (
             SELECT id FROM events
             WHERE organization_id = $1 AND status = 'failed'
               AND ($2::timestamptz IS NULL OR created_at >= $2)
             ORDER BY created_at, id
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(organization_id)
    .bind(since)
    .bind(limit)
    .fetch_all(conn)
    .await
}
