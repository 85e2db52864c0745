//! SQL of the `deliveries` table (one row per event and endpoint: the one source of delivery
//! state) and of the attempts the worker writes.
//!
//! - The worker reads what it needs to send many deliveries at once ([`load_targets`]), checks
//!   right before sending ([`still_deliverable`]), and writes attempts in one statement per
//!   group commit ([`record_attempts`]); nothing here is held across the HTTP call.
//! - A delivery's chain of attempts is carried by one queue job at a time, which the row names
//!   (`job_id`): [`new_chains`] starts chains (resend, redelivery, recovery, repair), and a job
//!   the row does not name belongs to a superseded chain and changes nothing.
//! - Every statement that changes the status of several deliveries locks them in key order
//!   first, and the events they belong to are summed up by a trigger after them (events after
//!   deliveries, always), so two writers cannot deadlock.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use super::queue::{self, NewJob, QueueError};
use crate::{
    jobs::{DeliveryJob, JobId},
    models::{Delivery, DeliveryKey, DeliveryStatus},
};

/// Parallel columns of many keys, as the statements bind them.
struct KeyColumns {
    orgs: Vec<Uuid>,
    events: Vec<Uuid>,
    endpoints: Vec<Uuid>,
}

impl<'a> FromIterator<&'a DeliveryKey> for KeyColumns {
    fn from_iter<I: IntoIterator<Item = &'a DeliveryKey>>(keys: I) -> Self {
        let mut columns = KeyColumns {
            orgs: Vec::new(),
            events: Vec::new(),
            endpoints: Vec::new(),
        };
        for k in keys {
            columns.orgs.push(k.organization_id);
            columns.events.push(k.event_id);
            columns.endpoints.push(k.endpoint_id);
        }
        columns
    }
}

/// Everything needed to send one delivery: its state, its event and its endpoint as they are now.
#[derive(Clone, Debug)]
pub struct DeliveryTarget {
    pub status: DeliveryStatus,
    /// The job of the delivery's current chain.
    pub job_id: Option<String>,
    pub event_type: String,
    pub dedup_id: Option<String>,
    /// The payload as JSON text, as stored: put into the webhook body without being parsed
    /// into a tree and written out again.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// `None`: the endpoint was deleted.
    pub endpoint: Option<EndpointTarget>,
}

/// The endpoint of a delivery, as the worker sends to it.
#[derive(Clone, Debug)]
pub struct EndpointTarget {
    pub url: String,
    /// The current secret first, then those still in their rotation grace period.
    pub secrets: Vec<String>,
    /// Custom request headers, by name.
    pub headers: BTreeMap<String, String>,
    pub enabled: bool,
    /// Requests per second at most, for the whole fleet (`None`: no limit).
    pub rate_limit_per_second: Option<i32>,
}

/// The targets of many deliveries at once (one query for every delivery starting together).
/// Returns those found, in no particular order; a key that is missing is gone (its event was
/// purged).
pub async fn load_targets(
    conn: &mut PgConnection,
    keys: &[DeliveryKey],
) -> sqlx::Result<Vec<(DeliveryKey, DeliveryTarget)>> {
    let k: KeyColumns = keys.iter().collect();
    // The endpoint's columns are null when it was deleted.
    let rows = sqlx::query!(
        r#"SELECT d.organization_id, d.event_id, d.endpoint_id, d.status AS "status: DeliveryStatus", d.job_id,
                e.type AS event_type, e.dedup_id, e.payload::text AS "payload!", e.created_at,
                ep.url AS "url?",
                CASE WHEN ep.id IS NOT NULL THEN
                    ARRAY[ep.signing_secret] || ARRAY(
                        SELECT s ->> 'secret' FROM jsonb_array_elements(ep.previous_secrets) s
                        WHERE (s ->> 'expires_at')::timestamptz > now()
                        ORDER BY (s ->> 'expires_at')::timestamptz DESC)
                END AS secrets,
                ep.headers AS "headers?: Json<BTreeMap<String, String>>",
                ep.disabled_reason IS NULL AND ep.id IS NOT NULL AS enabled,
                ep.rate_limit_per_second AS "rate_limit_per_second?"
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS k(org, event, endpoint)
         JOIN deliveries d ON d.organization_id = k.org AND d.event_id = k.event AND d.endpoint_id = k.endpoint
         JOIN events e ON e.id = d.event_id AND e.organization_id = d.organization_id
         LEFT JOIN endpoints ep ON ep.organization_id = d.organization_id AND ep.id = d.endpoint_id"#,
        &k.orgs,
        &k.events,
        &k.endpoints,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let endpoint = match (r.url, r.secrets, r.headers, r.enabled) {
                (Some(url), Some(secrets), Some(Json(headers)), Some(enabled)) => Some(EndpointTarget {
                    url,
                    secrets,
                    headers,
                    enabled,
                    rate_limit_per_second: r.rate_limit_per_second,
                }),
                _ => None,
            };
            let target = DeliveryTarget {
                status: r.status,
                job_id: r.job_id,
                event_type: r.event_type,
                dedup_id: r.dedup_id,
                payload: r.payload,
                created_at: r.created_at,
                endpoint,
            };
            let key = DeliveryKey {
                organization_id: r.organization_id,
                event_id: r.event_id,
                endpoint_id: r.endpoint_id,
            };
            (key, target)
        })
        .collect())
}

