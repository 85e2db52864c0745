//! Per-event timestamps shared by the senders and the webhook receiver: when each POST started,
//! whether it was accepted, and when its first webhook arrived at each matching endpoint (an
//! event matching M endpoints has M delivery slots). Lock-free (one atomic per event or slot and
//! field) so recording does not perturb what is measured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Timeline {
    pub epoch: Instant,
    /// The run's id, carried in each payload so the receiver can tell our events apart.
    pub run_id: String,
    /// The type the run's events are sent with.
    pub event_type: &'static str,
    /// Deliveries per accepted event: the endpoints each event matches.
    pub fanout: usize,
    /// Nanoseconds since `epoch` + 1 (0 = not recorded).
    started: Vec<AtomicU64>,
    accepted: Vec<AtomicBool>,
    /// One slot per (event, matching endpoint): event `seq`, endpoint `e` is `seq * fanout + e`.
    received: Vec<AtomicU64>,
    /// Events whose POST started, and of those the accepted ones (for the sampled timeline).
    pub started_count: AtomicU64,
    pub accepted_count: AtomicU64,
    /// First receipts of a known (event, endpoint); later receipts count as duplicates.
    pub first_receipts: AtomicU64,
    pub duplicates: AtomicU64,
    /// Webhooks that were not one of this run's events.
    pub unknown: AtomicU64,
}

/// What the receiver saw for the accepted events: counts are of deliveries (events x fanout).
#[derive(Debug, Default)]
pub struct Deliveries {
    pub delivered: u64,
    pub missing: u64,
    pub end_to_end: Vec<Duration>,
    /// When each arrived, since `epoch`.
    pub arrivals: Vec<Duration>,
    /// Since `epoch`.
    pub first_receipt: Option<Duration>,
    /// Since `epoch`.
    pub last_receipt: Option<Duration>,
}

impl Deliveries {
    /// Deliveries that arrived at or after `at` (since `epoch`).
    pub fn arrived_since(&self, at: Duration) -> u64 {
        self.arrivals.iter().filter(|&&r| r >= at).count() as u64
    }
}

