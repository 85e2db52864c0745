//! SQL of the `events` table and of its companion `dedup_keys`: the one-statement batch insert of
//! the ingest path (with each event's first delivery job), the inbox listing, acknowledgement
//! and redelivery. Every function on tenant data takes the organisation id.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    jobs::{DELIVERY_QUEUE, DeliveryJob, TASK_MAX_ATTEMPTS},
    models::Event,
};

/// The columns of [`Event`], in one place so every query returns the same shape.
const EVENT_COLUMNS: &str = "id, organization_id, type, dedup_id, payload, status, attempts, response_status, \
     last_error, created_at, updated_at, delivered_at, acknowledged_at";

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

/// What [`insert_batch`] did with one row of [`NewEvents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored at `created_at`, with its delivery job when the organisation has a webhook.
    Inserted { id: Uuid, created_at: DateTime<Utc> },
    /// Its dedup key is held by another event: `owner`, or `None` when the holder committed
    /// after this statement's snapshot was taken (ask [`dedup_owners`]).
    Duplicate { id: Uuid, owner: Option<Uuid> },
}

/// Store a batch of new events in ONE statement (one round trip, committed on its own or with
/// the caller's transaction): claim the dedup keys (an existing, unexpired key is a duplicate; an
/// expired one is taken over), insert the events whose key was claimed or who have none, and
/// enqueue one delivery job for each inserted event of an organisation with a webhook. Returns
/// one [`Written`] per row, in no particular order.
///
/// The job rows mirror `apalis_postgres::queries::push_tasks` (same columns, the same encoding
/// through [`DeliveryJob::to_task`]); the job id is the event id read as a ULID (both are a
/// millisecond timestamp followed by random bits), so an event's first job is unique to it.
pub async fn insert_batch(
    conn: &mut PgConnection,
    rows: &NewEvents<'_>,
    dedup_window: Duration,
) -> sqlx::Result<Vec<Written>> {
    if rows.ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut job_ids = Vec::with_capacity(rows.ids.len());
    let mut jobs = Vec::with_capacity(rows.ids.len());
    for (id, org) in rows.ids.iter().zip(&rows.organization_ids) {
        let task = DeliveryJob::first(*id, *org)
            .to_task(Duration::ZERO)
            .map_err(|e| sqlx::Error::Encode(e.into()))?;
        job_ids.push(ulid::Ulid::from(id.as_u128()).to_string());
        jobs.push(task.args);
    }
    let written = sqlx::query_as::<_, (Uuid, Option<DateTime<Utc>>, Option<Uuid>)>(
        "WITH e AS MATERIALIZED (
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::bytea[])
                 WITH ORDINALITY AS e(id, org, type, dedup, payload, job_id, job, n)
         ),
         claimed AS (
             INSERT INTO dedup_keys (organization_id, dedup_id, event_id, expires_at)
             SELECT org, dedup, id, now() + make_interval(secs => $8) FROM e
             WHERE dedup IS NOT NULL
             ORDER BY n
             ON CONFLICT (organization_id, dedup_id) DO UPDATE
                 SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
                 WHERE dedup_keys.expires_at <= now()
             RETURNING event_id
         ),
         inserted AS (
             INSERT INTO events (id, organization_id, type, dedup_id, payload)
             SELECT id, org, type, dedup, payload::jsonb FROM e
             WHERE dedup IS NULL OR id IN (SELECT event_id FROM claimed)
             ORDER BY n
             RETURNING id, organization_id, created_at
         ),
         queued AS (
             INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
                                      priority, metadata)
             SELECT e.job_id, $9, e.job, 'Pending', 0, $10, now(), 0, ''::hstore
             FROM inserted i
             JOIN e ON e.id = i.id
             JOIN organizations o ON o.id = i.organization_id AND o.webhook_url IS NOT NULL
             ORDER BY e.n
             RETURNING 1
         )
         SELECT id, created_at, NULL::uuid FROM inserted
         UNION ALL
         SELECT e.id, NULL, d.event_id FROM e
         LEFT JOIN dedup_keys d ON d.organization_id = e.org AND d.dedup_id = e.dedup
         WHERE e.dedup IS NOT NULL AND e.id NOT IN (SELECT event_id FROM claimed)",
    )
    .bind(&rows.ids)
    .bind(&rows.organization_ids)
    .bind(&rows.types)
    .bind(&rows.dedup_ids)
    .bind(&rows.payloads)
    .bind(&job_ids)
    .bind(&jobs)
    .bind(dedup_window.as_secs_f64())
    .bind(DELIVERY_QUEUE)
    .bind(TASK_MAX_ATTEMPTS as i32)
    .fetch_all(conn)
    .await?;
    Ok(written
        .into_iter()
        .map(|(id, created_at, owner)| match created_at {
            Some(created_at) => Written::Inserted { id, created_at },
            None => Written::Duplicate { id, owner },
        })
        .collect())
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
    /// `pending`, `delivered` or `failed`; `None` is all.
    pub status: Option<String>,
    pub event_type: Option<String>,
}

/// A keyset position: events strictly after `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// A page of the inbox, oldest first: `limit` rows after `after` (if any), skipping `offset`.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: &InboxFilter,
    after: Option<Keyset>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as::<_, Event>(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE organization_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR type = $3)
           AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
         ORDER BY created_at, id
         LIMIT $6 OFFSET $7"
    )))
    .bind(organization_id)
    .bind(filter.status.as_deref())
    .bind(filter.event_type.as_deref())
    .bind(after.map(|k| k.created_at))
    .bind(after.map(|k| k.id))
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// How many events match the filter (ignoring any cursor).
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
    .bind(filter.status.as_deref())
    .bind(filter.event_type.as_deref())
    .fetch_one(conn)
    .await
}

/// An acknowledged event: its id, status and when it was (first) acknowledged.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Acked {
    pub id: Uuid,
    pub status: String,
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
/// worker does not treat it as consumed). Returns false when the organisation has no such event.
pub async fn reset_for_redelivery(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE events
         SET status = 'pending', delivered_at = NULL, acknowledged_at = NULL, updated_at = now()
         WHERE id = $1 AND organization_id = $2",
    )
    .bind(id)
    .bind(organization_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Put up to `limit` failed (dead-lettered) events of the organisation back to `pending`,
/// oldest first; returns their ids. Rows locked by someone else are skipped for this round.
pub async fn reset_failed_for_redelivery(
    conn: &mut PgConnection,
    organization_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE events
         SET status = 'pending', delivered_at = NULL, acknowledged_at = NULL, updated_at = now()
         WHERE id IN (
             SELECT id FROM events
             WHERE organization_id = $1 AND status = 'failed'
             ORDER BY created_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(organization_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}
