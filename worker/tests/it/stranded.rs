//! Nothing stranded: deliveries whose job apalis gave up on are dead-lettered, pending deliveries
//! without a live job get a new chain, and the queue gauges (sampled by one worker of the fleet)
//! show it.

use std::time::Duration;

use crate::common::*;
use queue::testing::{self as q, ForcedState};
use sqlx::PgPool;
use triggers_shared::{
    config::WorkerConfig,
    db::endpoints,
    jobs::{DeliveryJob, JobId},
    net::WebhookUrl,
};
use triggers_worker::run_janitor_once;
use uuid::Uuid;

/// Statuses of the given events, counted.
async fn statuses(pool: &PgPool, ids: &[Uuid]) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM events WHERE id = ANY($1) GROUP BY status ORDER BY status")
        .bind(ids)
        .fetch_all(pool)
        .await
        .expect("statuses")
}

#[tokio::test]
async fn fifteen_hundred_deliveries_whose_jobs_apalis_gave_up_on_are_all_dead_lettered_in_one_run() {
    let db = test_db().await;
    let pool = &db.pool;
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/hook")).await;
    let ids = create_events(pool, org, 1500).await;
    let mut conn = pool.acquire().await.expect("conn");
    q::force_state_of_queue(
        &mut conn,
        queue::DELIVERY_QUEUE,
        ForcedState::GivenUp,
        TWO_MINUTES,
    )
    .await;
    drop(conn);

    let report = run_janitor_once(pool, &WorkerConfig::for_tests(&db.url))
        .await
        .expect("janitor")
        .expect("lock taken");
    assert_eq!(report.abandoned, 1500, "{report:?}");
    assert_eq!(statuses(pool, &ids).await, [("failed".to_string(), 1500)]);
    // Their given-up jobs go with them.
    assert_eq!(report.jobs, 1500);
    assert!(job_ids(pool).await.is_empty());
}

#[tokio::test]
async fn pending_deliveries_without_a_live_job_get_a_new_chain_once_past_the_grace_period() {
    let db = test_db().await;
    let pool = &db.pool;
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/hook")).await;
    let (inbox_only, _) = create_org(pool, None).await;
    // 1,500 stranded deliveries (pending, their jobs deleted), unchanged for ten minutes; one
    // stranded a moment ago (inside the grace: a transaction may still be committing its job);
    // an event of an organisation without an endpoint (no delivery: it waits in the inbox); and
    // one with its job intact.
    let stranded = create_events(pool, org, 1500).await;
    let fresh = create_events(pool, org, 1).await;
    let inbox = create_events(pool, inbox_only, 1).await;
    let healthy = create_events(pool, org, 1).await;
    let mut conn = pool.acquire().await.expect("conn");
    let gone: Vec<Uuid> = stranded.iter().chain(&fresh).chain(&inbox).copied().collect();
    q::delete_jobs_of_events(&mut conn, &gone).await;
    let all: Vec<Uuid> = gone.iter().chain(&healthy).copied().collect();
    sqlx::query("UPDATE deliveries SET updated_at = now() - interval '10 minutes' WHERE event_id = ANY($1) AND NOT event_id = ANY($2)")
        .bind(&all)
        .bind(&fresh)
        .execute(&mut *conn)
        .await
        .expect("age events");
    let config = WorkerConfig::for_tests(&db.url); // grace 5 minutes
    assert_eq!(
        queue::maintenance::count_stranded(&mut conn, config.stranded_event_grace)
            .await
            .expect("count"),
        1500
    );

    let report = run_janitor_once(pool, &config)
        .await
        .expect("janitor")
        .expect("lock taken");
    assert_eq!(report.requeued, 1500, "{report:?}");
    assert_eq!(
        queue::maintenance::count_stranded(&mut conn, config.stranded_event_grace)
            .await
            .expect("count"),
        0
    );
    assert_eq!(statuses(pool, &stranded).await, [("pending".to_string(), 1500)]);
    let endpoint = deliveries(pool, stranded[0]).await[0].endpoint_id;
    for id in stranded.iter().step_by(100) {
        assert_eq!(
            q::decoded_jobs_of_event(&mut conn, *id).await,
            [DeliveryJob::first(org, *id, endpoint)],
            "a fresh chain of attempts"
        );
    }
    for id in fresh.iter().chain(&inbox) {
        assert!(
            q::jobs_of_event(&mut conn, *id).await.is_empty(),
            "{id} is left alone"
        );
    }
    assert_eq!(
        q::jobs_of_event(&mut conn, healthy[0]).await.len(),
        1,
        "no second job"
    );
    assert_eq!(q::count_live(&mut conn).await, 1501);

    // Every repaired event is delivered for real.
    drop(conn);
    let receiver = Receiver::answering(200).await;
    let mut tx = pool.begin().await.expect("begin");
    let url = WebhookUrl::parse(&receiver.url).expect("URL");
    endpoints::set_default(&mut tx, org, &url, "unused: the secret is kept")
        .await
        .expect("point the webhook at the receiver");
    tx.commit().await.expect("commit");
    let worker = TestWorker::spawn(&db.url, |_| {}).await;
    eventually(
        "the repaired events are delivered",
        Duration::from_secs(60),
        || async { count_status(pool, org, "delivered").await == 1501 },
    )
    .await;
    worker.stop().await.expect("stop");
}

