//! The two cohorts a rollout compares, recorded on the request path.
//!
//! Per cohort and step: requests, errors, and a latency histogram fine enough for a
//! rank test. The histogram is log-linear, like HdrHistogram: each power of two of
//! microseconds is split into [`SUB_BUCKETS`] equal parts, so no bucket is wider than
//! 1/20 = 5 % of its lower bound, from 64 µs to 67 s. Finding a bucket is a
//! leading-zero count, a subtraction, a multiply and a shift; recording is two or three
//! relaxed atomic adds, with no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::routing::USER_GROUPS;

/// Equal parts of each octave.
pub const SUB_BUCKETS: u64 = 20;
/// The first octave starts at 2^6 µs = 64 µs; everything faster shares bucket 0.
const FIRST_OCTAVE: u32 = 6;
/// The last octave ends at 2^26 µs = 67.1 s; everything slower shares the last bucket.
const END_OCTAVE: u32 = 26;
/// Underflow, 20 octaves of 20 buckets, overflow.
pub const BUCKETS: usize = 1 + ((END_OCTAVE - FIRST_OCTAVE) as u64 * SUB_BUCKETS) as usize + 1;

/// The bucket a latency of `micros` falls in.
pub fn bucket_of(micros: u64) -> usize {
    if micros < 1 << FIRST_OCTAVE {
        return 0;
    }
    let octave = 63 - micros.leading_zeros();
    if octave >= END_OCTAVE {
        return BUCKETS - 1;
    }
    let base = 1u64 << octave;
    let part = ((micros - base) * SUB_BUCKETS) >> octave;
    1 + ((octave - FIRST_OCTAVE) as u64 * SUB_BUCKETS + part) as usize
}

/// The lower bound of bucket `i`, in microseconds (0 for the underflow bucket).
pub fn lower_bound(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let i = (i - 1) as u64;
    let octave = FIRST_OCTAVE as u64 + i / SUB_BUCKETS;
    let part = i % SUB_BUCKETS;
    let base = (1u64 << octave) as f64;
    base + base * part as f64 / SUB_BUCKETS as f64
}

/// The upper bound of bucket `i`, in microseconds (infinite for the overflow bucket).
pub fn upper_bound(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        lower_bound(i + 1)
    }
}

/// The value that stands for every latency in bucket `i`: its midpoint (the
/// underflow bucket's is half its upper bound; the overflow bucket's is its lower
/// bound, the least it can be).
pub fn representative(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        lower_bound(i)
    } else {
        (lower_bound(i) + upper_bound(i)) / 2.0
    }
}

/// Which side of the rollout's rule a request fell on.
pub use crate::routing::Cohort;

/// One user group's counters in one cohort.
#[derive(Debug, Default)]
struct GroupRecorder {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests without a latency (the canary's fallbacks).
    untimed: AtomicU64,
    sum_micros: AtomicU64,
}

/// One cohort's atomics: per user group, and the latency histogram. Padded so the
/// canary's and the control's counters never share a cache line.
#[derive(Debug)]
#[repr(align(128))]
struct Recorder {
    groups: [GroupRecorder; USER_GROUPS],
    latency: [AtomicU64; BUCKETS],
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            groups: std::array::from_fn(|_| GroupRecorder::default()),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn counts(&self) -> CohortCounts {
        let groups: Vec<GroupCounts> = self
            .groups
            .iter()
            .map(|g| GroupCounts {
                requests: g.requests.load(Ordering::Relaxed),
                errors: g.errors.load(Ordering::Relaxed),
                untimed: g.untimed.load(Ordering::Relaxed),
                sum_micros: g.sum_micros.load(Ordering::Relaxed),
            })
            .collect();
        CohortCounts {
            requests: groups.iter().map(|g| g.requests).sum(),
            errors: groups.iter().map(|g| g.errors).sum(),
            sum_micros: groups.iter().map(|g| g.sum_micros).sum(),
            latency: self
                .latency
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            groups,
        }
    }
}

/// The canary and control cohorts of one step. A snapshot points at the step's
/// cohorts, so a request is recorded in the step whose weight decided it.
#[derive(Debug)]
pub struct StepCohorts {
    /// 0-based index into the rollout's steps.
    pub step: usize,
    canary: Recorder,
    control: Recorder,
}

/// How a request of a cohort ended, as the judge counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with this status by the pool the cohort names.
    Answered { status: u16 },
    /// The rule sent it to the canary, but the canary had no available endpoint and
    /// `fallback` served it from the stable pool: a canary failure whose latency is not
    /// the canary's.
    FellBack,
    /// The client gave up (hung up, timed out) before the answer's head came: a failure,
    /// timed at least this long. A hung canary shows as these, never as silence.
    Abandoned,
}

