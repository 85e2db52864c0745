//! SQL of the `events` table and of its companion `dedup_keys`: the inbox listing,
//! acknowledgement and redelivery (the whole transaction of a bulk redelivery:
//! [`redeliver_failed`]). The ingest statement that writes events, dedup keys, deliveries and
//! their first jobs together is `db::queue::event_batch`. Every function on tenant data takes
//! the organisation id.
//!
//! An event's `status` is the summary of its deliveries, kept by a trigger (see
//! `models::EventStatus`); its `attempts`, `response_status` and `last_error` are read from its
//! deliveries (all attempts; the latest attempt's answer).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{deliveries, queue::QueueError};
use crate::models::{Event, EventStatus, Payload};

/// The event currently holding each of these dedup keys: `(organization_id, dedup_id, event_id)`.
pub async fn dedup_owners(
    conn: &mut PgConnection,
    organization_ids: &[Uuid],
    dedup_ids: &[String],
) -> sqlx::Result<Vec<(Uuid, String, Uuid)>> {
    if organization_ids.is_empty() {
        return Ok(Vec::new());
    }
    let owners = sqlx::query!(
        "SELECT d.organization_id, d.dedup_id, d.event_id
         FROM dedup_keys d
         JOIN UNNEST($1::uuid[], $2::text[]) AS k(org, dedup)
           ON d.organization_id = k.org AND d.dedup_id = k.dedup",
        organization_ids,
        dedup_ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(owners
        .into_iter()
        .map(|o| (o.organization_id, o.dedup_id, o.event_id))
        .collect())
}

/// One event of one organisation.
pub async fn find(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> sqlx::Result<Option<Event>> {
    Ok(load(conn, organization_id, &[id]).await?.pop())
}

/// The events of the organisation with these ids, oldest first, each with the summary of its
/// deliveries. The one statement that reads an [`Event`]; the payload is read as the JSON text
/// Postgres prints, never decoded on our side.
async fn load(conn: &mut PgConnection, organization_id: Uuid, ids: &[Uuid]) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as!(
        Event,
        r#"SELECT e.id, e.organization_id, e.type AS event_type, e.dedup_id,
                  e.payload::text AS "payload!: Payload", e.status AS "status: EventStatus",
                  coalesce(s.attempts, 0) AS "attempts!", s.response_status, s.last_error,
                  e.created_at, e.updated_at, e.delivered_at, e.acknowledged_at
           FROM events e
           LEFT JOIN LATERAL (
               SELECT sum(d.attempts)::int4 AS attempts,
                      (array_agg(d.response_status ORDER BY d.last_attempt_at DESC NULLS LAST))[1]
                          AS response_status,
                      (array_agg(d.last_error ORDER BY d.last_attempt_at DESC NULLS LAST))[1] AS last_error
               FROM deliveries d WHERE d.organization_id = e.organization_id AND d.event_id = e.id
           ) s ON true
           WHERE e.organization_id = $1 AND e.id = ANY($2)
           ORDER BY e.created_at, e.id"#,
        organization_id,
        ids,
    )
    .fetch_all(conn)
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

/// A page of the inbox. Both bounds are applied by Postgres, so a page never brings more
/// than `limit` rows and about `max_payload_bytes` of payload into this process: one statement
/// finds the page's ids, then [`load`] reads them.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: &InboxFilter,
    bounds: PageBounds,
) -> sqlx::Result<InboxPage> {
    // `fetched`: the rows the row bound let through, before the byte bound.
    let rows = sqlx::query!(
        r#"SELECT p.id AS "id!", p.fetched AS "fetched!" FROM (
               SELECT p.id, p.created_at, p.bytes,
                      sum(p.bytes) OVER (ORDER BY p.created_at, p.id) AS running,
                      count(*) OVER () AS fetched
               FROM (
                   SELECT e.id, e.created_at, octet_length(e.payload::text) AS bytes FROM events e
                   WHERE e.organization_id = $1
                     AND ($2::text IS NULL OR e.status = $2)
                     AND ($3::text IS NULL OR e.type = $3)
                     AND ($4::timestamptz IS NULL OR (e.created_at, e.id) > ($4, $5))
                   ORDER BY e.created_at, e.id
                   LIMIT $6 OFFSET $7
               ) p
           ) p
           WHERE p.running - p.bytes < $8
           ORDER BY p.created_at, p.id"#,
        organization_id,
        filter.status.map(EventStatus::as_str),
        filter.event_type.as_deref(),
        bounds.after.map(|k| k.created_at),
        bounds.after.map(|k| k.id),
        bounds.limit + 1,
        bounds.offset,
        bounds.max_payload_bytes,
    )
    .fetch_all(&mut *conn)
    .await?;
    let fetched = rows.first().map_or(0, |r| r.fetched);
    let has_more = (rows.len() as i64) < fetched || rows.len() as i64 > bounds.limit;
    let ids: Vec<Uuid> = rows
        .iter()
        .take(usize::try_from(bounds.limit).unwrap_or(0))
        .map(|r| r.id)
        .collect();
    let events = load(conn, organization_id, &ids).await?;
    Ok(InboxPage { events, has_more })
}

/// How many events match the filter (ignoring any cursor). An index-only count over the
/// organisation's events: callers may skip it (`include_total=false`).
pub async fn count(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: &InboxFilter,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM events
           WHERE organization_id = $1
             AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR type = $3)"#,
        organization_id,
        filter.status.map(EventStatus::as_str),
        filter.event_type.as_deref(),
    )
    .fetch_one(conn)
    .await
}

