//! Routes of the `keys` resource: creating an organisation with its first key, reading the
//! organisation, and rotating its key.
//!
//! A key is shown once, in the response that creates it; only its argon2id hash and public
//! prefix are stored. Rotation retires every active key of the organisation in the same
//! transaction that stores the new one and announces the change (`pg_notify`), so with a grace
//! period of 0 the old key stops on every ingest instance as soon as the rotation commits.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use triggers_shared::{
    db::{api_keys, endpoints, key_issuance, organizations},
    models::{OrganizationName, Tier},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Admin, INVALIDATION_CHANNEL, KeyHolder, Org},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, OptionalApiJson},
    openapi,
    validate::{MAX_GRACE_PERIOD_SECS, Parse, Problems, grace_period, json_kind, json_string},
};

/// Shown with every new key.
pub const KEY_WARNING: &str = "Store this API key securely; it will not be shown again.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generate_key))
        .routes(routes!(get_keys))
        .routes(routes!(rotate_key))
}

/// Body of `POST /api/keys/generate`, as read: each field raw JSON until [`GenerateKeyIn::parse`]
/// checks it, so a bad request lists every problem in `details`. `null` counts as absent.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct GenerateKeyIn {
    #[schema(value_type = OrganizationName)]
    organization_name: Option<Box<RawValue>>,
    /// Default `free`.
    #[schema(value_type = Option<Tier>)]
    tier: Option<Box<RawValue>>,
}

impl Parse for GenerateKeyIn {
    type Valid = (OrganizationName, Tier);

