//! Routes of the `portal` resource: console sessions (API.md, "Console").
//!
//! An API key creates a session and gets a link to the console with the session's one-time
//! link token in the URL fragment, which browsers never send to a server, so the token reaches
//! no access log. The console trades that token for a session token it keeps in its tab
//! (`POST /api/portal/exchange`); the link then stops working. A session reaches the `/api`
//! routes of its organisation only, ends at `expires_at` or when revoked, and a read-only one
//! cannot change anything ([`crate::auth`]). Tokens are described in [`crate::auth::session`].

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRequestParts, State},
    http::{StatusCode, request::Parts},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use triggers_shared::db::portal_sessions;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Caller, KeyHolder, session},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, OptionalApiJson, path_uuid},
    validate::{Parse, Problems, json_integer, json_kind, json_string},
};

/// Session lifetimes allowed, in seconds (a minute to a day), and the default (an hour).
pub const MIN_LIFETIME_SECS: u64 = 60;
pub const MAX_LIFETIME_SECS: u64 = 86_400;
pub const DEFAULT_LIFETIME_SECS: u64 = 3_600;
/// Live sessions an organisation may hold at once.
pub const MAX_LIVE_SESSIONS: i64 = 1_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_portal_session))
        .routes(routes!(exchange_portal_link))
        .routes(routes!(revoke_portal_session))
}

/// Optional body of `POST /api/portal/sessions`; `null` counts as absent.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct PortalSessionIn {
    /// How long the session lasts, in seconds: 60-86400, default 3600.
    #[schema(value_type = Option<u32>, minimum = 60, maximum = 86400)]
    expires_in_seconds: Option<Box<RawValue>>,
    /// A read-only session can only read (default `false`).
    #[schema(value_type = Option<bool>)]
    read_only: Option<Box<RawValue>>,
}

/// A valid session request.
pub struct PortalSessionRequest {
    pub lifetime: Duration,
    pub read_only: bool,
}

/// What an absent body asks for.
impl Default for PortalSessionRequest {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(DEFAULT_LIFETIME_SECS),
            read_only: false,
        }
    }
}

impl Parse for PortalSessionIn {
    type Valid = PortalSessionRequest;

