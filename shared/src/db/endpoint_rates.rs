//! SQL of the `endpoint_rates` table: each limited endpoint's `rate_limit_per_second`, held for
//! the whole worker fleet by one GCRA row per endpoint.
//!
//! `tat` is when the endpoint's next request may start. A send reserves its start time by
//! moving `tat` on by `1 / limit` seconds, so starts are at least that far apart whichever
//! worker makes them, and no burst is allowed: any one second holds at most `limit` starts
//! (and one more at its edge). [`reserve`] does it for many deliveries at once, in one
//! statement, reserving only starts within a horizon: what lies further out is not reserved
//! (the caller puts those jobs back in the queue, to ask again when they are due).

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

/// What one endpoint asks for: `wanted` starts at `per_second` at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub organization_id: Uuid,
    pub endpoint_id: Uuid,
    pub per_second: i32,
    pub wanted: i32,
}

/// The starts [`reserve`] gave one endpoint: `granted` of them, the first `first` from now and
/// the others `spacing` apart; the next free start (the first not granted) is
/// `first + granted * spacing` from now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reserved {
    pub organization_id: Uuid,
    pub endpoint_id: Uuid,
    pub first: Duration,
    pub granted: i32,
    pub spacing: Duration,
}

struct ReservedRow {
    organization_id: Uuid,
    endpoint_id: Uuid,
    first_secs: f64,
    granted: i32,
    spacing_secs: f64,
}

/// Reserve starts for each of `asks` (distinct endpoints) within `horizon` from now, on the
/// database's clock, so workers with skewed clocks still agree. Answers the endpoints that
/// exist, in no particular order (a deleted endpoint has no answer: nothing is to be sent to
/// it). Rows are locked in key order; the first ask of an endpoint creates its row.
pub async fn reserve(
    conn: &mut PgConnection,
    asks: &[Ask],
    horizon: Duration,
) -> sqlx::Result<Vec<Reserved>> {
    let mut reserved = reserve_existing(&mut *conn, asks, horizon).await?;
    if reserved.len() < asks.len() {
        let missing: Vec<Ask> = asks
            .iter()
            .filter(|a| {
                !reserved
                    .iter()
                    .any(|r| r.organization_id == a.organization_id && r.endpoint_id == a.endpoint_id)
            })
            .copied()
            .collect();
        let (orgs, endpoints): (Vec<Uuid>, Vec<Uuid>) =
            missing.iter().map(|a| (a.organization_id, a.endpoint_id)).unzip();
        sqlx::query!(
            "INSERT INTO endpoint_rates (organization_id, endpoint_id)
             SELECT ep.organization_id, ep.id
             FROM unnest($1::uuid[], $2::uuid[]) AS t(org, endpoint)
             JOIN endpoints ep ON ep.organization_id = t.org AND ep.id = t.endpoint
             ORDER BY 1, 2
             ON CONFLICT DO NOTHING",
            &orgs,
            &endpoints,
        )
        .execute(&mut *conn)
        .await?;
        reserved.extend(reserve_existing(conn, &missing, horizon).await?);
    }
    Ok(reserved)
}

async fn reserve_existing(
    conn: &mut PgConnection,
    asks: &[Ask],
    horizon: Duration,
) -> sqlx::Result<Vec<Reserved>> {
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let orgs: Vec<Uuid> = asks.iter().map(|a| a.organization_id).collect();
    let endpoints: Vec<Uuid> = asks.iter().map(|a| a.endpoint_id).collect();
    let limits: Vec<i32> = asks.iter().map(|a| a.per_second.max(1)).collect();
    let wanted: Vec<i32> = asks.iter().map(|a| a.wanted.max(0)).collect();
    // The clock is read after each row's lock is taken (`timed` pulls from `locked`), so a
    // reservation waiting for another's commit starts from the time it got the row.
    let rows = sqlx::query_as!(
        ReservedRow,
        r#"WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::int4[])
                 AS t(org, endpoint, per_second, wanted)
         ),
         locked AS (
             SELECT r.organization_id, r.endpoint_id, r.tat, i.wanted, 1.0::float8 / i.per_second AS spacing
             FROM endpoint_rates r
             JOIN input i ON i.org = r.organization_id AND i.endpoint = r.endpoint_id
             ORDER BY 1, 2 FOR UPDATE OF r
         ),
         timed AS (
             SELECT l.*, greatest(l.tat, c.now) AS base, c.now
             FROM locked l, LATERAL (SELECT clock_timestamp() AS now) c
         ),
         planned AS (
             SELECT t.*,
                    least(t.wanted, greatest(0,
                        ceil((extract(epoch FROM t.now - t.base)::float8 + $5) / t.spacing)))::int4 AS granted
             FROM timed t
         )
         UPDATE endpoint_rates r SET tat = p.base + make_interval(secs => p.granted * p.spacing)
         FROM planned p
         WHERE r.organization_id = p.organization_id AND r.endpoint_id = p.endpoint_id
         RETURNING r.organization_id, r.endpoint_id,
                   extract(epoch FROM p.base - p.now)::float8 AS "first_secs!", p.granted AS "granted!",
                   p.spacing AS "spacing_secs!""#,
        &orgs,
        &endpoints,
        &limits,
        &wanted,
        horizon.as_secs_f64(),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Reserved {
            organization_id: r.organization_id,
            endpoint_id: r.endpoint_id,
            first: Duration::try_from_secs_f64(r.first_secs).unwrap_or_default(),
            granted: r.granted,
            spacing: Duration::try_from_secs_f64(r.spacing_secs).unwrap_or_default(),
        })
        .collect())
}
