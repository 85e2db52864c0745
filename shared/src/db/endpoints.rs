//! SQL of the `endpoints` table: every statement on it, each taking the organisation id.
//!
//! Every change of an organisation's endpoints ([`create`], [`update`], [`delete`]) runs in a
//! transaction of its own (a savepoint when the caller already has one open) that first bumps
//! `organizations.endpoints_version` and sends `pg_notify(`[`CHANNEL`]`, organization_id)`
//! ([`announce_change`]). Ingest's endpoint cache relies on both: the version tells its batch
//! statement whether the endpoints it matched against are still current, the notification tells
//! every instance to reload, and it is heard only if the change commits. Bumping first takes the
//! organisation's row lock, which serialises the changes of one organisation: that is what
//! makes the cap check of [`create`] hold under concurrent creates.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, types::Json};
use uuid::Uuid;

use super::deliveries;
use crate::{
    models::{
        Description, DisabledReason, Endpoint, EndpointHeaders, EventTypes, RateLimit, RequestedHeaders,
    },
    net::WebhookUrl,
};

/// The Postgres channel on which a change of an organisation's endpoints is announced (payload:
/// the organisation id as text), by the transaction that makes it.
pub const CHANNEL: &str = "triggers_endpoints";

/// A new endpoint's fields, validated (what a client chooses; [`create`] takes the secret and
/// whether it is the default endpoint besides).
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: WebhookUrl,
    pub description: Description,
    pub event_types: EventTypes,
    pub enabled: bool,
    pub headers: EndpointHeaders,
    pub rate_limit_per_second: Option<RateLimit>,
}

/// What [`create`] did.
#[derive(Debug)]
pub enum Created {
    Endpoint(Endpoint),
    /// The organisation already has `cap` endpoints or more: nothing was written.
    OverCap,
}

/// What a PATCH changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<WebhookUrl>,
    pub description: Option<Description>,
    pub event_types: Option<EventTypes>,
    /// `true` clears `disabled_reason`; `false` sets it to `manual`.
    pub enabled: Option<bool>,
    /// Replaces the whole set; a masked value keeps the stored value of that header.
    pub headers: Option<RequestedHeaders>,
    /// `Some(None)` removes the limit.
    pub rate_limit_per_second: Option<Option<RateLimit>>,
}

/// What [`update`] did.
#[derive(Debug)]
pub enum Updated {
    Endpoint(Endpoint),
    NotFound,
    /// This header's value was the mask, but no header of that name is stored: nothing was
    /// written.
    MaskedWithoutStoredValue(String),
}

/// One page of an organisation's endpoints, oldest first.
#[derive(Debug)]
pub struct EndpointPage {
    pub endpoints: Vec<Endpoint>,
    /// More endpoints follow the last one.
    pub has_more: bool,
}

