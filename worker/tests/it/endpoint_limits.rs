//! What the worker does to spare a receiver: an endpoint whose attempts have only failed for
//! the configured period (with at least 10 of them) is disabled as `failing`, and its new
//! events are skipped until it is enabled again; an endpoint's `rate_limit_per_second` holds
//! for two worker processes together, without slowing its organisation's other endpoints.

use std::time::{Duration, Instant};

use crate::common::*;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use triggers_shared::{
    db::{
        endpoints::{self, EndpointPatch, Updated},
        recoveries::{self, RecoveryFilter, Started},
    },
    metrics::{ENDPOINTS, ENDPOINTS_AUTO_DISABLED_TOTAL},
    models::{DeliveryStatus, DisabledReason, Endpoint, RateLimit},
};
use uuid::Uuid;

async fn find_endpoint(pool: &PgPool, org: Uuid, id: Uuid) -> Endpoint {
    let mut conn = pool.acquire().await.expect("connection");
    endpoints::find(&mut conn, org, id)
        .await
        .expect("read endpoint")
        .expect("endpoint exists")
}

/// The endpoint's failure record: `(failing_since, failed_attempts)`.
async fn failure_record(pool: &PgPool, id: Uuid) -> (Option<DateTime<Utc>>, i32) {
    sqlx::query_as("SELECT failing_since, failed_attempts FROM endpoints WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("failure record")
}

async fn patch(pool: &PgPool, org: Uuid, id: Uuid, patch: EndpointPatch) -> Endpoint {
    let mut conn = pool.acquire().await.expect("connection");
    match endpoints::update(&mut conn, org, id, patch)
        .await
        .expect("update")
    {
        Updated::Endpoint(e) => e,
        other => panic!("not updated: {other:?}"),
    }
}

async fn endpoints_version(pool: &PgPool, org: Uuid) -> i64 {
    sqlx::query_scalar("SELECT endpoints_version FROM organizations WHERE id = $1")
        .bind(org)
        .fetch_one(pool)
        .await
        .expect("version")
}

/// A worker that retries every second or so for a long time and disables after `after`.
async fn failing_worker(db: &triggers_shared::testing::TestDb, after: Duration) -> TestWorker {
    TestWorker::spawn(&db.url, |c| {
        c.retry_schedule = vec![Duration::from_millis(100); 40];
        c.endpoint_disable_after = after;
        c.queue_sample_interval = Duration::from_millis(500);
    })
    .await
}

#[tokio::test]
async fn an_endpoint_that_only_fails_for_the_period_is_disabled_and_its_new_events_are_skipped() {
    let db = test_db().await;
    let receiver = Receiver::answering(500).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (endpoint, _) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    let period = Duration::from_secs(2);
    let worker = failing_worker(&db, period).await;
    let version = endpoints_version(&db.pool, org).await;
    create_events(&db.pool, org, 6).await;

    eventually("the endpoint is disabled", Duration::from_secs(30), || async {
        !find_endpoint(&db.pool, org, endpoint).await.enabled()
    })
    .await;
    let disabled = find_endpoint(&db.pool, org, endpoint).await;
    assert_eq!(disabled.disabled_reason, Some(DisabledReason::Failing));
    let (failing_since, failed) = failure_record(&db.pool, endpoint).await;
    let failing_since = failing_since.expect("a failure record");
    assert!(failed >= 10, "disabled after {failed} failed attempts");
    let first_attempt: DateTime<Utc> =
        sqlx::query_scalar("SELECT min(started_at) FROM delivery_attempts WHERE endpoint_id = $1")
            .bind(endpoint)
            .fetch_one(&db.pool)
            .await
            .expect("first attempt");
    assert_eq!(failing_since, first_attempt);
    assert!(
        disabled.updated_at - failing_since >= chrono::Duration::from_std(period).expect("period"),
        "disabled {:?} after the first failure, before the period",
        disabled.updated_at - failing_since
    );
    // Announced as a PATCH is: ingest's caches reload and fan out `skipped` deliveries.
    eventually("the change is announced", Duration::from_secs(5), || async {
        endpoints_version(&db.pool, org).await > version
    })
    .await;
    assert_eq!(metric(worker.admin, ENDPOINTS_AUTO_DISABLED_TOTAL).await, 1.0);
    let gauge = |state: &'static str| format!("{ENDPOINTS}{{state=\"{state}\"}}");
    eventually("the gauge counts it", Duration::from_secs(10), || async {
        metric(worker.admin, &gauge("disabled_failing")).await == 1.0
    })
    .await;
    assert_eq!(metric(worker.admin, &gauge("enabled")).await, 0.0);
    assert_eq!(metric(worker.admin, &gauge("disabled_manual")).await, 0.0);

    // A new event's delivery is skipped: never sent, kept for a recovery.
    let sent = receiver.count();
    let later = create_events(&db.pool, org, 1).await[0];
    let delivery = &deliveries(&db.pool, later).await[0];
    assert_eq!(delivery.status, DeliveryStatus::Skipped);
    // The retries already scheduled come due, find the endpoint disabled and send nothing
    // either: once no job is left, nothing more can be sent.
    queue::testing::make_scheduled_due(&mut db.pool.acquire().await.expect("connection")).await;
    eventually(
        "every scheduled retry has run",
        Duration::from_secs(20),
        || async { unfinished_jobs(&db.pool).await == 0 },
    )
    .await;
    assert_eq!(receiver.count(), sent, "a disabled endpoint was called");

    // Enabling it clears the record.
    let enabled = patch(
        &db.pool,
        org,
        endpoint,
        EndpointPatch {
            enabled: Some(true),
            ..EndpointPatch::default()
        },
    )
    .await;
    assert!(enabled.enabled());
    assert_eq!(failure_record(&db.pool, endpoint).await, (None, 0));

    // The skipped delivery comes back through a recovery once the receiver answers again.
    receiver.set_default(Reply::status(204));
    let filter = RecoveryFilter {
        endpoint_id: endpoint,
        since: Utc::now() - chrono::Duration::hours(1),
        until: Utc::now(),
        statuses: vec![DeliveryStatus::Skipped],
    };
    let mut conn = db.pool.acquire().await.expect("connection");
    match recoveries::start(&mut conn, org, &filter).await.expect("start") {
        // The new event's, and those of the earlier events whose retries found it disabled.
        Started::Recovery(r) => assert!((1..=7).contains(&r.total), "{}", r.total),
        Started::TooMany(n) => panic!("too many: {n}"),
    }
    eventually(
        "the skipped event is recovered",
        Duration::from_secs(30),
        || async {
            receiver
                .requests()
                .iter()
                .any(|r| r.event_id() == later.to_string())
        },
    )
    .await;
    worker.stop().await.expect("worker stops");
}

#[tokio::test]
async fn a_success_before_the_period_ends_clears_the_failure_record() {
    let db = test_db().await;
    let receiver = Receiver::answering(500).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (endpoint, _) = create_endpoint(&db.pool, org, &receiver.url, &["*"], &[]).await;
    let period = Duration::from_secs(4);
    let worker = failing_worker(&db, period).await;
    let started = Instant::now();
    create_events(&db.pool, org, 6).await;

    eventually("failures are counted", Duration::from_secs(20), || async {
        failure_record(&db.pool, endpoint).await.1 >= 6
    })
    .await;
    assert!(
        started.elapsed() < period,
        "too slow to test before the period ends"
    );
    receiver.set_default(Reply::status(200));
    eventually("a success clears the record", Duration::from_secs(20), || async {
        failure_record(&db.pool, endpoint).await == (None, 0)
    })
    .await;
    // Failing again starts a new record: well past the first failure, it is still enabled.
    receiver.set_default(Reply::status(500));
    create_events(&db.pool, org, 6).await;
    tokio::time::sleep(period - Duration::from_secs(1)).await;
    assert!(started.elapsed() > period);
    let (since, failed) = failure_record(&db.pool, endpoint).await;
    assert!(since.is_some() && failed > 0, "{since:?} {failed}");
    assert!(find_endpoint(&db.pool, org, endpoint).await.enabled());
    assert_eq!(metric(worker.admin, ENDPOINTS_AUTO_DISABLED_TOTAL).await, 0.0);
    worker.stop().await.expect("worker stops");
}

/// The most of `arrivals` (sorted) within any one second.
fn busiest_second(arrivals: &[Instant]) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, at) in arrivals.iter().enumerate() {
        while at.duration_since(arrivals[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_together_keep_an_endpoint_to_its_rate_and_its_siblings_go_on() {
    const BACKLOG: usize = 2000;
    const OTHERS: usize = 300;
    let db = test_db().await;
    let limited = Receiver::answering(200).await;
    let unlimited = Receiver::answering(200).await;
    let (org, _) = create_org(&db.pool, None).await;
    let (slow, _) = create_endpoint(&db.pool, org, &limited.url, &["order.*"], &[]).await;
    let (_fast, _) = create_endpoint(&db.pool, org, &unlimited.url, &["audit.*"], &[]).await;
    patch(
        &db.pool,
        org,
        slow,
        EndpointPatch {
            rate_limit_per_second: Some(Some(RateLimit::parse(50).expect("a limit"))),
            ..EndpointPatch::default()
        },
    )
    .await;
    create_events(&db.pool, org, BACKLOG).await;
    create_events_of(&db.pool, org, "audit.logged", OTHERS).await;

    let started = Instant::now();
    let mut workers: Vec<_> = (0..2)
        .map(|_| spawn_worker_process(&db.url, &[("TRIGGERS_WORKER_CONCURRENCY", "16")]))
        .collect();
    eventually(
        "the unlimited endpoint gets its events",
        Duration::from_secs(30),
        || async { unlimited.count() >= OTHERS },
    )
    .await;
    let others_took = started.elapsed();
    let limited_meanwhile = limited.count();
    eventually(
        "the limited endpoint gets its backlog",
        Duration::from_secs(180),
        || async { limited.count() >= BACKLOG },
    )
    .await;
    let backlog_took = started.elapsed();
    for worker in &mut workers {
        worker.kill();
    }

    let mut arrivals: Vec<Instant> = limited.requests().iter().map(|r| r.at).collect();
    arrivals.sort();
    let busiest = busiest_second(&arrivals);
    if std::env::var("RATE_DEBUG").is_ok() {
        let t0 = arrivals[0];
        let mut bins = vec![0usize; 1 + (arrivals[arrivals.len() - 1] - t0).as_millis() as usize / 100];
        for a in &arrivals {
            bins[(*a - t0).as_millis() as usize / 100] += 1;
        }
        println!("{bins:?}");
    }
    println!(
        "limited: {BACKLOG} in {backlog_took:?}, busiest second {busiest}; unlimited: {OTHERS} in \
         {others_took:?} (limited had {limited_meanwhile} by then)"
    );
    assert!(busiest <= 55, "{busiest} requests in one second at 50/s");
    assert_eq!(arrivals.len(), BACKLOG, "each delivery sent once");
    assert!(
        backlog_took >= Duration::from_secs_f64((BACKLOG - 55) as f64 / 50.0),
        "{BACKLOG} at 50/s took only {backlog_took:?}"
    );
    // The unlimited sibling did not queue behind the limited backlog.
    assert!(
        limited_meanwhile < BACKLOG / 2,
        "the unlimited endpoint waited for the limited one ({limited_meanwhile} sent first)"
    );
    // Waiting for the limit is not an attempt.
    let single: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status = 'delivered' AND attempts = 1",
    )
    .bind(slow)
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(single, BACKLOG as i64);
}

#[test]
fn the_busiest_second_counts_a_sliding_window() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    assert_eq!(busiest_second(&[at(0), at(500), at(999), at(1000), at(1400)]), 4);
    assert_eq!(busiest_second(&[at(0), at(1000), at(2000)]), 1);
    assert_eq!(busiest_second(&[]), 0);
}
