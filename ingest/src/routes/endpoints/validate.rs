//! The bodies of `POST /api/endpoints` ([`EndpointIn`]) and `PATCH /api/endpoints/{id}`
//! ([`EndpointPatchIn`]), and the query of the listing ([`EndpointsQuery`]): read with every field
//! raw, then parsed into the values of `triggers_shared::models` (the rules live there), every
//! bad field reported at once (`422 validation_failed` with `details`). Problems inside a list
//! name their item: `event_types[2]`, `headers.X-Api-Key`.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::value::RawValue;
use triggers_shared::{
    db::endpoints::{EndpointPatch, NewEndpoint},
    models::{
        Description, EndpointHeaders, EventTypePattern, EventTypes, ItemProblem, MAX_EVENT_TYPES,
        RATE_LIMIT_RANGE, RateLimit, RequestedHeaders, masked_without_stored_value_message,
        rate_limit_range_message,
    },
    net::WebhookUrl,
    schemas::EndpointHeadersSchema,
};
use utoipa::PartialSchema;
use uuid::Uuid;

use crate::{
    error::ApiError,
    openapi,
    routes::inbox::{DEFAULT_LIMIT, MAX_LIMIT, limit_schema},
    validate::{Parse, Problems, integer_in, json_integer, json_kind, json_string, non_empty},
};

/// The body of `POST /api/endpoints`. Unknown fields are ignored; `null` counts as absent.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EndpointIn {
    #[schema(value_type = WebhookUrl)]
    url: Option<Box<RawValue>>,
    /// Default empty.
    #[schema(value_type = Option<Description>)]
    description: Option<Box<RawValue>>,
    #[schema(schema_with = event_types_schema)]
    event_types: Option<Box<RawValue>>,
    /// Default `true`.
    #[schema(value_type = Option<bool>)]
    enabled: Option<Box<RawValue>>,
    /// Default none.
    #[schema(value_type = Option<EndpointHeadersSchema>)]
    headers: Option<Box<RawValue>>,
    #[schema(schema_with = rate_limit_schema)]
    rate_limit_per_second: Option<Box<RawValue>>,
}

/// The body of `PATCH /api/endpoints/{id}`: any of the fields of `POST`; an absent field (or
/// `null`, except for `rate_limit_per_second`) is left as it is, and `{}` changes nothing.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EndpointPatchIn {
    /// The signing secret is kept.
    #[schema(value_type = Option<WebhookUrl>)]
    url: Option<Box<RawValue>>,
    /// `""` clears it.
    #[schema(value_type = Option<Description>)]
    description: Option<Box<RawValue>>,
    #[schema(schema_with = event_types_schema)]
    event_types: Option<Box<RawValue>>,
    /// `true` enables the endpoint and clears `disabled_reason`; `false` disables it with
    /// `disabled_reason` `manual`.
    #[schema(value_type = Option<bool>)]
    enabled: Option<Box<RawValue>>,
    /// Replaces the whole set (`{}` removes every header). The value `********` of a masked
    /// header keeps its stored value, so a read's `headers` can be sent back as they are.
    #[schema(value_type = Option<EndpointHeadersSchema>)]
    headers: Option<Box<RawValue>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "null_is_a_value")]
    #[schema(schema_with = rate_limit_schema)]
    rate_limit_per_second: Option<Box<RawValue>>,
}

fn event_types_schema() -> utoipa::openapi::Schema {
    openapi::array_of(
        EventTypePattern::schema(),
        1..=MAX_EVENT_TYPES,
        true,
        "The event types the endpoint subscribes to (default `[\"*\"]`). A repeated pattern is \
         kept once (the limit counts them as given).",
    )
}

fn rate_limit_schema() -> utoipa::openapi::Schema {
    let range = RATE_LIMIT_RANGE;
    openapi::integer_in(
        range.start().unsigned_abs()..=range.end().unsigned_abs(),
        true,
        "Deliveries per second for the whole worker fleet; `null` (the default) for no limit.",
    )
}

/// A field whose `null` is a value rather than absence: absent is `None`, `null` is the raw
/// text `null`.
fn null_is_a_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// The raw fields both bodies have (their schemas differ in what absence means).
struct RawFields<'a> {
    url: Option<&'a RawValue>,
    description: Option<&'a RawValue>,
    event_types: Option<&'a RawValue>,
    enabled: Option<&'a RawValue>,
    headers: Option<&'a RawValue>,
    rate_limit_per_second: Option<&'a RawValue>,
}

/// The [`RawFields`] of a body, [`EndpointIn`] or [`EndpointPatchIn`].
macro_rules! raw_fields {
    ($body:expr) => {
        RawFields {
            url: $body.url.as_deref(),
            description: $body.description.as_deref(),
            event_types: $body.event_types.as_deref(),
            enabled: $body.enabled.as_deref(),
            headers: $body.headers.as_deref(),
            rate_limit_per_second: $body.rate_limit_per_second.as_deref(),
        }
    };
}