/// Bump the organisation's `endpoints_version` (taking its row lock until the transaction ends)
/// and announce the change on [`CHANNEL`]. Returns the new version. Every change of endpoints
/// calls this first, in its transaction.
pub async fn announce_change(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<i64> {
    let version = sqlx::query_scalar!(
        "UPDATE organizations SET endpoints_version = endpoints_version + 1 WHERE id = $1
         RETURNING endpoints_version",
        organization_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, organization_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(version)
}

/// Create an endpoint signed with `signing_secret`, unless the organisation already has `cap`
/// endpoints (then [`Created::OverCap`] and nothing is written). The organisation's row lock,
/// taken first, makes the count and the insert one step for concurrent creates.
pub async fn create(
    conn: &mut PgConnection,
    organization_id: Uuid,
    cap: i64,
    new: &NewEndpoint,
    signing_secret: &str,
    is_default: bool,
) -> sqlx::Result<Created> {
    let mut tx = conn.begin().await?;
    announce_change(&mut tx, organization_id).await?;
    if count(&mut tx, organization_id).await? >= cap {
        return Ok(Created::OverCap);
    }
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO endpoints (organization_id, id, url, description, event_types, disabled_reason,
                                headers, rate_limit_per_second, signing_secret, is_default)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        organization_id,
        id,
        new.url.as_str(),
        new.description.as_str(),
        &new.event_types.as_strs() as &[&str],
        (!new.enabled).then_some(DisabledReason::Manual) as Option<DisabledReason>,
        Json(&new.headers) as _,
        new.rate_limit_per_second.map(RateLimit::get),
        signing_secret,
        is_default,
    )
    .execute(&mut *tx)
    .await?;
    let endpoint = written(&mut tx, organization_id, id).await?;
    tx.commit().await?;
    Ok(Created::Endpoint(endpoint))
}

/// The organisation's endpoints, oldest first: the one with `id` (when given), or only its
/// default endpoint (`default_only`), or all, at most `limit` of them after `after`. The one
/// statement that reads an [`Endpoint`] (each write reads its result through it): an
/// organisation has few endpoints (a capped number, and one default), so its primary key's
/// range serves every selection whatever plan the parameters get.
async fn select(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Option<Uuid>,
    default_only: bool,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Endpoint>> {
    sqlx::query_as!(
        Endpoint,
        r#"SELECT organization_id, id, url, description, event_types AS "event_types: EventTypes",
                  disabled_reason AS "disabled_reason: DisabledReason", headers AS "headers: EndpointHeaders",
                  rate_limit_per_second, signing_secret, is_default, created_at, updated_at
           FROM endpoints
           WHERE organization_id = $1 AND ($2::uuid IS NULL OR id = $2) AND (NOT $3 OR is_default)
             AND ($4::uuid IS NULL OR id > $4)
           ORDER BY id
           LIMIT $5"#,
        organization_id,
        id,
        default_only,
        after,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One endpoint of the organisation.
pub async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Endpoint>> {
    Ok(select(conn, organization_id, Some(id), false, None, 1)
        .await?
        .pop())
}

/// An endpoint this transaction has just written or locked, as it is now.
async fn written(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> sqlx::Result<Endpoint> {
    find(conn, organization_id, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Up to `limit` endpoints of the organisation after `after` (by id: ids are UUID v7, so this is
/// oldest first), served by the primary key.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<EndpointPage> {
    let mut endpoints = select(conn, organization_id, None, false, after, limit.saturating_add(1)).await?;
    let has_more = endpoints.len() as i64 > limit;
    endpoints.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(EndpointPage { endpoints, has_more })
}

/// How many endpoints the organisation has.
pub async fn count(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM endpoints WHERE organization_id = $1"#,
        organization_id,
    )
    .fetch_one(conn)
    .await
}

/// Lock one endpoint of the organisation until the transaction ends; `false` when there is none.
async fn lock(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let locked = sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM endpoints WHERE organization_id = $1 AND id = $2 FOR UPDATE"#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(locked.is_some())
}

/// Apply `patch` to one endpoint of the organisation (an empty patch still counts as a change:
/// `updated_at` moves and the change is announced). Nothing is written unless it returns
/// [`Updated::Endpoint`].
pub async fn update(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    patch: EndpointPatch,
) -> sqlx::Result<Updated> {
    let mut tx = conn.begin().await?;
    announce_change(&mut tx, organization_id).await?;
    // Locked first: the worker may disable it for failing meanwhile.
    if !lock(&mut tx, organization_id, id).await? {
        return Ok(Updated::NotFound);
    }
    let current = written(&mut tx, organization_id, id).await?;
    let headers = match patch.headers {
        None => current.headers,
        Some(requested) => match requested.resolve(&current.headers) {
            Ok(headers) => headers,
            Err(name) => return Ok(Updated::MaskedWithoutStoredValue(name)),
        },
    };
    let disabled_reason = match patch.enabled {
        None => current.disabled_reason,
        Some(true) => None,
        Some(false) => Some(DisabledReason::Manual),
    };
    let rate_limit = match patch.rate_limit_per_second {
        None => current.rate_limit_per_second,
        Some(limit) => limit.map(RateLimit::get),
    };
    sqlx::query!(
        "UPDATE endpoints
         SET url = coalesce($3, url), description = coalesce($4, description),
             event_types = coalesce($5, event_types), disabled_reason = $6, headers = $7,
             rate_limit_per_second = $8, updated_at = now(),
             failing_since = CASE WHEN $9 THEN NULL ELSE failing_since END,
             failed_attempts = CASE WHEN $9 THEN 0 ELSE failed_attempts END
         WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
        patch.url.as_ref().map(WebhookUrl::as_str),
        patch.description.as_ref().map(Description::as_str),
        patch.event_types.as_ref().map(EventTypes::as_strs) as Option<Vec<&str>>,
        disabled_reason as Option<DisabledReason>,
        Json(&headers) as _,
        rate_limit,
        // Enabling clears the failure record too (API.md), so an endpoint enabled again after it
        // was disabled for failing gets the whole period before it can be disabled again.
        patch.enabled == Some(true),
    )
    .execute(&mut *tx)
    .await?;
    let endpoint = written(&mut tx, organization_id, id).await?;
    tx.commit().await?;
    Ok(Updated::Endpoint(endpoint))
}

/// How many signing secrets of one endpoint may be valid at once (the current one and those in
/// their grace period): every request carries one signature per valid secret (API.md).
pub const MAX_VALID_SECRETS: usize = 5;

/// A previous secret in `endpoints.previous_secrets`, valid until `expires_at`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PreviousSecret {
    secret: String,
    expires_at: DateTime<Utc>,
}

/// What [`rotate_secret`] did.
#[derive(Debug)]
pub enum Rotated {
    /// `endpoint` signs with the new secret; the previous one is valid until
    /// `previous_expires_at` (the rotation's time itself for a grace of zero).
    Rotated {
        endpoint: Endpoint,
        previous_expires_at: DateTime<Utc>,
    },
    NotFound,
    /// Keeping the current secret valid would make more than [`MAX_VALID_SECRETS`] valid at
    /// once: nothing was written. The earliest previous secret expires at `next_expires_at`.
    TooManySecrets {
        next_expires_at: DateTime<Utc>,
    },
}

/// Replace an endpoint's signing secret with `new_secret`, keeping the current one valid for
/// `grace` (not at all for zero) beside the previous secrets still in their grace period; the
/// expired ones are dropped. A rotation that would make more than [`MAX_VALID_SECRETS`] valid
/// at once is refused rather than cutting a still valid secret short. Expiries are the
/// database's clock, which the worker compares them with.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    new_secret: &str,
    grace: Duration,
) -> sqlx::Result<Rotated> {
    let mut tx = conn.begin().await?;
    announce_change(&mut tx, organization_id).await?;
    let current = sqlx::query!(
        r#"SELECT signing_secret,
                  coalesce((SELECT jsonb_agg(s ORDER BY (s ->> 'expires_at')::timestamptz DESC)
                            FROM jsonb_array_elements(previous_secrets) s
                            WHERE (s ->> 'expires_at')::timestamptz > now()), '[]')
                      AS "previous!: Json<Vec<PreviousSecret>>",
                  now() AS "now!"
           FROM endpoints WHERE organization_id = $1 AND id = $2 FOR UPDATE"#,
        organization_id,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current else {
        return Ok(Rotated::NotFound);
    };
    let (old_secret, Json(mut previous), now) = (current.signing_secret, current.previous, current.now);
    let previous_expires_at = now + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    if !grace.is_zero() {
        if previous.len() + 2 > MAX_VALID_SECRETS {
            let next_expires_at = previous.iter().map(|p| p.expires_at).min().unwrap_or(now);
            return Ok(Rotated::TooManySecrets { next_expires_at });
        }
        previous.insert(
            0,
            PreviousSecret {
                secret: old_secret,
                expires_at: previous_expires_at,
            },
        );
    }
    sqlx::query!(
        "UPDATE endpoints SET signing_secret = $3, previous_secrets = $4, updated_at = now()
         WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
        new_secret,
        Json(&previous) as _,
    )
    .execute(&mut *tx)
    .await?;
    let endpoint = written(&mut tx, organization_id, id).await?;
    tx.commit().await?;
    Ok(Rotated::Rotated {
        endpoint,
        previous_expires_at,
    })
}

/// Delete one endpoint of the organisation; its pending deliveries become `cancelled` (their
/// jobs then send nothing). `false` (and nothing written) when there is none. The deliveries
/// are locked before the endpoint row, the order the worker's record statement takes them in
/// (it updates the endpoint's failure record after locking the deliveries).
pub async fn delete(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let mut tx = conn.begin().await?;
    announce_change(&mut tx, organization_id).await?;
    deliveries::cancel_for_endpoint(&mut tx, organization_id, id).await?;
    let deleted = sqlx::query!(
        "DELETE FROM endpoints WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if deleted {
        tx.commit().await?;
    }
    Ok(deleted)
}

// ------------------------------------------------------------------ the default endpoint
// The organisation's one webhook of the API's first version: `/api/webhook/config` and
// `POST /api/webhook/secret/rotate` manage it (patterns `{*}`, `is_default`).

/// The organisation's default endpoint, if it has one.
pub async fn find_default(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<Option<Endpoint>> {
    Ok(select(conn, organization_id, None, true, None, 1).await?.pop())
}

/// Point the default endpoint at `url`, creating it (with `new_secret`, outside the cap: the
/// first version's clients know no cap) when there is none. A URL change keeps the existing
/// secret, so receivers need not be reconfigured.
pub async fn set_default(
    conn: &mut PgConnection,
    organization_id: Uuid,
    url: &WebhookUrl,
    new_secret: &str,
) -> sqlx::Result<Endpoint> {
    let mut tx = conn.begin().await?;
    announce_change(&mut tx, organization_id).await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO endpoints (organization_id, id, url, signing_secret, is_default)
         VALUES ($1, $2, $3, $4, true)
         ON CONFLICT (organization_id) WHERE is_default
         DO UPDATE SET url = EXCLUDED.url, updated_at = now()
         RETURNING id",
        organization_id,
        Uuid::now_v7(),
        url.as_str(),
        new_secret,
    )
    .fetch_one(&mut *tx)
    .await?;
    let endpoint = written(&mut tx, organization_id, id).await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// Delete the default endpoint (see [`delete`]); `false` when there is none.
pub async fn delete_default(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<bool> {
    match find_default(&mut *conn, organization_id).await? {
        Some(endpoint) => delete(conn, organization_id, endpoint.id).await,
        None => Ok(false),
    }
}

/// Replace the default endpoint's signing secret at once (no grace). `None`: there is none.
pub async fn rotate_default_secret(
    conn: &mut PgConnection,
    organization_id: Uuid,
    new_secret: &str,
) -> sqlx::Result<Option<Endpoint>> {
    let mut tx = conn.begin().await?;
    announce_change(&mut tx, organization_id).await?;
    let rotated = sqlx::query_scalar!(
        "UPDATE endpoints SET signing_secret = $2, previous_secrets = '[]', updated_at = now()
         WHERE organization_id = $1 AND is_default
         RETURNING id",
        organization_id,
        new_secret,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = rotated else {
        return Ok(None);
    };
    let endpoint = find(&mut tx, organization_id, id).await?;
    tx.commit().await?;
    Ok(endpoint)
}

// ------------------------------------------------------------------ fleet-wide counts

/// The fleet's endpoints by state (what the `triggers_endpoints` gauge shows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub enabled: i64,
    /// Disabled by a client (`disabled_reason = 'manual'`).
    pub disabled_manual: i64,
    /// Disabled for failing (`disabled_reason = 'failing'`).
    pub disabled_failing: i64,
}

/// Count every organisation's endpoints by state: one scan of the table, for the sampler.
pub async fn count_by_state(conn: &mut PgConnection) -> sqlx::Result<StateCounts> {
    sqlx::query_as!(
        StateCounts,
        r#"SELECT count(*) FILTER (WHERE disabled_reason IS NULL) AS "enabled!",
                  count(*) FILTER (WHERE disabled_reason = 'manual') AS "disabled_manual!",
                  count(*) FILTER (WHERE disabled_reason = 'failing') AS "disabled_failing!"
           FROM endpoints"#,
    )
    .fetch_one(conn)
    .await
}
