//! An endpoint as stored ([`Endpoint`]), and the validated values of the requests that create
//! and change one: [`Description`], [`EventTypes`], [`RateLimit`] and the custom headers
//! ([`RequestedHeaders`] as a request gives them, [`EndpointHeaders`] as stored). The URL is a
//! [`crate::net::WebhookUrl`], under the rules of `webhook_url`.
//!
//! Custom headers, exactly:
//! - at most [`MAX_HEADERS`]; names are HTTP tokens of 1 to [`MAX_HEADER_NAME_CHARS`]
//!   characters, unique ignoring case, kept as spelled; names Triggers sets or HTTP owns are
//!   refused, ignoring case: those in [`REFUSED_HEADER_NAMES`] and any starting with one of
//!   [`REFUSED_HEADER_PREFIXES`];
//! - values are at most [`MAX_HEADER_VALUE_CHARS`] characters of visible ASCII, spaces and tabs,
//!   not starting or ending with whitespace;
//! - the value of a *sensitive* header ([`is_sensitive_header`]: its name contains, ignoring
//!   case, one of [`SENSITIVE_NAME_PARTS`]) is never shown: reads show [`MASKED_VALUE`] instead.
//!   Sent back as the value of a sensitive header that is stored (same name, ignoring case),
//!   [`MASKED_VALUE`] keeps the stored value; with nothing stored under that name it is refused.

use std::collections::{BTreeMap, HashSet};

use axum::http::HeaderName;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::patterns::{EventTypePattern, any_matches};

pub const MAX_DESCRIPTION_CHARS: usize = 255;
/// The most patterns an endpoint may have.
pub const MAX_EVENT_TYPES: usize = 100;
/// The most custom headers an endpoint may have.
pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_NAME_CHARS: usize = 255;
pub const MAX_HEADER_VALUE_CHARS: usize = 1024;
/// The bounds of `rate_limit_per_second`.
pub const RATE_LIMIT_RANGE: std::ops::RangeInclusive<i64> = 1..=10_000;
/// What a read shows instead of a sensitive header's value.
pub const MASKED_VALUE: &str = "********";
/// Header names an endpoint may not set (Triggers sets them, or HTTP owns them).
pub const REFUSED_HEADER_NAMES: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "connection",
    "transfer-encoding",
];
/// Prefixes of header names an endpoint may not set: Triggers' signing and event headers.
pub const REFUSED_HEADER_PREFIXES: [&str; 2] = ["webhook-", "x-event-"];
/// A header whose name contains one of these (ignoring case) carries a credential: its value is
/// masked on every read.
pub const SENSITIVE_NAME_PARTS: [&str; 10] = [
    "auth",
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "cookie",
    "signature",
    "session",
    "credential",
];

/// Why an endpoint is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DisabledReason {
    /// A client disabled it (`enabled: false`).
    Manual,
    /// Its deliveries kept failing.
    Failing,
}

/// One row of `endpoints`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub organization_id: Uuid,
    pub id: Uuid,
    /// Stored normalised, as [`crate::net::WebhookUrl`] prints it.
    pub url: String,
    pub description: String,
    pub event_types: EventTypes,
    /// `None` while enabled.
    pub disabled_reason: Option<DisabledReason>,
    pub headers: EndpointHeaders,
    pub rate_limit_per_second: Option<i32>,
    pub signing_secret: String,
    /// The organisation's default endpoint, which `/api/webhook/config` manages.
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    pub fn enabled(&self) -> bool {
        self.disabled_reason.is_none()
    }
}

/// An endpoint's description: 0-255 characters, no control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(format!("must be at most {MAX_DESCRIPTION_CHARS} characters"));
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

/// The event types an endpoint subscribes to: 1-100 patterns, each once (a repeated pattern is
/// folded into its first occurrence), in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EventTypes(Vec<EventTypePattern>);

impl EventTypes {
    /// `["*"]`: every event type (the default).
    pub fn all() -> Self {
        Self(vec![EventTypePattern::all()])
    }