/// A valid body, defaults applied.
impl Parse for EndpointIn {
    type Valid = NewEndpoint;

    fn parse(self) -> Result<NewEndpoint, ApiError> {
        let mut problems = Problems::default();
        if self.url.is_none() {
            problems.add("url", "is required");
        }
        let fields = parse_fields(raw_fields!(self), &mut problems);
        // Nothing is stored yet: a masked value has nothing to stand for.
        let headers = fields
            .headers
            .map(|requested| requested.resolve(&EndpointHeaders::default()))
            .transpose()
            .unwrap_or_else(|name| {
                problems.add(format!("headers.{name}"), masked_without_stored_value_message());
                None
            });
        let Some(url) = fields.url else {
            return Err(problems.into_error());
        };
        problems.finish()?;
        Ok(NewEndpoint {
            url,
            description: fields.description.unwrap_or_default(),
            event_types: fields.event_types.unwrap_or_else(EventTypes::all),
            enabled: fields.enabled.unwrap_or(true),
            headers: headers.unwrap_or_default(),
            rate_limit_per_second: fields.rate_limit_per_second.flatten(),
        })
    }
}

impl Parse for EndpointPatchIn {
    type Valid = EndpointPatch;

    fn parse(self) -> Result<EndpointPatch, ApiError> {
        let mut problems = Problems::default();
        let patch = parse_fields(raw_fields!(self), &mut problems);
        problems.finish()?;
        Ok(patch)
    }
}

/// Parse every present field, recording each problem.
fn parse_fields(raw: RawFields<'_>, problems: &mut Problems) -> EndpointPatch {
    EndpointPatch {
        url: problems.optional("url", raw.url, |raw| {
            WebhookUrl::parse(&json_string(raw)?).map_err(|rejection| rejection.to_string())
        }),
        description: problems.optional("description", raw.description, |raw| {
            Description::parse(&json_string(raw)?)
        }),
        event_types: raw.event_types.and_then(|raw| event_types(raw, problems)),
        enabled: problems.optional("enabled", raw.enabled, |raw| {
            serde_json::from_str::<bool>(raw.get())
                .map_err(|_| format!("must be true or false, not {}", json_kind(raw)))
        }),
        headers: raw.headers.and_then(|raw| headers(raw, problems)),
        rate_limit_per_second: problems.optional("rate_limit_per_second", raw.rate_limit_per_second, |raw| {
            if raw.get() == "null" {
                return Ok(None);
            }
            json_integer(raw)
                .ok_or_else(rate_limit_range_message)
                .and_then(RateLimit::parse)
                .map(Some)
        }),
    }
}

fn event_types(raw: &RawValue, problems: &mut Problems) -> Option<EventTypes> {
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
        problems.add(
            "event_types",
            format!("must be an array of patterns, not {}", json_kind(raw)),
        );
        return None;
    };
    let parsed = EventTypes::parse(items, json_string);
    check_items(problems, "event_types", parsed, |i| format!("event_types[{i}]"))
}

fn headers(raw: &RawValue, problems: &mut Problems) -> Option<RequestedHeaders> {
    let Ok(Entries(entries)) = serde_json::from_str::<Entries>(raw.get()) else {
        problems.add(
            "headers",
            format!(
                "must be an object of header names to string values, not {}",
                json_kind(raw)
            ),
        );
        return None;
    };
    let parsed = RequestedHeaders::parse(entries, |raw| json_string(&raw));
    check_items(problems, "headers", parsed, |name| format!("headers.{name}"))
}

/// The value, or `None` with each problem recorded: against the item it names
/// (`item_field(item)`), or against `field` as a whole.
fn check_items<T, K>(
    problems: &mut Problems,
    field: &str,
    parsed: Result<T, Vec<ItemProblem<K>>>,
    item_field: impl Fn(K) -> String,
) -> Option<T> {
    parsed
        .map_err(|found| {
            for problem in found {
                let at = problem.item.map_or_else(|| field.to_owned(), &item_field);
                problems.add(at, problem.message);
            }
        })
        .ok()
}

/// A JSON object's members in order, a repeated name included (a map would keep only one, so
/// `{"X-A": "1", "X-A": "2"}` would pass unnoticed).
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }

        d.deserialize_map(EntriesVisitor)
    }
}

/// Query parameters of `GET /api/endpoints`, as read (text); an empty `cursor` counts as absent,
/// an empty `limit` is not a number.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointsQuery {
    #[param(schema_with = limit_schema)]
    limit: Option<String>,
    #[param(schema_with = endpoint_cursor_schema)]
    cursor: Option<String>,
}

