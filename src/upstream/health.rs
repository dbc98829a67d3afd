//! Endpoint health from the results of real requests (passive ejection, as Envoy's
//! outlier detection): consecutive connect failures, resets, timeouts or 5xx answers
//! mark an endpoint down for a while; the time grows each time it is ejected again.
//! At most half a pool is ejected at once, so a bad deploy cannot eject every endpoint
//! of a large pool; a single-endpoint pool can still lose its endpoint, and then
//! `routing.fallback` decides.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing::warn;

use super::active::ActiveState;
use super::endpoint::Endpoint;

/// Consecutive failures that eject an endpoint.
pub const CONSECUTIVE_FAILURES: u32 = 5;
/// How long the first ejection lasts; the n-th lasts n times as long.
pub const BASE_EJECTION: Duration = Duration::from_secs(10);
/// The longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// At most this share of a pool's endpoints is ejected at once (at least one may be).
pub const MAX_EJECTED_PERCENT: usize = 50;

/// Health state of one endpoint; its passive down-until time lives on the endpoint.
#[derive(Debug, Default)]
pub(super) struct Health {
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Active checks' verdict.
    pub(super) active: ActiveState,
}

/// Milliseconds on a process-wide monotonic clock, for lock-free down-until stamps.
pub fn now_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Records a request that went well: the failure streak ends.
pub fn report_success(endpoint: &Endpoint) {
    // Read first: on the hot path the streak is nearly always 0 already, and a load
    // does not take the cache line away from other cores.
    if endpoint.health.consecutive_failures.load(Ordering::Relaxed) != 0 {
        endpoint
            .health
            .consecutive_failures
            .store(0, Ordering::Relaxed);
    }
}

/// Records a failed request; ejects the endpoint when its streak reaches the limit and
/// the pool may lose one more endpoint. Returns whether it was ejected.
pub fn report_failure(endpoint: &Endpoint, pool: &[Arc<Endpoint>], pool_name: &str) -> bool {
    let streak = endpoint
        .health
        .consecutive_failures
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    if streak < CONSECUTIVE_FAILURES || !endpoint.is_available() {
        return false;
    }
    let ejected = pool.iter().filter(|e| !e.is_available()).count();
    if ejected > 0 && (ejected + 1) * 100 > pool.len() * MAX_EJECTED_PERCENT {
        return false;
    }
    let times = endpoint.health.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let duration = (BASE_EJECTION * times).min(MAX_EJECTION);
    mark_down(endpoint, duration);
    endpoint
        .health
        .consecutive_failures
        .store(0, Ordering::Relaxed);
    warn!(
        pool = pool_name,
        endpoint = &*endpoint.address,
        streak,
        ?duration,
        "endpoint ejected"
    );
    true
}

/// Marks an endpoint down for `duration` from now.
pub fn mark_down(endpoint: &Endpoint, duration: Duration) {
    let until =
        now_millis().saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    endpoint.down_until.store(until, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let address = format!("127.0.0.1:{}", 1000 + i);
                Arc::new(Endpoint::new(&address, address.parse().unwrap()))
            })
            .collect()
    }

    #[test]
    fn consecutive_failures_eject_and_success_resets_the_streak() {
        let eps = pool(2);
        for _ in 0..CONSECUTIVE_FAILURES - 1 {
            assert!(!report_failure(&eps[0], &eps, "p"));
        }
        report_success(&eps[0]);
        for _ in 0..CONSECUTIVE_FAILURES - 1 {
            assert!(!report_failure(&eps[0], &eps, "p"));
        }
        assert!(eps[0].is_available());
        assert!(report_failure(&eps[0], &eps, "p"));
        assert!(!eps[0].is_available());
        assert!(eps[1].is_available());
    }

    #[test]
    fn at_most_half_the_pool_is_ejected_but_one_always_may_be() {
        let eps = pool(2);
        for _ in 0..CONSECUTIVE_FAILURES {
            report_failure(&eps[0], &eps, "p");
        }
        for _ in 0..CONSECUTIVE_FAILURES * 3 {
            report_failure(&eps[1], &eps, "p");
        }
        assert!(!eps[0].is_available());
        assert!(eps[1].is_available(), "the second of two would exceed 50%");

        let single = pool(1);
        for _ in 0..CONSECUTIVE_FAILURES {
            report_failure(&single[0], &single, "p");
        }
        assert!(
            !single[0].is_available(),
            "a single endpoint can be ejected"
        );
    }

    #[test]
    fn ejection_expires() {
        let eps = pool(1);
        mark_down(&eps[0], Duration::from_millis(30));
        assert!(!eps[0].is_available());
        std::thread::sleep(Duration::from_millis(60));
        assert!(eps[0].is_available());
    }
}
