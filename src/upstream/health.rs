//! Endpoint health from the results of real requests (passive ejection, as Envoy's
//! outlier detection): consecutive connect failures, resets, timeouts or 5xx answers
//! mark an endpoint down for a while; the time grows each time it is ejected again.
//! At most half a pool is ejected at once, so a bad deploy cannot eject every endpoint
//! of a large pool; a single-endpoint pool can still lose its endpoint, and then
//! `routing.fallback` decides.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Consecutive failures that eject an endpoint.
pub const CONSECUTIVE_FAILURES: u32 = 5;
/// How long the first ejection lasts; the n-th lasts n times as long.
pub const BASE_EJECTION: Duration = Duration::from_secs(10);
/// The longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// At most this share of a pool's endpoints is ejected at once (at least one may be).
pub const MAX_EJECTED_PERCENT: usize = 50;

/// Health state of one endpoint: passive (its failure streak, how often it was
/// ejected, until when) and active (the checks' verdict).
#[derive(Debug, Default)]
pub(super) struct Health {
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Ejected until this instant, on the [`now_millis`] clock.
    down_until: AtomicU64,
    /// Active checks' verdict.
    pub(super) active: ActiveState,
}

impl Health {
    /// Neither ejected by passive health nor marked down by active checks.
    pub(super) fn is_up(&self) -> bool {
        !self.active.down.load(Ordering::Relaxed)
            && self.down_until.load(Ordering::Relaxed) <= now_millis()
    }

    /// A request went well: the failure streak ends.
    pub(super) fn succeeded(&self) {
        // Read first: on the hot path the streak is nearly always 0 already, and a load
        // does not take the cache line away from other cores.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed; returns the streak, this one included.
    pub(super) fn failed(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects the endpoint, for longer each time; returns for how long.
    pub(super) fn eject(&self) -> Duration {
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = (BASE_EJECTION * times).min(MAX_EJECTION);
        self.mark_down(duration);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        duration
    }

    /// Marks the endpoint down for `duration` from now.
    pub(super) fn mark_down(&self, duration: Duration) {
        let until =
            now_millis().saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        self.down_until.store(until, Ordering::Relaxed);
    }
}

/// Milliseconds on a process-wide monotonic clock, for lock-free down-until stamps.
pub fn now_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A pool's `health_check`: an HTTP GET of `path` every `interval`; a 2xx or 3xx
/// within `timeout` passes. `fall` failures in a row mark the endpoint down, `rise`
/// passes mark it up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

/// One endpoint's active-check state.
#[derive(Debug, Default)]
pub(super) struct ActiveState {
    pub(super) down: AtomicBool,
    passes: AtomicU32,
    failures: AtomicU32,
    /// When the next probe is due (process-clock milliseconds).
    next_probe: AtomicU64,
}

impl ActiveState {
    /// Claims the probe that is due now, if one is: only one caller wins it.
    pub(super) fn claim(&self, now: u64, interval: Duration) -> bool {
        let due = self.next_probe.load(Ordering::Relaxed);
        let next = now + u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        due <= now
            && self
                .next_probe
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Counts a probe result; returns the new state when it changed (`true`: down).
    pub(super) fn record(&self, passed: bool, check: &HealthCheck) -> Option<bool> {
        let down = self.down.load(Ordering::Relaxed);
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            (down && passes >= check.rise).then(|| {
                self.down.store(false, Ordering::Relaxed);
                false
            })
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            (!down && failures >= check.fall).then(|| {
                self.down.store(true, Ordering::Relaxed);
                true
            })
        }
    }
}
