//! Routes of the `inbox` resource: listing events for pull consumers (`GET /api/inbox`) and
//! acknowledging them (`POST /api/ack/{id}`, `POST /api/ack`).
//!
//! Listing is oldest first by `(created_at, id)`. `next_cursor` is an opaque keyset position
//! (base64url of the last item's `created_at` and `id`): paging by cursor neither repeats nor
//! skips events that existed when paging began, however many arrive meanwhile. It is present
//! only when `has_more` is true. `offset` may be combined with a cursor (it applies after it).
//! `since` starts the listing at a time: it is the keyset position just before that instant, so
//! it costs what a cursor costs; with both, listing starts after the later of the two.

use axum::{Json, extract::State};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use triggers_shared::{
    db::{
        self,
        events::{InboxFilter, Keyset, PageBounds},
    },
    models::EventStatus,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::events::{EventId, EventOut};
use crate::{
    AppState,
    auth::Org,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiQuery},
    openapi,
    validate::{Parse, Problems, integer_in, json_string, non_empty, timestamp},
};
use triggers_shared::schemas;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;
/// The deepest `offset`: Postgres reads and discards every skipped row, so deeper pages go by
/// `cursor` (a keyset, as cheap at any depth).
pub const MAX_OFFSET: i64 = 10_000;
/// A page ends early once its payloads reach this much JSON text, so a page of large payloads
/// stays a few MiB in memory whatever `limit` says (at least one event is always served).
pub const MAX_PAGE_PAYLOAD_BYTES: i64 = 8 * 1024 * 1024;
/// The most ids one batch acknowledgement may carry.
pub const MAX_ACK_BATCH: usize = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_inbox))
        .routes(routes!(ack_event))
        .routes(routes!(ack_events))
}

/// Query parameters of `GET /api/inbox`, as read (text); [`InboxQuery::parse`] checks them
/// all, so every bad parameter is reported in one `422`. An empty text parameter (`status`,
/// `cursor`, `type`) counts as absent; a number or boolean must be one.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Only events with this status (`dead_letter` is a synonym of `failed`). Absent: all.
    #[param(schema_with = event_status_filter_schema)]
    status: Option<String>,
    /// A page also ends early once its payloads reach 8 MiB of JSON text (then `has_more` is
    /// true).
    #[param(schema_with = limit_schema)]
    limit: Option<String>,
    /// Page deeper with `cursor`.
    #[param(schema_with = offset_schema)]
    offset: Option<String>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = event_type_filter_schema)]
    event_type: Option<String>,
    /// `false` skips counting the matching events: `pagination.total` is then `null`.
    #[param(schema_with = include_total_schema)]
    include_total: Option<String>,
    /// Only events created at or after this instant (RFC 3339). `pagination.total` is then
    /// `null`: it is not counted.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
}

/// The statuses the inbox filters on, as [`EventStatus::parse`] reads them.
pub const EVENT_STATUS_FILTERS: [&str; 4] = ["pending", "delivered", "failed", "dead_letter"];

fn event_status_filter_schema() -> utoipa::openapi::Schema {
    schemas::one_of_strings(
        "An event status; `dead_letter` is `failed`; empty is all.",
        &[&[""][..], &EVENT_STATUS_FILTERS].concat(),
    )
}

/// `limit` of every listing: [`MAX_LIMIT`] at most, [`DEFAULT_LIMIT`] by default.
pub(crate) fn limit_schema() -> utoipa::openapi::Schema {
    openapi::integer_in(
        1..=MAX_LIMIT.unsigned_abs(),
        false,
        &format!("Default {DEFAULT_LIMIT}."),
    )
}

fn offset_schema() -> utoipa::openapi::Schema {
    openapi::integer_in(0..=MAX_OFFSET.unsigned_abs(), false, "Default 0.")
}

/// `cursor` of a listing whose cursor is a keyset position ([`encode_cursor`]).
pub(crate) fn cursor_schema() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(CURSOR_PATTERN))
        .description(Some(
            "The `next_cursor` of a previous page: opaque. Depends on state: a value the API did \
             not issue is `422` (no pattern can tell one apart).",
        ))
        .extensions(Some(openapi::issued_as("next_cursor")))
        .into()
}

/// What every cursor is made of (base64url, padding optional); not every such text is one.
pub const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]*=*$";

fn event_type_filter_schema() -> utoipa::openapi::Schema {
    schemas::text_without_nul("Only events of this type (matched literally).")
}

fn include_total_schema() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Boolean)
        .description(Some("Default `true`."))
        .into()
}

/// A valid inbox request.
#[derive(Debug, Clone)]
pub struct InboxRequest {
    pub filter: InboxFilter,
    pub bounds: PageBounds,
    pub include_total: bool,
}

impl Parse for InboxQuery {
    type Valid = InboxRequest;