    /// Check 1 to [`MAX_EVENT_TYPES`] items (counted as given, before folding), each read as
    /// text by `as_text` and parsed as an [`EventTypePattern`]. Every problem is returned, each
    /// naming its item by index; a list of the wrong length is one problem, its items unread.
    pub fn parse<V>(
        items: Vec<V>,
        as_text: impl Fn(V) -> Result<String, String>,
    ) -> Result<Self, Vec<ItemProblem<usize>>> {
        if items.is_empty() || items.len() > MAX_EVENT_TYPES {
            return Err(vec![ItemProblem::whole(format!(
                "must hold 1 to {MAX_EVENT_TYPES} patterns"
            ))]);
        }
        let mut problems = Vec::new();
        let mut patterns = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match as_text(item).and_then(|text| EventTypePattern::parse(&text)) {
                Ok(pattern) if !patterns.contains(&pattern) => patterns.push(pattern),
                Ok(_) => {}
                Err(message) => problems.push(ItemProblem::at(i, message)),
            }
        }
        if problems.is_empty() {
            Ok(Self(patterns))
        } else {
            Err(problems)
        }
    }

    /// Does any pattern match `event_type`?
    pub fn matches(&self, event_type: &str) -> bool {
        any_matches(&self.0, event_type)
    }

    pub fn patterns(&self) -> &[EventTypePattern] {
        &self.0
    }

    /// The patterns as text (to bind as `text[]`).
    pub fn as_strs(&self) -> Vec<&str> {
        self.0.iter().map(EventTypePattern::as_str).collect()
    }
}

/// Patterns as stored: they were checked on the way in, so a refusal here is a bug.
impl TryFrom<Vec<String>> for EventTypes {
    type Error = String;

    fn try_from(stored: Vec<String>) -> Result<Self, String> {
        let patterns = stored
            .iter()
            .map(|s| EventTypePattern::parse(s).map_err(|e| format!("stored pattern {s:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(patterns))
    }
}

/// Deliveries per second an endpoint may receive, fleet-wide: 1-10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RateLimit(i32);

impl RateLimit {
    pub fn parse(n: i64) -> Result<Self, String> {
        if !RATE_LIMIT_RANGE.contains(&n) {
            return Err(rate_limit_range_message());
        }
        i32::try_from(n).map(Self).map_err(|_| rate_limit_range_message())
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// The message for a `rate_limit_per_second` out of range (or not an integer).
pub fn rate_limit_range_message() -> String {
    format!(
        "must be an integer from {} to {}, or null for no limit",
        RATE_LIMIT_RANGE.start(),
        RATE_LIMIT_RANGE.end()
    )
}

/// Does this header carry a credential, so that its value is masked on reads?
pub fn is_sensitive_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SENSITIVE_NAME_PARTS.iter().any(|part| lower.contains(part))
}

/// An endpoint's custom headers as stored: name (as the client spelled it) → value. Names are
/// unique ignoring case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EndpointHeaders(BTreeMap<String, String>);

impl EndpointHeaders {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers as reads show them: each sensitive value replaced by [`MASKED_VALUE`].
    pub fn masked(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(name, value)| {
                let shown = if is_sensitive_header(name) {
                    MASKED_VALUE
                } else {
                    value
                };
                (name.clone(), shown.to_owned())
            })
            .collect()
    }

    fn get_ignoring_case(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(stored, _)| stored.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Headers as stored: they were checked on the way in.
impl From<BTreeMap<String, String>> for EndpointHeaders {
    fn from(stored: BTreeMap<String, String>) -> Self {
        Self(stored)
    }
}

/// The value of one requested header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestedValue {
    Given(String),
    /// [`MASKED_VALUE`] sent for a sensitive header: keep what is stored.
    KeepStored,
}

/// One problem with a list or map of values: `item` names the item at fault (an index, a
/// header name), or is `None` when the problem is with the whole (its length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemProblem<K> {
    pub item: Option<K>,
    pub message: String,
}

impl<K> ItemProblem<K> {
    fn at(item: K, message: String) -> Self {
        Self {
            item: Some(item),
            message,
        }
    }

    fn whole(message: String) -> Self {
        Self { item: None, message }
    }
}

/// Custom headers as a request gives them, checked: each name and value is valid, but a masked
/// value still stands for the stored one ([`RequestedHeaders::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedHeaders(Vec<(String, RequestedValue)>);

impl RequestedHeaders {
    /// Check at most [`MAX_HEADERS`] `(name, value)` pairs, each value read as text by
    /// `as_text`. Every problem is returned, each naming its header; too many headers is one
    /// problem, the headers unread.
    pub fn parse<V>(
        entries: Vec<(String, V)>,
        as_text: impl Fn(V) -> Result<String, String>,
    ) -> Result<Self, Vec<ItemProblem<String>>> {
        if entries.len() > MAX_HEADERS {
            return Err(vec![ItemProblem::whole(format!(
                "must hold at most {MAX_HEADERS} headers"
            ))]);
        }
        let mut problems = Vec::new();
        let mut seen = HashSet::with_capacity(entries.len());
        let mut checked = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let verdict = check_header_name(&name).and_then(|()| {
                if !seen.insert(name.to_ascii_lowercase()) {
                    return Err("is given more than once (names are compared ignoring case)".into());
                }
                let value = as_text(value)?;
                if value == MASKED_VALUE && is_sensitive_header(&name) {
                    return Ok(RequestedValue::KeepStored);
                }
                check_header_value(&value).map(|()| RequestedValue::Given(value))
            });
            match verdict {
                Ok(value) => checked.push((name, value)),
                Err(message) => problems.push(ItemProblem::at(name, message)),
            }
        }
        if problems.is_empty() {
            Ok(Self(checked))
        } else {
            Err(problems)
        }
    }

    /// The headers to store, a masked value replaced by the value stored under the same name
    /// (ignoring case; the spelling of the request wins). `Err(name)` when a masked value has no
    /// stored value to stand for.
    pub fn resolve(self, stored: &EndpointHeaders) -> Result<EndpointHeaders, String> {
        let mut resolved = BTreeMap::new();
        for (name, value) in self.0 {
            let value = match value {
                RequestedValue::Given(value) => value,
                RequestedValue::KeepStored => match stored.get_ignoring_case(&name) {
                    Some(value) => value.to_owned(),
                    None => return Err(name),
                },
            };
            resolved.insert(name, value);
        }
        Ok(EndpointHeaders(resolved))
    }
}

/// The message for a masked value that stands for nothing stored.
pub fn masked_without_stored_value_message() -> String {
    format!(
        "is {MASKED_VALUE}, the masked form of a stored value, but no such header is stored: send its real value"
    )
}

fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME_CHARS {
        return Err(format!(
            "header names must be 1 to {MAX_HEADER_NAME_CHARS} characters"
        ));
    }
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err("is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)".into());
    }
    let lower = name.to_ascii_lowercase();
    if REFUSED_HEADER_NAMES.contains(&lower.as_str())
        || REFUSED_HEADER_PREFIXES.iter().any(|p| lower.starts_with(p))
    {
        return Err(format!(
            "may not be set: Triggers or HTTP sets it ({}, and names starting with {})",
            REFUSED_HEADER_NAMES.join(", "),
            REFUSED_HEADER_PREFIXES.map(|p| format!("{p}*")).join(" or ")
        ));
    }
    Ok(())
}

