//! `POST /api/endpoints/{id}/recover` and `GET /api/endpoints/{id}/recoveries/{recovery_id}`:
//! everything an endpoint missed in a time window, delivered again in the background.
//!
//! The request counts the matching deliveries and writes the recovery in one transaction
//! (`db::recoveries::start`); the worker fleet restarts them in bounded batches, each committed
//! with its cursor, below live traffic in the queue (`worker::recovery`).
//!
//! Choices where API.md is silent:
//! - The window is on the deliveries' `created_at` (their event's): `since` inclusive, `until`
//!   exclusive, both RFC 3339; `since` is required, `until` defaults to now; a window that ends
//!   where or before it starts is empty (it counts 0).
//! - `statuses`: 1-5 of `failed` (or `dead_letter`), `skipped`, `cancelled`, `delivered`
//!   (replaying delivered ones is allowed); `pending` is refused (it has a chain already).
//! - A recovery restarts the deliveries that matched when it was counted and have not changed
//!   since (one resent or recovered by another call meanwhile is not restarted twice), so
//!   `enqueued` ends at most at `total`.
//! - A disabled endpoint's recovery is `409 endpoint_disabled` (its deliveries would be skipped
//!   again); a dry run still counts. A recovery of nothing is `202` with `count: 0`, `done` at
//!   once. Over 100,000 is `422 too_many_deliveries` with `count` and `limit`.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use triggers_shared::{
    db::{
        endpoints,
        recoveries::{self, MAX_DELIVERIES, Recovery, RecoveryFilter, Started},
    },
    models::DeliveryStatus,
    schemas,
};
use utoipa::openapi::{
    KnownFormat, Schema, SchemaFormat,
    schema::{ObjectBuilder, OneOfBuilder, Type},
};
use uuid::Uuid;

use super::EndpointId;
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    openapi,
    validate::{Parse, Problems, json_kind, json_string, timestamp},
};

/// The statuses recovered when the body names none.
const DEFAULT_STATUSES: [DeliveryStatus; 2] = [DeliveryStatus::Failed, DeliveryStatus::Skipped];

/// Body of `POST /api/endpoints/{id}/recover`. Unknown fields are ignored; `null` counts as
/// absent.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RecoverIn {
    /// Deliveries created at or after this instant (RFC 3339). Required.
    #[schema(value_type = DateTime<Utc>, required = true)]
    since: Option<Box<RawValue>>,
    /// Deliveries created before this instant (RFC 3339), after `since`. Default: now.
    #[schema(schema_with = until_schema)]
    until: Option<Box<RawValue>>,
    /// 1-5 of `failed` (or `dead_letter`), `skipped`, `cancelled`, `delivered` (a repeated
    /// one counts once). Default `["failed", "skipped"]`.
    #[schema(schema_with = statuses_schema)]
    statuses: Option<Box<RawValue>>,
    /// Only count. Default `false`.
    #[schema(value_type = Option<bool>)]
    dry_run: Option<Box<RawValue>>,
}

/// A valid recovery request.
pub struct RecoverRequest {
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    statuses: Vec<DeliveryStatus>,
    dry_run: bool,
}

impl Parse for RecoverIn {
    type Valid = RecoverRequest;

    fn parse(self) -> Result<RecoverRequest, ApiError> {
        let mut problems = Problems::default();
        let instant = |raw: &RawValue| timestamp(&json_string(raw)?);
        let since = problems.required("since", self.since.as_deref(), instant);
        let until = problems.optional("until", self.until.as_deref(), instant);
        let statuses = problems.optional("statuses", self.statuses.as_deref(), statuses);
        let dry_run = problems.optional("dry_run", self.dry_run.as_deref(), |raw| {
            serde_json::from_str::<bool>(raw.get())
                .map_err(|_| format!("must be true or false, not {}", json_kind(raw)))
        });
        let Some(since) = since else {
            return Err(problems.into_error());
        };
        problems.finish()?;
        Ok(RecoverRequest {
            since,
            until,
            statuses: statuses.unwrap_or_else(|| DEFAULT_STATUSES.to_vec()),
            dry_run: dry_run.unwrap_or(false),
        })
    }
}

