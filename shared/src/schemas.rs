//! The OpenAPI schemas of the values requests are parsed into, built from the constants their
//! parsers use, so the document says exactly what is accepted: a string valid by one of these
//! schemas is one its parser accepts (the tests below generate strings from each pattern and
//! parse them), and where the parser is exactly a pattern, the other way round too.
//!
//! Patterns are written in the subset that ECMA-262 (what OpenAPI names), Python's `re` (what
//! validators and fuzzers run) and Rust's `regex` read alike: explicit classes and `\uXXXX`
//! escapes, no `\s`, `\d` or flags.
//!
//! What a schema cannot say is in its description: a webhook URL must also point to a public
//! address (DNS, at request time), header names are unique ignoring case, and a payload's size
//! and depth are bounded.

use std::borrow::Cow;

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        Ref, RefOr, Schema,
        schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type},
    },
};

use crate::{
    models::{
        DedupId, Description, EVENT_TYPE_PATTERN, EventType, EventTypePattern, MAX_DESCRIPTION_CHARS,
        MAX_HEADER_NAME_CHARS, MAX_HEADER_VALUE_CHARS, MAX_HEADERS, MAX_NAME_CHARS, MAX_PAYLOAD_BYTES,
        OrganizationName, Payload, REFUSED_HEADER_NAMES, REFUSED_HEADER_PREFIXES,
    },
    net::{MAX_WEBHOOK_URL_LEN, WebhookUrl},
};

/// A string without NUL: Postgres text cannot hold it, so every string the API stores or
/// filters on refuses it.
pub const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";
/// No control character (Unicode `Cc`, what Rust's `char::is_control` finds).
pub const NO_CONTROL_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
/// Characters that are neither control characters nor white space (Unicode `White_Space`, what
/// `str::trim` removes).
const VISIBLE_CHAR: &str = r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";
/// An organisation name: no control character, and at least one character that is not white
/// space.
pub fn organization_name_pattern() -> String {
    let any = r"[^\u0000-\u001F\u007F-\u009F]*";
    format!("^{any}{VISIBLE_CHAR}{any}$")
}

/// An event-type pattern: `*`, an event type, or an event type followed by `.*`.
pub fn event_type_pattern_pattern() -> String {
    format!(r"^(\*|{}(\.\*)?)$", unanchored(EVENT_TYPE_PATTERN))
}

/// An HTTP header name (an RFC 9110 token).
pub const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// A custom header's value: visible ASCII, spaces and tabs, not starting or ending with white
/// space (empty is allowed).
pub const HEADER_VALUE_PATTERN: &str = r"^([!-~]([ \t!-~]*[!-~])?)?$";

/// The header names an endpoint may not set ([`REFUSED_HEADER_NAMES`], and any name starting
/// with one of [`REFUSED_HEADER_PREFIXES`]), ignoring case.
pub fn refused_header_name_pattern() -> String {
    let names = REFUSED_HEADER_NAMES.map(ignoring_case).join("|");
    let prefixes = REFUSED_HEADER_PREFIXES.map(ignoring_case).join("|");
    format!("^(({names})$|{prefixes})")
}

/// A header name an endpoint may set: a token that is not refused (a negative lookahead, which
/// ECMA-262 and Python read; Rust's `regex` does not, so the tests check the two parts).
pub fn header_name_schema_pattern() -> String {
    format!(
        "^(?!{}){}",
        unanchored_start(&refused_header_name_pattern()),
        unanchored_start(HEADER_NAME_PATTERN)
    )
}

fn unanchored_start(pattern: &str) -> &str {
    pattern.trim_start_matches('^')
}

