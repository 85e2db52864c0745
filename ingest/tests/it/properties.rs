//! Properties of input handling that need no server: event validation and the inbox cursor
//! codec never panic, whatever they are given, and everything they accept round-trips.
//!
//! Event bodies go through exactly what `POST /api/events` does with its bytes:
//! `extract::parse_json` into `EventIn`, then `EventIn::parse`.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use triggers_ingest::{
    error::ApiError,
    extract::parse_json,
    routes::{
        events::{EventIn, ValidEvent},
        inbox::{decode_cursor, encode_cursor},
    },
    validate::Parse,
};
use triggers_shared::{db::events::Keyset, models::MAX_PAYLOAD_BYTES};
use uuid::Uuid;

/// Any JSON value, nested a few levels, with strings that include NUL, non-ASCII and the
/// characters event types allow.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._:-]{0,12}",
        ".{0,12}",
        "[a\\x00é\u{1F600}\\\\\"]{0,6}",
    ]
}

/// A body shaped like an event, with each field valid, invalid, absent or of the wrong type.
fn event_like_body() -> impl Strategy<Value = Value> {
    let field = |valid: BoxedStrategy<Value>| {
        prop_oneof![
            3 => valid.prop_map(Some),
            1 => any_json().prop_map(Some),
            1 => Just(None),
        ]
    };
    let event_type = "[A-Za-z0-9][A-Za-z0-9._:-]{0,40}".prop_map(Value::String).boxed();
    let dedup_id = ".{1,40}".prop_map(Value::String).boxed();
    let payload = prop::collection::btree_map(any_string(), any_json(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed();
    (field(event_type), field(dedup_id), field(payload), any_json()).prop_map(
        |(event_type, dedup_id, payload, extra)| {
            let mut body = Map::new();
            for (name, value) in [("type", event_type), ("dedup_id", dedup_id), ("payload", payload)] {
                if let Some(value) = value {
                    body.insert(name.to_owned(), value);
                }
            }
            body.insert("extra".to_owned(), extra);
            Value::Object(body)
        },
    )
}

/// The request path's parsing of a body sent as `body` (compact JSON text).
fn validate(body: &Value) -> Result<ValidEvent, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(ApiError::internal)?;
    parse_json::<EventIn>(&bytes)?.parse()
}

/// What an accepted body must give back: its type, dedup id and payload, unchanged.
fn assert_round_trips(body: &Value) -> Result<(), TestCaseError> {
    let Ok(event) = validate(body) else {
        return Ok(());
    };
    prop_assert_eq!(Some(event.event_type.as_str()), body["type"].as_str());
    prop_assert_eq!(event.dedup_id.as_deref(), body["dedup_id"].as_str());
    prop_assert!(event.payload.get().len() <= MAX_PAYLOAD_BYTES);
    // What is stored is exactly the text of the payload sent, and is JSON again.
    let sent = serde_json::to_string(&body["payload"]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(event.payload.get(), sent.as_str());
    let stored: Value =
        serde_json::from_str(event.payload.get()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(stored.is_object());
    prop_assert!(!has_nul(&stored), "a NUL reached storage");
    Ok(())
}

/// Does any string or key in the value contain NUL?
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validation_never_panics_on_any_json_and_accepted_bodies_round_trip(body in any_json()) {
        assert_round_trips(&body)?;
    }

    #[test]
    fn event_shaped_bodies_are_accepted_exactly_when_every_field_is_valid(body in event_like_body()) {
        let valid_type = body["type"]
            .as_str()
            .is_some_and(|t| !t.is_empty() && t.len() <= 255 && t.starts_with(|c: char| c.is_ascii_alphanumeric())
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)));
        let valid_dedup = match &body["dedup_id"] {
            Value::Null => true,
            Value::String(d) => (1..=255).contains(&d.chars().count()) && !d.contains('\0'),
            _ => false,
        };
        let valid_payload = body["payload"].is_object() && !has_nul(&body["payload"]);
        let accepted = validate(&body).is_ok();
        prop_assert_eq!(accepted, valid_type && valid_dedup && valid_payload, "{}", body);
        assert_round_trips(&body)?;
    }

    #[test]
    fn decoding_any_cursor_never_panics_and_what_decodes_re_encodes(text in ".{0,80}") {
        if let Some(keyset) = decode_cursor(&text) {
            let again = decode_cursor(&encode_cursor(keyset));
            prop_assert_eq!(again.map(|k| (k.created_at, k.id)), Some((keyset.created_at, keyset.id)));
        }
    }

    #[test]
    fn decoding_base64_of_cursor_like_text_never_panics(
        micros in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), "[-0-9]{0,25}"],
        id in prop_oneof![any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string()), ".{0,40}"],
        separator in prop_oneof![Just(".".to_owned()), ".{0,2}"],
    ) {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}{separator}{id}"));
        if let Some(keyset) = decode_cursor(&text) {
            prop_assert_eq!(decode_cursor(&encode_cursor(keyset)).map(|k| k.id), Some(keyset.id));
        }
    }

    #[test]
    fn every_keyset_round_trips_through_its_cursor(
        micros in DateTime::<Utc>::MIN_UTC.timestamp_micros()..=DateTime::<Utc>::MAX_UTC.timestamp_micros(),
        id in any::<u128>(),
    ) {
        let keyset = Keyset {
            created_at: DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| TestCaseError::reject("out of range"))?,
            id: Uuid::from_u128(id),
        };
        let cursor = encode_cursor(keyset);
        prop_assert!(cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{}", cursor);
        let decoded = decode_cursor(&cursor).ok_or_else(|| TestCaseError::fail(format!("{cursor} did not decode")))?;
        prop_assert_eq!((decoded.created_at, decoded.id), (keyset.created_at, keyset.id));
    }
}

#[test]
fn a_payload_with_a_nul_in_a_nested_key_is_refused() {
    let body = json!({"type": "a", "payload": {"x": [{"k\u{0}": 1}]}});
    assert!(validate(&body).is_err());
}
