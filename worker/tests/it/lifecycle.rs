//! An endpoint's lifecycle in the worker: during a secret rotation's grace every request is
//! signed with both secrets, afterwards with the new one only; a recovery restarts its window
//! in batches below live jobs, each delivery once, and goes on from its last batch after the
//! worker running it is killed with SIGKILL.

use std::time::Duration;

use crate::common::*;
use chrono::Utc;
use sqlx::PgPool;
use triggers_shared::{
    db::{
        endpoints::{self, Rotated},
        events,
        recoveries::{self, BatchDone, RecoveryFilter, Started},
    },
    models::DeliveryStatus,
    signing,
};
use uuid::Uuid;

/// The signatures of a request, checked against its exact bytes: which of `secrets` signed it.
fn signed_by(request: &Received, secrets: &[&str]) -> Vec<bool> {
    let timestamp: i64 = request.header("webhook-timestamp").parse().expect("timestamp");
    let header = request.header("webhook-signature");
    let id = request.header("webhook-id");
    secrets
        .iter()
        .map(|secret| {
            let expected = signing::sign(secret, id, timestamp, &request.body).expect("a valid secret");
            header.split(' ').any(|sig| sig == expected)
        })
        .collect()
}

#[tokio::test]
async fn during_the_grace_both_secrets_sign_and_after_it_only_the_new_one() {
    let db = test_db().await;
    let receiver = Receiver::answering(204).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (endpoint, old) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    let new = signing::generate_secret();
    let mut conn = db.pool.acquire().await.expect("connection");
    let rotated = endpoints::rotate_secret(&mut conn, org, endpoint, &new, Duration::from_secs(3))
        .await
        .expect("rotate");
    let Rotated::Rotated {
        previous_expires_at, ..
    } = rotated
    else {
        panic!("not rotated: {rotated:?}");
    };
    let worker = TestWorker::spawn(&db.url, |_| {}).await;

    let during = create_events(&db.pool, org, 1).await[0];
    eventually("the first event arrives", Duration::from_secs(20), || async {
        receiver.count() == 1
    })
    .await;
    let first = &receiver.requests()[0];
    assert_eq!(first.event_id(), during.to_string());
    assert_eq!(first.header("webhook-signature").split(' ').count(), 2);
    assert_eq!(signed_by(first, &[&new, &old]), [true, true]);
    assert!(Utc::now() < previous_expires_at, "sent within the grace");

    let left = (previous_expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    let after = create_events(&db.pool, org, 1).await[0];
    eventually("the second event arrives", Duration::from_secs(20), || async {
        receiver.count() == 2
    })
    .await;
    let second = &receiver.requests()[1];
    assert_eq!(second.event_id(), after.to_string());
    assert_eq!(second.header("webhook-signature").split(' ').count(), 1);
    assert_eq!(signed_by(second, &[&new, &old]), [true, false]);
    worker.stop().await.expect("worker stops");
}

/// `n` events of `org` whose deliveries to `endpoint` failed for good: created a second apart
/// (oldest first), six attempts each, no job left. Their ids, oldest first.
async fn failed_history(pool: &PgPool, org: Uuid, endpoint: Uuid, n: usize) -> Vec<Uuid> {
    let ids = create_events_of(pool, org, "order.created", n).await;
    sqlx::query(
        "UPDATE deliveries d SET status = 'failed', attempts = 6, job_id = NULL, next_attempt_at = NULL,
                created_at = now() - make_interval(secs => 3600 - t.n), updated_at = now() - interval '1 hour'
         FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)
         WHERE d.event_id = t.id AND d.endpoint_id = $2",
    )
    .bind(&ids)
    .bind(endpoint)
    .execute(pool)
    .await
    .expect("failed deliveries");
    sqlx::query("DELETE FROM apalis.jobs")
        .execute(pool)
        .await
        .expect("finished chains");
    ids
}

async fn start_recovery(pool: &PgPool, org: Uuid, endpoint: Uuid) -> Uuid {
    let filter = RecoveryFilter {
        endpoint_id: endpoint,
        since: Utc::now() - chrono::Duration::days(1),
        until: Utc::now(),
        statuses: vec![DeliveryStatus::Failed, DeliveryStatus::Skipped],
    };
    let mut conn = pool.acquire().await.expect("connection");
    match recoveries::start(&mut conn, org, &filter).await.expect("start") {
        Started::Recovery(r) => r.id,
        Started::TooMany(n) => panic!("too many: {n}"),
    }
}