/// A webhook URL [`WebhookUrl::parse`] accepts: its shape ([`webhook_url_shape`]) and at most
/// [`MAX_WEBHOOK_URL_SCHEMA_LEN`] characters. The length is a lookahead rather than
/// `maxLength`, which fuzzers test by drawing strings of exactly that length (a regular
/// expression this rich makes that a minute's work); the tests check it at the boundary.
pub fn webhook_url_pattern() -> String {
    format!(
        "^(?=.{{1,{MAX_WEBHOOK_URL_SCHEMA_LEN}}}$){}",
        webhook_url_shape().trim_start_matches('^')
    )
}

/// The shape of a webhook URL, in the forms the URL standard keeps as they are (so its length
/// holds once normalised too): `http` or `https`, a host name (labels of letters, digits and
/// single hyphens, the last one starting with a letter) or an IPv4 address, an optional port,
/// then a path, query and fragment of characters that are never percent-encoded. The parser
/// accepts more (IPv6 literals, characters it percent-encodes).
fn webhook_url_shape() -> String {
    let label = "[A-Za-z0-9]+(-[A-Za-z0-9]+)*";
    let last_label = "[A-Za-z]([A-Za-z0-9]*)(-[A-Za-z0-9]+)*";
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let port = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9][0-9][0-9]|[1-5][0-9][0-9][0-9][0-9]|[1-9][0-9]{0,3}|0)";
    let escape = "%[0-9A-Fa-f][0-9A-Fa-f]";
    let path = format!("(/([A-Za-z0-9._~!$&'()*+,;=:@/-]|{escape})*)?");
    // `'` is percent-encoded in the query of http(s) URLs.
    let query = format!(r"(\?([A-Za-z0-9._~!$&()*+,;=:@/?-]|{escape})*)?");
    let fragment = format!("(#([A-Za-z0-9._~!$&()*+,;=:@/?-]|{escape})*)?");
    format!(
        "^[Hh][Tt][Tt][Pp][Ss]?://(({label}\\.)*{last_label}|{octet}(\\.{octet}){{3}})(:{port})?{path}{query}{fragment}$"
    )
}

/// The longest webhook URL a schema admits: a URL without a path gains a `/` when normalised,
/// and the limit holds for both forms.
pub const MAX_WEBHOOK_URL_SCHEMA_LEN: usize = MAX_WEBHOOK_URL_LEN - 1;

fn unanchored(pattern: &str) -> &str {
    pattern.trim_start_matches('^').trim_end_matches('$')
}

/// `text` as a pattern that ignores the case of its ASCII letters (`ab-` → `[aA][bB]-`).
fn ignoring_case(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
            } else if c.is_ascii_alphanumeric() || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// A string schema that refuses NUL, described: for query parameters and other free text.
pub fn text_without_nul(description: &str) -> Schema {
    string(description).pattern(Some(NO_NUL_PATTERN)).into()
}

/// A string that is one of `values`.
pub fn one_of_strings(description: &str, values: &[&str]) -> Schema {
    string(description)
        .enum_values(Some(values.iter().copied()))
        .into()
}

macro_rules! named_schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                RefOr::T($schema)
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

named_schema!(
    EventType,
    "EventType",
    string(&format!(
        "An event type: 1-{MAX_NAME_CHARS} characters, letters, digits and `._:-`, starting with a letter or digit."
    ))
    .min_length(Some(1))
    .max_length(Some(MAX_NAME_CHARS))
    .pattern(Some(EVENT_TYPE_PATTERN))
    .examples(["order.created"])
    .into()
);

named_schema!(
    EventTypePattern,
    "EventTypePattern",
    string(&format!(
        "`*` (every type), an event type (that type only), or an event type followed by `.*` \
         (`order.*` matches `order.created` and `order.item.added`, not `order`); at most \
         {MAX_NAME_CHARS} characters in all."
    ))
    .min_length(Some(1))
    .max_length(Some(MAX_NAME_CHARS))
    .pattern(Some(event_type_pattern_pattern()))
    .examples(["order.*"])
    .into()
);