#[tokio::test]
async fn the_queue_gauges_show_due_scheduled_running_jobs_and_the_oldest_wait_from_one_worker() {
    use triggers_worker::sampler::{Sampler, publish};

    let db = test_db().await;
    let pool = &db.pool;
    let (org, _) = create_org(pool, Some("http://127.0.0.1:9/hook")).await;
    // Six due jobs, one of them claimed by a worker; two scheduled an hour ahead.
    let ids = create_events(pool, org, 6).await;
    let mut conn = pool.acquire().await.expect("conn");
    q::backdate_due_jobs(&mut conn, Duration::from_secs(30)).await;
    let held = job_of(pool, ids[5]).await;
    q::register_worker(&mut conn, "some-worker", Duration::ZERO).await;
    q::hold_by(&mut conn, &held, "some-worker").await;
    let later = create_events(pool, org, 2).await;
    q::delete_jobs_of_events(&mut conn, &later).await;
    let endpoint = deliveries(pool, later[0]).await[0].endpoint_id;
    let mut tx = pool.begin().await.expect("begin");
    queue::enqueue(
        &mut tx,
        &later
            .iter()
            .map(|id| {
                let job = DeliveryJob::first(org, *id, endpoint);
                (JobId::new(), job, Duration::from_secs(3600))
            })
            .collect::<Vec<_>>(),
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    drop(conn);

    let grace = Duration::from_secs(300);
    let mut leader = Sampler::new(pool.clone(), grace);
    let mut other = Sampler::new(pool.clone(), grace);
    let reading = leader
        .tick()
        .await
        .expect("sample")
        .expect("the first sampler leads");
    assert_eq!(
        other.tick().await.expect("tick"),
        None,
        "only one worker of the fleet samples"
    );
    assert_eq!(
        (reading.jobs.due, reading.jobs.scheduled, reading.jobs.running),
        (5, 2, 1)
    );
    assert!(reading.oldest_due >= Duration::from_secs(30), "{reading:?}");
    assert_eq!(reading.deliveries_without_job, 0);

    let handle = triggers_shared::metrics::install_recorder();
    publish(&reading);
    let text = handle.render();
    for line in [
        "triggers_queue_jobs{state=\"due\"} 5",
        "triggers_queue_jobs{state=\"scheduled\"} 2",
        "triggers_queue_jobs{state=\"running\"} 1",
        "triggers_queue_depth 7",
        "triggers_deliveries_without_job 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("triggers_queue_oldest_pending_age_seconds "))
        .and_then(|v| v.parse().ok())
        .expect("the oldest-age series");
    assert!(age >= 30.0, "{age}");

    // When the leader goes, the other takes over.
    leader.close().await;
    assert!(other.tick().await.expect("tick").is_some());
    other.close().await;
}
