//! Fleet-wide session advisory locks: the key of each job that at most one worker of the fleet
//! does at a time (the janitor's run, the queue sampler, the queue vacuum), and taking and
//! releasing one.

use sqlx::PgConnection;

/// The advisory-lock key that makes at most one janitor run at a time across the fleet.
pub const JANITOR_LOCK_KEY: i64 = 0x7472_6967_6a61_6e69; // "trigjani"

/// The advisory-lock key held by the one worker of the fleet that samples the queue's gauges.
pub const SAMPLER_LOCK_KEY: i64 = 0x7472_6967_7361_6d70; // "trigsamp"

/// The advisory-lock key held by the one worker of the fleet that vacuums the queue table.
pub const QUEUE_VACUUM_LOCK_KEY: i64 = 0x7472_6967_7661_6375; // "trigvacu"

/// Take the fleet-wide lock `key` for this session (`false`: another session holds it). Use a
/// connection of its own and close it afterwards: closing releases the lock whatever happened.
pub async fn try_lock(conn: &mut PgConnection, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, key)
        .fetch_one(conn)
        .await
}

/// Release the lock `key` taken by [`try_lock`] on this session. (Closing the connection releases
/// it too, but only once the server's backend has exited, a moment after the client moved on.)
pub async fn unlock(conn: &mut PgConnection, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock($1) AS "released!""#, key)
        .fetch_one(conn)
        .await
}