/// An endpoint cursor ([`encode_cursor`]): the base64url of 16 bytes, whose last character
/// carries 2 bits (so it is one of `AQgw`), padding optional. Every such text is a position;
/// empty is no cursor.
const ENDPOINT_CURSOR_PATTERN: &str = "^([A-Za-z0-9_-]{21}[AQgw]=*)?$";

fn endpoint_cursor_schema() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(ENDPOINT_CURSOR_PATTERN))
        .description(Some("The `next_cursor` of a previous page."))
        .into()
}

/// A valid listing request: endpoints after `after` (by id), at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct EndpointsPage {
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl Parse for EndpointsQuery {
    type Valid = EndpointsPage;

    fn parse(self) -> Result<EndpointsPage, ApiError> {
        let mut problems = Problems::default();
        let limit = problems.optional("limit", self.limit, |v| {
            integer_in(&v, 1, MAX_LIMIT).ok_or_else(|| format!("must be an integer from 1 to {MAX_LIMIT}"))
        });
        let after = problems.optional("cursor", non_empty(self.cursor), |c| {
            decode_cursor(&c).ok_or_else(|| "is not a cursor this API issued".to_owned())
        });
        problems.finish()?;
        Ok(EndpointsPage {
            after,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

/// The opaque cursor after an endpoint: its id in base64url.
pub(super) fn encode_cursor(id: Uuid) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(s: &str) -> Option<Uuid> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
    Uuid::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    fn fields_of(err: ApiError) -> Vec<String> {
        let ApiError::Validation(details) = err else {
            panic!("expected a validation error, got {err:?}");
        };
        details.into_iter().map(|d| d.field).collect()
    }

    #[test]
    fn every_bad_field_of_a_create_is_reported_by_name() {
        let body = r#"{"description": 5, "event_types": ["ok", "bad*"], "enabled": "yes",
                       "headers": {"Host": "x", "X-Ok": "y", "X-Bad": 1}, "rate_limit_per_second": 0}"#;
        let err = parse_json::<EndpointIn>(body.as_bytes())
            .and_then(EndpointIn::parse)
            .expect_err("invalid");
        assert_eq!(
            fields_of(err),
            [
                "url",
                "description",
                "event_types[1]",
                "enabled",
                "headers.Host",
                "headers.X-Bad",
                "rate_limit_per_second"
            ]
        );
    }

    #[test]
    fn a_create_gets_the_defaults_and_null_counts_as_absent() {
        let body = r#"{"url": "https://EXAMPLE.com", "description": null, "rate_limit_per_second": null}"#;
        let valid = parse_json::<EndpointIn>(body.as_bytes())
            .and_then(EndpointIn::parse)
            .expect("valid");
        assert_eq!(valid.url.as_str(), "https://example.com/");
        assert_eq!(valid.description.as_str(), "");
        assert_eq!(valid.event_types.as_strs(), ["*"]);
        assert!(valid.enabled && valid.headers.is_empty());
        assert_eq!(valid.rate_limit_per_second, None);
    }

    #[test]
    fn in_a_patch_null_removes_the_rate_limit_and_absence_keeps_it() {
        let parse = |body: &str| {
            parse_json::<EndpointPatchIn>(body.as_bytes())
                .and_then(EndpointPatchIn::parse)
                .expect("valid")
        };
        assert_eq!(
            parse(r#"{"rate_limit_per_second": null}"#).rate_limit_per_second,
            Some(None)
        );
        assert_eq!(parse("{}").rate_limit_per_second, None);
        assert_eq!(
            parse(r#"{"rate_limit_per_second": 7}"#).rate_limit_per_second,
            Some(RateLimit::parse(7).ok())
        );
        assert!(parse(r#"{"description": null}"#).description.is_none());
    }

    #[test]
    fn a_header_name_given_twice_is_refused() {
        let body = r#"{"url": "https://example.com", "headers": {"X-A": "1", "X-A": "2"}}"#;
        let err = parse_json::<EndpointIn>(body.as_bytes())
            .and_then(EndpointIn::parse)
            .expect_err("invalid");
        assert_eq!(fields_of(err), ["headers.X-A"]);
    }

    #[test]
    fn every_cursor_the_pattern_admits_is_a_position_and_every_issued_one_matches() {
        use proptest::{prelude::*, string::string_regex, test_runner::TestRunner};
        let shape = ENDPOINT_CURSOR_PATTERN
            .trim_start_matches('^')
            .trim_end_matches('$');
        let strategy = string_regex(shape).expect("pattern");
        TestRunner::default()
            .run(&strategy, |c| {
                prop_assert!(c.is_empty() || decode_cursor(&c).is_some(), "{:?}", c);
                Ok(())
            })
            .expect("every admitted cursor decodes");
        for _ in 0..100 {
            let issued = encode_cursor(Uuid::new_v4());
            assert!(issued.len() == 22 && "AQgw".contains(&issued[21..]), "{issued}");
        }
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        for bad in ["", "x", "AAAA", "not a cursor", "\u{0}"] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }
}
