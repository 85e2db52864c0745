//! The queue's vacuum. A delivery job is inserted, claimed (a new row version) and deleted: two
//! dead versions per delivery, and each claim's index scan walks the dead entries ahead of the
//! first pending job until a vacuum removes them. Autovacuum visits a database at most once per
//! `autovacuum_naptime` (a minute by default, a server-wide setting a migration cannot change),
//! and behind a burst of 10,000 deliveries a second that is 1.2 million dead versions: claims
//! slowed threefold before it came. So one worker of the fleet (the holder of
//! [`QUEUE_VACUUM_LOCK_KEY`]) checks the table's counts every [`CHECK_EVERY`] and vacuums it as
//! soon as the dead versions outnumber the live rows ([`maintenance::vacuum_due`]).
//!
//! A vacuum cannot remove versions an open transaction may still see; then the dead stay and
//! the next vacuum would find nothing to do. The pause after each is ten times its duration, so
//! vacuums take at most a tenth of one connection's time whatever the table looks like.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;
use triggers_shared::db::{
    locks::{QUEUE_VACUUM_LOCK_KEY, try_lock, unlock},
    queue::maintenance::{self, JobRows},
};

/// How often the leader reads the table's counts.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Below this many dead versions the table is never vacuumed here (autovacuum's business).
pub const MIN_DEAD: i64 = 10_000;

/// What one check did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Another worker holds the lock.
    NotLeader,
    /// The table was not due.
    Skipped(JobRows),
    /// The table was vacuumed; its counts before, and how long it took.
    Vacuumed(JobRows, Duration),
}

/// One check: take the lock if free, read the counts, vacuum if due (`min_dead` as in
/// [`maintenance::vacuum_due`]).
pub async fn check_once(pool: &PgPool, min_dead: i64) -> anyhow::Result<Check> {
    // A connection of its own, closed at the end: closing releases the lock whatever happened.
    let mut conn = pool.acquire().await?.detach();
    let result = async {
        if !try_lock(&mut conn, QUEUE_VACUUM_LOCK_KEY).await? {
            return anyhow::Ok(Check::NotLeader);
        }
        let rows = maintenance::job_rows(&mut conn).await?;
        let check = if maintenance::vacuum_due(rows, min_dead) {
            let started = Instant::now();
            maintenance::vacuum_jobs(&mut conn).await?;
            Check::Vacuumed(rows, started.elapsed())
        } else {
            Check::Skipped(rows)
        };
        unlock(&mut conn, QUEUE_VACUUM_LOCK_KEY).await?;
        Ok(check)
    }
    .await;
    let _ = conn.close().await;
    result
}

/// Check every [`CHECK_EVERY`] (and after a vacuum, ten times its duration) until `stop`.
pub async fn run(pool: PgPool, stop: CancellationToken) {
    let mut pause = CHECK_EVERY;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = CHECK_EVERY;
        match check_once(&pool, MIN_DEAD).await {
            Ok(Check::Vacuumed(rows, took)) => {
                metrics::counter!(triggers_shared::metrics::QUEUE_VACUUMS_TOTAL).increment(1);
                tracing::debug!(
                    live = rows.live,
                    dead = rows.dead,
                    took_ms = took.as_millis() as u64,
                    "queue vacuumed"
                );
                pause = pause.max(took * 10);
            }
            Ok(Check::Skipped(_) | Check::NotLeader) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "queue vacuum failed"),
        }
    }
}