/// The recovery's `(status, total, enqueued, cursor event)`.
async fn progress(pool: &PgPool, id: Uuid) -> (String, i32, i32, Option<Uuid>) {
    sqlx::query_as("SELECT status, total, enqueued, cursor_event_id FROM recoveries WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("recovery row")
}

/// Each event's delivery to `endpoint`: its status and its job's priority.
async fn states(pool: &PgPool, ids: &[Uuid], endpoint: Uuid) -> Vec<(String, Option<i32>)> {
    sqlx::query_as(
        "SELECT d.status, j.priority
         FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)
         JOIN deliveries d ON d.event_id = t.id AND d.endpoint_id = $2
         LEFT JOIN apalis.jobs j ON j.id = d.job_id
         ORDER BY t.n",
    )
    .bind(ids)
    .bind(endpoint)
    .fetch_all(pool)
    .await
    .expect("delivery states")
}

fn pending_recovered(n: usize) -> Vec<(String, Option<i32>)> {
    vec![("pending".to_owned(), Some(-1)); n]
}

fn failed(n: usize) -> Vec<(String, Option<i32>)> {
    vec![("failed".to_owned(), None); n]
}

#[tokio::test]
async fn a_recovery_restarts_its_window_in_batches_below_live_jobs_each_delivery_once() {
    let db = test_db().await;
    let receiver = Receiver::answering(204).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (endpoint, _) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    let ids = failed_history(&db.pool, org, endpoint, 7).await;
    let recovery = start_recovery(&db.pool, org, endpoint).await;
    assert_eq!(
        progress(&db.pool, recovery).await,
        ("running".to_owned(), 7, 0, None)
    );

    // The first batch restarts the three oldest, at the recovered priority, and keeps its place.
    let mut conn = db.pool.acquire().await.expect("connection");
    let batch = recoveries::run_batch(&mut conn, 3).await.expect("batch");
    assert_eq!(
        batch,
        Some(BatchDone {
            organization_id: org,
            recovery_id: recovery,
            enqueued: 3,
            finished: false
        })
    );
    assert_eq!(
        progress(&db.pool, recovery).await,
        ("running".to_owned(), 7, 3, Some(ids[2]))
    );
    assert_eq!(
        states(&db.pool, &ids, endpoint).await,
        [pending_recovered(3), failed(4)].concat()
    );

    // One of the rest is resent meanwhile: it has a chain already, and is not restarted twice.
    let mut tx = db.pool.begin().await.expect("begin");
    events::redeliver(&mut tx, org, ids[4], Some(endpoint))
        .await
        .expect("resend")
        .expect("event");
    tx.commit().await.expect("commit");
    let mut done = Vec::new();
    while let Some(batch) = recoveries::run_batch(&mut conn, 3).await.expect("batch") {
        done.push((batch.enqueued, batch.finished));
    }
    assert_eq!(
        done,
        [(3, false), (0, true)],
        "ids 3, 5 and 6, then a batch that finds the window exhausted"
    );
    assert_eq!(
        progress(&db.pool, recovery).await,
        ("done".to_owned(), 7, 6, Some(ids[6]))
    );
    let resent = ("pending".to_owned(), Some(0));
    assert_eq!(
        states(&db.pool, &ids, endpoint).await,
        [pending_recovered(4), vec![resent], pending_recovered(2)].concat()
    );

    // A live event queued after them is claimed first: one request at a time, it arrives first.
    let live = create_events(&db.pool, org, 1).await[0];
    let worker = TestWorker::spawn(&db.url, |c| c.concurrency = 1).await;
    eventually("all eight arrive", Duration::from_secs(30), || async {
        receiver.count() == 8
    })
    .await;
    let order: Vec<String> = receiver.requests().iter().map(Received::event_id).collect();
    let mut first_two = [order[0].clone(), order[1].clone()];
    first_two.sort();
    let mut live_jobs = [live.to_string(), ids[4].to_string()];
    live_jobs.sort();
    assert_eq!(
        first_two, live_jobs,
        "the live event and the resend come first: {order:?}"
    );
    for id in &ids {
        assert_eq!(
            order.iter().filter(|o| **o == id.to_string()).count(),
            1,
            "{id} once"
        );
    }
    eventually("every delivery is delivered", Duration::from_secs(10), || async {
        states(&db.pool, &ids, endpoint).await == vec![("delivered".to_owned(), None); 7]
    })
    .await;
    worker.stop().await.expect("worker stops");
}