impl StepCohorts {
    pub fn new(step: usize) -> Self {
        StepCohorts {
            step,
            canary: Recorder::new(),
            control: Recorder::new(),
        }
    }

    /// Records one finished request of user group `group`. An error is a 5xx, the
    /// upstream's or the gateway's own (502, 503, 504), a fallback, or a request the
    /// client abandoned.
    pub fn record(&self, cohort: Cohort, group: u8, outcome: Outcome, elapsed: Duration) {
        let recorder = match cohort {
            Cohort::Canary => &self.canary,
            Cohort::Control => &self.control,
        };
        let g = &recorder.groups[usize::from(group) % USER_GROUPS];
        g.requests.fetch_add(1, Ordering::Relaxed);
        let (error, timed) = match outcome {
            Outcome::Answered { status } => (status >= 500, true),
            Outcome::FellBack => (true, false),
            Outcome::Abandoned => (true, true),
        };
        if error {
            g.errors.fetch_add(1, Ordering::Relaxed);
        }
        if timed {
            let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            recorder.latency[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
            g.sum_micros.fetch_add(micros, Ordering::Relaxed);
        } else {
            g.untimed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What has been recorded so far, for the judge.
    pub fn counts(&self) -> (CohortCounts, CohortCounts) {
        (self.canary.counts(), self.control.counts())
    }
}

/// One user group's figures in one cohort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub requests: u64,
    pub errors: u64,
    /// Requests without a latency.
    pub untimed: u64,
    pub sum_micros: u64,
}

impl GroupCounts {
    pub fn timed(&self) -> u64 {
        self.requests.saturating_sub(self.untimed)
    }

    fn add(&mut self, other: &GroupCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.untimed += other.untimed;
        self.sum_micros += other.sum_micros;
    }
}

/// One cohort's figures at one moment: plain numbers, from the atomics or from
/// Prometheus, which is all the judge reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CohortCounts {
    pub requests: u64,
    /// 5xx answers, gateway errors, fallbacks and abandoned requests.
    pub errors: u64,
    /// The sum of the recorded latencies (0 when not known).
    pub sum_micros: u64,
    /// Requests per bucket of [`bucket_of`]; `BUCKETS` long (or empty: no latencies).
    pub latency: Vec<u64>,
    /// The same requests per user group (`USER_GROUPS` long, or empty when not known):
    /// how much users, rather than requests, vary.
    pub groups: Vec<GroupCounts>,
}

impl CohortCounts {
    /// Requests whose latency was recorded (every request but fallbacks).
    pub fn timed(&self) -> u64 {
        self.latency.iter().sum()
    }

    /// `(representative value in µs, count)` for every non-empty bucket, in order.
    pub fn values(&self) -> Vec<(f64, u64)> {
        self.latency
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (representative(i), n))
            .collect()
    }

    /// Requests with a latency of at least `micros`, as the buckets can tell it: those
    /// surely at or above it (in buckets that start there or later), and those perhaps
    /// (also the bucket `micros` falls inside, unless it starts exactly there).
    pub fn at_least(&self, micros: u64) -> (u64, u64) {
        let i = bucket_of(micros);
        let surely_from = if lower_bound(i) >= micros as f64 {
            i
        } else {
            i + 1
        };
        let surely = self.latency.iter().skip(surely_from).sum();
        let perhaps = self.latency.iter().skip(i).sum();
        (surely, perhaps)
    }

