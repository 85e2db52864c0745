//! Routes of the `inbox` resource: listing events for pull consumers (`GET /api/inbox`) and
//! acknowledging them (`POST /api/ack/{id}`, `POST /api/ack`).
//!
//! Listing is oldest first by `(created_at, id)`. `next_cursor` is an opaque keyset position
//! (base64url of the last item's `created_at` and `id`): paging by cursor neither repeats nor
//! skips events that existed when paging began, however many arrive meanwhile. It is present
//! only when `has_more` is true. `offset` may be combined with a cursor (it applies after it).

use axum::{Json, extract::State};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use triggers_shared::db::{
    self,
    events::{InboxFilter, Keyset},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::events::{EventId, EventOut};
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody, FieldError},
    extract::{ApiJson, ApiQuery},
};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;
/// The most ids one batch acknowledgement may carry.
pub const MAX_ACK_BATCH: usize = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_inbox))
        .routes(routes!(ack_event))
        .routes(routes!(ack_events))
}

/// Query parameters of `GET /api/inbox`. Taken as text and parsed here, so every bad parameter
/// is reported in one `422`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// `pending`, `delivered`, `failed` (or its synonym `dead_letter`). Absent: all.
    pub status: Option<String>,
    /// 1-1000, default 100.
    pub limit: Option<String>,
    /// Default 0.
    pub offset: Option<String>,
    /// `next_cursor` of a previous page.
    pub cursor: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Pagination {
    pub limit: i64,
    pub offset: i64,
    /// Events matching the filters (regardless of cursor and offset).
    pub total: i64,
    pub has_more: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InboxOut {
    pub events: Vec<EventOut>,
    pub pagination: Pagination,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AckOut {
    pub id: Uuid,
    pub status: String,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub message: &'static str,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct AckBatchIn {
    /// 1-1000 event ids.
    #[schema(value_type = Vec<String>)]
    pub event_ids: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AckBatchOut {
    /// Ids now acknowledged (including ones acknowledged before), in request order.
    pub acknowledged: Vec<String>,
    /// Unknown, malformed or another organisation's ids, as given.
    pub not_found: Vec<String>,
}

/// Encode a keyset position as an opaque cursor.
pub fn encode_cursor(k: Keyset) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", k.created_at.timestamp_micros(), k.id.simple()))
}

/// Decode a cursor made by [`encode_cursor`].
pub fn decode_cursor(s: &str) -> Option<Keyset> {
    let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (micros, id) = text.split_once('.')?;
    let created_at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
    Some(Keyset {
        created_at,
        id: Uuid::try_parse(id).ok()?,
    })
}

/// List your events, oldest first (by `created_at`, then `id`).
///
/// Page with `offset`, or with `cursor` = the previous page's `next_cursor` (present only while
/// `has_more` is true). Cursor paging is stable: every event that existed when paging began is
/// returned exactly once, in order, however many events arrive meanwhile. `total` counts the
/// events matching `status` and `type`, regardless of cursor and offset.
#[utoipa::path(
    get, path = "/api/inbox", tag = "inbox",
    params(InboxQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, body = InboxOut),
        (status = 401, body = ErrorBody),
        (status = 422, description = "`validation_failed`: a bad status, limit, offset or cursor", body = ErrorBody),
    )
)]
pub async fn list_inbox(
    State(state): State<AppState>,
    org: Org,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<Json<InboxOut>, ApiError> {
    let mut errors = Vec::new();
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("pending") => Some("pending"),
        Some("delivered") => Some("delivered"),
        Some("failed" | "dead_letter") => Some("failed"),
        Some(_) => {
            errors.push(FieldError::new(
                "status",
                "must be one of pending, delivered, failed, dead_letter",
            ));
            None
        }
    };
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ));
                DEFAULT_LIMIT
            }
        },
    };
    let offset = match q.offset.as_deref() {
        None => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                errors.push(FieldError::new("offset", "must be a non-negative integer"));
                0
            }
        },
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => match decode_cursor(c) {
            Some(k) => Some(k),
            None => {
                errors.push(FieldError::new("cursor", "is not a cursor this API issued"));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = InboxFilter {
        status: status.map(str::to_owned),
        event_type: q.event_type.filter(|t| !t.is_empty()),
    };

    let mut conn = state.db.acquire().await?;
    let mut rows = db::events::list(&mut conn, org.id, &filter, after, limit + 1, offset).await?;
    let total = db::events::count(&mut conn, org.id, &filter).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|e| {
            encode_cursor(Keyset {
                created_at: e.created_at,
                id: e.id,
            })
        })
    } else {
        None
    };
    Ok(Json(InboxOut {
        events: rows.into_iter().map(EventOut::from).collect(),
        pagination: Pagination {
            limit,
            offset,
            total,
            has_more,
        },
        next_cursor,
    }))
}