fn check_header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_VALUE_CHARS {
        return Err(format!(
            "the value must be at most {MAX_HEADER_VALUE_CHARS} characters"
        ));
    }
    // Visible ASCII, spaces and tabs (HTTP also allows bytes above 127, which it deprecates).
    if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err("the value must be visible ASCII characters, spaces and tabs".into());
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("the value must not start or end with whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Result<RequestedHeaders, Vec<ItemProblem<String>>> {
        let entries = pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect();
        RequestedHeaders::parse(entries, |v: &str| Ok(v.to_owned()))
    }

    fn refused(pairs: &[(&str, &str)]) -> Vec<(Option<String>, String)> {
        headers(pairs)
            .expect_err("refused")
            .into_iter()
            .map(|p| (p.item, p.message))
            .collect()
    }

    #[test]
    fn refused_names_are_refused_ignoring_case_and_others_are_kept_as_spelled() {
        for name in [
            "content-type",
            "Content-Length",
            "HOST",
            "user-agent",
            "Connection",
            "transfer-encoding",
            "webhook-id",
            "Webhook-Signature",
            "X-Event-Type",
            "x-event-anything",
        ] {
            let problems = refused(&[(name, "v")]);
            assert_eq!(problems.len(), 1, "{name}");
            assert_eq!(problems[0].0.as_deref(), Some(name));
            assert!(
                problems[0].1.starts_with("may not be set"),
                "{name}: {}",
                problems[0].1
            );
        }
        let ok = headers(&[("X-Tenant", "acme"), ("webhook", "x"), ("x-events", "y")]).expect("valid");
        let stored = ok.resolve(&EndpointHeaders::default()).expect("resolved");
        let names: Vec<&str> = stored.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["X-Tenant", "webhook", "x-events"]);
    }

    #[test]
    fn bad_names_values_and_case_duplicates_are_each_named() {
        let long = "v".repeat(MAX_HEADER_VALUE_CHARS + 1);
        let problems = refused(&[
            ("bad name", "v"),
            ("", "v"),
            ("X-A", "ok"),
            ("x-a", "again"),
            ("X-Nl", "a\nb"),
            ("X-Long", &long),
            ("X-Space", " v"),
            ("X-Utf8", "é"),
            ("X-Nul", "a\0"),
        ]);
        let named: Vec<&str> = problems.iter().filter_map(|(h, _)| h.as_deref()).collect();
        assert_eq!(
            named,
            [
                "bad name", "", "x-a", "X-Nl", "X-Long", "X-Space", "X-Utf8", "X-Nul"
            ]
        );
        assert!(headers(&[("X-Max", &"v".repeat(MAX_HEADER_VALUE_CHARS))]).is_ok());
        assert!(headers(&[("X-Empty", "")]).is_ok());
    }

    #[test]
    fn more_than_twenty_headers_are_refused_as_a_whole() {
        let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("x-h{i}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert_eq!(
            refused(&pairs),
            [(None, "must hold at most 20 headers".to_owned())]
        );
        assert!(headers(&pairs[..MAX_HEADERS]).is_ok());
    }

    #[test]
    fn sensitive_values_are_masked_and_a_mask_sent_back_keeps_the_stored_value() {
        let stored = headers(&[("Authorization", "Bearer s3cret"), ("X-Tenant", "acme")])
            .expect("valid")
            .resolve(&EndpointHeaders::default())
            .expect("no mask");
        let shown = stored.masked();
        assert_eq!(shown["Authorization"], MASKED_VALUE);
        assert_eq!(shown["X-Tenant"], "acme");

        // The mask under another spelling keeps the value; the new spelling wins.
        let again = headers(&[("authorization", MASKED_VALUE), ("X-Tenant", "beta")])
            .expect("valid")
            .resolve(&stored)
            .expect("resolved");
        let pairs: Vec<(&str, &str)> = again.iter().collect();
        assert_eq!(pairs, [("X-Tenant", "beta"), ("authorization", "Bearer s3cret")]);

        // A mask for nothing stored is refused, naming the header.
        let missing = headers(&[("X-Api-Key", MASKED_VALUE)])
            .expect("valid")
            .resolve(&stored);
        assert_eq!(missing, Err("X-Api-Key".to_owned()));
        // For a header that is not sensitive, the mask is just a value.
        let literal = headers(&[("X-Stars", MASKED_VALUE)])
            .expect("valid")
            .resolve(&EndpointHeaders::default())
            .expect("literal");
        assert_eq!(literal.masked()["X-Stars"], MASKED_VALUE);
    }

    #[test]
    fn sensitive_names_are_recognised_by_their_parts() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "X-Auth-Token",
            "Cookie",
            "X-Client-Secret",
            "X-Password",
            "X-Session-Id",
            "X-Signature",
            "Proxy-Authorization",
        ] {
            assert!(is_sensitive_header(name), "{name}");
        }
        for name in ["X-Tenant", "Accept", "X-Request-Source"] {
            assert!(!is_sensitive_header(name), "{name}");
        }
    }

    fn event_types(items: &[&str]) -> Result<EventTypes, Vec<ItemProblem<usize>>> {
        EventTypes::parse(items.to_vec(), |s: &str| Ok(s.to_owned()))
    }

    #[test]
    fn event_types_are_one_to_a_hundred_and_repeats_are_folded() {
        let folded = event_types(&["order.*", "*", "order.*"]).expect("valid");
        assert_eq!(folded.as_strs(), ["order.*", "*"]);
        assert!(folded.matches("order.created") && folded.matches("x"));
        assert!(event_types(&["a"; MAX_EVENT_TYPES]).is_ok());
        for count in [0, MAX_EVENT_TYPES + 1] {
            let problems = event_types(&vec!["a"; count]).expect_err("refused");
            assert_eq!(
                problems,
                [ItemProblem::whole("must hold 1 to 100 patterns".into())]
            );
        }
        let problems = event_types(&["ok", "order*", "ok.*", "*.x"]).expect_err("refused");
        let items: Vec<Option<usize>> = problems.iter().map(|p| p.item).collect();
        assert_eq!(items, [Some(1), Some(3)]);
    }

    #[test]
    fn descriptions_and_rate_limits_have_bounds() {
        assert!(Description::parse("").is_ok());
        assert!(Description::parse(&"é".repeat(MAX_DESCRIPTION_CHARS)).is_ok());
        assert!(Description::parse(&"é".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
        assert!(Description::parse("a\nb").is_err());
        assert!(Description::parse("a\0b").is_err());
        for n in [1, 10_000] {
            assert_eq!(RateLimit::parse(n).map(RateLimit::get), Ok(n as i32));
        }
        for n in [0, -1, 10_001, i64::MAX, i64::MIN] {
            assert!(RateLimit::parse(n).is_err(), "{n}");
        }
    }
}
