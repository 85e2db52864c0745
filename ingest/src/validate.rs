//! The one way a request is read: its body or query string is deserialised into an `XIn` whose
//! fields are raw (JSON text, or query text), then `XIn::parse` turns each field into a
//! validated value, recording every problem in one [`Problems`] list, so a bad request is one
//! `422 validation_failed` naming every bad field. Handlers only see the parsed values.

use std::time::Duration;

use serde_json::value::RawValue;
use triggers_shared::net::{self, UrlRejection, WebhookUrl};

use crate::error::{ApiError, FieldError};

/// How long resolving a webhook host may take before the URL is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The raw form of a request, and how it becomes validated values.
pub trait Parse {
    type Valid;
    fn parse(self) -> Result<Self::Valid, ApiError>;
}

/// Every problem found in one request.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// The value, or `None` with the problem recorded against `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|message| self.add(field, message)).ok()
    }

    /// A field that must be present (JSON `null` counts as absent).
    pub fn required<R, T>(
        &mut self,
        field: &str,
        raw: Option<R>,
        parse: impl FnOnce(R) -> Result<T, String>,
    ) -> Option<T> {
        match raw {
            None => {
                self.add(field, "is required");
                None
            }
            Some(raw) => self.check(field, parse(raw)),
        }
    }

    /// A field that may be absent: `None` when it is, or when it is bad (then recorded).
    pub fn optional<R, T>(
        &mut self,
        field: &str,
        raw: Option<R>,
        parse: impl FnOnce(R) -> Result<T, String>,
    ) -> Option<T> {
        raw.and_then(|raw| self.check(field, parse(raw)))
    }

    /// `Ok` when nothing was recorded; otherwise the `422` listing every problem in order.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }

    /// The `422` for what was recorded (for a parse that found a required value missing, which
    /// it recorded).
    pub fn into_error(self) -> ApiError {
        ApiError::Validation(self.0)
    }
}

/// The JSON type of a raw value, for messages (`must be a string, not a number`).
pub fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A JSON string field.
pub fn json_string(raw: &RawValue) -> Result<String, String> {
    serde_json::from_str(raw.get()).map_err(|_| format!("must be a string, not {}", json_kind(raw)))
}

/// A JSON integer: a number with no fractional part, however it is written (`3`, `3.0`,
/// `3e0`: JSON Schema's `integer`), that fits an `i64`; `None` for anything else.
pub fn json_integer(raw: &RawValue) -> Option<i64> {
    let number: serde_json::Number = serde_json::from_str(raw.get()).ok()?;
    if let Some(n) = number.as_i64() {
        return Some(n);
    }
    let float = number.as_f64()?;
    // Integral and inside i64 (2^63 is exactly representable; the cast is exact below it).
    (float.fract() == 0.0 && float >= -(2f64.powi(63)) && float < 2f64.powi(63)).then_some(float as i64)
}

/// The longest grace period a rotation (of an API key or of a signing secret) may give the
/// previous one: 7 days.
pub const MAX_GRACE_PERIOD_SECS: u64 = 604_800;

/// A JSON `grace_period_seconds`: an integer from 0 to [`MAX_GRACE_PERIOD_SECS`].
pub fn grace_period(raw: &RawValue) -> Result<Duration, String> {
    json_integer(raw)
        .and_then(|secs| u64::try_from(secs).ok())
        .filter(|secs| *secs <= MAX_GRACE_PERIOD_SECS)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("must be an integer from 0 to {MAX_GRACE_PERIOD_SECS}"))
}

/// A query parameter: an empty value counts as absent.
pub fn non_empty(param: Option<String>) -> Option<String> {
    param.filter(|v| !v.is_empty())
}

/// A query parameter that must be an integer from `min` to `max`.
pub fn integer_in(text: &str, min: i64, max: i64) -> Option<i64> {
    text.parse::<i64>().ok().filter(|n| (min..=max).contains(n))
}

/// A query parameter that must be an RFC 3339 timestamp (`2026-12-04T17:00:00Z`, any offset).
pub fn timestamp(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2026-12-04T17:00:00Z".to_owned())
}

/// Where a webhook URL points must be public (unless the operator allows private targets): else
/// `webhook_url_not_allowed`, whose message never names an address. A host that does not
/// resolve in time is refused the same way. The second check of a URL, after its shape
/// ([`WebhookUrl::parse`]), for every route that takes one (`field` names it).
pub async fn public_target(field: &str, url: &WebhookUrl, allow_private: bool) -> Result<(), ApiError> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, net::resolve_allowed(url.as_url(), allow_private)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(UrlRejection::Invalid(message))) => Err(ApiError::invalid(field, message)),
        Ok(Err(UrlRejection::NotAllowed)) | Err(_) => Err(ApiError::WebhookUrlNotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("valid JSON")
    }

    #[test]
    fn every_problem_is_listed_in_the_order_it_was_found() {
        let mut problems = Problems::default();
        let a: Option<String> = problems.required("a", None::<&RawValue>, json_string);
        let b = problems.optional("b", Some(&*raw("5")), json_string);
        let c = problems.required("c", Some(&*raw(r#""ok""#)), json_string);
        assert_eq!((a, b, c.as_deref()), (None, None, Some("ok")));
        let Err(ApiError::Validation(details)) = problems.finish() else {
            panic!("expected a validation error");
        };
        let listed: Vec<_> = details
            .iter()
            .map(|d| (d.field.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            listed,
            [("a", "is required"), ("b", "must be a string, not a number")]
        );
    }

    #[test]
    fn integers_are_read_however_json_writes_them() {
        for (text, expected) in [
            ("3", Some(3)),
            ("-3", Some(-3)),
            ("3.0", Some(3)),
            ("3e0", Some(3)),
            ("2.69e2", Some(269)),
            ("-0.0", Some(0)),
            ("3.5", None),
            ("1e19", None),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("\"3\"", None),
            ("null", None),
        ] {
            assert_eq!(json_integer(&raw(text)), expected, "{text}");
        }
    }

    #[test]
    fn json_kinds_are_named_from_the_text() {
        for (text, kind) in [
            ("[1]", "an array"),
            ("{}", "an object"),
            ("true", "a boolean"),
            ("-1.5", "a number"),
            ("\"x\"", "a string"),
        ] {
            assert_eq!(json_kind(&raw(text)), kind, "{text}");
        }
    }
}