    /// The `q` quantile in microseconds, interpolated within its bucket; `None`
    /// without latencies.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.timed();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let (lo, hi) = (lower_bound(i), upper_bound(i));
                if !hi.is_finite() {
                    return Some(lo);
                }
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * within);
            }
            below += n;
        }
        Some(lower_bound(BUCKETS - 1))
    }

    /// Mean and sample variance of the latencies in µs, each counted at its bucket's
    /// representative value; `None` with fewer than two.
    pub fn moments(&self) -> Option<(f64, f64)> {
        let n = self.timed();
        if n < 2 {
            return None;
        }
        let values = self.values();
        let mean = values.iter().map(|&(v, c)| v * c as f64).sum::<f64>() / n as f64;
        let squares = values
            .iter()
            .map(|&(v, c)| (v - mean).powi(2) * c as f64)
            .sum::<f64>();
        Some((mean, squares / (n - 1) as f64))
    }

    /// The variance of the error rate, measured across user groups: the spread of the
    /// groups' errors around the pooled rate (a cluster-robust, "sandwich" variance of a
    /// ratio). `None` with fewer than two groups that have requests.
    pub fn error_rate_variance_across_groups(&self) -> Option<f64> {
        let groups: Vec<(f64, f64)> = self
            .groups
            .iter()
            .filter(|g| g.requests > 0)
            .map(|g| (g.errors as f64, g.requests as f64))
            .collect();
        super::stats::cluster_ratio_variance(&groups)
    }

    /// The variance of the mean latency (µs²), measured across user groups as above.
    pub fn mean_variance_across_groups(&self) -> Option<f64> {
        let groups: Vec<(f64, f64)> = self
            .groups
            .iter()
            .filter(|g| g.timed() > 0)
            .map(|g| (g.sum_micros as f64, g.timed() as f64))
            .collect();
        super::stats::cluster_ratio_variance(&groups)
    }

    /// Adds another cohort's figures (the same cohort seen elsewhere).
    pub fn add(&mut self, other: &CohortCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.sum_micros += other.sum_micros;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
        if self.groups.len() < other.groups.len() {
            self.groups
                .resize(other.groups.len(), GroupCounts::default());
        }
        for (mine, theirs) in self.groups.iter_mut().zip(&other.groups) {
            mine.add(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_covers_100_microseconds_to_60_seconds_in_steps_of_at_most_5_percent() {
        assert_eq!(BUCKETS, 402);
        for i in 1..BUCKETS - 1 {
            let (lo, hi) = (lower_bound(i), upper_bound(i));
            assert!(hi > lo);
            assert!((hi - lo) / lo <= 0.05 + 1e-12, "bucket {i}: {lo}..{hi}");
        }
        assert!(lower_bound(1) <= 100.0);
        assert!(upper_bound(BUCKETS - 2) >= 60e6);
    }

    #[test]
    fn every_value_lands_in_the_bucket_whose_bounds_hold_it() {
        let mut v = 1u64;
        while v < 200_000_000 {
            let i = bucket_of(v);
            assert!(lower_bound(i) <= v as f64, "{v} below bucket {i}");
            assert!((v as f64) < upper_bound(i), "{v} above bucket {i}");
            v = v + 1 + v / 97;
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(63), 0);
        assert_eq!(bucket_of(64), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        // Monotone over every integer of a few octaves.
        let mut last = 0;
        for v in 0..40_000u64 {
            let i = bucket_of(v);
            assert!(i >= last);
            last = i;
        }
    }

    #[test]
    fn a_fallback_is_an_error_without_a_latency() {
        let step = StepCohorts::new(3);
        let ms = Duration::from_millis;
        step.record(Cohort::Canary, 0, Outcome::Answered { status: 200 }, ms(5));
        step.record(Cohort::Canary, 1, Outcome::Answered { status: 503 }, ms(7));
        step.record(Cohort::Canary, 15, Outcome::FellBack, ms(9));
        step.record(Cohort::Control, 3, Outcome::Answered { status: 404 }, ms(5));
        let (canary, control) = step.counts();
        assert_eq!((canary.requests, canary.errors, canary.timed()), (3, 2, 2));
        assert_eq!(
            (control.requests, control.errors, control.timed()),
            (1, 0, 1)
        );
    }

    #[test]
    fn quantiles_and_moments_read_the_buckets() {
        let mut counts = CohortCounts {
            latency: vec![0; BUCKETS],
            ..CohortCounts::default()
        };
        for ms in 1..=100u64 {
            counts.latency[bucket_of(ms * 1000)] += 1;
        }
        let p50 = counts.quantile(0.5).unwrap();
        let p99 = counts.quantile(0.99).unwrap();
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.05, "{p50}");
        assert!((p99 / 99_000.0 - 1.0).abs() < 0.05, "{p99}");
        let (mean, var) = counts.moments().unwrap();
        assert!((mean / 50_500.0 - 1.0).abs() < 0.03, "{mean}");
        let exact_var = (1..=100)
            .map(|m| (m as f64 * 1000.0 - 50_500.0).powi(2))
            .sum::<f64>()
            / 99.0;
        assert!((var / exact_var - 1.0).abs() < 0.05, "{var} vs {exact_var}");
        // 50 ms falls inside [49.15, 50.79) ms: the 50 requests from 51 ms up surely
        // take at least 50 ms; the one at 50 ms perhaps does (the bucket cannot say).
        assert_eq!(counts.at_least(50_000), (50, 51));
        assert_eq!(
            counts.at_least(lower_bound(bucket_of(50_000)) as u64 + 1),
            (50, 51)
        );
        assert_eq!(counts.at_least(200_000_000), (0, 0));
        assert_eq!(CohortCounts::default().quantile(0.5), None);
    }
}
