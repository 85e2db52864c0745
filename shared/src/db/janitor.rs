//! SQL of the worker's janitor (the queue's own rows are cleaned in [`super::queue`]; the lock
//! that makes one run at a time is [`super::locks`]).
//!
//! Dedup keys expire but stay, and delivered events, dead letters, revoked or expired API keys
//! and rate-limit windows are kept only for their retention period. Each statement deletes at
//! most `batch` rows so a run never holds many row locks or bloats one transaction; callers loop
//! until a statement deletes fewer than `batch`.

use std::time::Duration;

use sqlx::{Connection, PgConnection, postgres::types::PgInterval};
use uuid::Uuid;

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

/// Delete expired dedup keys.
pub async fn delete_expired_dedup_keys(conn: &mut PgConnection, batch: i64) -> sqlx::Result<u64> {
    let res = sqlx::query(
        "DELETE FROM dedup_keys WHERE ctid IN (
             SELECT ctid FROM dedup_keys WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete delivered events whose delivery (or acknowledgement) is older than `retention`, with
/// their deliveries. Their attempt rows go with them (`ON DELETE CASCADE`).
pub async fn purge_delivered_events(
    conn: &mut PgConnection,
    retention: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let mut tx = conn.begin().await?;
    let doomed = sqlx::query_as!(
        Doomed,
        "SELECT organization_id, id FROM events
         WHERE status = 'delivered'
           AND (delivered_at < now() - $1::interval
                OR (delivered_at IS NULL AND coalesce(acknowledged_at, updated_at) < now() - $1::interval))
         LIMIT $2 FOR UPDATE SKIP LOCKED",
        interval(retention),
        batch,
    )
    .fetch_all(&mut *tx)
    .await?;
    let gone = delete_events(&mut tx, &doomed).await?;
    tx.commit().await?;
    Ok(gone)
}

/// Delete dead-lettered (`failed`) events unchanged for `retention`, with their deliveries.
/// Their attempt rows go with them (`ON DELETE CASCADE`).
pub async fn purge_failed_events(
    conn: &mut PgConnection,
    retention: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let mut tx = conn.begin().await?;
    let doomed = sqlx::query_as!(
        Doomed,
        "SELECT organization_id, id FROM events
         WHERE status = 'failed' AND updated_at < now() - $1::interval
         LIMIT $2 FOR UPDATE SKIP LOCKED",
        interval(retention),
        batch,
    )
    .fetch_all(&mut *tx)
    .await?;
    let gone = delete_events(&mut tx, &doomed).await?;
    tx.commit().await?;
    Ok(gone)
}

/// An event a purge has locked (in its transaction) to delete.
struct Doomed {
    organization_id: Uuid,
    id: Uuid,
}

/// Delete these events with their deliveries; returns how many events.
async fn delete_events(conn: &mut PgConnection, doomed: &[Doomed]) -> sqlx::Result<u64> {
    if doomed.is_empty() {
        return Ok(0);
    }
    let (orgs, ids): (Vec<Uuid>, Vec<Uuid>) = doomed.iter().map(|d| (d.organization_id, d.id)).unzip();
    let gone = sqlx::query_scalar!(
        r#"WITH gone AS (
               DELETE FROM events e USING unnest($1::uuid[], $2::uuid[]) AS g(org, id)
               WHERE e.organization_id = g.org AND e.id = g.id
               RETURNING e.id, e.organization_id
           ),
           deliveries_gone AS (
               DELETE FROM deliveries d USING gone g
               WHERE d.organization_id = g.organization_id AND d.event_id = g.id
           )
           SELECT count(*) AS "gone!" FROM gone"#,
        &orgs,
        &ids,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(gone).unwrap_or(0))
}

/// Delete API keys revoked, or expired, more than `retention` ago. (They no longer authenticate
/// anything; they are kept a while only to answer "which key was that?".)
pub async fn purge_dead_api_keys(
    conn: &mut PgConnection,
    retention: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query!(
        "DELETE FROM api_keys WHERE id IN (
             SELECT id FROM api_keys
             WHERE revoked_at < now() - $1::interval OR expires_at < now() - $1::interval
             LIMIT $2
             FOR UPDATE SKIP LOCKED)",
        interval(retention),
        batch,
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Delete rate-limit windows that started more than `older_than` ago. A lease reads only the
/// current and the previous minute, and drops its own organisation's older windows as it opens a
/// new one; this catches organisations that stopped sending.
pub async fn purge_rate_limit_windows(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query!(
        "DELETE FROM rate_limit_windows WHERE ctid IN (
             SELECT ctid FROM rate_limit_windows
             WHERE window_start < now() - $1::interval
             LIMIT $2
             FOR UPDATE SKIP LOCKED)",
        interval(older_than),
        batch,
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}