/// The names `statuses` takes.
const RECOVERABLE: [&str; 5] = ["failed", "dead_letter", "skipped", "cancelled", "delivered"];

/// `until`: an RFC 3339 instant or `null` (one of two schemas rather than a `[string, null]` type,
/// so that generators keep the string's format).
fn until_schema() -> Schema {
    let instant = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
    OneOfBuilder::new()
        .item(instant)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "Deliveries created before this instant (RFC 3339), after `since`. Default (or `null`): now.",
        ))
        .into()
}

fn statuses_schema() -> Schema {
    openapi::array_of(
        schemas::one_of_strings("A recoverable status (`dead_letter` is `failed`)", &RECOVERABLE).into(),
        1..=RECOVERABLE.len(),
        true,
        "1-5 statuses (a repeated one counts once). Default `[\"failed\", \"skipped\"]`.",
    )
}

/// 1-5 recoverable statuses, each kept once.
fn statuses(raw: &RawValue) -> Result<Vec<DeliveryStatus>, String> {
    const RULE: &str = "must be an array of 1-5 of failed, dead_letter, skipped, cancelled, delivered";
    let names: Vec<String> = serde_json::from_str(raw.get()).map_err(|_| RULE.to_owned())?;
    if names.is_empty() || names.len() > 5 {
        return Err(RULE.to_owned());
    }
    let mut parsed = Vec::with_capacity(names.len());
    for name in &names {
        match DeliveryStatus::parse(name) {
            Some(DeliveryStatus::Pending) => {
                return Err(
                    "must not hold pending: a pending delivery is being delivered already".to_owned(),
                );
            }
            Some(status) if !parsed.contains(&status) => parsed.push(status),
            Some(_) => {}
            None => return Err(RULE.to_owned()),
        }
    }
    Ok(parsed)
}

/// The answer to a dry run.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoverCountOut {
    /// Deliveries that match now.
    pub count: i64,
}

/// The answer to a recovery.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryStartedOut {
    pub recovery_id: Uuid,
    /// Deliveries that matched: the recovery's `total`.
    pub count: i64,
}

/// Deliver again an endpoint's deliveries of a time window (by default the failed and skipped
/// ones), in the background.
///
/// A dry run answers how many match. Otherwise the matching deliveries are counted and the
/// recovery recorded in one transaction, and the worker fleet gives each a new chain of
/// attempts in bounded batches that survive a restart, queued below live traffic (new events
/// are delivered first). Follow it at `GET /api/endpoints/{id}/recoveries/{recovery_id}`. At
/// most 100,000 deliveries per call.
#[utoipa::path(post, path = "/api/endpoints/{id}/recover", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id (UUID)")),
    request_body = RecoverIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Dry run: the count", body = RecoverCountOut),
        (status = 202, description = "Recorded; delivered in the background", body = RecoveryStartedOut),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 409, description = "`endpoint_disabled`: enable the endpoint first (a dry run still counts)", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "`validation_failed` with `details`, or `too_many_deliveries` with `count` and `limit` (100,000)", body = ErrorBody),
        (status = 503, description = "Database unavailable (`unavailable`)", body = ErrorBody),
    ))]
