//! Per-event timestamps shared by the senders and the webhook receiver: when each POST started,
//! whether it was accepted, and when its first webhook arrived. Lock-free (one atomic per event
//! and field) so recording does not perturb what is measured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Timeline {
    pub epoch: Instant,
    /// The run's id, carried in each payload so the receiver can tell our events apart.
    pub run_id: String,
    /// Nanoseconds since `epoch` + 1 (0 = not recorded).
    started: Vec<AtomicU64>,
    accepted: Vec<AtomicBool>,
    received: Vec<AtomicU64>,
    /// Events whose POST started, and of those the accepted ones (for the sampled timeline).
    pub started_count: AtomicU64,
    pub accepted_count: AtomicU64,
    /// First receipts of a known event; later receipts count as duplicates.
    pub first_receipts: AtomicU64,
    pub duplicates: AtomicU64,
    /// Webhooks that were not one of this run's events.
    pub unknown: AtomicU64,
}

/// What the receiver saw for the accepted events.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub delivered: u64,
    pub missing: u64,
    pub end_to_end: Vec<Duration>,
    /// Since `epoch`.
    pub first_receipt: Option<Duration>,
    /// Since `epoch`.
    pub last_receipt: Option<Duration>,
}

impl Timeline {
    pub fn new(events: u64, run_id: String) -> Self {
        let n = usize::try_from(events).unwrap_or(usize::MAX);
        Self {
            epoch: Instant::now(),
            run_id,
            started: (0..n).map(|_| AtomicU64::new(0)).collect(),
            accepted: (0..n).map(|_| AtomicBool::new(false)).collect(),
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
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

    /// Record a webhook for event `seq` of run `run`; keeps the first arrival only.
    pub fn received(&self, run: &str, seq: Option<u64>, at: Instant) {
        let slot = seq
            .filter(|_| run == self.run_id)
            .and_then(|s| usize::try_from(s).ok())
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

    /// Scan every event: which accepted ones arrived, and how long after their POST started.
    pub fn deliveries(&self) -> Deliveries {
        let mut out = Deliveries::default();
        for ((accepted, started), received) in self.accepted.iter().zip(&self.started).zip(&self.received) {
            if !accepted.load(Ordering::Relaxed) {
                continue;
            }
            let (s, r) = (started.load(Ordering::Relaxed), received.load(Ordering::Relaxed));
            if r == 0 {
                out.missing += 1;
                continue;
            }
            out.delivered += 1;
            out.end_to_end.push(Duration::from_nanos(r.saturating_sub(s)));
            let at = Duration::from_nanos(r - 1);
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
        for ((accepted, started), received) in self.accepted.iter().zip(&self.started).zip(&self.received) {
            let (s, r) = (started.load(Ordering::Relaxed), received.load(Ordering::Relaxed));
            if !accepted.load(Ordering::Relaxed) || r == 0 {
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
        let t = Timeline::new(3, "run1".into());
        let t0 = t.epoch;
        for seq in 0..3 {
            t.started(seq, t0 + Duration::from_millis(10));
        }
        t.accepted(0);
        t.accepted(1);
        // Event 2 was not accepted, event 1 never arrives; event 0 arrives twice.
        t.received("run1", Some(0), t0 + Duration::from_millis(30));
        t.received("run1", Some(0), t0 + Duration::from_millis(50));
        t.received("run1", Some(2), t0 + Duration::from_millis(40));
        t.received("other", Some(1), t0 + Duration::from_millis(40));
        t.received("run1", Some(99), t0 + Duration::from_millis(40));
        t.received("run1", None, t0 + Duration::from_millis(40));
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
        let t = Timeline::new(3, "run1".into());
        let t0 = t.epoch;
        for seq in 0..3 {
            t.started(seq, t0 + Duration::from_millis(100));
            t.accepted(seq);
        }
        t.received("run1", Some(0), t0 + Duration::from_millis(120));
        t.received("run1", Some(1), t0 + Duration::from_millis(500));
        t.received("run1", Some(2), t0 + Duration::from_millis(510));
        let b = t.end_to_end_by_arrival(t0 + Duration::from_millis(100), Duration::from_millis(250));
        assert_eq!(
            b,
            vec![
                vec![Duration::from_millis(20)],
                vec![Duration::from_millis(400), Duration::from_millis(410)]
            ]
        );
    }
}