named_schema!(
    DedupId,
    "DedupId",
    string(&format!(
        "1-{MAX_NAME_CHARS} characters, no NUL. The same id within {} hours for the same \
         organisation is a duplicate (`409`).",
        crate::models::DedupId::WINDOW_HOURS
    ))
    .min_length(Some(1))
    .max_length(Some(MAX_NAME_CHARS))
    .pattern(Some(NO_NUL_PATTERN))
    .into()
);

named_schema!(
    OrganizationName,
    "OrganizationName",
    string(&format!(
        "1-{MAX_NAME_CHARS} characters, not only white space, no control characters; stored as given."
    ))
    .min_length(Some(1))
    .max_length(Some(MAX_NAME_CHARS))
    .pattern(Some(organization_name_pattern()))
    .examples(["Acme Inc"])
    .into()
);

named_schema!(
    Description,
    "Description",
    string(&format!(
        "0-{MAX_DESCRIPTION_CHARS} characters, no control characters."
    ))
    .max_length(Some(MAX_DESCRIPTION_CHARS))
    .pattern(Some(NO_CONTROL_PATTERN))
    .into()
);

named_schema!(
    WebhookUrl,
    "WebhookUrl",
    string(&format!(
        "An http or https URL of at most {MAX_WEBHOOK_URL_LEN} characters (also once \
         normalised), without user-info; stored normalised (`https://EXAMPLE.com` becomes \
         `https://example.com/`). The pattern admits the common forms (host name or IPv4 address, \
         port, path, query, fragment); IPv6 literals and characters the URL standard \
         percent-encodes are accepted too. Depends on the outside world: unless the operator \
         allows private targets, a host that is internal, resolves to an internal address, or \
         does not resolve within 5 s is refused with `422 webhook_url_not_allowed`."
    ))
    .pattern(Some(webhook_url_pattern()))
    .examples(["https://example.com/webhooks/triggers"])
    .into()
);

/// A JSON value whose strings (keys included) hold no NUL: what an event payload is made of.
pub struct JsonValue;

named_schema!(
    JsonValue,
    "JsonValue",
    OneOfBuilder::new()
        .description(Some("Any JSON value whose strings and keys hold no NUL."))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NO_NUL_PATTERN))
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(ArrayBuilder::new().items(Ref::from_schema_name("JsonValue")))
        .item(json_object())
        .into()
);

fn json_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NO_NUL_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::Ref(
            Ref::from_schema_name("JsonValue"),
        ))))
}

named_schema!(
    Payload,
    "Payload",
    json_object()
        .description(Some(format!(
            "Any JSON object of at most {MAX_PAYLOAD_BYTES} bytes once insignificant white \
             space is removed (larger: `413 payload_too_large`) that Postgres' jsonb can store: \
             no `\\u0000`, no `\\u` escape of a lone UTF-16 surrogate, objects and arrays \
             nested at most 64 levels deep (the payload is level 1), numbers with at most 131,072 \
             digits before the decimal point and 16,383 after it (the exponent counted: \
             `1e131072` is too large, `1e-16384` too precise). Stored and served as JSON text: \
             key order and spacing as Postgres prints them."
        )))
        .into()
);

/// The custom request headers of an endpoint: name → value.
pub struct EndpointHeadersSchema;

named_schema!(
    EndpointHeadersSchema,
    "EndpointHeaders",
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "Up to {MAX_HEADERS} custom request headers, name → value. Names: HTTP tokens of \
             1-{MAX_HEADER_NAME_CHARS} characters, unique ignoring case (not expressible in the \
             schema: a name given twice in other cases is `422`); {} and names starting with {} \
             are refused, ignoring case. Values: at most {MAX_HEADER_VALUE_CHARS} characters of \
             visible ASCII, spaces and tabs, not starting or ending with white space.",
            REFUSED_HEADER_NAMES.map(|n| format!("`{n}`")).join(", "),
            REFUSED_HEADER_PREFIXES.map(|p| format!("`{p}`")).join(" or "),
        )))
        .max_properties(Some(MAX_HEADERS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_HEADER_NAME_CHARS))
                .pattern(Some(header_name_schema_pattern())),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_HEADER_VALUE_CHARS))
                .pattern(Some(HEADER_VALUE_PATTERN)),
        ))
        .examples([serde_json::json!({"Authorization": "Bearer abc"})])
        .into()
);