/// Of these deliveries, each with the job about to send it, those still pending in that job's
/// chain: the check made right before a request is sent, so an acknowledgement, a deletion of
/// the endpoint or a resend that committed after the load still stops it.
pub async fn still_deliverable(
    conn: &mut PgConnection,
    deliveries: &[(DeliveryKey, String)],
) -> sqlx::Result<Vec<DeliveryKey>> {
    let k: KeyColumns = deliveries.iter().map(|(k, _)| k).collect();
    let tasks: Vec<&str> = deliveries.iter().map(|(_, t)| t.as_str()).collect();
    sqlx::query_as!(
        DeliveryKey,
        "SELECT d.organization_id, d.event_id, d.endpoint_id
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) AS k(org, event, endpoint, task)
         JOIN deliveries d ON d.organization_id = k.org AND d.event_id = k.event AND d.endpoint_id = k.endpoint
         WHERE d.status = 'pending' AND d.job_id = k.task",
        &k.orgs,
        &k.events,
        &k.endpoints,
        &tasks as &[&str],
    )
    .fetch_all(conn)
    .await
}

/// One finished attempt of a delivery, as the worker records it.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub key: DeliveryKey,
    /// The job that made the attempt: the delivery moves on only if it is its current chain's.
    pub task_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    /// Where the delivery goes: `Delivered`, `Pending` (the next attempt is [`Self::retry`]) or
    /// `Failed` (dead letter).
    pub next_status: DeliveryStatus,
    /// With `Pending`: the next job's id and when it is due.
    pub retry: Option<(JobId, DateTime<Utc>)>,
}

/// What [`record_attempts`] did with one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The attempt's number over the delivery's whole life (`deliveries.attempts` now).
    pub attempt: i32,
    /// Whether the delivery took the new status (and the retry job, if any, is its chain's).
    /// `false` when it left `pending` meanwhile (acknowledged, endpoint deleted) or its chain
    /// was superseded (a resend): no retry may follow then.
    pub status_applied: bool,
}

/// When an endpoint is disabled for failing (API.md, "Endpoints", Lifecycle).
#[derive(Clone, Copy, Debug)]
pub struct DisablePolicy {
    /// How long its attempts must all have failed (`TRIGGERS_ENDPOINT_DISABLE_AFTER_SECS`).
    pub after: Duration,
    /// How many failed attempts that time must hold at least.
    pub min_failures: i32,
}

impl DisablePolicy {
    /// Failed attempts an endpoint must have at least before it is disabled (API.md).
    pub const MIN_FAILURES: i32 = 10;

    /// Disable after `after` of failures only, with at least [`Self::MIN_FAILURES`] of them.
    pub fn after(after: Duration) -> Self {
        Self {
            after,
            min_failures: Self::MIN_FAILURES,
        }
    }
}

