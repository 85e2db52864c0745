//! The ingest statement: a batch of new events, their dedup keys, one delivery per matching
//! endpoint and the first job of each pending delivery, in ONE statement.
//!
//! Which endpoints an event goes to is decided by ingest from its cache of the organisation's
//! endpoints, read at some version of them (`organizations.endpoints_version`). The statement
//! stores an event only if that version is still the current one, so no event is fanned out by
//! a stale cache: an event whose version has moved on is answered [`RowFate::Stale`] (nothing
//! of it is written, its dedup key not claimed) and ingest reloads and sends it again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{DELIVERY_QUEUE, max_runs};
use crate::{
    jobs::{DeliveryJob, JobId},
    models::DeliveryStatus,
};

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
    /// The endpoints version each event's deliveries were chosen at.
    pub endpoints_versions: Vec<i64>,
    /// The deliveries of all events: `(event index in these rows, endpoint, status)`, status
    /// `Pending` (sent, so it gets a first job) or `Skipped` (its endpoint is disabled).
    pub deliveries: Vec<(usize, Uuid, DeliveryStatus)>,
}

/// What [`insert_batch`] did with one row of [`NewEvents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFate {
    /// Stored at `created_at`, with its deliveries and their first jobs.
    Inserted { id: Uuid, created_at: DateTime<Utc> },
    /// Its dedup key is held by another event: `owner`, or `None` when the holder committed
    /// after this statement's snapshot was taken (ask `db::events::dedup_owners`).
    Duplicate { id: Uuid, owner: Option<Uuid> },
    /// Not written: its organisation's endpoints changed since they were read.
    Stale { id: Uuid },
}

/// Store a batch of new events in ONE statement (one round trip, committed on its own or with
/// the caller's transaction): keep the events whose organisation's endpoints are still at the
/// version they were read at, claim their dedup keys (an existing, unexpired key is a duplicate;
/// an expired one is taken over), insert the events whose key was claimed or who have none,
/// their deliveries, and a first job for each pending delivery (its id named by the delivery).
/// Returns one [`RowFate`] per row, in no particular order.
///
/// The job rows mirror `apalis_postgres::queries::push_tasks` (same columns, the same encoding
/// through [`DeliveryJob::to_task`]).
pub async fn insert_batch(
    conn: &mut PgConnection,
    rows: &NewEvents<'_>,
    dedup_window: Duration,
) -> sqlx::Result<Vec<RowFate>> {
    if rows.ids.is_empty() {
        return Ok(Vec::new());
    }
    let n = rows.deliveries.len();
    let (mut event_ids, mut endpoint_ids, mut statuses) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut job_ids, mut jobs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for &(i, endpoint, status) in &rows.deliveries {
        let (event, org) = (rows.ids[i], rows.organization_ids[i]);
        event_ids.push(event);
        endpoint_ids.push(endpoint);
        statuses.push(status.as_str());
        if status == DeliveryStatus::Pending {
            let id = JobId::new();
            let task = DeliveryJob::first(org, event, endpoint)
                .to_task(&id, Duration::ZERO)
                .map_err(|e| sqlx::Error::Encode(e.into()))?;
            job_ids.push(Some(id.to_string()));
            jobs.push(Some(task.args));
        } else {
            job_ids.push(None);
            jobs.push(None);
        }
    }
    let written = sqlx::query!(
        r#"WITH e AS MATERIALIZED (
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[])
                 WITH ORDINALITY AS e(id, org, type, dedup, payload, version, n)
         ),
         fresh AS MATERIALIZED (
             SELECT e.* FROM e JOIN organizations o ON o.id = e.org AND o.endpoints_version = e.version
         ),
         claimed AS (
             INSERT INTO dedup_keys (organization_id, dedup_id, event_id, expires_at)
             SELECT org, dedup, id, now() + make_interval(secs => $7) FROM fresh
             WHERE dedup IS NOT NULL
             ORDER BY n
             ON CONFLICT (organization_id, dedup_id) DO UPDATE
                 SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
                 WHERE dedup_keys.expires_at <= now()
             RETURNING event_id
         ),
         inserted AS (
             INSERT INTO events (id, organization_id, type, dedup_id, payload)
             SELECT id, org, type, dedup, payload::jsonb FROM fresh
             WHERE dedup IS NULL OR id IN (SELECT event_id FROM claimed)
             ORDER BY n
             RETURNING id, organization_id, created_at
         ),
         d AS MATERIALIZED (
             SELECT d.*, i.organization_id AS org, i.created_at
             FROM UNNEST($8::uuid[], $9::uuid[], $10::text[], $11::text[], $12::bytea[])
                  WITH ORDINALITY AS d(event_id, endpoint_id, status, job_id, job, n)
             JOIN inserted i ON i.id = d.event_id
         ),
         delivering AS (
             INSERT INTO deliveries (organization_id, event_id, endpoint_id, status, job_id,
                                     next_attempt_at, created_at, updated_at)
             SELECT org, event_id, endpoint_id, status, job_id,
                    CASE WHEN job_id IS NOT NULL THEN created_at END, created_at, created_at
             FROM d ORDER BY n
         ),
         queued AS (
             INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
                                      priority, metadata)
             SELECT job_id, $13, job, 'Pending', 0, $14, now(), 0, ''::hstore
             FROM d WHERE job_id IS NOT NULL ORDER BY n
         )
         SELECT id AS "id!", created_at AS "created_at?", NULL::uuid AS "owner?", false AS "stale!"
         FROM inserted
         UNION ALL
         SELECT f.id, NULL, k.event_id, false FROM fresh f
         LEFT JOIN dedup_keys k ON k.organization_id = f.org AND k.dedup_id = f.dedup
         WHERE f.dedup IS NOT NULL AND f.id NOT IN (SELECT event_id FROM claimed)
         UNION ALL
         SELECT id, NULL, NULL, true FROM e WHERE id NOT IN (SELECT id FROM fresh)"#,
        &rows.ids,
        &rows.organization_ids,
        &rows.types as &[&str],
        &rows.dedup_ids as &[Option<&str>],
        &rows.payloads as &[&str],
        &rows.endpoints_versions,
        dedup_window.as_secs_f64(),
        &event_ids,
        &endpoint_ids,
        &statuses as &[&str],
        &job_ids as &[Option<String>],
        &jobs as &[Option<Vec<u8>>],
        DELIVERY_QUEUE,
        max_runs(),
    )
    .fetch_all(conn)
    .await?;
    Ok(written
        .into_iter()
        .map(|r| match r.created_at {
            Some(created_at) => RowFate::Inserted { id: r.id, created_at },
            None if r.stale => RowFate::Stale { id: r.id },
            None => RowFate::Duplicate {
                id: r.id,
                owner: r.owner,
            },
        })
        .collect())
}
