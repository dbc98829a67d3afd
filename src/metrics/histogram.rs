//! A latency histogram that records with atomics only.
//!
//! prometheus-client's `Histogram` takes a mutex on every observation; on the request
//! path that is a lock every worker contends on. This one keeps one atomic counter per
//! bucket and an atomic sum in microseconds, and encodes through prometheus-client's
//! encoder, so the exposition is the crate's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds: sub-millisecond proxying up to inference that streams for
/// minutes (long generations would otherwise all land in `+Inf`).
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0, 60.0, 120.0, 300.0,
];

/// Observations per bucket, `+Inf` last; not cumulative.
pub type BucketCounts = [u64; LATENCY_BUCKETS.len() + 1];

#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// One per bound, plus the last for `+Inf`; not cumulative.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|&bound| bound < seconds);
        self.0.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The observations in each bucket, now.
    pub fn bucket_counts(&self) -> BucketCounts {
        std::array::from_fn(|i| self.0.counts[i].load(Ordering::Relaxed))
    }

    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); LATENCY_BUCKETS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            *slot = (bound, self.0.counts[i].load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(500)); // exactly 0.5 ms: first bucket
        h.observe(Duration::from_micros(501)); // second
        h.observe(Duration::from_secs(45)); // past 30 s: the 60 s bucket
        h.observe(Duration::from_secs(301)); // +Inf
        let counts = h.bucket_counts();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(
            counts[LATENCY_BUCKETS.iter().position(|&b| b == 60.0).unwrap()],
            1
        );
        assert_eq!(counts[LATENCY_BUCKETS.len()], 1);
        assert_eq!(h.count(), 4);
    }
}
