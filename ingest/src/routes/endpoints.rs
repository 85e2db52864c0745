//! Routes of the `endpoints` resource: an organisation's delivery destinations, each subscribed
//! to the event types it wants (`POST/GET /api/endpoints`, `GET/PATCH/DELETE
//! /api/endpoints/{id}`).
//!
//! Bodies are parsed by [`validate`]; the rules of each value live in `triggers_shared::models`,
//! every statement in `triggers_shared::db::endpoints` (whose changes are announced to ingest's
//! endpoint cache). A URL is checked as `webhook_url` is: its shape, then where it points.
//!
//! Choices where API.md is silent:
//! - Unknown body fields are ignored; `null` counts as absent, except in a PATCH's
//!   `rate_limit_per_second`, where it removes the limit.
//! - A repeated pattern in `event_types` is kept once (the first occurrence); the limit of 100
//!   counts the patterns as given.
//! - The value of a header whose name contains `auth`, `token`, `secret`, `key`, `password`,
//!   `passwd`, `cookie`, `signature`, `session` or `credential` (ignoring case) is shown as
//!   `********`. PATCH `headers` replaces the whole set; `********` as the value of such a header
//!   keeps the value stored under that name (ignoring case), so a read's `headers` can be sent
//!   back unchanged; with nothing stored under that name it is `422`.
//! - `enabled: false` sets `disabled_reason` to `manual` (also over `failing`).
//! - Every PATCH, even `{}`, sets `updated_at`.
//! - `201` carries `Location: /api/endpoints/{id}`; `too_many_endpoints` carries `limit`.
//! - The list is oldest first (ids are UUID v7); `next_cursor` is present only when `has_more`.

pub mod deliveries;
pub mod recover;
pub mod resend;
pub mod secret;
pub mod stats;
mod validate;

use axum::{
    Json,
    extract::{FromRequestParts, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use triggers_shared::{
    db::endpoints::{self, Created, Updated},
    models::{DisabledReason, Endpoint, EventTypes, masked_without_stored_value_message},
    signing,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub use deliveries::{EndpointDeliveriesOut, EndpointDeliveriesQuery, EndpointDeliveryOut};
pub use validate::{EndpointIn, EndpointPatchIn, EndpointsQuery};

use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiQuery, path_uuid},
    validate::{Parse, public_target},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(deliveries::list_endpoint_deliveries))
        .routes(routes!(secret::rotate_endpoint_secret))
        .routes(routes!(resend::resend_delivery))
        .routes(routes!(recover::recover_endpoint))
        .routes(routes!(recover::get_recovery))
        .routes(routes!(stats::get_endpoint_stats))
}

/// An endpoint as every answer shows it (never its secret; sensitive header values masked).
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointOut {
    pub id: Uuid,
    /// Stored normalised.
    pub url: String,
    pub description: String,
    #[schema(value_type = Vec<String>)]
    pub event_types: EventTypes,
    /// `false` exactly when `disabled_reason` is set.
    pub enabled: bool,
    /// `null` while enabled; `manual` (a client disabled it) or `failing`.
    pub disabled_reason: Option<DisabledReason>,
    /// Custom request headers. The value of a header whose name contains `auth`, `token`,
    /// `secret`, `key`, `password`, `passwd`, `cookie`, `signature`, `session` or `credential`
    /// (ignoring case) is shown as `********`; sent back as it is in a PATCH, it keeps the stored
    /// value.
    pub headers: BTreeMap<String, String>,
    pub rate_limit_per_second: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The organisation's default endpoint, which `/api/webhook/config` manages.
    #[serde(rename = "default")]
    pub is_default: bool,
}

impl From<Endpoint> for EndpointOut {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            enabled: e.enabled(),
            headers: e.headers.masked(),
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            disabled_reason: e.disabled_reason,
            rate_limit_per_second: e.rate_limit_per_second,
            created_at: e.created_at,
            updated_at: e.updated_at,
            is_default: e.is_default,
        }
    }
}

/// A new endpoint, with its signing secret (shown only here and on rotation).
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointCreatedOut {
    #[serde(flatten)]
    pub endpoint: EndpointOut,
    /// `whsec_<base64>`: verify this endpoint's deliveries with it (Standard Webhooks).
    pub signing_secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointsPagination {
    pub limit: i64,
    /// More endpoints follow: pass `next_cursor` as `cursor`.
    pub has_more: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointListOut {
    pub endpoints: Vec<EndpointOut>,
    pub pagination: EndpointsPagination,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The `{id}` of an endpoint route. Anything that is not a UUID is an unknown endpoint: `404
/// endpoint_not_found`, as an unknown or another organisation's id.
pub struct EndpointId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for EndpointId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_uuid(parts, state)
            .await
            .map(EndpointId)
            .ok_or(ApiError::EndpointNotFound)
    }
}

/// Create an endpoint. The answer carries its signing secret, shown only here.
///
/// An organisation may have up to `TRIGGERS_MAX_ENDPOINTS_PER_ORG` endpoints (default 50),
/// the default endpoint included; concurrent creates cannot go over it. Unknown fields are
/// ignored; `null` counts as absent.
#[utoipa::path(post, path = "/api/endpoints", tag = "endpoints",
    request_body = EndpointIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Created; the answer carries the signing secret, shown only here", body = EndpointCreatedOut, headers(
            ("Location" = String, description = "`/api/endpoints/{id}`"),
        ), links(
            ("get" = (operation_id = "get_endpoint", parameters(("id" = "$response.body#/id")))),
            ("update" = (operation_id = "update_endpoint", parameters(("id" = "$response.body#/id")))),
            ("delete" = (operation_id = "delete_endpoint", parameters(("id" = "$response.body#/id")))),
            ("deliveries" = (operation_id = "list_endpoint_deliveries", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 422, description = "`validation_failed` with `details` naming each bad field (`event_types[1]`, `headers.Host`), `webhook_url_not_allowed` (depends on the outside world: the host is internal, resolves to an internal address, or does not resolve in time), or `too_many_endpoints` with `limit` (depends on state: the organisation already has `TRIGGERS_MAX_ENDPOINTS_PER_ORG` endpoints)", body = ErrorBody),
    ))]