    fn parse(self) -> Result<(OrganizationName, Tier), ApiError> {
        let mut problems = Problems::default();
        let name = problems.required("organization_name", self.organization_name.as_deref(), |raw| {
            OrganizationName::parse(&json_string(raw)?)
        });
        let tier = problems.optional("tier", self.tier.as_deref(), |raw| {
            const TIERS: &str = "must be one of free, pro, business, enterprise";
            let text = json_string(raw).map_err(|_| format!("{TIERS} (a string), not {}", json_kind(raw)))?;
            Tier::parse(&text).ok_or_else(|| TIERS.to_owned())
        });
        let Some(name) = name else {
            return Err(problems.into_error());
        };
        problems.finish()?;
        Ok((name, tier.unwrap_or_default()))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GenerateKeyOut {
    pub organization_id: Uuid,
    pub organization_name: String,
    /// The key (`trg_live_...`). Shown only here.
    pub api_key: String,
    pub tier: Tier,
    pub rate_limit_per_minute: i32,
    pub created_at: DateTime<Utc>,
    pub warning: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeysOut {
    pub organization_id: Uuid,
    pub organization_name: String,
    pub tier: Tier,
    pub rate_limit_per_minute: i32,
    /// The default endpoint's URL (what `/api/webhook/config` manages); `null` when there is
    /// none.
    pub webhook_url: Option<String>,
    /// The public prefix of the newest active key (not a secret).
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Optional body of `POST /api/keys/rotate`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RotateKeyIn {
    #[schema(schema_with = grace_period_schema)]
    grace_period_seconds: Option<Box<RawValue>>,
}

fn grace_period_schema() -> utoipa::openapi::Schema {
    openapi::integer_in(
        0..=MAX_GRACE_PERIOD_SECS,
        true,
        "How long the previous key keeps working, in seconds (default 0: it stops at once, on \
         every instance).",
    )
}

impl Parse for RotateKeyIn {
    type Valid = Duration;

    fn parse(self) -> Result<Duration, ApiError> {
        let mut problems = Problems::default();
        let grace = problems.optional(
            "grace_period_seconds",
            self.grace_period_seconds.as_deref(),
            grace_period,
        );
        problems.finish()?;
        Ok(grace.unwrap_or_default())
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotateKeyOut {
    pub organization_id: Uuid,
    pub organization_name: String,
    /// The new key. Shown only here.
    pub api_key: String,
    pub rotated_at: DateTime<Utc>,
    /// When the previous key stops (stopped) working: `rotated_at` plus the grace period, so
    /// equal to `rotated_at` for a grace period of 0. Never null.
    pub previous_key_expires_at: DateTime<Utc>,
    pub warning: &'static str,
}

/// Create an organisation and its first API key.
///
/// Requires the admin token (`Authorization: Bearer <token>` or `X-Admin-Token`) when the
/// operator has set `TRIGGERS_ADMIN_TOKEN`; open otherwise. The key is shown only in this response.
#[utoipa::path(post, path = "/api/keys/generate", tag = "keys",
    request_body = GenerateKeyIn,
    security((), ("admin_token" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Organisation and key created", body = GenerateKeyOut),
        (status = 401, description = "Admin token missing or wrong (`admin_token_required`)", body = ErrorBody),
            ))]
pub async fn generate_key(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<GenerateKeyIn>,
) -> Result<(StatusCode, Json<GenerateKeyOut>), ApiError> {
    let (name, tier) = body.parse()?;
    let (org, key) = key_issuance::create_organization(&state.db, &name, tier).await?;
    tracing::info!(org_id = %org.id, tier = tier.as_str(), "organisation created");
    Ok((
        StatusCode::CREATED,
        Json(GenerateKeyOut {
            organization_id: org.id,
            organization_name: org.name,
            api_key: key.key,
            tier,
            rate_limit_per_minute: org.rate_limit_per_minute,
            created_at: org.created_at,
            warning: KEY_WARNING,
        }),
    ))
}

/// The authenticated organisation and the public prefix of its key (never the key).
#[utoipa::path(get, path = "/api/keys", tag = "keys",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The organisation and its key's public prefix", body = KeysOut),
    ))]
pub async fn get_keys(org: Org, State(state): State<AppState>) -> Result<Json<KeysOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = organizations::get(&mut conn, org.id)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    let key = api_keys::newest_active(&mut conn, org.id)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    let webhook = endpoints::find_default(&mut conn, org.id).await?;
    Ok(Json(KeysOut {
        organization_id: row.id,
        organization_name: row.name,
        tier: row.tier,
        rate_limit_per_minute: row.rate_limit_per_minute,
        webhook_url: webhook.map(|w| w.url),
        key_prefix: key.prefix,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
}

/// Issue a new key and retire the current one(s).
///
/// With `grace_period_seconds` 0 (the default, also for an empty body) the previous key stops
/// at once on every ingest instance; with a grace period both keys work until it ends. Every
/// key active before the rotation is retired, including one still in an earlier grace period
/// (whose expiry is never extended).
#[utoipa::path(post, path = "/api/keys/rotate", tag = "keys",
    request_body = Option<RotateKeyIn>,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The new key (shown only here) and when the previous one stops working", body = RotateKeyOut),
        (status = 403, description = "`api_key_required`: a console session cannot rotate keys", body = ErrorBody),
    ))]
pub async fn rotate_key(
    KeyHolder(org): KeyHolder,
    State(state): State<AppState>,
    OptionalApiJson(body): OptionalApiJson<RotateKeyIn>,
) -> Result<Json<RotateKeyOut>, ApiError> {
    let grace = body.map(RotateKeyIn::parse).transpose()?.unwrap_or_default();
    let rotation = key_issuance::rotate(&state.db, org.id, grace, INVALIDATION_CHANNEL)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    // Our own listener hears the notification too, but only after this response could have
    // reached the client; drop our entries now.
    state.auth.invalidate_org(org.id);
    tracing::info!(org_id = %org.id, grace_secs = grace.as_secs(), "API key rotated");
    Ok(Json(RotateKeyOut {
        organization_id: rotation.organization.id,
        organization_name: rotation.organization.name,
        api_key: rotation.key.key,
        rotated_at: rotation.retired.rotated_at,
        previous_key_expires_at: rotation.retired.expires_at,
        warning: KEY_WARNING,
    }))
}