/// What [`record_attempts`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedAttempts {
    /// One answer per attempt, in input order; `None`: the delivery no longer exists.
    pub attempts: Vec<Option<Recorded>>,
    /// The endpoints these attempts disabled for failing, as `(organization, endpoint)`.
    pub disabled: Vec<(Uuid, Uuid)>,
}

/// Record attempts in ONE statement: count each on its delivery, move the delivery to its
/// `next_status` (naming the retry's job) if the attempt's job is still the delivery's chain and
/// it is still pending, insert the `delivery_attempts` rows, and keep each endpoint's failure
/// record: a successful attempt clears it, failed ones add to it, and an endpoint that crosses
/// `policy` is disabled (`disabled_reason = 'failing'`). An endpoint is written only when its
/// record changes, so a healthy endpoint costs nothing here. The deliveries must be distinct.
/// Run it in the transaction that also enqueues the retries whose status applied; the caller
/// announces the disabled endpoints' change once that transaction commits (locks are taken
/// deliveries first, then endpoints, never the organisation).
pub async fn record_attempts(
    conn: &mut PgConnection,
    attempts: &[AttemptRecord],
    policy: DisablePolicy,
) -> sqlx::Result<RecordedAttempts> {
    if attempts.is_empty() {
        return Ok(RecordedAttempts::default());
    }
    let k: KeyColumns = attempts.iter().map(|a| &a.key).collect();
    let tasks: Vec<&str> = attempts.iter().map(|a| a.task_id.as_str()).collect();
    let started: Vec<DateTime<Utc>> = attempts.iter().map(|a| a.started_at).collect();
    let durations: Vec<i32> = attempts.iter().map(|a| a.duration_ms).collect();
    let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.response_status).collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.next_status.as_str()).collect();
    let next_jobs: Vec<Option<String>> = attempts
        .iter()
        .map(|a| a.retry.map(|(id, _)| id.to_string()))
        .collect();
    let next_at: Vec<Option<DateTime<Utc>>> = attempts.iter().map(|a| a.retry.map(|(_, at)| at)).collect();
    // One row per delivery it recorded an attempt of, with (the same on every row) the endpoints
    // the statement disabled.
    let rows = sqlx::query!(
        r#"WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[],
                                  $6::int4[], $7::int4[], $8::text[], $9::text[], $10::text[],
                                  $11::timestamptz[])
                 AS t(org, event, endpoint, task, started_at, duration_ms, response_status, error,
                      outcome, next_job, next_at)
         ),
         locked AS (
             SELECT d.organization_id, d.event_id, d.endpoint_id,
                    (d.status = 'pending' AND d.job_id = i.task) AS current
             FROM deliveries d
             JOIN input i ON i.org = d.organization_id AND i.event = d.event_id AND i.endpoint = d.endpoint_id
             ORDER BY 1, 2, 3 FOR UPDATE OF d
         ),
         updated AS (
             UPDATE deliveries d SET
                 attempts = d.attempts + 1,
                 response_status = i.response_status,
                 last_error = i.error,
                 last_attempt_at = i.started_at,
                 status = CASE WHEN l.current THEN i.outcome ELSE d.status END,
                 job_id = CASE WHEN l.current THEN i.next_job ELSE d.job_id END,
                 next_attempt_at = CASE WHEN l.current THEN i.next_at ELSE d.next_attempt_at END,
                 delivered_at = CASE WHEN l.current AND i.outcome = 'delivered' THEN now() ELSE d.delivered_at END,
                 updated_at = now()
             FROM input i, locked l
             WHERE d.organization_id = i.org AND d.event_id = i.event AND d.endpoint_id = i.endpoint
               AND l.organization_id = i.org AND l.event_id = i.event AND l.endpoint_id = i.endpoint
             RETURNING d.organization_id, d.event_id, d.endpoint_id, d.attempts, l.current
         ),
         inserted AS (
             INSERT INTO delivery_attempts (event_id, organization_id, endpoint_id, attempt, started_at,
                                            duration_ms, response_status, error)
             SELECT i.event, i.org, i.endpoint, u.attempts, i.started_at, i.duration_ms,
                    i.response_status, i.error
             FROM input i
             JOIN updated u ON u.organization_id = i.org AND u.event_id = i.event AND u.endpoint_id = i.endpoint
         ),
         by_endpoint AS (
             SELECT i.org, i.endpoint,
                    bool_or(i.outcome = 'delivered') AS succeeded,
                    count(*) FILTER (WHERE i.outcome <> 'delivered') AS failures,
                    min(i.started_at) FILTER (WHERE i.outcome <> 'delivered') AS first_failure
             FROM input i
             JOIN updated u ON u.organization_id = i.org AND u.event_id = i.event AND u.endpoint_id = i.endpoint
             GROUP BY i.org, i.endpoint
         ),
         record AS (
             SELECT ep.organization_id, ep.id,
                    CASE WHEN b.succeeded THEN NULL
                         ELSE coalesce(ep.failing_since, b.first_failure) END AS failing_since,
                    CASE WHEN b.succeeded THEN 0
                         ELSE ep.failed_attempts + b.failures::int END AS failed_attempts,
                    ep.disabled_reason IS NULL AND NOT b.succeeded
                      AND coalesce(ep.failing_since, b.first_failure) <= now() - make_interval(secs => $12)
                      AND ep.failed_attempts + b.failures >= $13 AS disabling
             FROM endpoints ep
             JOIN by_endpoint b ON b.org = ep.organization_id AND b.endpoint = ep.id
             WHERE NOT b.succeeded OR ep.failing_since IS NOT NULL
             ORDER BY 1, 2 FOR NO KEY UPDATE OF ep
         ),
         recorded AS (
             UPDATE endpoints ep SET
                 failing_since = r.failing_since,
                 failed_attempts = r.failed_attempts,
                 disabled_reason = CASE WHEN r.disabling THEN 'failing' ELSE ep.disabled_reason END,
                 updated_at = CASE WHEN r.disabling THEN now() ELSE ep.updated_at END
             FROM record r
             WHERE ep.organization_id = r.organization_id AND ep.id = r.id
             RETURNING ep.organization_id, ep.id, r.disabling
         ),
         disabled AS (
             SELECT coalesce(array_agg(organization_id), '{}') AS orgs, coalesce(array_agg(id), '{}') AS ids
             FROM recorded WHERE disabling
         )
         SELECT u.organization_id AS "organization_id!", u.event_id AS "event_id!",
                u.endpoint_id AS "endpoint_id!", u.attempts AS "attempts!", u.current AS "current!",
                d.orgs AS "disabled_orgs!", d.ids AS "disabled_ids!"
         FROM updated u, disabled d"#,
        &k.orgs,
        &k.events,
        &k.endpoints,
        &tasks as &[&str],
        &started,
        &durations,
        &statuses as &[Option<i32>],
        &errors as &[Option<&str>],
        &outcomes as &[&str],
        &next_jobs as &[Option<String>],
        &next_at as &[Option<DateTime<Utc>>],
        policy.after.as_secs_f64(),
        i64::from(policy.min_failures),
    )
    .fetch_all(&mut *conn)
    .await?;
    let disabled = rows
        .first()
        .map(|r| {
            r.disabled_orgs
                .iter()
                .copied()
                .zip(r.disabled_ids.iter().copied())
                .collect()
        })
        .unwrap_or_default();
    let rows: std::collections::HashMap<DeliveryKey, Recorded> = rows
        .into_iter()
        .map(|r| {
            let recorded = Recorded {
                attempt: r.attempts,
                status_applied: r.current,
            };
            let key = DeliveryKey {
                organization_id: r.organization_id,
                event_id: r.event_id,
                endpoint_id: r.endpoint_id,
            };
            (key, recorded)
        })
        .collect();
    Ok(RecordedAttempts {
        attempts: attempts.iter().map(|a| rows.get(&a.key).copied()).collect(),
        disabled,
    })
}