pub async fn recover_endpoint(
    org: Org,
    State(state): State<AppState>,
    EndpointId(id): EndpointId,
    ApiJson(body): ApiJson<RecoverIn>,
) -> Result<Response, ApiError> {
    let request = body.parse()?;
    // A window that ends where (or before) it starts holds nothing: it counts 0, and recovers
    // nothing (a refusal would turn a request the schema allows into a 422).
    let until = request.until.unwrap_or_else(Utc::now);
    let filter = RecoveryFilter {
        endpoint_id: id,
        since: request.since,
        until,
        statuses: request.statuses,
    };
    let mut tx = state.db.begin().await?;
    let endpoint = endpoints::find(&mut tx, org.id, id)
        .await?
        .ok_or(ApiError::EndpointNotFound)?;
    if request.dry_run {
        let count = recoveries::count(&mut tx, org.id, &filter, None).await?;
        return Ok(Json(RecoverCountOut { count }).into_response());
    }
    if !endpoint.enabled() {
        return Err(ApiError::EndpointDisabled);
    }
    let recovery = match recoveries::start(&mut tx, org.id, &filter).await? {
        Started::Recovery(recovery) => recovery,
        Started::TooMany(count) => {
            return Err(ApiError::TooManyToRecover {
                count,
                limit: MAX_DELIVERIES,
            });
        }
    };
    tx.commit().await?;
    tracing::info!(org_id = %org.id, endpoint_id = %id, recovery_id = %recovery.id, total = recovery.total, "recovery started");
    Ok((
        StatusCode::ACCEPTED,
        Json(RecoveryStartedOut {
            recovery_id: recovery.id,
            count: i64::from(recovery.total),
        }),
    )
        .into_response())
}

/// A recovery's progress.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryOut {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// `running`, then `done`.
    pub status: String,
    /// Deliveries that matched when the recovery was requested.
    pub total: i32,
    /// Deliveries given a new chain so far (at most `total`; fewer at the end when some were
    /// resent or recovered otherwise meanwhile).
    pub enqueued: i32,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub statuses: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// When it was done (null while running).
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Recovery> for RecoveryOut {
    fn from(r: Recovery) -> Self {
        Self {
            id: r.id,
            endpoint_id: r.endpoint_id,
            status: r.status,
            total: r.total,
            enqueued: r.enqueued,
            since: r.since,
            until: r.until,
            statuses: r.statuses,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

/// The `{id}` and `{recovery_id}` of a recovery route: an endpoint id that is not a UUID is an
/// unknown endpoint, a recovery id that is not one an unknown recovery.
pub struct RecoveryPath {
    endpoint_id: Uuid,
    recovery_id: Option<Uuid>,
}

impl<S: Send + Sync> FromRequestParts<S> for RecoveryPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((endpoint, recovery)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::EndpointNotFound)?;
        Ok(Self {
            endpoint_id: Uuid::try_parse(&endpoint).map_err(|_| ApiError::EndpointNotFound)?,
            recovery_id: Uuid::try_parse(&recovery).ok(),
        })
    }
}

/// A recovery's progress: `running` while batches remain, then `done`.
#[utoipa::path(get, path = "/api/endpoints/{id}/recoveries/{recovery_id}", tag = "endpoints",
    params(
        ("id" = String, Path, description = "Endpoint id (UUID)"),
        ("recovery_id" = String, Path, description = "Recovery id (UUID), from `POST /api/endpoints/{id}/recover`"),
    ),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The recovery's progress", body = RecoveryOut),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's endpoint), or `recovery_not_found` (unknown, malformed, or another endpoint's recovery)", body = ErrorBody),
        (status = 503, description = "Database unavailable (`unavailable`)", body = ErrorBody),
    ))]
pub async fn get_recovery(
    org: Org,
    State(state): State<AppState>,
    path: RecoveryPath,
) -> Result<Json<RecoveryOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    if endpoints::find(&mut conn, org.id, path.endpoint_id)
        .await?
        .is_none()
    {
        return Err(ApiError::EndpointNotFound);
    }
    let Some(recovery_id) = path.recovery_id else {
        return Err(ApiError::RecoveryNotFound);
    };
    let recovery = recoveries::find(&mut conn, org.id, path.endpoint_id, recovery_id)
        .await?
        .ok_or(ApiError::RecoveryNotFound)?;
    Ok(Json(recovery.into()))
}
