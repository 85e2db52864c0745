//! The queue table's vacuum (issue 15 §3): finished jobs leave dead row versions that every
//! claim walks past until a vacuum removes them, so one worker of the fleet vacuums the table as
//! soon as they outnumber the live rows, and the table's autovacuum settings come with the
//! migrations.

use std::time::Duration;

use crate::common::*;
use sqlx::{Connection, PgPool};
use triggers_shared::db::{
    locks::{QUEUE_VACUUM_LOCK_KEY, try_lock},
    queue::maintenance::{self, JobRows},
};
use triggers_worker::vacuum::{self, Check};

/// Vacuums of `apalis.jobs` not run by autovacuum.
async fn vacuums(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'apalis.jobs'::regclass")
        .fetch_one(pool)
        .await
        .expect("vacuum count")
}

/// Delete `n` of the queue's jobs on a connection of their own, closed afterwards (a backend
/// reports its statistics by the time it exits), and wait until the statistics show `rows`.
async fn finish_jobs(pool: &PgPool, ids: &[String], rows: JobRows) {
    let mut conn = pool.acquire().await.expect("conn").detach();
    assert_eq!(
        maintenance::delete_jobs(&mut conn, ids)
            .await
            .expect("delete jobs"),
        ids.len() as u64
    );
    conn.close().await.expect("close");
    eventually(
        &format!("statistics showing {rows:?}"),
        Duration::from_secs(10),
        || async {
            maintenance::job_rows(&mut pool.acquire().await.expect("conn"))
                .await
                .expect("rows")
                == rows
        },
    )
    .await;
}

/// Switch autovacuum (and its analyze) off for the queue table of this test's database: an
/// autoanalyze replaces the exact counts the test waits for with its sample's estimate, and an
/// autovacuum would remove the dead rows before the worker's check sees them.
async fn without_autovacuum(pool: &PgPool) {
    sqlx::query("ALTER TABLE apalis.jobs SET (autovacuum_enabled = false)")
        .execute(pool)
        .await
        .expect("autovacuum off");
}

/// Queue `n` events' jobs from a pool of its own, closed afterwards: an idle backend reports its
/// inserts up to 10 s late, one that exits reports them at once.
async fn queue_events(url: &str, org: uuid::Uuid, n: usize) {
    let creator = PgPool::connect(url).await.expect("pool");
    create_events(&creator, org, n).await;
    creator.close().await;
}

#[tokio::test]
async fn the_queue_is_vacuumed_once_its_dead_rows_outnumber_the_live_ones_and_by_one_worker_at_a_time() {
    let db = test_db().await;
    let pool = &db.pool;
    without_autovacuum(pool).await;
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/")).await;
    queue_events(&db.url, org, 300).await;
    let ids = job_ids(pool).await;
    assert_eq!(ids.len(), 300);
    let min_dead = 50;

    // 100 finished of 300: fewer dead than live, not due.
    finish_jobs(pool, &ids[..100], JobRows { live: 200, dead: 100 }).await;
    let check = vacuum::check_once(pool, min_dead).await.expect("check");
    assert_eq!(check, Check::Skipped(JobRows { live: 200, dead: 100 }));
    assert_eq!(vacuums(pool).await, 0);

    // 250 finished: the dead outnumber the live, but another worker holds the lock.
    finish_jobs(pool, &ids[100..250], JobRows { live: 50, dead: 250 }).await;
    let mut holder = pool.acquire().await.expect("conn").detach();
    assert!(try_lock(&mut holder, QUEUE_VACUUM_LOCK_KEY).await.expect("lock"));
    assert_eq!(
        vacuum::check_once(pool, min_dead).await.expect("check"),
        Check::NotLeader
    );
    assert_eq!(vacuums(pool).await, 0);
    holder.close().await.expect("close");

    // Free again: vacuumed, and the dead versions are gone.
    let check = loop {
        match vacuum::check_once(pool, min_dead).await.expect("check") {
            // The holder's backend releases the lock as it exits, a moment after the close.
            Check::NotLeader => tokio::task::yield_now().await,
            other => break other,
        }
    };
    assert!(
        matches!(check, Check::Vacuumed(JobRows { live: 50, dead: 250 }, _)),
        "{check:?}"
    );
    assert_eq!(vacuums(pool).await, 1);
    let after = maintenance::job_rows(&mut pool.acquire().await.expect("conn"))
        .await
        .expect("rows");
    assert_eq!(after, JobRows { live: 50, dead: 0 });

    // Nothing dead left: not due again.
    assert_eq!(
        vacuum::check_once(pool, min_dead).await.expect("check"),
        Check::Skipped(after)
    );
    assert_eq!(vacuums(pool).await, 1);
}

#[tokio::test]
async fn a_running_worker_vacuums_the_queue_behind_ten_thousand_finished_jobs() {
    let db = test_db().await;
    let pool = &db.pool;
    without_autovacuum(pool).await;
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/")).await;
    queue_events(&db.url, org, vacuum::MIN_DEAD as usize).await;
    let ids = job_ids(pool).await;
    finish_jobs(
        pool,
        &ids,
        JobRows {
            live: 0,
            dead: vacuum::MIN_DEAD,
        },
    )
    .await;
    assert_eq!(vacuums(pool).await, 0);

    let worker = TestWorker::spawn(&db.url, |_| {}).await;
    eventually(
        "the worker's vacuum of the queue",
        Duration::from_secs(10),
        || async { vacuums(pool).await == 1 },
    )
    .await;
    worker.stop().await.expect("worker stops");
}

#[tokio::test]
async fn the_queue_table_is_autovacuumed_by_dead_rows_not_by_its_size_and_unthrottled() {
    let db = test_db().await;
    let options: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(reloptions) FROM pg_class WHERE oid = 'apalis.jobs'::regclass ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("reloptions");
    assert_eq!(
        options,
        [
            "autovacuum_vacuum_cost_delay=0",
            "autovacuum_vacuum_scale_factor=0",
            "autovacuum_vacuum_threshold=10000"
        ]
    );
}