/// Deliveries of `ids` to `endpoint` by status, and how many were restarted (no longer failed).
async fn restarted(pool: &PgPool, ids: &[Uuid], endpoint: Uuid) -> Vec<bool> {
    states(pool, ids, endpoint)
        .await
        .into_iter()
        .map(|(status, _)| status != "failed")
        .collect()
}

#[tokio::test]
async fn a_recovery_goes_on_from_its_last_batch_after_its_worker_is_killed() {
    let db = test_db().await;
    // Every request hangs while the first worker lives: recovered jobs pile up in its hands
    // and the pacing stops adding batches.
    let receiver = Receiver::start(vec![], Reply::status(204).after(Duration::from_secs(120))).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (endpoint, _) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    let ids = failed_history(&db.pool, org, endpoint, 600).await;
    let recovery = start_recovery(&db.pool, org, endpoint).await;
    let mut child = spawn_worker_process(
        &db.url,
        &[
            ("TRIGGERS_DELIVERY_TIMEOUT_SECS", "60"),
            ("TRIGGERS_WORKER_CONCURRENCY", "2"),
            ("TRIGGERS_RECOVERY_BATCH", "50"),
            ("TRIGGERS_RECOVERY_BACKLOG", "50"),
        ],
    );
    eventually("two deliveries hang", Duration::from_secs(30), || async {
        receiver.inflight() == 2
    })
    .await;
    // Paced: the worker holds what it claimed (at most 2 slots x 16) while its requests hang,
    // and once 50 recovered jobs wait no batch is added; the recovery stops well short of 600.
    let mut enqueued = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = progress(&db.pool, recovery).await.2;
        if now > 0 && now == enqueued {
            break;
        }
        enqueued = now;
    }
    assert!(
        (50..=150).contains(&enqueued) && enqueued % 50 == 0,
        "paced by the backlog: {enqueued} enqueued"
    );
    child.kill();

    // What was committed is exactly whole batches: the oldest deliveries, the cursor on the
    // last of them.
    let k = usize::try_from(enqueued).expect("a count");
    let (status, total, now_enqueued, cursor) = progress(&db.pool, recovery).await;
    assert_eq!(
        (status.as_str(), total, now_enqueued, cursor),
        ("running", 600, enqueued, Some(ids[k - 1]))
    );
    let expected: Vec<bool> = (0..600).map(|i| i < k).collect();
    assert_eq!(restarted(&db.pool, &ids, endpoint).await, expected);

    receiver.set_default(Reply::status(204));
    let survivor = TestWorker::spawn(&db.url, |c| {
        c.recovery_batch = 50;
        c.recovery_backlog = 50;
    })
    .await;
    eventually("the recovery is done", Duration::from_secs(60), || async {
        progress(&db.pool, recovery).await.0 == "done"
    })
    .await;
    assert_eq!(
        progress(&db.pool, recovery).await,
        ("done".to_owned(), 600, 600, Some(ids[599]))
    );
    eventually("every delivery is delivered", Duration::from_secs(60), || async {
        states(&db.pool, &ids, endpoint)
            .await
            .iter()
            .all(|(s, _)| s == "delivered")
    })
    .await;
    // Each got one new chain: one more attempt recorded on top of its six (a request the kill
    // cut off was never recorded).
    let attempts: Vec<i32> = sqlx::query_scalar(
        "SELECT d.attempts FROM unnest($1::uuid[]) AS t(id) JOIN deliveries d ON d.event_id = t.id",
    )
    .bind(&ids)
    .fetch_all(&db.pool)
    .await
    .expect("attempts");
    assert_eq!(attempts, vec![7; 600]);
    let received: std::collections::HashSet<String> =
        receiver.requests().iter().map(Received::event_id).collect();
    assert!(ids.iter().all(|id| received.contains(&id.to_string())));
    survivor.stop().await.expect("survivor stops");
}