#[cfg(test)]
mod tests {
    use proptest::{prelude::*, string::string_regex};
    use regex::Regex;

    use super::*;
    use crate::models::{EventTypes, RequestedHeaders};

    fn matching(pattern: &str) -> impl Strategy<Value = String> + use<> {
        string_regex(unanchored(pattern)).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    fn regex(pattern: &str) -> Regex {
        Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn an_event_type_is_exactly_what_its_pattern_and_length_admit(s in "\\PC{0,8}|[A-Za-z0-9._:-]{0,300}") {
            let by_schema = regex(EVENT_TYPE_PATTERN).is_match(&s) && (1..=MAX_NAME_CHARS).contains(&s.chars().count());
            prop_assert_eq!(EventType::parse(&s).is_ok(), by_schema, "{:?}", s);
        }

        #[test]
        fn an_event_type_pattern_is_exactly_what_its_pattern_and_length_admit(s in "[*A-Za-z0-9._:-]{0,300}") {
            let by_schema = regex(&event_type_pattern_pattern()).is_match(&s) && (1..=MAX_NAME_CHARS).contains(&s.chars().count());
            prop_assert_eq!(EventTypePattern::parse(&s).is_ok(), by_schema, "{:?}", s);
        }

        #[test]
        fn a_dedup_id_is_exactly_what_its_pattern_and_length_admit(s in "\\PC{0,4}\u{0}?\\PC{0,4}|.{0,300}") {
            let by_schema = regex(NO_NUL_PATTERN).is_match(&s) && (1..=MAX_NAME_CHARS).contains(&s.chars().count());
            prop_assert_eq!(DedupId::parse(&s).is_ok(), by_schema, "{:?}", s);
        }

        #[test]
        fn an_organisation_name_is_exactly_what_its_pattern_and_length_admit(
            s in "[ \t\n\u{85}\u{a0}\u{2003}\u{3000}\u{7f}\u{1}a-zé]{0,6}|.{250,260}"
        ) {
            let by_schema = regex(&organization_name_pattern()).is_match(&s) && (1..=MAX_NAME_CHARS).contains(&s.chars().count());
            prop_assert_eq!(OrganizationName::parse(&s).is_ok(), by_schema, "{:?}", s);
        }

        #[test]
        fn a_description_is_exactly_what_its_pattern_and_length_admit(s in "[\u{0}\u{1f}\u{7f}\u{9f}\u{a0}a ]{0,6}|.{250,260}") {
            let by_schema = regex(NO_CONTROL_PATTERN).is_match(&s) && s.chars().count() <= MAX_DESCRIPTION_CHARS;
            prop_assert_eq!(Description::parse(&s).is_ok(), by_schema, "{:?}", s);
        }

        #[test]
        fn every_url_the_schema_admits_is_accepted_with_its_length_kept_once_normalised(
            url in matching(&webhook_url_shape())
        ) {
            if url.len() > MAX_WEBHOOK_URL_SCHEMA_LEN {
                // Over the schema's limit: nothing is promised.
                return Ok(());
            }
            let parsed = WebhookUrl::parse(&url);
            prop_assert!(parsed.is_ok(), "{:?}: {:?}", url, parsed);
            if let Ok(parsed) = parsed {
                prop_assert!(parsed.as_str().len() <= url.len() + 1, "{:?} became {:?}", url, parsed.as_str());
            }
        }

        #[test]
        fn every_header_set_the_schema_admits_is_accepted(
            headers in prop::collection::btree_map(matching(HEADER_NAME_PATTERN), matching(HEADER_VALUE_PATTERN), 0..=MAX_HEADERS)
        ) {
            let refused = regex(&refused_header_name_pattern());
            let mut seen = std::collections::HashSet::new();
            let admitted: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(name, value)| {
                    name.len() <= MAX_HEADER_NAME_CHARS
                        && value.len() <= MAX_HEADER_VALUE_CHARS
                        && !refused.is_match(name)
                        && seen.insert(name.to_ascii_lowercase())
                        // A masked value stands for a stored one: state, not shape.
                        && value != crate::models::MASKED_VALUE
                })
                .collect();
            let parsed = RequestedHeaders::parse(admitted.clone(), |v: String| Ok(v));
            prop_assert!(parsed.is_ok(), "{:?}: {:?}", admitted, parsed);
        }
    }