    fn parse(self) -> Result<InboxRequest, ApiError> {
        let mut problems = Problems::default();
        let status = problems.optional("status", non_empty(self.status), |s| {
            EventStatus::parse(&s)
                .ok_or_else(|| "must be one of pending, delivered, failed, dead_letter".to_owned())
        });
        let limit = problems.optional("limit", self.limit, |v| {
            integer_in(&v, 1, MAX_LIMIT).ok_or_else(|| format!("must be an integer from 1 to {MAX_LIMIT}"))
        });
        let offset = problems.optional("offset", self.offset, |v| {
            integer_in(&v, 0, MAX_OFFSET).ok_or_else(|| {
                format!("must be an integer from 0 to {MAX_OFFSET} (page deeper with `cursor`)")
            })
        });
        let after = problems.optional("cursor", non_empty(self.cursor), |c| {
            decode_cursor(&c)
                .map(storable)
                .ok_or_else(|| "is not a cursor this API issued".to_owned())
        });
        let since = problems.optional("since", self.since, |t| timestamp(&t));
        let include_total = problems.optional("include_total", self.include_total, |v| match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        });
        problems.finish()?;
        Ok(InboxRequest {
            filter: InboxFilter {
                status,
                event_type: non_empty(self.event_type),
            },
            bounds: PageBounds {
                after: start_after(after, since),
                offset: offset.unwrap_or(0),
                limit: limit.unwrap_or(DEFAULT_LIMIT),
                max_payload_bytes: MAX_PAGE_PAYLOAD_BYTES,
            },
            include_total: include_total.unwrap_or(true) && since.is_none(),
        })
    }
}

/// Where a listing starts: after the cursor's position, and at or after `since` (the position
/// before every event of that instant: ids are never nil), whichever is later.
fn start_after(cursor: Option<Keyset>, since: Option<DateTime<Utc>>) -> Option<Keyset> {
    let since = since.map(|created_at| Keyset {
        created_at,
        id: Uuid::nil(),
    });
    match (cursor, since) {
        (Some(c), Some(s)) => Some(if (c.created_at, c.id) >= (s.created_at, s.id) {
            c
        } else {
            s
        }),
        (c, s) => c.or(s),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Pagination {
    pub limit: i64,
    pub offset: i64,
    /// Events matching the filters (regardless of cursor and offset); `null` with
    /// `include_total=false`.
    pub total: Option<i64>,
    /// More events follow: the page ended at `limit`, or early at 8 MiB of payloads.
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
    pub status: EventStatus,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub message: &'static str,
}

/// The body of `POST /api/ack`. Ids that are not UUIDs are answered in `not_found`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct AckBatchIn {
    #[schema(schema_with = event_ids_schema, required = true)]
    event_ids: Option<Box<RawValue>>,
}

fn event_ids_schema() -> utoipa::openapi::Schema {
    openapi::array_of(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .into(),
        1..=MAX_ACK_BATCH,
        false,
        "Event ids; each is acknowledged once however often it is given.",
    )
}

impl Parse for AckBatchIn {
    /// The ids as given, each once, in first-seen order.
    type Valid = Vec<String>;

    fn parse(self) -> Result<Vec<String>, ApiError> {
        let mut problems = Problems::default();
        let items = problems.required("event_ids", self.event_ids.as_deref(), |raw| {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|_| "must be an array of event ids".to_owned())?;
            if items.is_empty() || items.len() > MAX_ACK_BATCH {
                return Err(format!("must hold 1 to {MAX_ACK_BATCH} ids"));
            }
            Ok(items)
        });
        let Some(items) = items else {
            return Err(problems.into_error());
        };
        let mut given = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            if let Some(id) = problems.check(&format!("event_ids[{i}]"), json_string(item)) {
                given.push(id);
            }
        }
        problems.finish()?;
        let mut seen = std::collections::HashSet::new();
        given.retain(|s| seen.insert(s.clone()));
        Ok(given)
    }
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

/// The earliest instant Postgres' `timestamptz` holds (4713 BC), in microseconds since 1970. Its
/// latest (294276 AD) is beyond chrono's, so only this bound matters.
const POSTGRES_MIN_TIMESTAMP_MICROS: i64 = -210_866_803_200_000_000;

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

/// A decoded cursor as a query can bind it: a position before the earliest instant Postgres
/// holds (only a forged cursor has one; binding it would fail the query) becomes the position
/// before every event, which lists the same events in either direction.
pub(crate) fn storable(keyset: Keyset) -> Keyset {
    match DateTime::<Utc>::from_timestamp_micros(POSTGRES_MIN_TIMESTAMP_MICROS) {
        Some(earliest) if keyset.created_at < earliest => Keyset {
            created_at: earliest,
            id: Uuid::nil(),
        },
        _ => keyset,
    }
}