    fn parse(self) -> Result<PortalSessionRequest, ApiError> {
        let mut problems = Problems::default();
        let lifetime = problems.optional("expires_in_seconds", self.expires_in_seconds.as_deref(), |raw| {
            json_integer(raw)
                .and_then(|secs| u64::try_from(secs).ok())
                .filter(|secs| (MIN_LIFETIME_SECS..=MAX_LIFETIME_SECS).contains(secs))
                .map(Duration::from_secs)
                .ok_or_else(|| format!("must be an integer from {MIN_LIFETIME_SECS} to {MAX_LIFETIME_SECS}"))
        });
        let read_only = problems.optional("read_only", self.read_only.as_deref(), |raw| {
            serde_json::from_str::<bool>(raw.get())
                .map_err(|_| format!("must be true or false, not {}", json_kind(raw)))
        });
        problems.finish()?;
        let default = PortalSessionRequest::default();
        Ok(PortalSessionRequest {
            lifetime: lifetime.unwrap_or(default.lifetime),
            read_only: read_only.unwrap_or(default.read_only),
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PortalSessionOut {
    /// The session's id: revoke it with `DELETE /api/portal/sessions/{id}`.
    pub id: Uuid,
    /// Opens the console signed in to this organisation. The link's token is in the fragment
    /// (`#portal=...`), which browsers do not send to servers. It works once: the console
    /// trades it for a session of its tab. Shown only here.
    pub url: String,
    pub read_only: bool,
    pub expires_at: DateTime<Utc>,
}

/// Body of `POST /api/portal/exchange`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct PortalExchangeIn {
    /// The link's token (`trg_link_...`, the fragment of the link after `#portal=`).
    #[schema(value_type = String, required = true)]
    token: Option<Box<RawValue>>,
}

impl Parse for PortalExchangeIn {
    type Valid = String;

    fn parse(self) -> Result<String, ApiError> {
        let mut problems = Problems::default();
        let token = problems.required("token", self.token.as_deref(), json_string);
        match token {
            Some(token) => Ok(token),
            None => Err(problems.into_error()),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PortalExchangeOut {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// The session's credential: send it as `Authorization: Bearer <session_token>` to the
    /// `/api` routes. Shown only here.
    pub session_token: String,
    pub read_only: bool,
    pub expires_at: DateTime<Utc>,
}

/// Create a console session and the link that opens it.
///
/// Needs an API key: a console session cannot create sessions (`403 api_key_required`). The
/// link's token is in its fragment and works once; the console trades it for a session of its
/// browser tab, which lasts until `expires_at` or until revoked. Creating a session also deletes
/// the organisation's ended ones. At most 1,000 sessions of an organisation are live at once.
#[utoipa::path(
    post, path = "/api/portal/sessions", tag = "portal",
    request_body = Option<PortalSessionIn>,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Session created; `url` opens the console", body = PortalSessionOut),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key` or `invalid_session`", body = ErrorBody),
        (status = 403, description = "`api_key_required`: a console session cannot create sessions", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed` (with `details`), or `too_many_portal_sessions` (with `limit`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_portal_session(
    KeyHolder(org): KeyHolder,
    State(state): State<AppState>,
    OptionalApiJson(body): OptionalApiJson<PortalSessionIn>,
) -> Result<(StatusCode, Json<PortalSessionOut>), ApiError> {
    let request = body.map(PortalSessionIn::parse).transpose()?.unwrap_or_default();
    let link = session::issue(session::LINK_PREFIX);
    let mut tx = state.db.begin().await?;
    portal_sessions::purge_ended(&mut tx, org.id).await?;
    if portal_sessions::count_live(&mut tx, org.id).await? >= MAX_LIVE_SESSIONS {
        return Err(ApiError::TooManyPortalSessions {
            limit: MAX_LIVE_SESSIONS,
        });
    }
    let created = portal_sessions::insert(
        &mut tx,
        org.id,
        Uuid::now_v7(),
        &link.digest,
        request.read_only,
        request.lifetime,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(session_id = %created.id, read_only = created.read_only, "portal session created");
    Ok((
        StatusCode::CREATED,
        Json(PortalSessionOut {
            id: created.id,
            url: format!("{}/console#portal={}", state.public_url, link.token),
            read_only: created.read_only,
            expires_at: created.expires_at,
        }),
    ))
}

/// Trade a portal link's token for a session token (what the console does when it opens a link).
///
/// No other credential is needed: the link's token is one. It works once and only until the
/// session expires; an unknown, used or expired token is `401 invalid_portal_link`.
#[utoipa::path(
    post, path = "/api/portal/exchange", tag = "portal",
    request_body = PortalExchangeIn,
    security(()),
    responses(
        (status = 200, description = "The session's token", body = PortalExchangeOut),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "`invalid_portal_link`: unknown, already used or expired", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `token` missing or not a string", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn exchange_portal_link(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PortalExchangeIn>,
) -> Result<Json<PortalExchangeOut>, ApiError> {
    let link = body.parse()?;
    if !session::is_well_formed(&link, session::LINK_PREFIX) {
        return Err(ApiError::InvalidPortalLink);
    }
    let issued = session::issue(session::SESSION_PREFIX);
    let mut conn = state.db.acquire().await?;
    let exchanged = portal_sessions::exchange(&mut conn, &session::digest_of(&link), &issued.digest)
        .await?
        .ok_or(ApiError::InvalidPortalLink)?;
    tracing::Span::current().record("org_id", tracing::field::display(exchanged.organization_id));
    Ok(Json(PortalExchangeOut {
        id: exchanged.id,
        organization_id: exchanged.organization_id,
        session_token: issued.token,
        read_only: exchanged.read_only,
        expires_at: exchanged.expires_at,
    }))
}

/// The `{id}` of a session route: anything but a UUID is an unknown session (`404`).
pub struct SessionId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for SessionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_uuid(parts, state)
            .await
            .map(SessionId)
            .ok_or(ApiError::PortalSessionNotFound)
    }
}

/// Revoke a console session: its next request is `401 invalid_session`, on every instance.
///
/// An API key may revoke any session of its organisation. A console session may revoke only
/// itself (signing out; a read-only session too): another id is `403 api_key_required`. An
/// unknown id, or another organisation's, is `404 portal_session_not_found`.
#[utoipa::path(
    delete, path = "/api/portal/sessions/{id}", tag = "portal",
    params(("id" = String, Path, description = "Session id (UUID)")),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`missing_api_key`, `invalid_api_key` or `invalid_session`", body = ErrorBody),
        (status = 403, description = "`api_key_required`: a console session revoking another session", body = ErrorBody),
        (status = 404, description = "`portal_session_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke_portal_session(
    caller: Caller,
    State(state): State<AppState>,
    SessionId(id): SessionId,
) -> Result<StatusCode, ApiError> {
    if caller.session.is_some_and(|own| own.id != id) {
        return Err(ApiError::ApiKeyRequired);
    }
    let mut conn = state.db.acquire().await?;
    if !portal_sessions::delete(&mut conn, caller.org.id, id).await? {
        return Err(ApiError::PortalSessionNotFound);
    }
    tracing::info!(session_id = %id, "portal session revoked");
    Ok(StatusCode::NO_CONTENT)
}