/// Close deliveries that will not be sent, each to its status (`Skipped`: the endpoint is
/// disabled; `Cancelled`: it was deleted), if the job is still the delivery's chain and it is
/// pending. Returns how many were closed.
pub async fn close(
    conn: &mut PgConnection,
    closing: &[(DeliveryKey, String, DeliveryStatus)],
) -> sqlx::Result<u64> {
    if closing.is_empty() {
        return Ok(0);
    }
    let k: KeyColumns = closing.iter().map(|(k, ..)| k).collect();
    let tasks: Vec<&str> = closing.iter().map(|(_, t, _)| t.as_str()).collect();
    let statuses: Vec<&str> = closing.iter().map(|(.., s)| s.as_str()).collect();
    let res = sqlx::query!(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[])
                 AS t(org, event, endpoint, task, status)
         ),
         locked AS (
             SELECT d.organization_id, d.event_id, d.endpoint_id, i.status
             FROM deliveries d
             JOIN input i ON i.org = d.organization_id AND i.event = d.event_id AND i.endpoint = d.endpoint_id
             WHERE d.status = 'pending' AND d.job_id = i.task
             ORDER BY 1, 2, 3 FOR UPDATE OF d
         )
         UPDATE deliveries d
         SET status = l.status, job_id = NULL, next_attempt_at = NULL, updated_at = now()
         FROM locked l
         WHERE d.organization_id = l.organization_id AND d.event_id = l.event_id AND d.endpoint_id = l.endpoint_id",
        &k.orgs,
        &k.events,
        &k.endpoints,
        &tasks as &[&str],
        &statuses as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Start a new chain of attempts for each of these deliveries: status `pending`, a new first