    #[test]
    fn the_longest_url_the_schema_admits_is_accepted_and_one_more_character_is_not() {
        let pattern = regex(&webhook_url_shape());
        assert_eq!(
            webhook_url_pattern(),
            format!("^(?=.{{1,2047}}$){}", &webhook_url_shape()[1..]),
            "the length is bounded by the lookahead"
        );
        let prefix = "HTTP://";
        let host = format!("a{}", "b".repeat(MAX_WEBHOOK_URL_SCHEMA_LEN - prefix.len() - 1));
        let longest = format!("{prefix}{host}");
        assert!(pattern.is_match(&longest) && longest.len() == MAX_WEBHOOK_URL_SCHEMA_LEN);
        let stored = WebhookUrl::parse(&longest).expect("the longest URL the schema admits");
        assert_eq!(stored.as_str().len(), MAX_WEBHOOK_URL_LEN, "{}", stored.as_str());
        assert!(WebhookUrl::parse(&format!("{longest}b")).is_err());
    }

    #[test]
    fn urls_the_parser_refuses_or_rewrites_are_outside_the_schema() {
        let pattern = regex(&webhook_url_shape());
        for url in [
            "http://x.5",          // a numeric last label makes the host an (invalid) IPv4 address
            "http://a.0x1f",       // so does a hexadecimal one
            "http://999.1.1.1",    // an octet over 255
            "http://01.2.3.4",     // a leading zero (octal: rewritten)
            "http://xn--a.com",    // invalid punycode
            "http://a.com:65536/", // a port over 65535
            "http://a.com:080/",   // a leading zero (rewritten)
            "http://a.com/?a'b",   // `'` in the query is percent-encoded
            "http://a.com/%zz",    // not an escape
            "ftp://a.com/",
            "http://user@a.com/",
            "http:///x",
        ] {
            assert!(!pattern.is_match(url), "{url}");
        }
        for url in [
            "http://example.com",
            "HTTPS://A.b-c.example:8443/p/a;t%20h?q=1&r=/?#frag",
            "http://10.0.0.1/",
        ] {
            assert!(pattern.is_match(url), "{url}");
            assert!(WebhookUrl::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn every_header_name_triggers_sets_is_refused_by_the_schema_in_any_case() {
        let refused = regex(&refused_header_name_pattern());
        for name in [
            "Content-Type",
            "HOST",
            "user-agent",
            "Webhook-Signature",
            "X-Event-Id",
            "x-event-",
        ] {
            assert!(refused.is_match(name), "{name}");
            let parsed = RequestedHeaders::parse(vec![(name.to_owned(), "v".to_owned())], |v: String| Ok(v));
            assert!(parsed.is_err(), "{name}");
        }
        for name in ["X-Host", "Hosts", "X-Webhook", "Authorization", "x-events"] {
            assert!(!refused.is_match(name), "{name}");
        }
    }

    #[test]
    fn event_type_patterns_in_the_schema_parse() {
        let ok = EventTypes::parse(vec!["*", "order.*", "a:b-c_d.e"], |s| Ok(s.to_owned()));
        assert!(ok.is_ok());
        let pattern = regex(&event_type_pattern_pattern());
        for bad in ["order*", "*.created", "order.*.x", "**", ".*"] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }
}
