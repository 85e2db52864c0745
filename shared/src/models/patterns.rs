//! Event-type patterns: which events an endpoint subscribes to.
//!
//! The grammar, exactly:
//! - `*` matches every event type;
//! - `P.*`, where `P` is itself a valid event type, matches every type that starts with `P.`
//!   and has at least one more character: `order.*` matches `order.created` and
//!   `order.item.added`, not `order`, `order.` (not a type: it may end with `.`, but nothing
//!   follows), `orders.created` or `Order.created` (case matters);
//! - any other text must be a valid event type ([`EventType`]) and matches that type only.
//!
//! Nothing else is a pattern: `*` anywhere but alone or after a final `.` (`order*`, `*.created`,
//! `order.*.added`), an empty string, or more than [`MAX_NAME_CHARS`] characters.

use serde::Serialize;

use super::values::{EventType, MAX_NAME_CHARS};

/// One validated pattern, kept as the text the client gave (that is what the API returns).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventTypePattern(String);

impl EventTypePattern {
    /// The pattern that matches everything.
    pub fn all() -> Self {
        Self("*".to_owned())
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_NAME_CHARS {
            return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
        }
        let ok = s == "*"
            || match s.strip_suffix(".*") {
                Some(prefix) => EventType::parse(prefix).is_ok(),
                None => EventType::parse(s).is_ok(),
            };
        if !ok {
            return Err("must be \"*\", an event type, or an event type followed by \".*\"".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does `event_type` match this pattern?
    pub fn matches(&self, event_type: &str) -> bool {
        let p = self.0.as_str();
        if p == "*" {
            return true;
        }
        match p.strip_suffix('*') {
            // `prefix` keeps its final '.': the type must go on after it.
            Some(prefix) => event_type.len() > prefix.len() && event_type.starts_with(prefix),
            None => event_type == p,
        }
    }
}

/// Does any of `patterns` match `event_type`?
pub fn any_matches(patterns: &[EventTypePattern], event_type: &str) -> bool {
    patterns.iter().any(|p| p.matches(event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> EventTypePattern {
        EventTypePattern::parse(s).unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
    }

    #[test]
    fn the_star_alone_matches_every_type() {
        for t in ["a", "order.created", "x:y-z_1", "order"] {
            assert!(p("*").matches(t), "{t}");
        }
    }

    #[test]
    fn an_exact_pattern_matches_only_its_type() {
        let order = p("order.created");
        assert!(order.matches("order.created"));
        for t in [
            "order.created.v2",
            "order.create",
            "Order.created",
            "order",
            "xorder.created",
        ] {
            assert!(!order.matches(t), "{t}");
        }
    }

    #[test]
    fn a_prefix_pattern_matches_the_types_below_its_prefix() {
        let order = p("order.*");
        assert!(order.matches("order.created"));
        assert!(order.matches("order.item.added"));
        assert!(order.matches("order.x"));
        for t in [
            "order",
            "orders.created",
            "Order.created",
            "order-created",
            "order:created",
        ] {
            assert!(!order.matches(t), "{t}");
        }
        assert!(p("a.b.*").matches("a.b.c"));
        assert!(!p("a.b.*").matches("a.bc"));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "**",
            "order*",
            "*.created",
            "order.*.added",
            "order.**",
            ".*",
            "-x.*",
            "order .*",
            "ordér",
            "order.*x",
            "a\0",
        ] {
            assert!(EventTypePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(EventTypePattern::parse(&"a".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(EventTypePattern::parse(&"a".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(EventTypePattern::parse(&format!("{}.*", "a".repeat(MAX_NAME_CHARS - 2))).is_ok());
        assert!(EventTypePattern::parse(&format!("{}.*", "a".repeat(MAX_NAME_CHARS - 1))).is_err());
    }

    #[test]
    fn a_list_matches_when_any_pattern_does() {
        let list = [p("invoice.paid"), p("order.*")];
        assert!(any_matches(&list, "invoice.paid"));
        assert!(any_matches(&list, "order.shipped"));
        assert!(!any_matches(&list, "invoice.sent"));
        assert!(!any_matches(&[], "order.shipped"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// Valid event types, with dots often enough to make prefixes interesting.
        fn event_type() -> impl Strategy<Value = String> {
            "[A-Za-z0-9][A-Za-z0-9._:-]{0,12}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn every_type_is_an_exact_pattern_matching_itself(t in event_type()) {
                let pattern = EventTypePattern::parse(&t).map_err(TestCaseError::fail)?;
                prop_assert!(pattern.matches(&t));
                prop_assert!(EventTypePattern::all().matches(&t));
            }

            #[test]
            fn an_exact_pattern_matches_no_other_type(a in event_type(), b in event_type()) {
                let pattern = EventTypePattern::parse(&a).map_err(TestCaseError::fail)?;
                prop_assert_eq!(pattern.matches(&b), a == b);
            }

            #[test]
            fn a_prefix_pattern_matches_exactly_the_longer_types_starting_with_prefix_and_dot(
                prefix in event_type(),
                t in event_type(),
            ) {
                let pattern = EventTypePattern::parse(&format!("{prefix}.*")).map_err(TestCaseError::fail)?;
                let below = t.strip_prefix(prefix.as_str()).and_then(|rest| rest.strip_prefix('.'));
                let expected = below.is_some_and(|rest| !rest.is_empty());
                prop_assert_eq!(pattern.matches(&t), expected);
                // The same, for the types built to match.
                let child = format!("{prefix}.{t}");
                prop_assert!(pattern.matches(&child));
            }

            #[test]
            fn parsing_never_panics_and_accepts_only_the_three_forms(s in "\\PC{0,20}") {
                if let Ok(pattern) = EventTypePattern::parse(&s) {
                    let form_ok = s == "*"
                        || EventType::parse(&s).is_ok()
                        || s.strip_suffix(".*").is_some_and(|p| EventType::parse(p).is_ok());
                    prop_assert!(form_ok, "{:?}", s);
                    prop_assert_eq!(pattern.as_str(), s.as_str());
                }
            }
        }
    }
}
