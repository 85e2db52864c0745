//! The pure half of writing a batch: which events go to the database and in which order
//! ([`Plan::new`]), and what each waiter is told once the statement has answered
//! ([`Plan::resolve`]). No I/O here, so every rule is unit-tested below.
//!
//! Rules: the first event of the batch with a given `(organization, dedup_id)` is the only one
//! sent; later ones are duplicates of whatever ends up holding the key (that first event when
//! it claims the key, else the event that held it before). Rows are sent ordered by
//! `(organization, dedup_id)`, so concurrent batches lock keys in one order and cannot deadlock.

use std::collections::{HashMap, HashSet};

use triggers_shared::db::queue::event_batch::{NewEvents, RowFate};
use uuid::Uuid;

use super::{NewEvent, Outcome};
use crate::routing::Fanout;

/// How one batch is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// Indices (into the batch) of the events sent to the database, in lock order.
    sent: Vec<usize>,
    /// For each event, the index of the first event of the batch with its dedup key (itself
    /// when it is the first or has no key).
    first: Vec<usize>,
}

/// A dedup key whose holder the batch statement could not see: it committed after the
/// statement's snapshot was taken (ask `db::events::dedup_owners`).
pub(super) type Key<'a> = (Uuid, &'a str);

impl Plan {
    pub(super) fn new(events: &[NewEvent]) -> Self {
        let mut first_of: HashMap<Key<'_>, usize> = HashMap::new();
        let mut first = Vec::with_capacity(events.len());
        let mut sent = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let f = match e.dedup_id.as_deref() {
                Some(d) => *first_of.entry((e.organization_id, d)).or_insert(i),
                None => i,
            };
            first.push(f);
            if f == i {
                sent.push(i);
            }
        }
        // Stable: events without a key keep their arrival order.
        sent.sort_by_key(|&i| (events[i].organization_id, events[i].dedup_id.as_deref()));
        Self { sent, first }
    }

    /// The rows of the batch statement: every event sent, or `only` those (indices into the
    /// batch), each routed by its own fan-out or the one `rerouted` gives it.
    pub(super) fn rows<'a>(
        &self,
        events: &'a [NewEvent],
        rerouted: &'a HashMap<usize, Fanout>,
        only: Option<&HashSet<usize>>,
    ) -> NewEvents<'a> {
        let mut rows = NewEvents::default();
        for &i in self.sent.iter().filter(|i| only.is_none_or(|o| o.contains(i))) {
            let e = &events[i];
            let fanout = rerouted.get(&i).unwrap_or(&e.fanout);
            let row = rows.ids.len();
            rows.ids.push(e.id);
            rows.organization_ids.push(e.organization_id);
            rows.types.push(&e.event_type);
            rows.dedup_ids.push(e.dedup_id.as_deref());
            rows.payloads.push(e.payload.get());
            rows.endpoints_versions.push(fanout.version);
            rows.deliveries.extend(
                fanout
                    .deliveries
                    .iter()
                    .map(|&(endpoint, status)| (row, endpoint, status)),
            );
        }
        rows
    }

    /// The indices of the sent events with these ids.
    pub(super) fn sent_with_ids(&self, events: &[NewEvent], ids: &HashSet<Uuid>) -> Vec<usize> {
        self.sent
            .iter()
            .copied()
            .filter(|&i| ids.contains(&events[i].id))
            .collect()
    }

    /// Keys that lost to a holder the statement could not name.
    pub(super) fn unknown_owners<'a>(&self, events: &'a [NewEvent], written: &[RowFate]) -> Vec<Key<'a>> {
        let by_id: HashMap<Uuid, usize> = self.sent.iter().map(|&i| (events[i].id, i)).collect();
        written
            .iter()
            .filter_map(|w| match w {
                RowFate::Duplicate { id, owner: None } => by_id.get(id),
                _ => None,
            })
            .filter_map(|&i| Some((events[i].organization_id, events[i].dedup_id.as_deref()?)))
            .collect()
    }

    /// One outcome per event, in batch order. `late_owners` answers [`Plan::unknown_owners`].
    /// Fails when the statement did not account for an event it was sent.
    pub(super) fn resolve(
        &self,
        events: &[NewEvent],
        written: &[RowFate],
        late_owners: &HashMap<(Uuid, String), Uuid>,
    ) -> Result<Vec<Outcome>, Uuid> {
        let by_id: HashMap<Uuid, &RowFate> = written
            .iter()
            .map(|w| match w {
                RowFate::Inserted { id, .. } | RowFate::Duplicate { id, .. } | RowFate::Stale { id } => {
                    (*id, w)
                }
            })
            .collect();
        let outcome_of_sent = |i: usize| -> Result<Outcome, Uuid> {
            let e = &events[i];
            Ok(match by_id.get(&e.id) {
                Some(RowFate::Inserted { id, created_at }) => Outcome::Accepted {
                    id: *id,
                    created_at: *created_at,
                },
                Some(RowFate::Duplicate { owner, .. }) => {
                    let key = (
                        e.organization_id,
                        e.dedup_id.as_deref().unwrap_or_default().to_owned(),
                    );
                    // If the holder vanished since (the janitor purged it), the conflict still
                    // stood for this statement: report the claimant's own id.
                    let owner = owner.or_else(|| late_owners.get(&key).copied()).unwrap_or(e.id);
                    Outcome::Duplicate { event_id: owner }
                }
                Some(RowFate::Stale { .. }) | None => return Err(e.id),
            })
        };
        let sent: HashMap<usize, Outcome> = self
            .sent
            .iter()
            .map(|&i| outcome_of_sent(i).map(|o| (i, o)))
            .collect::<Result<_, _>>()?;
        let mut outcomes = Vec::with_capacity(events.len());
        for (i, &f) in self.first.iter().enumerate() {
            let outcome = match sent.get(&f) {
                Some(o) if f == i => o.clone(),
                Some(Outcome::Accepted { id, .. }) => Outcome::Duplicate { event_id: *id },
                Some(Outcome::Duplicate { event_id }) => Outcome::Duplicate { event_id: *event_id },
                None => return Err(events[i].id),
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use triggers_shared::models::{DedupId, DeliveryStatus, EventType, Payload};

    use super::*;

    fn event(org: u128, dedup: Option<&str>) -> NewEvent {
        NewEvent {
            id: Uuid::now_v7(),
            organization_id: Uuid::from_u128(org),
            event_type: EventType::parse("t").expect("event type"),
            dedup_id: dedup.map(|d| DedupId::parse(d).expect("dedup id")),
            payload: Payload::try_from("{}".to_owned()).expect("valid JSON"),
            fanout: Fanout {
                version: 3,
                deliveries: vec![(Uuid::from_u128(org * 10), DeliveryStatus::Pending)],
            },
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("in range")
    }

    fn accepted(events: &[NewEvent], i: usize, secs: i64) -> RowFate {
        RowFate::Inserted {
            id: events[i].id,
            created_at: at(secs),
        }
    }

    #[test]
    fn only_the_first_event_with_a_dedup_key_is_sent_and_rows_are_in_key_order() {
        let events = [
            event(2, Some("b")),
            event(1, None),
            event(2, Some("a")),
            event(2, Some("b")),
            event(1, Some("z")),
        ];
        let plan = Plan::new(&events);
        let not_rerouted = HashMap::new();
        let rows = plan.rows(&events, &not_rerouted, None);
        let sent: Vec<Uuid> = [1, 4, 2, 0].iter().map(|&i| events[i].id).collect();
        assert_eq!(rows.ids, sent);
        assert_eq!(rows.dedup_ids, vec![None, Some("z"), Some("a"), Some("b")]);
        assert_eq!(rows.payloads, vec!["{}"; 4]);
        assert_eq!(rows.endpoints_versions, vec![3; 4]);
        let (org1, org2) = (Uuid::from_u128(10), Uuid::from_u128(20));
        let pending = DeliveryStatus::Pending;
        assert_eq!(
            rows.deliveries,
            vec![
                (0, org1, pending),
                (1, org1, pending),
                (2, org2, pending),
                (3, org2, pending)
            ]
        );
    }

    #[test]
    fn a_rerouted_event_is_sent_again_alone_with_its_new_fanout() {
        let events = [event(1, None), event(2, Some("k"))];
        let plan = Plan::new(&events);
        let fresh = Fanout {
            version: 4,
            deliveries: vec![(Uuid::from_u128(77), DeliveryStatus::Skipped)],
        };
        let stale = HashSet::from([events[1].id]);
        let only: HashSet<usize> = plan.sent_with_ids(&events, &stale).into_iter().collect();
        assert_eq!(only, HashSet::from([1]));
        let rerouted = HashMap::from([(1, fresh)]);
        let rows = plan.rows(&events, &rerouted, Some(&only));
        assert_eq!(rows.ids, vec![events[1].id]);
        assert_eq!(rows.endpoints_versions, vec![4]);
        assert_eq!(
            rows.deliveries,
            vec![(0, Uuid::from_u128(77), DeliveryStatus::Skipped)]
        );
    }

    #[test]
    fn the_same_dedup_id_in_two_organisations_is_two_keys() {
        let events = [event(1, Some("k")), event(2, Some("k"))];
        assert_eq!(
            Plan::new(&events).rows(&events, &HashMap::new(), None).ids.len(),
            2
        );
    }

    #[test]
    fn later_events_of_a_claimed_key_are_duplicates_of_the_first() {
        let events = [event(1, Some("k")), event(1, None), event(1, Some("k"))];
        let plan = Plan::new(&events);
        let written = [accepted(&events, 0, 10), accepted(&events, 1, 10)];
        let outcomes = plan.resolve(&events, &written, &HashMap::new());
        assert_eq!(
            outcomes,
            Ok(vec![
                Outcome::Accepted {
                    id: events[0].id,
                    created_at: at(10)
                },
                Outcome::Accepted {
                    id: events[1].id,
                    created_at: at(10)
                },
                Outcome::Duplicate {
                    event_id: events[0].id
                },
            ])
        );
    }

    #[test]
    fn a_key_held_before_the_batch_makes_every_event_with_it_a_duplicate_of_the_holder() {
        let holder = Uuid::from_u128(99);
        let events = [event(1, Some("k")), event(1, Some("k"))];
        let plan = Plan::new(&events);
        let written = [RowFate::Duplicate {
            id: events[0].id,
            owner: Some(holder),
        }];
        let expected = Outcome::Duplicate { event_id: holder };
        assert_eq!(
            plan.resolve(&events, &written, &HashMap::new()),
            Ok(vec![expected.clone(), expected])
        );
    }

    #[test]
    fn a_holder_the_statement_could_not_see_is_asked_for_and_then_reported() {
        let holder = Uuid::from_u128(7);
        let events = [event(1, Some("k")), event(1, None)];
        let plan = Plan::new(&events);
        let written = [
            RowFate::Duplicate {
                id: events[0].id,
                owner: None,
            },
            accepted(&events, 1, 5),
        ];
        assert_eq!(
            plan.unknown_owners(&events, &written),
            vec![(Uuid::from_u128(1), "k")]
        );
        let late = HashMap::from([((Uuid::from_u128(1), "k".to_owned()), holder)]);
        let outcomes = plan.resolve(&events, &written, &late).expect("resolved");
        assert_eq!(outcomes[0], Outcome::Duplicate { event_id: holder });
        // Gone by the time we asked: the claimant's own id, as before the split.
        let outcomes = plan
            .resolve(&events, &written, &HashMap::new())
            .expect("resolved");
        assert_eq!(
            outcomes[0],
            Outcome::Duplicate {
                event_id: events[0].id
            }
        );
    }

    #[test]
    fn an_event_the_statement_did_not_account_for_fails_the_resolution() {
        let events = [event(1, None), event(1, None)];
        let plan = Plan::new(&events);
        let written = [accepted(&events, 0, 1)];
        assert_eq!(
            plan.resolve(&events, &written, &HashMap::new()),
            Err(events[1].id)
        );
    }
}
