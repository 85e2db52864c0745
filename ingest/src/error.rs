//! The one error type of the HTTP API. Every rejection becomes the JSON body of API.md:
//! `{"error": "<sentence>", "code": "<stable_code>", ...extra}`. 5xx bodies stay generic; the
//! cause is logged (with the request's span: request id, organisation).

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use triggers_shared::models::DedupId;
use uuid::Uuid;

/// One problem with one field of a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field (`payload`, `type`, `event_ids[3]`, or `body`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The JSON error body of every refusal, as [`ApiError::into_response`] writes it: `error` and
/// `code` always, and the members some codes add. Other members may be added over time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A human sentence.
    pub error: String,
    /// A stable snake_case code.
    #[schema(examples("validation_failed"))]
    pub code: String,
    /// `validation_failed`: every bad field, in the order found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
    /// `payload_too_large`: the limit the body or payload went over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// `rate_limited`: events per minute; `too_many_endpoints`: endpoints per organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `rate_limited`: always `1 minute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// `rate_limited` and `unavailable`: seconds to wait (also the `Retry-After` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// `duplicate_event`: the `dedup_id` sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_id: Option<String>,
    /// `duplicate_event`: the event first accepted with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing API key: send it in the X-API-Key header")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("this route requires the admin token")]
    AdminTokenRequired,
    /// A console session token that is expired, revoked, unknown or malformed.
    #[error("the console session has ended (expired or revoked): sign in again")]
    InvalidSession,
    #[error("this console session is read-only: it cannot change anything")]
    ReadOnlySession,
    #[error("this route needs an API key: a console session cannot manage API keys or portal sessions")]
    ApiKeyRequired,
    #[error("this portal link is invalid, expired or already used: ask for a new one")]
    InvalidPortalLink,
    #[error("portal session not found")]
    PortalSessionNotFound,
    #[error("an organisation may have at most {limit} live portal sessions: revoke some or let them expire")]
    TooManyPortalSessions { limit: i64 },
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    #[error("malformed JSON: {0}")]
    InvalidJson(String),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("payload exceeds the limit of {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    /// Passed validation, but the database refused to store the event's data (a check
    /// validation lacks; the cause is logged by the batcher).
    #[error("the database could not store this event's payload")]
    PayloadNotStorable,
    #[error("request body exceeds the limit of {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("event not found")]
    EventNotFound,
    #[error("endpoint not found")]
    EndpointNotFound,
    #[error("an organisation may have at most {limit} endpoints: delete one first")]
    TooManyEndpoints { limit: u32 },
    /// The event exists, but has no delivery to that endpoint (or the endpoint is gone).
    #[error("this event has no delivery to that endpoint")]
    DeliveryNotFound,
    #[error("recovery not found")]
    RecoveryNotFound,
    /// Sending to the endpoint is off: what would be sent would be skipped at once.
    #[error("the endpoint is disabled: enable it first (PATCH enabled: true)")]
    EndpointDisabled,
    #[error(
        "at most {limit} signing secrets may be valid at once: rotate again after {}, when the oldest \
         previous secret expires, or now with grace_period_seconds 0",
        next_expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    TooManySecrets {
        limit: usize,
        next_expires_at: chrono::DateTime<chrono::Utc>,
    },
    #[error("{count} deliveries match: at most {limit} may be recovered by one call; narrow the window")]
    TooManyToRecover { count: i64, limit: i64 },
    #[error(
        "an event with this dedup_id was already accepted in the last {} hours",
        DedupId::WINDOW_HOURS
    )]
    DuplicateEvent { dedup_id: String, event_id: Uuid },
    #[error("rate limit exceeded: {limit} events per minute")]
    RateLimited { limit: u32, retry_after: u64 },
    /// Never says which address was found: that would map the internal network.
    #[error("{}", triggers_shared::net::NOT_ALLOWED)]
    WebhookUrlNotAllowed,
    #[error("no webhook is configured")]
    WebhookNotConfigured,
    /// A redelivery was asked for, but there is nowhere to deliver to (409: the request conflicts
    /// with the organisation's current configuration).
    #[error(
        "no webhook is configured: set one with POST /api/webhook/config, or consume events from the inbox"
    )]
    RedeliveryWithoutWebhook,
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MissingApiKey | InvalidApiKey | AdminTokenRequired | InvalidSession | InvalidPortalLink => {
                StatusCode::UNAUTHORIZED
            }
            ReadOnlySession | ApiKeyRequired => StatusCode::FORBIDDEN,
            Validation(_)
            | WebhookUrlNotAllowed
            | TooManyPortalSessions { .. }
            | TooManyEndpoints { .. }
            | TooManyToRecover { .. }
            | PayloadNotStorable => StatusCode::UNPROCESSABLE_ENTITY,
            InvalidJson(_) => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge { .. } | BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EventNotFound
            | EndpointNotFound
            | DeliveryNotFound
            | RecoveryNotFound
            | WebhookNotConfigured
            | PortalSessionNotFound => StatusCode::NOT_FOUND,
            DuplicateEvent { .. } | RedeliveryWithoutWebhook | EndpointDisabled | TooManySecrets { .. } => {
                StatusCode::CONFLICT
            }
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            MissingApiKey => "missing_api_key",
            InvalidApiKey => "invalid_api_key",
            AdminTokenRequired => "admin_token_required",
            InvalidSession => "invalid_session",
            ReadOnlySession => "read_only_session",
            ApiKeyRequired => "api_key_required",
            InvalidPortalLink => "invalid_portal_link",
            PortalSessionNotFound => "portal_session_not_found",
            TooManyPortalSessions { .. } => "too_many_portal_sessions",
            Validation(_) => "validation_failed",
            InvalidJson(_) => "invalid_json",
            UnsupportedMediaType => "unsupported_media_type",
            PayloadTooLarge { .. } => "payload_too_large",
            BodyTooLarge { .. } => "payload_too_large",
            PayloadNotStorable => "payload_not_storable",
            EventNotFound => "event_not_found",
            EndpointNotFound => "endpoint_not_found",
            TooManyEndpoints { .. } => "too_many_endpoints",
            DeliveryNotFound => "delivery_not_found",
            RecoveryNotFound => "recovery_not_found",
            EndpointDisabled => "endpoint_disabled",
            TooManySecrets { .. } => "too_many_secrets",
            TooManyToRecover { .. } => "too_many_deliveries",
            DuplicateEvent { .. } => "duplicate_event",
            RateLimited { .. } => "rate_limited",
            WebhookUrlNotAllowed => "webhook_url_not_allowed",
            WebhookNotConfigured | RedeliveryWithoutWebhook => "webhook_not_configured",
            Unavailable => "unavailable",
            Internal(_) => "internal_error",
        }
    }

    /// One validation failure on one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if triggers_shared::db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            ApiError::Unavailable
        } else {
            ApiError::Internal(err.into())
        }
    }
}