/// Acknowledge one of your events: it becomes `delivered`, and no delivery starts after this
/// commits. Idempotent: acknowledging again answers `200` with the first `acknowledged_at`.
#[utoipa::path(
    post, path = "/api/ack/{id}", tag = "inbox",
    params(("id" = String, Path, description = "Event id (UUID)")),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, body = AckOut),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`event_not_found` (unknown, malformed or another organisation's id)", body = ErrorBody),
    )
)]
pub async fn ack_event(
    State(state): State<AppState>,
    org: Org,
    EventId(id): EventId,
) -> Result<Json<AckOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (row, newly) = db::events::acknowledge(&mut conn, org.id, id)
        .await?
        .ok_or(ApiError::EventNotFound)?;
    Ok(Json(AckOut {
        id: row.id,
        status: row.status,
        acknowledged_at: row.acknowledged_at,
        message: if newly {
            "event acknowledged"
        } else {
            "event was already acknowledged"
        },
    }))
}

/// Acknowledge up to 1,000 of your events at once. Malformed, unknown and other organisations'
/// ids are listed in `not_found`; the rest in `acknowledged` (already acknowledged ones too).
#[utoipa::path(
    post, path = "/api/ack", tag = "inbox",
    request_body = AckBatchIn,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, body = AckBatchOut),
        (status = 401, body = ErrorBody),
        (status = 422, description = "`validation_failed`: `event_ids` missing, empty, too long or not strings", body = ErrorBody),
    )
)]
pub async fn ack_events(
    State(state): State<AppState>,
    org: Org,
    ApiJson(body): ApiJson<AckBatchIn>,
) -> Result<Json<AckBatchOut>, ApiError> {
    let Value::Array(items) = body.event_ids else {
        return Err(ApiError::invalid("event_ids", "must be an array of event ids"));
    };
    if items.is_empty() || items.len() > MAX_ACK_BATCH {
        return Err(ApiError::invalid(
            "event_ids",
            format!("must hold 1 to {MAX_ACK_BATCH} ids"),
        ));
    }
    let mut given: Vec<String> = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::String(s) => given.push(s),
            _ => errors.push(FieldError::new(format!("event_ids[{i}]"), "must be a string")),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Repeated ids are answered once, in first-seen order.
    let mut seen = std::collections::HashSet::new();
    given.retain(|s| seen.insert(s.clone()));
    let parsed: Vec<Uuid> = given.iter().filter_map(|s| Uuid::try_parse(s).ok()).collect();

    let mut conn = state.db.acquire().await?;
    let found: std::collections::HashSet<Uuid> = db::events::acknowledge_many(&mut conn, org.id, &parsed)
        .await?
        .into_iter()
        .collect();
    let mut acknowledged = Vec::new();
    let mut not_found = Vec::new();
    for s in given {
        match Uuid::try_parse(&s) {
            Ok(id) if found.contains(&id) => acknowledged.push(id.to_string()),
            _ => not_found.push(s),
        }
    }
    Ok(Json(AckBatchOut {
        acknowledged,
        not_found,
    }))
}
