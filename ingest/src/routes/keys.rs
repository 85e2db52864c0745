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
use serde_json::Value;
use triggers_shared::{
    apikey::{self, GeneratedKey},
    db::{self, api_keys, organizations},
    models::Tier,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Admin, INVALIDATION_CHANNEL, Org},
    error::{ApiError, ErrorBody, FieldError},
    extract::{ApiJson, OptionalApiJson},
};

/// Shown with every new key.
pub const KEY_WARNING: &str = "Store this API key securely; it will not be shown again.";
/// The longest grace period a rotation may give the previous key (7 days).
pub const MAX_GRACE_PERIOD_SECS: u64 = 604_800;
const MAX_NAME_CHARS: usize = 255;
/// Attempts at finding an unused key prefix (48 random bits: a second attempt is already rare).
const KEY_ATTEMPTS: usize = 3;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generate_key))
        .routes(routes!(get_keys))
        .routes(routes!(rotate_key))
}

/// A plan, as the API spells it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    Free,
    Pro,
    Business,
    Enterprise,
}

/// Body of `POST /api/keys/generate`. Read as a JSON object whose fields are then checked one
/// by one, so a bad request lists every problem in `details`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(from = "JsonObject")]
pub struct GenerateKeyIn {
    /// 1-255 characters, not only whitespace, no control characters; stored as given.
    #[schema(value_type = String, min_length = 1, max_length = 255, example = "Acme Inc")]
    organization_name: Option<Value>,
    /// Default `free`.
    #[schema(value_type = Option<TierName>)]
    tier: Option<Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GenerateKeyOut {
    pub organization_id: Uuid,
    pub organization_name: String,
    /// The key (`trg_live_...`). Shown only here.
    pub api_key: String,
    #[schema(value_type = TierName)]
    pub tier: &'static str,
    pub rate_limit_per_minute: i32,
    pub created_at: DateTime<Utc>,
    pub warning: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeysOut {
    pub organization_id: Uuid,
    pub organization_name: String,
    #[schema(value_type = TierName)]
    pub tier: String,
    pub rate_limit_per_minute: i32,
    /// `null` when no webhook is configured.
    pub webhook_url: Option<String>,
    /// The public prefix of the newest active key (not a secret).
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Optional body of `POST /api/keys/rotate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(from = "JsonObject")]
pub struct RotateKeyIn {
    /// How long the previous key keeps working, in seconds (0-604800, default 0: it stops at
    /// once, on every instance).
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 604800)]
    grace_period_seconds: Option<Value>,
}

impl From<JsonObject> for GenerateKeyIn {
    fn from(mut body: JsonObject) -> Self {
        Self {
            organization_name: take(&mut body, "organization_name"),
            tier: take(&mut body, "tier"),
        }
    }
}

impl From<JsonObject> for RotateKeyIn {
    fn from(mut body: JsonObject) -> Self {
        Self {
            grace_period_seconds: take(&mut body, "grace_period_seconds"),
        }
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
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong (`admin_token_required`)", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid fields (`validation_failed`, with `details`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
pub async fn generate_key(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<GenerateKeyIn>,
) -> Result<(StatusCode, Json<GenerateKeyOut>), ApiError> {
    let (name, tier) = body.validate()?;
    let org_id = Uuid::now_v7();
    for attempt in 1..=KEY_ATTEMPTS {
        let key = fresh_key().await?;
        let mut tx = state.db.begin().await?;
        let org = organizations::insert(&mut tx, org_id, &name, tier).await?;
        match api_keys::insert(&mut tx, Uuid::now_v7(), org_id, &key.prefix, &key.hash).await {
            Err(e) if db::is_unique_violation(&e) && attempt < KEY_ATTEMPTS => continue,
            inserted => inserted?,
        };
        tx.commit().await?;
        tracing::info!(org_id = %org.id, tier = tier.as_str(), "organisation created");
        return Ok((
            StatusCode::CREATED,
            Json(GenerateKeyOut {
                organization_id: org.id,
                organization_name: org.name,
                api_key: key.key,
                tier: tier.as_str(),
                rate_limit_per_minute: org.rate_limit_per_minute,
                created_at: org.created_at,
                warning: KEY_WARNING,
            }),
        ));
    }
    Err(ApiError::internal(anyhow::anyhow!("no free key prefix")))
}

/// The authenticated organisation and the public prefix of its key (never the key).
#[utoipa::path(get, path = "/api/keys", tag = "keys",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, body = KeysOut),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
pub async fn get_keys(org: Org, State(state): State<AppState>) -> Result<Json<KeysOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = organizations::get(&mut conn, org.id)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    let key = api_keys::newest_active(&mut conn, org.id)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    Ok(Json(KeysOut {
        organization_id: row.id,
        organization_name: row.name,
        tier: row.tier,
        rate_limit_per_minute: row.rate_limit_per_minute,
        webhook_url: row.webhook_url,
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
        (status = 200, body = RotateKeyOut),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid `grace_period_seconds`", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
pub async fn rotate_key(
    org: Org,
    State(state): State<AppState>,
    OptionalApiJson(body): OptionalApiJson<RotateKeyIn>,
) -> Result<Json<RotateKeyOut>, ApiError> {
    let grace = body.map(RotateKeyIn::validate).transpose()?.unwrap_or_default();
    for attempt in 1..=KEY_ATTEMPTS {
        let key = fresh_key().await?;
        let mut tx = state.db.begin().await?;
        // The row lock serialises rotations of one organisation.
        let current = organizations::get_for_update(&mut tx, org.id)
            .await?
            .ok_or(ApiError::InvalidApiKey)?;
        let retired = api_keys::retire_active(&mut tx, org.id, grace).await?;
        match api_keys::insert(&mut tx, Uuid::now_v7(), org.id, &key.prefix, &key.hash).await {
            Err(e) if db::is_unique_violation(&e) && attempt < KEY_ATTEMPTS => continue,
            inserted => inserted?,
        };
        organizations::touch(&mut tx, org.id).await?;
        api_keys::notify_change(&mut tx, INVALIDATION_CHANNEL, org.id).await?;
        tx.commit().await?;
        // Our own listener hears the notification too, but only after this response could
        // have reached the client; drop our entries now.
        state.auth.invalidate_org(org.id);
        tracing::info!(org_id = %org.id, grace_secs = grace.as_secs(), "API key rotated");
        return Ok(Json(RotateKeyOut {
            organization_id: current.id,
            organization_name: current.name,
            api_key: key.key,
            rotated_at: retired.rotated_at,
            previous_key_expires_at: retired.expires_at,
            warning: KEY_WARNING,
        }));
    }
    Err(ApiError::internal(anyhow::anyhow!("no free key prefix")))
}

/// A new key and its hash (argon2: on the process's one hash pool).
async fn fresh_key() -> Result<GeneratedKey, ApiError> {
    apikey::generate().await.map_err(ApiError::internal)
}

impl GenerateKeyIn {
    fn validate(self) -> Result<(String, Tier), ApiError> {
        let mut problems = Vec::new();
        let name = match self.organization_name {
            None => {
                problems.push(FieldError::new("organization_name", "is required"));
                None
            }
            Some(Value::String(name)) => match name_problem(&name) {
                None => Some(name),
                Some(problem) => {
                    problems.push(FieldError::new("organization_name", problem));
                    None
                }
            },
            Some(other) => {
                problems.push(FieldError::new(
                    "organization_name",
                    format!("must be a string, not {}", json_kind(&other)),
                ));
                None
            }
        };
        const TIERS: &str = "must be one of free, pro, business, enterprise";
        let tier = match self.tier {
            None => Some(Tier::default()),
            Some(Value::String(tier)) => {
                let parsed = Tier::parse(&tier);
                if parsed.is_none() {
                    problems.push(FieldError::new("tier", TIERS));
                }
                parsed
            }
            Some(other) => {
                problems.push(FieldError::new(
                    "tier",
                    format!("{TIERS} (a string), not {}", json_kind(&other)),
                ));
                None
            }
        };
        match (name, tier) {
            (Some(name), Some(tier)) if problems.is_empty() => Ok((name, tier)),
            _ => Err(ApiError::Validation(problems)),
        }
    }
}

impl RotateKeyIn {
    fn validate(self) -> Result<Duration, ApiError> {
        let problem = format!("must be an integer from 0 to {MAX_GRACE_PERIOD_SECS}");
        match self.grace_period_seconds {
            None => Ok(Duration::ZERO),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|secs| *secs <= MAX_GRACE_PERIOD_SECS)
                .map(Duration::from_secs)
                .ok_or_else(|| ApiError::invalid("grace_period_seconds", problem)),
            Some(_) => Err(ApiError::invalid("grace_period_seconds", problem)),
        }
    }
}

/// Why an organisation name is refused, if it is. Control characters are refused because
/// they are invisible in every place the name is shown (and Postgres cannot store NUL).
fn name_problem(name: &str) -> Option<String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Some(format!(
            "must be 1 to {MAX_NAME_CHARS} characters long (got {chars})"
        ));
    }
    if name.trim().is_empty() {
        return Some("must not be only whitespace".into());
    }
    if name.chars().any(char::is_control) {
        return Some("must not contain control characters".into());
    }
    None
}

/// A request body read as a JSON object: deriving `Deserialize` on a struct would also accept a
/// JSON array (`["Acme", "pro"]`), which no client means.
pub(crate) type JsonObject = serde_json::Map<String, Value>;

/// A field of a body; `null` counts as absent.
pub(crate) fn take(body: &mut JsonObject, field: &str) -> Option<Value> {
    body.remove(field).filter(|v| !v.is_null())
}

/// The JSON type of a value, for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