impl Timeline {
    pub fn with_fanout(events: u64, fanout: usize, event_type: &'static str, run_id: String) -> Self {
        let n = usize::try_from(events).unwrap_or(usize::MAX);
        let fanout = fanout.max(1);
        Self {
            epoch: Instant::now(),
            run_id,
            event_type,
            fanout,
            started: (0..n).map(|_| AtomicU64::new(0)).collect(),
            accepted: (0..n).map(|_| AtomicBool::new(false)).collect(),
            received: (0..n.saturating_mul(fanout)).map(|_| AtomicU64::new(0)).collect(),
            started_count: AtomicU64::new(0),
            accepted_count: AtomicU64::new(0),
            first_receipts: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    pub fn started(&self, seq: usize, at: Instant) {
        if let Some(slot) = self.started.get(seq) {
            slot.store(self.stamp(at), Ordering::Relaxed);
            self.started_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn accepted(&self, seq: usize) {
        if let Some(slot) = self.accepted.get(seq) {
            slot.store(true, Ordering::Relaxed);
            self.accepted_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Record a webhook for event `seq` of run `run` at the run's endpoint number `endpoint`;
    /// keeps the first arrival only.
    pub fn received(&self, run: &str, seq: Option<u64>, endpoint: usize, at: Instant) {
        let slot = seq
            .filter(|_| run == self.run_id && endpoint < self.fanout)
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| s.checked_mul(self.fanout)?.checked_add(endpoint))
            .and_then(|s| self.received.get(s));
        let Some(slot) = slot else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if slot
            .compare_exchange(0, self.stamp(at), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.first_receipts.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Deliveries expected so far: accepted events times the endpoints each matches.
    pub fn accepted_deliveries(&self) -> u64 {
        self.accepted_count.load(Ordering::Relaxed) * self.fanout as u64
    }

    /// Each delivery slot with its event's start stamp, for the accepted events only.
    fn accepted_slots(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.received.iter().enumerate().filter_map(|(i, received)| {
            let event = i / self.fanout;
            let accepted = self.accepted.get(event)?.load(Ordering::Relaxed);
            let started = self.started.get(event)?.load(Ordering::Relaxed);
            accepted.then(|| (started, received.load(Ordering::Relaxed)))
        })
    }

    /// Scan every delivery slot: which of the accepted events' arrived, and how long after
    /// their POST started.
    pub fn deliveries(&self) -> Deliveries {
        let mut out = Deliveries::default();
        for (s, r) in self.accepted_slots() {
            if r == 0 {
                out.missing += 1;
                continue;
            }
            out.delivered += 1;
            out.end_to_end.push(Duration::from_nanos(r.saturating_sub(s)));
            let at = Duration::from_nanos(r - 1);
            out.arrivals.push(at);
            out.last_receipt = Some(out.last_receipt.map_or(at, |l| l.max(at)));
            out.first_receipt = Some(out.first_receipt.map_or(at, |f| f.min(at)));
        }
        out
    }
}

impl Timeline {
    /// End-to-end latencies grouped by when the webhook arrived: bucket `i` holds the events
    /// received in `[from + i*width, from + (i+1)*width)`.
    pub fn end_to_end_by_arrival(&self, from: Instant, width: Duration) -> Vec<Vec<Duration>> {
        let mut buckets: Vec<Vec<Duration>> = Vec::new();
        let offset = from.saturating_duration_since(self.epoch);
        let width = width.as_nanos().max(1);
        for (s, r) in self.accepted_slots() {
            if r == 0 {
                continue;
            }
            let at = Duration::from_nanos(r - 1).saturating_sub(offset);
            let i = usize::try_from(at.as_nanos() / width).unwrap_or(usize::MAX);
            if i >= 1_000_000 {
                continue;
            }
            if buckets.len() <= i {
                buckets.resize_with(i + 1, Vec::new);
            }
            buckets[i].push(Duration::from_nanos(r.saturating_sub(s)));
        }
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_count_accepted_events_once_and_ignore_strangers() {
        let t = Timeline::with_fanout(3, 1, "order.created", "run1".into());
        let t0 = t.epoch;
        for seq in 0..3 {
            t.started(seq, t0 + Duration::from_millis(10));
        }
        t.accepted(0);
        t.accepted(1);
        // Event 2 was not accepted, event 1 never arrives; event 0 arrives twice.
        t.received("run1", Some(0), 0, t0 + Duration::from_millis(30));
        t.received("run1", Some(0), 0, t0 + Duration::from_millis(50));
        t.received("run1", Some(2), 0, t0 + Duration::from_millis(40));
        t.received("other", Some(1), 0, t0 + Duration::from_millis(40));
        t.received("run1", Some(99), 0, t0 + Duration::from_millis(40));
        t.received("run1", None, 0, t0 + Duration::from_millis(40));
        let d = t.deliveries();
        assert_eq!((d.delivered, d.missing), (1, 1));
        assert_eq!(d.end_to_end, vec![Duration::from_millis(20)]);
        assert_eq!(d.last_receipt, Some(Duration::from_millis(30)));
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(t.unknown.load(Ordering::Relaxed), 3);
        assert_eq!(t.first_receipts.load(Ordering::Relaxed), 2);
        assert_eq!(t.started_count.load(Ordering::Relaxed), 3);
        assert_eq!(t.accepted_count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn end_to_end_latencies_are_bucketed_by_arrival_time() {
        let t = Timeline::with_fanout(3, 1, "order.created", "run1".into());
        let t0 = t.epoch;
        for seq in 0..3 {
            t.started(seq, t0 + Duration::from_millis(100));
            t.accepted(seq);
        }
        t.received("run1", Some(0), 0, t0 + Duration::from_millis(120));
        t.received("run1", Some(1), 0, t0 + Duration::from_millis(500));
        t.received("run1", Some(2), 0, t0 + Duration::from_millis(510));
        let b = t.end_to_end_by_arrival(t0 + Duration::from_millis(100), Duration::from_millis(250));
        assert_eq!(
            b,
            vec![
                vec![Duration::from_millis(20)],
                vec![Duration::from_millis(400), Duration::from_millis(410)]
            ]
        );
    }

    #[test]
    fn an_event_matching_several_endpoints_is_delivered_once_per_endpoint() {
        let t = Timeline::with_fanout(2, 3, "order.created", "run1".into());
        let t0 = t.epoch;
        for seq in 0..2 {
            t.started(seq, t0 + Duration::from_millis(10));
            t.accepted(seq);
        }
        assert_eq!(t.accepted_deliveries(), 6);
        for endpoint in 0..3 {
            t.received(
                "run1",
                Some(0),
                endpoint,
                t0 + Duration::from_millis(20 + endpoint as u64),
            );
        }
        t.received("run1", Some(1), 1, t0 + Duration::from_millis(40));
        t.received("run1", Some(1), 1, t0 + Duration::from_millis(41));
        // Endpoint 3 is not one of the three matching ones.
        t.received("run1", Some(1), 3, t0 + Duration::from_millis(42));
        let d = t.deliveries();
        assert_eq!((d.delivered, d.missing), (4, 2));
        assert_eq!(d.end_to_end[..3], [10, 11, 12].map(Duration::from_millis));
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(t.unknown.load(Ordering::Relaxed), 1);
    }
}