/// A queue write's failure as the API reports it (an unreachable database is a `503`).
impl From<triggers_shared::db::queue::QueueError> for ApiError {
    fn from(err: triggers_shared::db::queue::QueueError) -> Self {
        match err {
            triggers_shared::db::queue::QueueError::Database(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        match err.downcast::<sqlx::Error>() {
            Ok(sqlx_err) => sqlx_err.into(),
            Err(other) => ApiError::Internal(other),
        }
    }
}

/// Seconds a client should wait after a 503.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.to_string()));
        body.insert("code".into(), Value::String(self.code().into()));
        let mut headers = HeaderMap::new();
        match &self {
            ApiError::Validation(details) => {
                body.insert("details".into(), json!(details));
            }
            ApiError::PayloadTooLarge { limit_bytes } | ApiError::BodyTooLarge { limit_bytes } => {
                body.insert("limit_bytes".into(), json!(limit_bytes));
            }
            ApiError::TooManyEndpoints { limit } => {
                body.insert("limit".into(), json!(limit));
            }
            ApiError::TooManySecrets {
                limit,
                next_expires_at,
            } => {
                body.insert("limit".into(), json!(limit));
                body.insert("next_expires_at".into(), json!(next_expires_at));
            }
            ApiError::TooManyToRecover { count, limit } => {
                body.insert("count".into(), json!(count));
                body.insert("limit".into(), json!(limit));
            }
            ApiError::DuplicateEvent { dedup_id, event_id } => {
                body.insert("dedup_id".into(), json!(dedup_id));
                body.insert("event_id".into(), json!(event_id));
            }
            ApiError::RateLimited { limit, retry_after } => {
                body.insert("limit".into(), json!(limit));
                body.insert("window".into(), json!("1 minute"));
                body.insert("retry_after".into(), json!(retry_after));
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::TooManyPortalSessions { limit } => {
                body.insert("limit".into(), json!(limit));
            }
            ApiError::MissingApiKey
            | ApiError::InvalidApiKey
            | ApiError::InvalidSession
            | ApiError::InvalidPortalLink => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"ApiKey header="X-API-Key", Bearer realm="triggers""#),
                );
            }
            ApiError::AdminTokenRequired => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="triggers-admin""#),
                );
            }
            ApiError::Unavailable => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                );
                body.insert("retry_after".into(), json!(UNAVAILABLE_RETRY_AFTER_SECS));
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
            }
            _ => {}
        }
        (status, headers, Json(Value::Object(body))).into_response()
    }
}