/// An acknowledged event: its id, status and when it was (first) acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    pub id: Uuid,
    pub status: EventStatus,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// Acknowledge one event: its pending deliveries are cancelled and it is `delivered`. Returns
/// `(row, newly)`: `newly` is false when it had been acknowledged before (the first
/// `acknowledged_at` is kept); `None` when the organisation has no such event.
pub async fn acknowledge(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<(Acked, bool)>> {
    // Deliveries first, then the event: the order every writer of both keeps.
    deliveries::cancel_for_events(&mut *conn, organization_id, &[id]).await?;
    let updated = sqlx::query_as!(
        Acked,
        r#"UPDATE events
           SET status = 'delivered', acknowledged_at = now(),
               delivered_at = coalesce(delivered_at, now()), updated_at = now()
           WHERE id = $1 AND organization_id = $2 AND acknowledged_at IS NULL
           RETURNING id, status AS "status: EventStatus", acknowledged_at"#,
        id,
        organization_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = updated {
        return Ok(Some((row, true)));
    }
    // A separate statement: under READ COMMITTED it sees a concurrent ack that just committed.
    let existing = sqlx::query_as!(
        Acked,
        r#"SELECT id, status AS "status: EventStatus", acknowledged_at FROM events
           WHERE id = $1 AND organization_id = $2 AND acknowledged_at IS NOT NULL"#,
        id,
        organization_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(existing.map(|row| (row, false)))
}

/// Acknowledge many events (see [`acknowledge`]); returns the ids (among `ids`) that exist for
/// the organisation, now or previously acknowledged.
pub async fn acknowledge_many(
    conn: &mut PgConnection,
    organization_id: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    deliveries::cancel_for_events(&mut *conn, organization_id, ids).await?;
    let mut found = sqlx::query_scalar!(
        "UPDATE events
         SET status = 'delivered', acknowledged_at = now(),
             delivered_at = coalesce(delivered_at, now()), updated_at = now()
         WHERE organization_id = $1 AND id = ANY($2) AND acknowledged_at IS NULL
         RETURNING id",
        organization_id,
        ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    let before = sqlx::query_scalar!(
        "SELECT id FROM events
         WHERE organization_id = $1 AND id = ANY($2) AND acknowledged_at IS NOT NULL AND NOT (id = ANY($3))",
        organization_id,
        ids,
        &found,
    )
    .fetch_all(conn)
    .await?;
    found.extend(before);
    Ok(found)
}

/// What [`redeliver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// New chains were started for this many deliveries.
    Started(u64),
    /// Every delivery (of the selection) is pending already: nothing was started.
    AlreadyPending,
    /// The event has no delivery (of the selection): it was accepted when no endpoint matched.
    NoDelivery,
}

/// Give the deliveries of one event (all, or the one to `endpoint_id`) new chains, except those
/// pending already; an acknowledgement is cleared, so the event is pending again. `None`: the
/// organisation has no such event. Run it in a transaction: the deliveries stay locked until
/// their jobs commit, so concurrent redeliveries take turns and each sees the previous one's.
pub async fn redeliver(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    endpoint_id: Option<Uuid>,
) -> Result<Option<Redelivery>, QueueError> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM events WHERE id = $1 AND organization_id = $2) AS "exists!""#,
        id,
        organization_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Ok(None);
    }
    let locked = deliveries::lock_of_event(&mut *conn, organization_id, id, endpoint_id).await?;
    if locked.is_empty() {
        return Ok(Some(Redelivery::NoDelivery));
    }
    let restart: Vec<_> = locked
        .into_iter()
        .filter(|(_, status)| *status != crate::models::DeliveryStatus::Pending)
        .map(|(key, _)| key)
        .collect();
    if restart.is_empty() {
        return Ok(Some(Redelivery::AlreadyPending));
    }
    // After the deliveries' locks, before their new chains make the trigger sum the event up.
    sqlx::query!(
        "UPDATE events SET acknowledged_at = NULL, updated_at = now()
         WHERE id = $1 AND organization_id = $2 AND acknowledged_at IS NOT NULL",
        id,
        organization_id,
    )
    .execute(&mut *conn)
    .await?;
    let started = deliveries::new_chains(conn, &restart).await?;
    Ok(Some(Redelivery::Started(started)))
}

/// Failed deliveries restarted per transaction by [`redeliver_failed`].
const REDELIVER_CHUNK: i64 = 1000;

/// Give every failed (dead-lettered) delivery of the organisation whose event was created at or
/// after `since` (all of them when `None`) a new chain, in chunks of [`REDELIVER_CHUNK`], each
/// chunk in its own transaction. Returns how many were restarted. The one bulk redelivery of
/// the API and the operator command alike.
pub async fn redeliver_failed(
    pool: &PgPool,
    organization_id: Uuid,
    since: Option<DateTime<Utc>>,
) -> Result<i64, QueueError> {
    let mut count = 0;
    loop {
        let mut tx = pool.begin().await?;
        let keys = deliveries::lock_failed(&mut tx, organization_id, since, REDELIVER_CHUNK).await?;
        deliveries::new_chains(&mut tx, &keys).await?;
        tx.commit().await?;
        let restarted = keys.len() as i64;
        count += restarted;
        if restarted < REDELIVER_CHUNK {
            return Ok(count);
        }
    }
}