/// job (enqueued here), due now. The caller has locked the rows (in key order) in its
/// transaction and decided they need one. Returns how many chains were started.
pub async fn new_chains(conn: &mut PgConnection, keys: &[DeliveryKey]) -> Result<u64, QueueError> {
    let jobs = name_new_chains(&mut *conn, keys).await?;
    queue::enqueue(conn, &jobs).await?;
    Ok(jobs.len() as u64)
}

/// [`new_chains`] for a recovery: the first jobs go in below live ones
/// (`queue::recovered`), so a recovery never holds up new events' deliveries.
pub async fn new_recovered_chains(conn: &mut PgConnection, keys: &[DeliveryKey]) -> Result<u64, QueueError> {
    let jobs = name_new_chains(&mut *conn, keys).await?;
    queue::recovered::enqueue(conn, &jobs).await?;
    Ok(jobs.len() as u64)
}

/// Make each delivery pending in a new chain whose first job (returned, to be enqueued by the
/// caller in the same transaction) it names.
async fn name_new_chains(conn: &mut PgConnection, keys: &[DeliveryKey]) -> sqlx::Result<Vec<NewJob>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let jobs: Vec<NewJob> = keys
        .iter()
        .map(|k| {
            let job = DeliveryJob::first(k.organization_id, k.event_id, k.endpoint_id);
            (JobId::new(), job, Duration::ZERO)
        })
        .collect();
    let k: KeyColumns = keys.iter().collect();
    let job_ids: Vec<String> = jobs.iter().map(|(id, ..)| id.to_string()).collect();
    sqlx::query!(
        "UPDATE deliveries d
         SET status = 'pending', job_id = t.job, next_attempt_at = now(), updated_at = now()
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) AS t(org, event, endpoint, job)
         WHERE d.organization_id = t.org AND d.event_id = t.event AND d.endpoint_id = t.endpoint",
        &k.orgs,
        &k.events,
        &k.endpoints,
        &job_ids,
    )
    .execute(conn)
    .await?;
    Ok(jobs)
}

