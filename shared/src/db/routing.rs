//! Which endpoints an event goes to: an organisation's endpoints (id, patterns, enabled) as of
//! one version of them (`organizations.endpoints_version`, bumped by every change), and the
//! fan-out of one event type over them. Ingest caches [`Routes`] per organisation; the batch
//! statement refuses a fan-out computed from a version that is no longer current.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::models::{DeliveryStatus, EventTypePattern, any_matches};

/// One organisation's endpoints at one version.
#[derive(Debug)]
pub struct Routes {
    version: i64,
    endpoints: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    id: Uuid,
    enabled: bool,
    patterns: Vec<EventTypePattern>,
}

/// The deliveries an event gets, and the endpoints version they were chosen at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    pub version: i64,
    /// `(endpoint, Pending)` for each enabled matching endpoint, `(endpoint, Skipped)` for each
    /// disabled one.
    pub deliveries: Vec<(Uuid, DeliveryStatus)>,
}

impl Routes {
    /// Routes from stored rows: `(id, patterns, enabled)`.
    pub fn new(version: i64, rows: Vec<(Uuid, Vec<String>, bool)>) -> Self {
        let endpoints = rows
            .into_iter()
            .map(|(id, patterns, enabled)| Route {
                id,
                enabled,
                // Stored patterns were validated on the way in; one that no longer parses
                // (never expected) matches nothing rather than everything.
                patterns: patterns
                    .iter()
                    .filter_map(|p| EventTypePattern::parse(p).ok())
                    .collect(),
            })
            .collect();
        Self { version, endpoints }
    }

    /// Does the organisation have any endpoint?
    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The deliveries of an event of type `event_type`, one per matching endpoint.
    pub fn fanout(&self, event_type: &str) -> Fanout {
        let deliveries = self
            .endpoints
            .iter()
            .filter(|e| any_matches(&e.patterns, event_type))
            .map(|e| {
                let status = if e.enabled {
                    DeliveryStatus::Pending
                } else {
                    DeliveryStatus::Skipped
                };
                (e.id, status)
            })
            .collect();
        Fanout {
            version: self.version,
            deliveries,
        }
    }
}

/// The organisation's endpoints and the version they are at, read in one snapshot. `None`: no
/// such organisation.
pub async fn load(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<Option<Routes>> {
    // One row per endpoint (one without endpoints, its endpoint columns null).
    let rows = sqlx::query!(
        r#"SELECT o.endpoints_version, ep.id AS "id?", ep.event_types AS "event_types?",
                  ep.disabled_reason IS NULL AS enabled
           FROM organizations o
           LEFT JOIN endpoints ep ON ep.organization_id = o.id
           WHERE o.id = $1
           ORDER BY ep.id"#,
        organization_id,
    )
    .fetch_all(conn)
    .await?;
    let Some(version) = rows.first().map(|r| r.endpoints_version) else {
        return Ok(None);
    };
    let endpoints = rows
        .into_iter()
        .filter_map(|r| Some((r.id?, r.event_types?, r.enabled?)))
        .collect();
    Ok(Some(Routes::new(version, endpoints)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u128, patterns: &[&str], enabled: bool) -> (Uuid, Vec<String>, bool) {
        let patterns = patterns.iter().map(|p| (*p).to_owned()).collect();
        (Uuid::from_u128(id), patterns, enabled)
    }

    #[test]
    fn an_event_goes_to_each_matching_endpoint_once_and_is_skipped_by_disabled_ones() {
        let routes = Routes::new(
            7,
            vec![
                row(1, &["*"], true),
                row(2, &["order.*", "order.created"], true),
                row(3, &["invoice.paid"], true),
                row(4, &["order.*"], false),
            ],
        );
        let fanout = routes.fanout("order.created");
        assert_eq!(fanout.version, 7);
        assert_eq!(
            fanout.deliveries,
            vec![
                (Uuid::from_u128(1), DeliveryStatus::Pending),
                (Uuid::from_u128(2), DeliveryStatus::Pending),
                (Uuid::from_u128(4), DeliveryStatus::Skipped),
            ]
        );
        assert_eq!(routes.fanout("invoice.paid").deliveries.len(), 2);
        assert!(Routes::new(1, vec![]).fanout("x").deliveries.is_empty());
    }

    #[test]
    fn a_stored_pattern_that_does_not_parse_matches_nothing() {
        let routes = Routes::new(1, vec![row(1, &["bad*pattern"], true)]);
        assert!(routes.fanout("bad.pattern").deliveries.is_empty());
    }
}
