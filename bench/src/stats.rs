//! Percentile and median math (nearest-rank on sorted samples; no histogram crate needed at
//! these sample counts).

use std::time::Duration;

/// p50/p95/p99/max of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// `None` when there are no samples.
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Some(Self {
            count: samples.len(),
            p50: ms(*percentile(samples, 50.0)?),
            p95: ms(*percentile(samples, 95.0)?),
            p99: ms(*percentile(samples, 99.0)?),
            max: ms(*samples.last()?),
        })
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "p50": round3(self.p50),
            "p95": round3(self.p95),
            "p99": round3(self.p99),
            "max": round3(self.max),
        })
    }
}

/// Nearest-rank percentile of already sorted samples: the smallest sample such that at least
/// `p`% of the samples are at or below it.
pub fn percentile<T>(sorted: &[T], p: f64) -> Option<&T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1)
}

/// Median (mean of the two middle values for an even count); NaNs are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(&50));
        assert_eq!(percentile(&v, 95.0), Some(&95));
        assert_eq!(percentile(&v, 99.0), Some(&99));
        assert_eq!(percentile(&v, 100.0), Some(&100));
        assert_eq!(percentile(&v, 0.0), Some(&1));
        assert_eq!(percentile(&[7], 99.0), Some(&7));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }

    #[test]
    fn latency_summary_sorts_and_converts_to_milliseconds() {
        let mut samples: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        let l = Latency::of(&mut samples).expect("samples");
        assert_eq!((l.count, l.p50, l.p95, l.p99, l.max), (10, 5.0, 10.0, 10.0, 10.0));
        assert_eq!(Latency::of(&mut []), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
    }
}