/// Cancel the pending deliveries to endpoint `endpoint_id` (it is being deleted). Their jobs
/// find them cancelled and send nothing.
pub async fn cancel_for_endpoint(
    conn: &mut PgConnection,
    organization_id: Uuid,
    endpoint_id: Uuid,
) -> sqlx::Result<u64> {
    let res = sqlx::query!(
        "WITH locked AS (
             SELECT event_id FROM deliveries
             WHERE organization_id = $1 AND endpoint_id = $2 AND status = 'pending'
             ORDER BY event_id FOR UPDATE
         )
         UPDATE deliveries d
         SET status = 'cancelled', job_id = NULL, next_attempt_at = NULL, updated_at = now()
         FROM locked l
         WHERE d.organization_id = $1 AND d.event_id = l.event_id AND d.endpoint_id = $2",
        organization_id,
        endpoint_id,
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Cancel the pending deliveries of these events (they are being acknowledged).
pub async fn cancel_for_events(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_ids: &[Uuid],
) -> sqlx::Result<u64> {
    let res = sqlx::query!(
        "WITH locked AS (
             SELECT event_id, endpoint_id FROM deliveries
             WHERE organization_id = $1 AND event_id = ANY($2) AND status = 'pending'
             ORDER BY event_id, endpoint_id FOR UPDATE
         )
         UPDATE deliveries d
         SET status = 'cancelled', job_id = NULL, next_attempt_at = NULL, updated_at = now()
         FROM locked l
         WHERE d.organization_id = $1 AND d.event_id = l.event_id AND d.endpoint_id = l.endpoint_id",
        organization_id,
        event_ids,
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Dead-letter deliveries whose job apalis gave up on (repeated internal errors, never a
/// webhook failure), if that job is still their chain's and they are pending. Returns how many.
pub async fn dead_letter_abandoned(
    conn: &mut PgConnection,
    jobs: &[(DeliveryKey, String)],
) -> sqlx::Result<u64> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let k: KeyColumns = jobs.iter().map(|(k, _)| k).collect();
    let tasks: Vec<&str> = jobs.iter().map(|(_, t)| t.as_str()).collect();
    let res = sqlx::query!(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) AS t(org, event, endpoint, task)
         ),
         locked AS (
             SELECT d.organization_id, d.event_id, d.endpoint_id
             FROM deliveries d
             JOIN input i ON i.org = d.organization_id AND i.event = d.event_id AND i.endpoint = d.endpoint_id
             WHERE d.status = 'pending' AND d.job_id = i.task
             ORDER BY 1, 2, 3 FOR UPDATE OF d
         )
         UPDATE deliveries d
         SET status = 'failed', job_id = NULL, next_attempt_at = NULL, updated_at = now(),
             last_error = 'delivery abandoned after repeated internal errors; resend to try again'
         FROM locked l
         WHERE d.organization_id = l.organization_id AND d.event_id = l.event_id AND d.endpoint_id = l.endpoint_id",
        &k.orgs,
        &k.events,
        &k.endpoints,
        &tasks as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// The deliveries of one event of this organisation, by endpoint id.
pub async fn list_for_event(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_id: Uuid,
) -> sqlx::Result<Vec<Delivery>> {
    let rows = select(conn, organization_id, &[event_id], None).await?;
    Ok(rows.into_iter().map(|r| r.delivery).collect())
}

/// The organisation's deliveries of these events (all, or those to `endpoint_id`), each with its
/// event's type, by event and endpoint id. The one statement that reads a [`Delivery`].
async fn select(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_ids: &[Uuid],
    endpoint_id: Option<Uuid>,
) -> sqlx::Result<Vec<EndpointDelivery>> {
    let rows = sqlx::query!(
        r#"SELECT d.event_id, d.endpoint_id, d.status AS "status: DeliveryStatus", d.attempts,
                  d.response_status, d.last_error, d.next_attempt_at, d.created_at, d.delivered_at,
                  e.type AS event_type
           FROM deliveries d
           JOIN events e ON e.id = d.event_id AND e.organization_id = d.organization_id
           WHERE d.organization_id = $1 AND d.event_id = ANY($2) AND ($3::uuid IS NULL OR d.endpoint_id = $3)
           ORDER BY d.event_id, d.endpoint_id"#,
        organization_id,
        event_ids,
        endpoint_id,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| EndpointDelivery {
            delivery: Delivery {
                event_id: r.event_id,
                endpoint_id: r.endpoint_id,
                status: r.status,
                attempts: r.attempts,
                response_status: r.response_status,
                last_error: r.last_error,
                next_attempt_at: r.next_attempt_at,
                created_at: r.created_at,
                delivered_at: r.delivered_at,
            },
            event_type: r.event_type,
        })
        .collect())
}

/// Lock the deliveries of one event (all, or those to one endpoint) in key order, with their
/// status: what a resend or a redelivery decides on. Empty: the event has no such delivery.
pub async fn lock_of_event(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_id: Uuid,
    endpoint_id: Option<Uuid>,
) -> sqlx::Result<Vec<(DeliveryKey, DeliveryStatus)>> {
    let rows = sqlx::query!(
        r#"SELECT endpoint_id, status AS "status: DeliveryStatus" FROM deliveries
           WHERE organization_id = $1 AND event_id = $2 AND ($3::uuid IS NULL OR endpoint_id = $3)
           ORDER BY endpoint_id FOR UPDATE"#,
        organization_id,
        event_id,
        endpoint_id,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.endpoint_id, r.status))
        .map(|(endpoint_id, status)| {
            let key = DeliveryKey {
                organization_id,
                event_id,
                endpoint_id,
            };
            (key, status)
        })
        .collect())
}

