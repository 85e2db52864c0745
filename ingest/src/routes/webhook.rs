//! Routes of the `webhook` resource: an organisation's webhook URL and its signing secret, the
//! API's first model of delivery. They manage the organisation's *default endpoint*
//! (`event_types ["*"]`, `"default": true` among its endpoints), so clients of that model work
//! unchanged next to the endpoints resource.
//!
//! A URL is checked twice here: its shape (`net::WebhookUrl`: http(s), no user-info, at most
//! 2,048 characters as given and once normalised) and where it points (`net::resolve_allowed`:
//! no internal addresses unless the operator allows them; the refusal never names an address).
//! The worker checks the resolved address again at delivery.
//!
//! Choices where API.md is silent:
//! - The URL is stored normalised (as `url::Url` prints it, e.g. `https://example.com/` for
//!   `https://EXAMPLE.com`): what was checked is exactly what the worker will call.
//! - `GET` answers `200` with `webhook_url: null` when nothing is configured.
//! - `DELETE` deletes the default endpoint, cancelling its pending deliveries (idempotent: `200`
//!   even when nothing was configured); a later configuration gets a new secret.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use triggers_shared::{db::endpoints, net::WebhookUrl, signing};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    validate::{Parse, Problems, json_string, public_target},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            set_webhook_config,
            get_webhook_config,
            delete_webhook_config
        ))
        .routes(routes!(rotate_webhook_secret))
}

/// Body of `POST /api/webhook/config`, as read; [`WebhookConfigIn::parse`] checks the URL's
/// shape, [`public_target`] where it points.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct WebhookConfigIn {
    #[schema(value_type = WebhookUrl)]
    webhook_url: Option<Box<RawValue>>,
}

impl Parse for WebhookConfigIn {
    type Valid = WebhookUrl;

    fn parse(self) -> Result<WebhookUrl, ApiError> {
        let mut problems = Problems::default();
        let url = problems.required("webhook_url", self.webhook_url.as_deref(), |raw| {
            WebhookUrl::parse(&json_string(raw)?).map_err(|rejection| rejection.to_string())
        });
        let Some(url) = url else {
            return Err(problems.into_error());
        };
        Ok(url)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookConfigOut {
    pub organization_id: Uuid,
    pub webhook_url: String,
    /// `whsec_<base64>`: created on first configuration, kept on later URL changes.
    pub signing_secret: String,
    pub updated_at: DateTime<Utc>,
    pub message: &'static str,
}

/// The current configuration, without the secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookStatusOut {
    /// `null` when no webhook is configured.
    pub webhook_url: Option<String>,
    /// When the configuration last changed; `null` if it never was.
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookDeletedOut {
    pub organization_id: Uuid,
    /// Always `null`.
    pub webhook_url: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    pub message: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretRotatedOut {
    pub organization_id: Uuid,
    /// The new `whsec_<base64>` secret; deliveries are signed with it from now on.
    pub signing_secret: String,
    pub updated_at: DateTime<Utc>,
    pub message: &'static str,
}

/// Set (or change) the webhook URL. The response carries the signing secret.
///
/// The URL is stored normalised (as the URL standard prints it: lower-case scheme and host, a
/// `/` path when none is given); the response shows the stored form. The signing secret is
/// created on the first configuration and kept on later URL changes.
#[utoipa::path(post, path = "/api/webhook/config", tag = "webhook",
    request_body = WebhookConfigIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Configured; the answer carries the signing secret", body = WebhookConfigOut),
        (status = 422, description = "`validation_failed` (the URL's shape) or `webhook_url_not_allowed` (depends on the outside world: the host is internal, resolves to an internal address, or does not resolve in time)", body = ErrorBody),
    ))]
pub async fn set_webhook_config(
    org: Org,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<WebhookConfigIn>,
) -> Result<Json<WebhookConfigOut>, ApiError> {
    let url = body.parse()?;
    public_target("webhook_url", &url, state.config.common.allow_private_webhooks).await?;
    let mut tx = state.db.begin().await?;
    let endpoint = endpoints::set_default(&mut tx, org.id, &url, &signing::generate_secret()).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org.id, endpoint_id = %endpoint.id, "webhook configured");
    Ok(Json(WebhookConfigOut {
        organization_id: org.id,
        webhook_url: endpoint.url,
        signing_secret: endpoint.signing_secret,
        updated_at: endpoint.updated_at,
        message: "Webhook configured. Verify deliveries with the signing secret (Standard Webhooks).",
    }))
}

/// The webhook URL and when it last changed (never the secret).
#[utoipa::path(get, path = "/api/webhook/config", tag = "webhook",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "`webhook_url` is null when none is configured", body = WebhookStatusOut),
    ))]
pub async fn get_webhook_config(
    org: Org,
    State(state): State<AppState>,
) -> Result<Json<WebhookStatusOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let endpoint = endpoints::find_default(&mut conn, org.id).await?;
    Ok(Json(WebhookStatusOut {
        updated_at: endpoint.as_ref().map(|e| e.updated_at),
        webhook_url: endpoint.map(|e| e.url),
    }))
}

/// Remove the webhook (the default endpoint, with its signing secret); its pending deliveries
/// are cancelled. Events no endpoint matches then wait in the inbox for pull consumers.
/// Idempotent.
#[utoipa::path(delete, path = "/api/webhook/config", tag = "webhook",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Removed (or there was nothing to remove)", body = WebhookDeletedOut),
    ))]
pub async fn delete_webhook_config(
    org: Org,
    State(state): State<AppState>,
) -> Result<Json<WebhookDeletedOut>, ApiError> {
    let mut tx = state.db.begin().await?;
    let existed = endpoints::delete_default(&mut tx, org.id).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org.id, existed, "webhook removed");
    Ok(Json(WebhookDeletedOut {
        organization_id: org.id,
        webhook_url: None,
        updated_at: Some(Utc::now()),
        message: "Webhook removed. Events wait in the inbox for pull consumers.",
    }))
}

/// Replace the signing secret. The old one stops being used at once.
#[utoipa::path(post, path = "/api/webhook/secret/rotate", tag = "webhook",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The new signing secret", body = SecretRotatedOut),
        (status = 404, description = "No webhook is configured (`webhook_not_configured`)", body = ErrorBody),
    ))]
pub async fn rotate_webhook_secret(
    org: Org,
    State(state): State<AppState>,
) -> Result<Json<SecretRotatedOut>, ApiError> {
    let mut tx = state.db.begin().await?;
    let endpoint = endpoints::rotate_default_secret(&mut tx, org.id, &signing::generate_secret())
        .await?
        .ok_or(ApiError::WebhookNotConfigured)?;
    tx.commit().await?;
    tracing::info!(org_id = %org.id, "webhook signing secret rotated");
    Ok(Json(SecretRotatedOut {
        organization_id: org.id,
        signing_secret: endpoint.signing_secret,
        updated_at: endpoint.updated_at,
        message: "Signing secret rotated. Deliveries are signed with the new secret from now on.",
    }))
}