/// List your events, oldest first (by `created_at`, then `id`).
///
/// Page with `offset`, or with `cursor` = the previous page's `next_cursor` (present only while
/// `has_more` is true). Cursor paging is stable: every event that existed when paging began is
/// returned exactly once, in order, however many events arrive meanwhile. `total` counts the
/// events matching `status` and `type`, regardless of cursor and offset (`include_total=false`
/// skips the count: `total` is then `null`). `offset` goes up to 10,000; page deeper with
/// `cursor`. `since` lists only events created at or after an instant (then `total` is `null`).
/// A page holds at most `limit` events and ends early once their payloads reach
/// 8 MiB of JSON text (at least one event is always served): `has_more` and `next_cursor` then
/// lead on. Payloads are served as stored.
#[utoipa::path(
    get, path = "/api/inbox", tag = "inbox",
    params(InboxQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of events, oldest first", body = InboxOut),
        (status = 422, description = "`validation_failed`: a bad status, limit, offset, include_total or since, a parameter (name or value) holding NUL, or a `cursor` this API did not issue (depends on state: only `next_cursor` values are cursors)", body = ErrorBody),
    )
)]
pub async fn list_inbox(
    State(state): State<AppState>,
    org: Org,
    ApiQuery(query): ApiQuery<InboxQuery>,
) -> Result<Json<InboxOut>, ApiError> {
    let InboxRequest {
        filter,
        bounds,
        include_total,
    } = query.parse()?;
    let mut conn = state.db.acquire().await?;
    let page = db::events::list(&mut conn, org.id, &filter, bounds).await?;
    let total = if include_total {
        Some(db::events::count(&mut conn, org.id, &filter).await?)
    } else {
        None
    };
    let next_cursor = if page.has_more {
        page.events.last().map(|e| {
            encode_cursor(Keyset {
                created_at: e.created_at,
                id: e.id,
            })
        })
    } else {
        None
    };
    Ok(Json(InboxOut {
        events: page.events.into_iter().map(EventOut::from).collect(),
        pagination: Pagination {
            limit: bounds.limit,
            offset: bounds.offset,
            total,
            has_more: page.has_more,
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
        (status = 200, description = "Acknowledged (now or before: the first `acknowledged_at` is kept)", body = AckOut),
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
        (status = 200, description = "Which ids were acknowledged and which were not found", body = AckBatchOut),
        (status = 422, description = "`validation_failed`: `event_ids` missing, empty, over 1,000 ids or holding something that is not a string", body = ErrorBody),
    )
)]
pub async fn ack_events(
    State(state): State<AppState>,
    org: Org,
    ApiJson(body): ApiJson<AckBatchIn>,
) -> Result<Json<AckBatchOut>, ApiError> {
    let given = body.parse()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_status_filters_are_exactly_what_the_parser_reads() {
        for name in EVENT_STATUS_FILTERS {
            assert!(EventStatus::parse(name).is_some(), "{name}");
        }
        for status in [EventStatus::Pending, EventStatus::Delivered, EventStatus::Failed] {
            assert!(EVENT_STATUS_FILTERS.contains(&status.as_str()), "{status:?}");
        }
        for other in ["Pending", "dead-letter", "skipped", "all"] {
            assert_eq!(EventStatus::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_forged_cursor_before_what_postgres_holds_becomes_the_start() {
        let id = Uuid::now_v7();
        let forged = |micros: i64| URL_SAFE_NO_PAD.encode(format!("{micros}.{}", id.simple()));
        let earliest = POSTGRES_MIN_TIMESTAMP_MICROS;
        for micros in [-6_000_000_000_000_000_000, earliest - 1] {
            let keyset = storable(decode_cursor(&forged(micros)).expect("a position"));
            assert_eq!(
                (keyset.created_at.timestamp_micros(), keyset.id),
                (earliest, Uuid::nil())
            );
        }
        let keyset = storable(decode_cursor(&forged(earliest)).expect("a position"));
        assert_eq!((keyset.created_at.timestamp_micros(), keyset.id), (earliest, id));
        assert!(decode_cursor(&forged(i64::MAX)).is_none(), "beyond chrono");
        let now = Utc::now();
        let issued = encode_cursor(Keyset { created_at: now, id });
        let decoded = decode_cursor(&issued).expect("an issued cursor");
        assert_eq!(
            (decoded.created_at.timestamp_micros(), decoded.id),
            (now.timestamp_micros(), id)
        );
        assert!(regex_free_match(CURSOR_PATTERN, &issued), "{issued}");
    }

    /// `^[A-Za-z0-9_-]*=*$`, spelled out.
    fn regex_free_match(pattern: &str, s: &str) -> bool {
        assert_eq!(pattern, "^[A-Za-z0-9_-]*=*$");
        let body = s.trim_end_matches('=');
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}
