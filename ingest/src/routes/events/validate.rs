//! The body of `POST /api/events`: read with every field as raw JSON text, then parsed into an
//! [`EventType`], an optional [`DedupId`] and a [`Payload`] that stays JSON text. Every bad field
//! is reported at once (`422 validation_failed` with `details`); an oversized payload is
//! `413 payload_too_large`, before any other problem.

use serde::Deserialize;
use serde_json::value::RawValue;
use triggers_shared::models::{
    DedupId, EventType, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, NUMERIC_MAX_INTEGER_DIGITS, NUMERIC_MAX_SCALE,
    Payload, PayloadProblem,
};

use crate::{
    error::ApiError,
    validate::{Parse, Problems, json_string},
};

/// The body of `POST /api/events`. Unknown fields are ignored; `null` counts as absent.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EventIn {
    #[serde(rename = "type")]
    #[schema(value_type = EventType)]
    event_type: Option<Box<RawValue>>,
    #[schema(value_type = Payload)]
    payload: Option<Box<RawValue>>,
    #[schema(value_type = Option<DedupId>)]
    dedup_id: Option<Box<RawValue>>,
}

/// A valid event body.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    pub event_type: EventType,
    pub dedup_id: Option<DedupId>,
    pub payload: Payload,
}

impl Parse for EventIn {
    type Valid = ValidEvent;

    fn parse(self) -> Result<ValidEvent, ApiError> {
        let payload = self.payload.map(Payload::parse);
        if let Some(Err(PayloadProblem::TooLarge)) = payload {
            // The size is the client's first problem; report it on its own.
            return Err(ApiError::PayloadTooLarge {
                limit_bytes: MAX_PAYLOAD_BYTES,
            });
        }
        let mut problems = Problems::default();
        let event_type = problems.required("type", self.event_type.as_deref(), |raw| {
            EventType::parse(&json_string(raw)?)
        });
        let dedup_id = problems.optional("dedup_id", self.dedup_id.as_deref(), |raw| {
            DedupId::parse(&json_string(raw)?)
        });
        let payload = problems.required("payload", payload, |parsed| parsed.map_err(payload_message));
        let (Some(event_type), Some(payload)) = (event_type, payload) else {
            return Err(problems.into_error());
        };
        problems.finish()?;
        Ok(ValidEvent {
            event_type,
            dedup_id,
            payload,
        })
    }
}

/// What `details` says about a refused payload.
fn payload_message(problem: PayloadProblem) -> String {
    match problem {
        PayloadProblem::NotAnObject => "must be a JSON object".into(),
        PayloadProblem::ContainsNul => "must not contain NUL characters (\\u0000) in strings or keys".into(),
        PayloadProblem::TooLarge => "exceeds the size limit".into(),
        PayloadProblem::TooDeep => {
            format!("must not nest objects and arrays more than {MAX_PAYLOAD_DEPTH} levels deep")
        }
        PayloadProblem::LoneSurrogate => {
            "must not contain a \\u escape of a lone UTF-16 surrogate (an escape \
             in \\uD800-\\uDBFF must be followed at once by one in \\uDC00-\\uDFFF)"
                .into()
        }
        PayloadProblem::NumberOutOfRange => format!(
            "must not contain a number with more than {NUMERIC_MAX_INTEGER_DIGITS} digits before the \
             decimal point or {NUMERIC_MAX_SCALE} after it, the exponent counted (Postgres numeric)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    fn parse(body: &str) -> Result<ValidEvent, ApiError> {
        parse_json::<EventIn>(body.as_bytes())?.parse()
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = parse(r#"{"type": "", "payload": [], "dedup_id": 5}"#).expect_err("invalid");
        let ApiError::Validation(details) = err else {
            panic!("expected a validation error");
        };
        let fields: Vec<_> = details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["type", "dedup_id", "payload"]);
    }

    #[test]
    fn nul_in_a_nested_string_is_refused() {
        let err = parse(r#"{"type": "a", "payload": {"x": [{"y": "a\u0000b"}]}}"#);
        assert!(matches!(err, Err(ApiError::Validation(_))));
    }

    #[test]
    fn an_oversized_payload_is_413_even_when_other_fields_are_bad() {
        let body = format!(
            r#"{{"type": 5, "payload": {{"s": "{}"}}}}"#,
            "x".repeat(MAX_PAYLOAD_BYTES)
        );
        assert!(matches!(parse(&body), Err(ApiError::PayloadTooLarge { .. })));
    }

    #[test]
    fn the_payload_keeps_its_text_and_null_fields_are_absent() {
        let valid = parse(r#"{"type": "a.b", "dedup_id": null, "payload": {"n": [1, 2.5e3]}, "x": 1}"#)
            .expect("valid");
        assert_eq!(valid.payload.get(), r#"{"n": [1, 2.5e3]}"#);
        assert_eq!(valid.dedup_id, None);
        assert_eq!(&*valid.event_type, "a.b");
    }
}