/// Lock up to `limit` failed deliveries of the organisation whose events were created at or
/// after `since` (any time when `None`), skipping rows someone else holds. (An event with a
/// failed delivery is `failed`, or `pending` while another of its deliveries is: both are
/// found through the inbox's status index.)
pub async fn lock_failed(
    conn: &mut PgConnection,
    organization_id: Uuid,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryKey>> {
    sqlx::query_as!(
        DeliveryKey,
        "SELECT d.organization_id, d.event_id, d.endpoint_id
         FROM events e
         JOIN deliveries d ON d.organization_id = e.organization_id AND d.event_id = e.id
         WHERE e.organization_id = $1 AND e.status IN ('pending', 'failed') AND d.status = 'failed'
           AND ($2::timestamptz IS NULL OR e.created_at >= $2)
         ORDER BY d.organization_id, d.event_id, d.endpoint_id
         LIMIT $3
         FOR UPDATE OF d SKIP LOCKED",
        organization_id,
        since,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One delivery of an endpoint, as its listing shows it (with its event's type).
#[derive(Clone, Debug)]
pub struct EndpointDelivery {
    pub delivery: Delivery,
    pub event_type: String,
}

/// Filters of an endpoint's deliveries.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// Up to `limit` deliveries of one endpoint, newest first (by `created_at`, then event id),
/// strictly before `before` when given, and whether more follow. One backward range scan of
/// `deliveries_endpoint_idx`: the organisation and endpoint fix its prefix, the time window and
/// the cursor bound it, the status filters what it reads; then [`select`] reads the page.
pub async fn list_for_endpoint(
    conn: &mut PgConnection,
    organization_id: Uuid,
    endpoint_id: Uuid,
    filter: &DeliveryFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<(Vec<EndpointDelivery>, bool)> {
    let page = sqlx::query_scalar!(
        "SELECT d.event_id FROM deliveries d
         WHERE d.organization_id = $1 AND d.endpoint_id = $2
           AND ($3::text IS NULL OR d.status = $3)
           AND d.created_at >= coalesce($4, '-infinity'::timestamptz)
           AND d.created_at < coalesce($5, 'infinity'::timestamptz)
           AND (d.created_at, d.event_id)
               < (coalesce($6, 'infinity'::timestamptz), coalesce($7, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))
         ORDER BY d.created_at DESC, d.event_id DESC
         LIMIT $8",
        organization_id,
        endpoint_id,
        filter.status.map(DeliveryStatus::as_str),
        filter.since,
        filter.until,
        before.map(|(at, _)| at),
        before.map(|(_, id)| id),
        limit.saturating_add(1),
    )
    .fetch_all(&mut *conn)
    .await?;
    let has_more = page.len() as i64 > limit;
    let page = &page[..page.len().min(usize::try_from(limit).unwrap_or(0))];
    let mut rows = select(conn, organization_id, page, Some(endpoint_id)).await?;
    // Back in the page's order (a delivery gone meanwhile is left out).
    let order: std::collections::HashMap<Uuid, usize> =
        page.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    rows.sort_by_key(|r| order.get(&r.delivery.event_id).copied());
    Ok((rows, has_more))
}
