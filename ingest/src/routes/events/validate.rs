//! Validation of `POST /api/events` bodies into domain types, so the handler only sees valid
//! data. Every bad field is reported at once (`422 validation_failed` with `details`); an
//! oversized payload is `413 payload_too_large`.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};

/// The most bytes the compact serialization of a payload may take.
pub const MAX_PAYLOAD_BYTES: usize = 262_144;
/// The most characters of `type` and `dedup_id`.
pub(crate) const MAX_NAME_CHARS: usize = 255;

/// An event type: 1-255 characters of `[A-Za-z0-9._:-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType(String);

impl EventType {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_NAME_CHARS {
            return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
        }
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !(first_ok && rest_ok) {
            return Err("must match ^[A-Za-z0-9][A-Za-z0-9._:-]*$".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A client's deduplication id: 1-255 characters, no NUL (Postgres text cannot hold it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupId(String);

impl DedupId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
        }
        if s.contains('\0') {
            return Err("must not contain NUL characters".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A valid event body.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    pub event_type: EventType,
    pub dedup_id: Option<DedupId>,
    /// The payload's compact JSON text (what the size limit measures and what is stored).
    pub payload: String,
}

/// Validate a parsed body. Unknown fields are ignored.
pub fn validate(body: Value) -> Result<ValidEvent, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    };
    let mut errors = Vec::new();

    let event_type = match body.get("type") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("type", "is required"));
            None
        }
        Some(Value::String(s)) => EventType::parse(s)
            .map_err(|m| errors.push(FieldError::new("type", m)))
            .ok(),
        Some(_) => {
            errors.push(FieldError::new("type", "must be a string"));
            None
        }
    };

    let dedup_id = match body.get("dedup_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => DedupId::parse(s)
            .map_err(|m| errors.push(FieldError::new("dedup_id", m)))
            .ok(),
        Some(_) => {
            errors.push(FieldError::new("dedup_id", "must be a string"));
            None
        }
    };

    let payload = match body.remove("payload") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("payload", "is required"));
            None
        }
        Some(Value::Object(map)) => {
            let text = serde_json::to_string(&map).map_err(ApiError::internal)?;
            if text.len() > MAX_PAYLOAD_BYTES {
                // The size is the client's first problem; report it on its own.
                return Err(ApiError::PayloadTooLarge {
                    limit_bytes: MAX_PAYLOAD_BYTES,
                });
            }
            if has_nul(&map) {
                errors.push(FieldError::new(
                    "payload",
                    "must not contain NUL characters (\\u0000) in strings or keys",
                ));
                None
            } else {
                Some(text)
            }
        }
        Some(_) => {
            errors.push(FieldError::new("payload", "must be a JSON object"));
            None
        }
    };

    match (event_type, payload) {
        (Some(event_type), Some(payload)) if errors.is_empty() => Ok(ValidEvent {
            event_type,
            dedup_id,
            payload,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Does any string or key in the object contain NUL? (jsonb refuses `\u0000`.) Iterative, so a
/// deep document cannot overflow the stack (serde_json already caps nesting at 128).
fn has_nul(map: &Map<String, Value>) -> bool {
    let mut stack: Vec<&Value> = Vec::new();
    for (k, v) in map {
        if k.contains('\0') {
            return true;
        }
        stack.push(v);
    }
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(m) => {
                for (k, v) in m {
                    if k.contains('\0') {
                        return true;
                    }
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_types_follow_the_pattern() {
        for ok in ["a", "user.created", "A1:b_c-d.e", "9"] {
            assert!(EventType::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "-a", "a b", "a/b", "é", "a;DROP"] {
            assert!(EventType::parse(bad).is_err(), "{bad}");
        }
        assert!(EventType::parse(&"a".repeat(255)).is_ok());
        assert!(EventType::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = validate(json!({"type": "", "payload": [], "dedup_id": 5})).expect_err("invalid");
        let ApiError::Validation(details) = err else {
            panic!("expected a validation error");
        };
        let fields: Vec<_> = details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["type", "dedup_id", "payload"]);
    }

    #[test]
    fn nul_in_a_nested_string_is_refused() {
        let err = validate(json!({"type": "a", "payload": {"x": [{"y": "a\u{0}b"}]}}));
        assert!(matches!(err, Err(ApiError::Validation(_))));
    }
}
