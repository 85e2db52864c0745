//! Extractors whose rejections are our [`ApiError`]: JSON bodies (415/413/400/422) and query
//! strings (422). Handlers only ever see well-formed input: a body that is a JSON object, a
//! query string without NUL. Turning that into validated values is `XIn::parse`
//! ([`crate::validate`]).

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use uuid::Uuid;

use crate::{
    error::{ApiError, FieldError},
    validate::Problems,
};

/// The cap on a whole request body. The event payload limit (256 KiB) is checked separately.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The cap on the body of `POST /api/events/batch` (API.md), which sets it on its route.
pub const MAX_BATCH_BODY_BYTES: usize = 5 * 1024 * 1024;

/// The route whose body may reach [`MAX_BATCH_BODY_BYTES`].
pub const BATCH_PATH: &str = "/api/events/batch";

/// The body limit of a request to the route `matched` (its matched path, when it has one).
pub fn body_limit(matched: Option<&str>) -> usize {
    if matched == Some(BATCH_PATH) {
        MAX_BATCH_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// A JSON body. Requires `Content-Type: application/json`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be absent: an empty body (with or without a content type) is `None`, and
/// so is a JSON `null` (as a `null` field counts as absent).
pub struct OptionalApiJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let has_content_type = req.headers().contains_key(header::CONTENT_TYPE);
        let bytes = if has_content_type {
            json_body(req, state).await?
        } else {
            read_body(req, state).await?
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(None));
        }
        if !has_content_type {
            return Err(ApiError::UnsupportedMediaType);
        }
        if bytes.trim_ascii() == b"null" {
            return Ok(OptionalApiJson(None));
        }
        parse_json(&bytes).map(|v| OptionalApiJson(Some(v)))
    }
}

async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    if !is_json(&req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    read_body(req, state).await
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit_bytes = body_limit(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit_bytes }
        } else {
            ApiError::InvalidJson(rejection.body_text())
        }
    })
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Parse a JSON object: syntax errors (and invalid UTF-8, excessive nesting) are `400
/// invalid_json`; well-formed JSON of the wrong shape is `422 validation_failed`. Any other JSON
/// value is refused before `T` sees it: a derived `Deserialize` would also read a struct from
/// an array (`["Acme", "pro"]`), which no client means.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return match from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
            Err(e) => Err(json_error(&e)),
        };
    }
    from_slice(bytes).map_err(|e| json_error(&e))
}

fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    T::deserialize(&mut de).and_then(|value| de.end().map(|()| value))
}

fn json_error(e: &serde_json::Error) -> ApiError {
    match e.classify() {
        Category::Data => ApiError::Validation(vec![FieldError::new("body", strip_position(e))]),
        Category::Syntax | Category::Eof | Category::Io => ApiError::InvalidJson(e.to_string()),
    }
}

fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// A query string; a malformed one is `422 validation_failed`, and so is any parameter (name or
/// value) holding NUL, which no text column can store.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut problems = Problems::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name.contains('\0') || value.contains('\0') {
                problems.add(name.replace('\0', "\\u0000"), "must not contain NUL characters");
            }
        }
        problems.finish()?;
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

/// The `{id}` of a route, when it is a UUID. Anything else (including a path segment that is not
/// valid UTF-8 once decoded) is `None`: to a resource route, simply an unknown id.
pub async fn path_uuid<S: Send + Sync>(parts: &mut Parts, state: &S) -> Option<Uuid> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state).await.ok()?;
    Uuid::try_parse(&raw).ok()
}
