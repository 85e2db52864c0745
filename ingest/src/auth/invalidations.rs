//! Which verifications an invalidation overtook, per organisation.
//!
//! A verification reads a key's row, then hashes; if the organisation's keys change in between,
//! its result must not be cached. Each verification takes a [`Ticket`] (the invalidation count
//! when it started); each invalidation records its number against its organisation. A result is
//! stale only if *its* organisation was invalidated after its ticket, so rotating one
//! organisation's keys in a loop never stops other organisations' keys from being cached.
//!
//! Memory is bounded: past [`TRACKED_ORGS`] organisations the record is cleared and a floor is
//! raised instead, which makes every verification in flight at that moment stale (as a clear of
//! the whole cache does).

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use dashmap::DashMap;
use uuid::Uuid;

/// Organisations whose last invalidation is remembered at most.
const TRACKED_ORGS: usize = 10_000;

/// The invalidation count when a verification started.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket(u64);

pub(super) struct Invalidations {
    /// Invalidations so far (of one organisation or of everything).
    count: AtomicU64,
    /// Number of each organisation's latest invalidation.
    by_org: DashMap<Uuid, u64>,
    /// Every ticket below this is stale (set by [`Invalidations::all`] and on overflow).
    floor: AtomicU64,
}

impl Invalidations {
    pub(super) fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            by_org: DashMap::new(),
            floor: AtomicU64::new(0),
        }
    }

    /// Taken before a verification reads the key's row.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.count.load(SeqCst))
    }

    /// The organisation's keys changed: verifications of its keys in flight are stale.
    pub(super) fn org(&self, org_id: Uuid) {
        let number = self.count.fetch_add(1, SeqCst) + 1;
        self.by_org.insert(org_id, number);
        if self.by_org.len() > TRACKED_ORGS {
            self.by_org.clear();
            // Every number cleared above is at most the count read now.
            self.floor.fetch_max(self.count.load(SeqCst), SeqCst);
        }
    }

    /// Anything may have changed: every verification in flight is stale.
    pub(super) fn all(&self) {
        let number = self.count.fetch_add(1, SeqCst) + 1;
        self.floor.fetch_max(number, SeqCst);
    }

    /// Was this organisation (or everything) invalidated after the ticket was taken?
    pub(super) fn overtook(&self, ticket: Ticket, org_id: Uuid) -> bool {
        ticket.0 < self.floor.load(SeqCst) || self.by_org.get(&org_id).is_some_and(|n| *n > ticket.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalidation_makes_only_its_own_organisation_stale() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let inv = Invalidations::new();
        let ticket = inv.ticket();
        inv.org(a);
        assert!(inv.overtook(ticket, a));
        assert!(!inv.overtook(ticket, b));
        assert!(
            !inv.overtook(inv.ticket(), a),
            "a later verification of a is fresh"
        );
    }

    #[test]
    fn invalidating_everything_makes_every_verification_in_flight_stale() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let inv = Invalidations::new();
        let ticket = inv.ticket();
        inv.all();
        assert!(inv.overtook(ticket, a));
        assert!(inv.overtook(ticket, b));
        assert!(!inv.overtook(inv.ticket(), b));
    }

    #[test]
    fn overflowing_the_record_errs_on_the_side_of_stale() {
        let inv = Invalidations::new();
        let target = Uuid::new_v4();
        let ticket = inv.ticket();
        inv.org(target);
        for _ in 0..TRACKED_ORGS {
            inv.org(Uuid::new_v4());
        }
        assert!(inv.by_org.len() <= TRACKED_ORGS, "bounded");
        assert!(
            inv.overtook(ticket, target),
            "still stale after the record was cleared"
        );
        assert!(!inv.overtook(inv.ticket(), target));
    }
}
