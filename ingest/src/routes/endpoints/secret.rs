//! `POST /api/endpoints/{id}/secret/rotate`: a new signing secret, with the current one kept
//! valid for a grace period (`db::endpoints::rotate_secret`), so receivers can switch without a
//! flag day: until the grace ends, every request carries one signature per valid secret.
//!
//! Choices where API.md is silent: an absent or empty body is the default grace (86,400 s); at
//! most 5 secrets are valid at once (the new one and 4 in their grace period), and a rotation
//! that would make a 6th valid is refused (`409 too_many_secrets`, with the time the oldest
//! expires as `next_expires_at`) rather than cutting a secret short that receivers may still
//! hold; a rotation with `grace_period_seconds: 0` always works. Expired secrets are dropped.

use std::time::Duration;

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use triggers_shared::{
    db::endpoints::{self, MAX_VALID_SECRETS, Rotated},
    signing,
};

use super::EndpointId;
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::OptionalApiJson,
    validate::{Parse, Problems, grace_period},
};

/// How long the previous secret stays valid when the body does not say (1 day).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// Optional body of `POST /api/endpoints/{id}/secret/rotate`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RotateSecretIn {
    /// How long the current secret keeps signing beside the new one, in seconds (0-604800,
    /// default 86400; 0: it stops at once).
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 604800)]
    grace_period_seconds: Option<Box<RawValue>>,
}

impl Parse for RotateSecretIn {
    type Valid = Duration;

    fn parse(self) -> Result<Duration, ApiError> {
        let mut problems = Problems::default();
        let grace = problems.optional(
            "grace_period_seconds",
            self.grace_period_seconds.as_deref(),
            grace_period,
        );
        problems.finish()?;
        Ok(grace.unwrap_or(DEFAULT_GRACE))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointSecretRotatedOut {
    /// The new secret (`whsec_<base64>`), shown only here.
    pub signing_secret: String,
    /// Until when the previous secret still signs (the rotation's time for a grace of 0).
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// Rotate an endpoint's signing secret, keeping the current one valid for a grace period.
///
/// Until `previous_secret_expires_at`, every request to the endpoint carries one signature per
/// valid secret, space-separated in `webhook-signature` (`v1,<new> v1,<previous>`), so a
/// receiver holding either secret accepts it; afterwards only the new secret signs. At most 5
/// secrets are valid at once: a rotation with a grace period while 4 previous secrets are
/// still valid is `409 too_many_secrets` (nothing changes); one with `grace_period_seconds: 0`
/// always works.
#[utoipa::path(post, path = "/api/endpoints/{id}/secret/rotate", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id (UUID)")),
    request_body = Option<RotateSecretIn>,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The new secret (shown this once), and until when the previous ones still sign", body = EndpointSecretRotatedOut),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 409, description = "`too_many_secrets` with `limit` (5) and `next_expires_at` (depends on state: 4 previous secrets are still valid)", body = ErrorBody),
        (status = 422, description = "`validation_failed` (a bad `grace_period_seconds`)", body = ErrorBody),
        (status = 503, description = "Database unavailable (`unavailable`)", body = ErrorBody),
    ))]
pub async fn rotate_endpoint_secret(
    org: Org,
    State(state): State<AppState>,
    EndpointId(id): EndpointId,
    OptionalApiJson(body): OptionalApiJson<RotateSecretIn>,
) -> Result<Json<EndpointSecretRotatedOut>, ApiError> {
    let grace = match body {
        Some(body) => body.parse()?,
        None => DEFAULT_GRACE,
    };
    let mut conn = state.db.acquire().await?;
    let secret = signing::generate_secret();
    match endpoints::rotate_secret(&mut conn, org.id, id, &secret, grace).await? {
        Rotated::Rotated {
            endpoint,
            previous_expires_at,
        } => {
            tracing::info!(org_id = %org.id, endpoint_id = %id, grace_secs = grace.as_secs(), "endpoint secret rotated");
            Ok(Json(EndpointSecretRotatedOut {
                signing_secret: endpoint.signing_secret,
                previous_secret_expires_at: previous_expires_at,
            }))
        }
        Rotated::NotFound => Err(ApiError::EndpointNotFound),
        Rotated::TooManySecrets { next_expires_at } => Err(ApiError::TooManySecrets {
            limit: MAX_VALID_SECRETS,
            next_expires_at,
        }),
    }
}
