//! The validated values of an event (`EventType`, `DedupId`, `Payload`) and of an organisation
//! (`OrganizationName`): built once by `parse` at the edge (ingest), they travel unchanged to
//! the batcher and the database.

mod json_text;

use serde::Serialize;
use serde_json::value::RawValue;

pub use json_text::{MAX_PAYLOAD_DEPTH, NUMERIC_MAX_INTEGER_DIGITS, NUMERIC_MAX_SCALE};

/// The most characters of an event type, a dedup id and an organisation name.
pub const MAX_NAME_CHARS: usize = 255;
/// What an event type is, as a regular expression (also the schema's `pattern`).
pub const EVENT_TYPE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]*$";
/// The most bytes a payload's JSON text may take once insignificant whitespace is removed.
pub const MAX_PAYLOAD_BYTES: usize = 262_144;

/// An event type: 1-255 characters of `[A-Za-z0-9._:-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

/// Read-only access to the validated text (`Option<EventType>::as_deref()` is an `Option<&str>`).
impl std::ops::Deref for EventType {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl EventType {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_NAME_CHARS {
            return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
        }
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !(first_ok && rest_ok) {
            return Err(format!("must match {EVENT_TYPE_PATTERN}"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's deduplication id: 1-255 characters, no NUL (Postgres text cannot hold it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DedupId(String);

/// Read-only access to the validated text (`Option<DedupId>::as_deref()` is an `Option<&str>`).
impl std::ops::Deref for DedupId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl DedupId {
    /// How long an organisation's dedup id is remembered, in hours (the API's promise).
    pub const WINDOW_HOURS: u64 = 24;
    /// [`Self::WINDOW_HOURS`] as a duration: a second event with the same id within it is a
    /// duplicate (`409`).
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(Self::WINDOW_HOURS * 3600);

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

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An organisation's name: 1-255 characters, not only whitespace, no control characters
/// (invisible wherever the name is shown, and Postgres cannot store NUL). Stored as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OrganizationName(String);

impl OrganizationName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(format!(
                "must be 1 to {MAX_NAME_CHARS} characters long (got {chars})"
            ));
        }
        if s.trim().is_empty() {
            return Err("must not be only whitespace".into());
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event payload: the JSON text of an object, kept as text end to end (never decoded into a
/// tree: a tree of small numbers takes ~16 times the text's memory). Postgres parses it once
/// (`$n::jsonb`) and serves it back as text (`payload::text`).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

/// Why a payload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadProblem {
    NotAnObject,
    /// Over [`MAX_PAYLOAD_BYTES`]: a `413`, reported before any other problem.
    TooLarge,
    /// jsonb cannot hold `\u0000` in a string or key.
    ContainsNul,
    /// Objects and arrays nested deeper than [`MAX_PAYLOAD_DEPTH`].
    TooDeep,
    /// A `\u` escape of half a UTF-16 surrogate pair without the other half.
    LoneSurrogate,
    /// A number Postgres `numeric` cannot hold: more than [`NUMERIC_MAX_INTEGER_DIGITS`] digits
    /// before the decimal point or [`NUMERIC_MAX_SCALE`] after it, the exponent counted.
    NumberOutOfRange,
}

impl Payload {
    /// Check a client's JSON value (already valid JSON) in one pass over its text: an object, at
    /// most [`MAX_PAYLOAD_BYTES`] without insignificant whitespace, and nothing Postgres' jsonb
    /// would refuse (`\u0000`, nesting over [`MAX_PAYLOAD_DEPTH`], a lone surrogate escape, a
    /// number outside `numeric`). When several problems occur, the size is reported first, then
    /// the first other one in the text, then the nesting.
    pub fn parse(raw: Box<RawValue>) -> Result<Self, PayloadProblem> {
        let text = raw.get();
        if !text.starts_with('{') {
            return Err(PayloadProblem::NotAnObject);
        }
        let scan = json_text::scan(text);
        if scan.compact_len > MAX_PAYLOAD_BYTES {
            return Err(PayloadProblem::TooLarge);
        }
        match scan.problem {
            Some(problem) => Err(problem),
            None => Ok(Self(raw)),
        }
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

/// A payload as Postgres prints it (`payload::text`): already checked when it was stored, so
/// only its JSON syntax is confirmed.
impl TryFrom<String> for Payload {
    type Error = serde_json::Error;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        RawValue::from_string(text).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(text: &str) -> Result<Payload, PayloadProblem> {
        Payload::parse(RawValue::from_string(text.to_owned()).expect("valid JSON"))
    }

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
    fn the_payload_limit_ignores_whitespace_outside_strings_only() {
        let inner = "x".repeat(MAX_PAYLOAD_BYTES - 8);
        assert!(payload(&format!("{{ \"s\" :\n \"{inner}\" }}")).is_ok());
        let over = "x".repeat(MAX_PAYLOAD_BYTES - 7);
        assert_eq!(
            payload(&format!("{{\"s\":\"{over}\"}}")).err(),
            Some(PayloadProblem::TooLarge)
        );
        let spaces = " ".repeat(MAX_PAYLOAD_BYTES - 7);
        assert_eq!(
            payload(&format!("{{\"s\":\"{spaces}\"}}")).err(),
            Some(PayloadProblem::TooLarge)
        );
    }

    #[test]
    fn an_escaped_nul_anywhere_is_refused_but_an_escaped_backslash_is_not() {
        assert_eq!(
            payload(r#"{"x": [{"y": "a\u0000b"}]}"#).err(),
            Some(PayloadProblem::ContainsNul)
        );
        assert_eq!(
            payload(r#"{"a\u0000": 1}"#).err(),
            Some(PayloadProblem::ContainsNul)
        );
        assert!(payload(r#"{"x": "a\\u0000b", "q": "\"}"}"#).is_ok());
    }

    #[test]
    fn a_payload_must_be_an_object() {
        for text in ["[]", "1", "\"s\"", "null", "true"] {
            assert_eq!(payload(text).err(), Some(PayloadProblem::NotAnObject), "{text}");
        }
    }
}