pub async fn create_endpoint(
    org: Org,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EndpointIn>,
) -> Result<Response, ApiError> {
    let new = body.parse()?;
    public_target("url", &new.url, state.config.common.allow_private_webhooks).await?;
    let cap = state.config.max_endpoints_per_org;
    let mut conn = state.db.acquire().await?;
    let secret = signing::generate_secret();
    let endpoint = match endpoints::create(&mut conn, org.id, i64::from(cap), &new, &secret, false).await? {
        Created::Endpoint(endpoint) => endpoint,
        Created::OverCap => return Err(ApiError::TooManyEndpoints { limit: cap }),
    };
    tracing::info!(org_id = %org.id, endpoint_id = %endpoint.id, "endpoint created");
    let id = endpoint.id;
    let mut response = (
        StatusCode::CREATED,
        Json(EndpointCreatedOut {
            signing_secret: endpoint.signing_secret.clone(),
            endpoint: endpoint.into(),
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/endpoints/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List your endpoints, oldest first.
///
/// Page with `cursor` = the previous page's `next_cursor` (present only while `has_more` is
/// true): every endpoint that existed when paging began is returned once, in order.
#[utoipa::path(get, path = "/api/endpoints", tag = "endpoints",
    params(EndpointsQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of endpoints, oldest first", body = EndpointListOut),
        (status = 422, description = "`validation_failed`: a bad `limit` or `cursor`, or a parameter (name or value) holding NUL", body = ErrorBody),
    ))]
pub async fn list_endpoints(
    org: Org,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EndpointsQuery>,
) -> Result<Json<EndpointListOut>, ApiError> {
    let page = query.parse()?;
    let mut conn = state.db.acquire().await?;
    let found = endpoints::list(&mut conn, org.id, page.after, page.limit).await?;
    let next_cursor = found
        .endpoints
        .last()
        .filter(|_| found.has_more)
        .map(|e| validate::encode_cursor(e.id));
    Ok(Json(EndpointListOut {
        endpoints: found.endpoints.into_iter().map(EndpointOut::from).collect(),
        pagination: EndpointsPagination {
            limit: page.limit,
            has_more: found.has_more,
        },
        next_cursor,
    }))
}

/// Fetch one of your endpoints (without its secret).
#[utoipa::path(get, path = "/api/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id (UUID)")),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint, without its secret", body = EndpointOut),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
    ))]
pub async fn get_endpoint(
    org: Org,
    State(state): State<AppState>,
    EndpointId(id): EndpointId,
) -> Result<Json<EndpointOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let endpoint = endpoints::find(&mut conn, org.id, id)
        .await?
        .ok_or(ApiError::EndpointNotFound)?;
    Ok(Json(endpoint.into()))
}

/// Change any of an endpoint's fields; absent fields are left as they are (`{}` is fine).
///
/// `enabled: true` clears `disabled_reason`; `enabled: false` sets it to `manual`. `headers`
/// replaces the whole set: send a masked value (`********`) back as it is to keep the stored
/// one. `rate_limit_per_second: null` removes the limit. The signing secret is kept.
#[utoipa::path(patch, path = "/api/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id (UUID)")),
    request_body = EndpointPatchIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint as changed", body = EndpointOut),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
        (status = 422, description = "`validation_failed` with `details` naming each bad field, including a masked header value (`********`) with nothing stored under its name (depends on state); or `webhook_url_not_allowed` (depends on the outside world, as for `POST`)", body = ErrorBody),
    ))]
pub async fn update_endpoint(
    org: Org,
    State(state): State<AppState>,
    EndpointId(id): EndpointId,
    ApiJson(body): ApiJson<EndpointPatchIn>,
) -> Result<Json<EndpointOut>, ApiError> {
    let patch = body.parse()?;
    if let Some(url) = &patch.url {
        public_target("url", url, state.config.common.allow_private_webhooks).await?;
    }
    let mut conn = state.db.acquire().await?;
    match endpoints::update(&mut conn, org.id, id, patch).await? {
        Updated::Endpoint(endpoint) => {
            tracing::info!(org_id = %org.id, endpoint_id = %id, "endpoint updated");
            Ok(Json(endpoint.into()))
        }
        Updated::NotFound => Err(ApiError::EndpointNotFound),
        Updated::MaskedWithoutStoredValue(name) => Err(ApiError::invalid(
            format!("headers.{name}"),
            masked_without_stored_value_message(),
        )),
    }
}

/// Delete one of your endpoints. Nothing more is delivered to it.
#[utoipa::path(delete, path = "/api/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id (UUID)")),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "Deleted; its pending deliveries are cancelled"),
        (status = 404, description = "`endpoint_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
    ))]
pub async fn delete_endpoint(
    org: Org,
    State(state): State<AppState>,
    EndpointId(id): EndpointId,
) -> Result<StatusCode, ApiError> {
    let mut conn = state.db.acquire().await?;
    if !endpoints::delete(&mut conn, org.id, id).await? {
        return Err(ApiError::EndpointNotFound);
    }
    tracing::info!(org_id = %org.id, endpoint_id = %id, "endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}
