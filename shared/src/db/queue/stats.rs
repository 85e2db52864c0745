//! The delivery queue at a glance: what the operator command `queue stats` prints, counted as
//! the queue gauges count.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{count_jobs, oldest_due_age};

/// Depth by state, oldest due age and the organisations with the most work waiting.
#[derive(Debug, serde::Serialize)]
pub struct QueueStats {
    /// Jobs whose time has come and that no worker has claimed yet.
    pub due: i64,
    /// Jobs waiting for a later retry.
    pub scheduled: i64,
    /// Jobs claimed by a worker (held for a slot, or being delivered).
    pub running: i64,
    /// Seconds since the oldest due job became due (0 when none is).
    pub oldest_due_age_seconds: f64,
    /// The 10 organisations with the most pending deliveries.
    pub top_organizations: Vec<OrgBacklog>,
}

/// One organisation's pending deliveries.
#[derive(Debug, serde::Serialize)]
pub struct OrgBacklog {
    pub organization_id: Uuid,
    /// Pending deliveries (due now or scheduled for a retry).
    pub waiting: i64,
    /// Seconds since its oldest due delivery became due (0 when none is due).
    pub oldest_due_age_seconds: f64,
}

/// Depth by state, oldest due age and the top 10 organisations by pending deliveries.
pub async fn stats(conn: &mut PgConnection) -> sqlx::Result<QueueStats> {
    let counts = count_jobs(&mut *conn).await?;
    let oldest = oldest_due_age(&mut *conn).await?;
    let top_organizations = sqlx::query_as!(
        OrgBacklog,
        r#"SELECT d.organization_id, count(*) AS "waiting!",
                coalesce(extract(epoch FROM now() - min(d.next_attempt_at)
                                 FILTER (WHERE d.next_attempt_at <= now())), 0)::float8
                    AS "oldest_due_age_seconds!"
         FROM events e
         JOIN deliveries d ON d.organization_id = e.organization_id AND d.event_id = e.id
         WHERE e.status = 'pending' AND d.status = 'pending'
         GROUP BY d.organization_id
         ORDER BY count(*) DESC, d.organization_id
         LIMIT 10"#,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(QueueStats {
        due: counts.due,
        scheduled: counts.scheduled,
        running: counts.running,
        oldest_due_age_seconds: oldest.as_secs_f64(),
        top_organizations,
    })
}
