//! Per-endpoint rate limits (`rate_limit_per_second`) as the worker meets them, for the whole
//! fleet: each send of a limited endpoint reserves its start time in Postgres
//! (`db::endpoint_rates`), one statement for every reservation waiting at that moment. An
//! endpoint without a limit never comes here.
//!
//! A start within [`HORIZON`] is reserved, and the delivery waits for it without its request
//! slot; one further out is not reserved and the job goes back to the queue, due when that
//! start would have come (each one spacing after the one before, so a backlog comes back at
//! about the endpoint's rate rather than all at once). Neither is an attempt.

use std::{collections::HashMap, time::Duration};

use sqlx::PgPool;
use triggers_shared::db::endpoint_rates::{self, Ask};
use uuid::Uuid;

use crate::coalesce::{BatchError, Coalescer};

/// How far ahead a delivery may reserve its start (and wait for it in the worker).
pub const HORIZON: Duration = Duration::from_secs(1);

/// Shorter waits than this are not worth giving the request slot up for.
const NEGLIGIBLE: Duration = Duration::from_millis(2);

/// The most reservations one statement makes.
const MAX_BATCH: usize = 256;

/// When a delivery of a limited endpoint may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Now.
    Now,
    /// After this wait (reserved): wait without a request slot, then send.
    After(Duration),
    /// Not within the horizon (nothing reserved): put the job back, due after this delay.
    Later(Duration),
}

/// One endpoint's ask: `(organisation, endpoint, limit per second)`.
type Key = (Uuid, Uuid, i32);

/// Reserves the starts of limited endpoints' deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    reserve: Coalescer<Key, Slot>,
}

impl Limiter {
    pub fn spawn(pool: PgPool) -> Self {
        let reserve = Coalescer::spawn(MAX_BATCH, move |keys: Vec<Key>| {
            let pool = pool.clone();
            async move {
                let asks = asks(&keys);
                let mut conn = pool.acquire().await?;
                let reserved = endpoint_rates::reserve(&mut conn, &asks, HORIZON).await?;
                Ok(slots(&keys, &reserved))
            }
        });
        Self { reserve }
    }

    /// When the next delivery to `endpoint_id` (limited to `per_second`) may start.
    pub async fn slot(
        &self,
        organization_id: Uuid,
        endpoint_id: Uuid,
        per_second: i32,
    ) -> Result<Slot, BatchError> {
        self.reserve
            .call((organization_id, endpoint_id, per_second))
            .await
    }
}

/// One ask per endpoint, for as many starts as it has requests.
fn asks(keys: &[Key]) -> Vec<Ask> {
    let mut asks: Vec<Ask> = Vec::new();
    let mut index: HashMap<(Uuid, Uuid), usize> = HashMap::new();
    for &(organization_id, endpoint_id, per_second) in keys {
        let i = *index.entry((organization_id, endpoint_id)).or_insert_with(|| {
            asks.push(Ask {
                organization_id,
                endpoint_id,
                per_second,
                wanted: 0,
            });
            asks.len() - 1
        });
        asks[i].wanted = asks[i].wanted.saturating_add(1);
    }
    asks
}

/// Hand the reserved starts out to the requests, in order: the first `granted` of an endpoint
/// get them, the others the starts that would follow. An endpoint with no answer (deleted
/// meanwhile) starts now: its delivery finds it gone.
fn slots(keys: &[Key], reserved: &[endpoint_rates::Reserved]) -> Vec<Slot> {
    let by_endpoint: HashMap<(Uuid, Uuid), &endpoint_rates::Reserved> = reserved
        .iter()
        .map(|r| ((r.organization_id, r.endpoint_id), r))
        .collect();
    let mut taken: HashMap<(Uuid, Uuid), u32> = HashMap::new();
    keys.iter()
        .map(|&(org, endpoint, _)| {
            let Some(r) = by_endpoint.get(&(org, endpoint)) else {
                return Slot::Now;
            };
            let n = taken.entry((org, endpoint)).or_insert(0);
            let at = r.first + r.spacing * *n;
            let granted = i64::from(*n) < i64::from(r.granted);
            *n += 1;
            match (granted, at) {
                (true, at) if at < NEGLIGIBLE => Slot::Now,
                (true, at) => Slot::After(at),
                (false, at) => Slot::Later(at),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_starts_go_in_order_and_the_rest_come_back_later_one_spacing_apart() {
        let (org, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let keys = [(org, a, 10), (org, b, 5), (org, a, 10), (org, a, 10)];
        let asks = asks(&keys);
        assert_eq!(asks.len(), 2);
        assert_eq!((asks[0].endpoint_id, asks[0].wanted), (a, 3));
        assert_eq!((asks[1].endpoint_id, asks[1].wanted), (b, 1));
        let reserved = [endpoint_rates::Reserved {
            organization_id: org,
            endpoint_id: a,
            first: Duration::ZERO,
            granted: 2,
            spacing: Duration::from_millis(100),
        }];
        // `b` has no answer (deleted): it goes now and finds its endpoint gone.
        assert_eq!(
            slots(&keys, &reserved),
            [
                Slot::Now,
                Slot::Now,
                Slot::After(Duration::from_millis(100)),
                Slot::Later(Duration::from_millis(200)),
            ]
        );
    }
}
