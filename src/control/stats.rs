//! `GET /admin/stats`: the figures the status page (`/admin/ui`) draws, as JSON, so
//! the page never parses the Prometheus text.
//!
//! A sampler on the control plane reads every pool's and rule's counters every
//! [`SAMPLE_EVERY`] and keeps the last [`KEEP`] readings (five minutes). An answer adds
//! a reading taken at that moment and derives, from counter differences:
//! - per pool, over the last [`WINDOW`]: requests per second, its share of all
//!   requests, the failure ratio, p50 and p99; the same since the process started;
//!   and one point per sampling interval for the charts;
//! - per rule: its conditions as the live chain holds them (a rollout's weight
//!   included), its pool, its matches and matches per second.
//!
//! A pool's failures are its 5xx answers *and* the requests it could not take at all,
//! which fallback served from the stable pool: a dead canary must not look healthy.
//! The stable pool's requests include the fallbacks it served. Counters that went
//! down (a pool removed and added back by reloads) count from zero, as Prometheus's
//! `rate()` does. Nothing here is on the request path: the counters are the ones
//! `/metrics` exposes, read with relaxed loads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::metrics::{PoolCounts, LATENCY_BUCKETS};
use crate::shutdown::Shutdown;
use crate::snapshot::{LiveConfig, Snapshot};

/// How often the sampler reads the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Readings kept: five minutes of intervals.
pub const KEEP: usize = 61;
/// The window of the "now" figures.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One reading of the live config's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub at_ms: u64,
    /// By pool name, in the config's order.
    pub pools: Vec<(Box<str>, PoolCounts)>,
    /// By rule name, in chain order, then `default`.
    pub rules: Vec<(Box<str>, u64)>,
}

impl Reading {
    pub fn of(snapshot: &Snapshot, at_ms: u64) -> Reading {
        let pools = snapshot
            .pools
            .iter()
            .map(|pool| (pool.name.clone(), pool.metrics.counts()))
            .collect();
        let mut rules: Vec<(Box<str>, u64)> = snapshot
            .chain
            .rules()
            .iter()
            .zip(&snapshot.rule_matches)
            .map(|(rule, counter)| (rule.name.clone(), counter.get()))
            .collect();
        rules.push(("default".into(), snapshot.default_matches.get()));
        Reading {
            at_ms,
            pools,
            rules,
        }
    }

    fn pool(&self, name: &str) -> Option<&PoolCounts> {
        self.pools
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, c)| c)
    }

    fn rule(&self, name: &str) -> u64 {
        self.rules
            .iter()
            .find(|(n, _)| &**n == name)
            .map_or(0, |(_, c)| *c)
    }
}

/// The sampler's readings, oldest first.
#[derive(Debug, Default)]
pub struct History {
    readings: Mutex<VecDeque<Reading>>,
}

impl History {
    pub fn push(&self, reading: Reading) {
        let mut readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        if readings.len() == KEEP {
            readings.pop_front();
        }
        readings.push_back(reading);
    }

    fn with_now(&self, now: Reading) -> Vec<Reading> {
        let readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Reading> = readings.iter().cloned().collect();
        all.push(now);
        all
    }
}

/// Reads the counters every [`SAMPLE_EVERY`] until shutdown.
pub async fn sample(history: Arc<History>, live: Arc<LiveConfig>, mut shutdown: Shutdown) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => history.push(Reading::of(&live.load(), now_ms())),
            _ = shutdown.wait() => return,
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the live config and the reloader add to the figures.
#[derive(Debug)]
pub struct Context<'a> {
    pub snapshot: &'a Snapshot,
    pub last_reload_failed: bool,
}

/// The `/admin/stats` answer, with a reading taken now.
pub fn report(history: &History, cx: &Context<'_>, now: Reading) -> Value {
    let readings = history.with_now(now);
    figures(&readings, cx)
}

/// The figures from `readings` (oldest first, the last one is "now").
fn figures(readings: &[Reading], cx: &Context<'_>) -> Value {
    let snapshot = cx.snapshot;
    let now = readings.last().expect("at least the reading taken now");
    let window_ms = u64::try_from(WINDOW.as_millis()).unwrap_or(u64::MAX);
    // The window starts at the latest reading at least WINDOW old, or the oldest.
    let start = readings
        .iter()
        .rev()
        .find(|r| r.at_ms + window_ms <= now.at_ms)
        .unwrap_or(&readings[0]);
    let seconds = |from: &Reading, to: &Reading| (to.at_ms.saturating_sub(from.at_ms)) as f64 / 1e3;
    let window_seconds = seconds(start, now);
    let zero = PoolCounts::default();

    let window_total: u64 = now
        .pools
        .iter()
        .map(|(name, c)| c.since(start.pool(name).unwrap_or(&zero)).requests())
        .sum();
    let lifetime_total: u64 = now.pools.iter().map(|(_, c)| c.requests()).sum();
    let stable = snapshot.chain.pool_name(snapshot.chain.stable());

    let pools: Vec<Value> = snapshot
        .pools
        .iter()
        .map(|pool| {
            let name = &*pool.name;
            let current = now.pool(name).cloned().unwrap_or_default();
            let window = current.since(start.pool(name).unwrap_or(&zero));
            let series: Vec<Value> = readings
                .windows(2)
                .filter(|pair| pair[1].at_ms > pair[0].at_ms)
                .map(|pair| {
                    let before = pair[0].pool(name).unwrap_or(&zero);
                    let after = pair[1].pool(name).unwrap_or(&zero);
                    let delta = after.since(before);
                    json!({
                        "at_ms": pair[1].at_ms,
                        "rps": per_second(delta.requests(), seconds(&pair[0], &pair[1])),
                        "failure_ratio": delta.failure_ratio(),
                        "p99_seconds": delta.quantile(0.99),
                    })
                })
                .collect();
            json!({
                "name": name,
                "version": pool.version.as_deref(),
                "stable": name == stable,
                "endpoints": pool.endpoints.iter().map(|e| json!({
                    "address": &*e.address,
                    "up": e.is_available(),
                    "in_flight": e.in_flight(),
                })).collect::<Vec<_>>(),
                "window": summary(&window, window_total, window_seconds),
                "total": summary(&current, lifetime_total, 0.0),
                "series": series,
            })
        })
        .collect();

    let ua = snapshot.chain.ua_classifier();
    let rollout_rule = snapshot.rollout.as_ref().map(|tap| &*tap.plan.rule_name);
    let mut rules: Vec<Value> = snapshot
        .chain
        .rules()
        .iter()
        .map(|rule| {
            let matches = now.rule(&rule.name);
            let window = matches
                .checked_sub(start.rule(&rule.name))
                .unwrap_or(matches);
            json!({
                "name": &*rule.name,
                "pool": snapshot.chain.pool_name(rule.pool),
                "conditions": rule.conditions.iter().map(|c| c.describe(ua)).collect::<Vec<_>>(),
                "rollout": rollout_rule == Some(&*rule.name),
                "matches": matches,
                "per_second": per_second(window, window_seconds),
            })
        })
        .collect();
    let default = now.rule("default");
    let default_window = default
        .checked_sub(start.rule("default"))
        .unwrap_or(default);
    rules.push(json!({
        "name": "default",
        "pool": stable,
        "conditions": ["no rule matched: routing.stable"],
        "rollout": false,
        "matches": default,
        "per_second": per_second(default_window, window_seconds),
    }));

    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": snapshot.origin.generation,
        "loaded_at": humantime::format_rfc3339_millis(snapshot.origin.loaded_at).to_string(),
        "last_reload_failed": cx.last_reload_failed,
        "at_ms": now.at_ms,
        "window_seconds": window_seconds,
        "sample_seconds": SAMPLE_EVERY.as_secs(),
        "stable": stable,
        "pools": pools,
        "rules": rules,
    })
}

/// A pool's figures over a stretch of counts: `total` is every pool's requests over
/// the same stretch, `seconds` its length (0: no rate).
fn summary(counts: &PoolCounts, total: u64, seconds: f64) -> Value {
    let requests = counts.requests();
    json!({
        "requests": requests,
        "errors_5xx": counts.requests[4],
        "fallbacks": counts.fallbacks,
        "rps": (seconds > 0.0).then(|| per_second(requests, seconds)),
        "share": (total > 0).then(|| requests as f64 / total as f64),
        "failure_ratio": counts.failure_ratio(),
        "p50_seconds": counts.quantile(0.5),
        "p99_seconds": counts.quantile(0.99),
    })
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

impl PoolCounts {
    pub fn requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// These counts minus `earlier`'s, each counter that went down taken as reset.
    pub fn since(&self, earlier: &PoolCounts) -> PoolCounts {
        let delta = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
        PoolCounts {
            requests: std::array::from_fn(|i| delta(self.requests[i], earlier.requests[i])),
            fallbacks: delta(self.fallbacks, earlier.fallbacks),
            duration: std::array::from_fn(|i| delta(self.duration[i], earlier.duration[i])),
        }
    }

    /// (5xx + fallbacks) / (requests + fallbacks); `None` without requests.
    pub fn failure_ratio(&self) -> Option<f64> {
        let attempts = self.requests() + self.fallbacks;
        (attempts > 0).then(|| (self.requests[4] + self.fallbacks) as f64 / attempts as f64)
    }

    /// The `q` quantile of the durations, in seconds, interpolated within its bucket
    /// as Prometheus's `histogram_quantile` does; in the `+Inf` bucket, the highest
    /// finite bound. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count: u64 = self.duration.iter().sum();
        if count == 0 {
            return None;
        }
        let rank = q * count as f64;
        let mut below = 0u64;
        for (i, &in_bucket) in self.duration.iter().enumerate() {
            if in_bucket > 0 && (below + in_bucket) as f64 >= rank {
                let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                    return LATENCY_BUCKETS.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let within = (rank - below as f64) / in_bucket as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += in_bucket;
        }
        LATENCY_BUCKETS.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LATENCY_BUCKETS;

    fn counts(by_class: [u64; 5], fallbacks: u64, durations: &[(usize, u64)]) -> PoolCounts {
        let mut c = PoolCounts {
            requests: by_class,
            fallbacks,
            ..PoolCounts::default()
        };
        for &(bucket, n) in durations {
            c.duration[bucket] = n;
        }
        c
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_as_prometheus_does() {
        // 100 observations: 50 in (0, 0.5ms], 50 in (1ms, 2.5ms].
        let c = counts([0, 100, 0, 0, 0], 0, &[(0, 50), (2, 50)]);
        assert_eq!(LATENCY_BUCKETS[..3], [0.0005, 0.001, 0.0025]);
        // Rank 50 is the top of the first bucket.
        assert!((c.quantile(0.5).unwrap() - 0.0005).abs() < 1e-12);
        // Rank 99: 49 of the second populated bucket's 50, between 1 ms and 2.5 ms.
        let want = 0.001 + 0.0015 * 49.0 / 50.0;
        assert!((c.quantile(0.99).unwrap() - want).abs() < 1e-12);
        // In +Inf: the highest finite bound.
        let slow = counts([0, 1, 0, 0, 0], 0, &[(LATENCY_BUCKETS.len(), 1)]);
        assert_eq!(slow.quantile(0.99), LATENCY_BUCKETS.last().copied());
        assert_eq!(PoolCounts::default().quantile(0.99), None);
    }

    #[test]
    fn a_pools_fallbacks_are_its_failures() {
        // A dead canary: none answered by it, 40 served by stable instead.
        let dead = counts([0; 5], 40, &[]);
        assert_eq!(dead.failure_ratio(), Some(1.0));
        let c = counts([0, 90, 0, 0, 10], 0, &[]);
        assert_eq!(c.failure_ratio(), Some(0.1));
        let both = counts([0, 80, 0, 0, 10], 10, &[]);
        assert_eq!(both.failure_ratio(), Some(0.2));
        assert_eq!(PoolCounts::default().failure_ratio(), None);
    }

    #[test]
    fn counters_that_went_down_count_from_zero() {
        let before = counts([0, 100, 0, 0, 5], 7, &[(1, 100)]);
        let after = counts([0, 30, 0, 0, 6], 2, &[(1, 30)]);
        let delta = after.since(&before);
        assert_eq!(delta.requests, [0, 30, 0, 0, 1]);
        assert_eq!(delta.fallbacks, 2);
        assert_eq!(delta.duration[1], 30);
    }

    fn snapshot(config: &str) -> Snapshot {
        let source = crate::config::Source {
            path: "stats-test.toml".into(),
            text: config.to_string(),
        };
        let file = crate::config::parse(&source).unwrap();
        let shared = crate::shared::Shared::new();
        crate::config::compile(file, &source, &shared).unwrap()
    }

    const CONFIG: &str = r#"
[pools.blue]
endpoints = ["127.0.0.1:9001"]
version = "v1"
[pools.canary]
endpoints = ["127.0.0.1:9003", "127.0.0.1:9004"]
version = "v2"
[routing]
stable = "blue"
user_key = { header = "x-user-id" }
[[rules]]
name = "staff"
match = { whitelist = ["1001", "1002"] }
to = "canary"
[[rules]]
name = "five-percent"
match = { permille = 50, salt = "s" }
to = "canary"
"#;

    fn reading(at_ms: u64, blue: PoolCounts, canary: PoolCounts, rules: [u64; 3]) -> Reading {
        Reading {
            at_ms,
            pools: vec![("blue".into(), blue), ("canary".into(), canary)],
            rules: vec![
                ("staff".into(), rules[0]),
                ("five-percent".into(), rules[1]),
                ("default".into(), rules[2]),
            ],
        }
    }

    #[test]
    fn the_window_rates_shares_and_series() {
        let snapshot = snapshot(CONFIG);
        let cx = Context {
            snapshot: &snapshot,
            last_reload_failed: false,
        };
        // t=0: nothing; t=30s: 300 blue, 20 canary (2 of them 5xx) and 10 fallbacks;
        // t=90s: 900 blue, 60 canary (6 5xx), 30 fallbacks.
        let readings = vec![
            reading(0, counts([0; 5], 0, &[]), counts([0; 5], 0, &[]), [0, 0, 0]),
            reading(
                30_000,
                counts([0, 300, 0, 0, 0], 0, &[(1, 300)]),
                counts([0, 18, 0, 0, 2], 10, &[(4, 20)]),
                [5, 15, 310],
            ),
            reading(
                90_000,
                counts([0, 900, 0, 0, 0], 0, &[(1, 900)]),
                counts([0, 54, 0, 0, 6], 30, &[(4, 60)]),
                [15, 45, 930],
            ),
        ];
        let v = figures(&readings, &cx);
        // The window: from t=30s (the latest reading at least 60 s old) to t=90s.
        assert_eq!(v["window_seconds"], 60.0);
        let blue = &v["pools"][0];
        let canary = &v["pools"][1];
        assert_eq!(blue["name"], "blue");
        assert_eq!(blue["stable"], true);
        assert_eq!(canary["stable"], false);
        assert_eq!(blue["window"]["requests"], 600);
        assert_eq!(blue["window"]["rps"], 10.0);
        assert_eq!(canary["window"]["requests"], 40);
        assert_eq!(canary["window"]["share"], 40.0 / 640.0);
        // (4 5xx + 20 fallbacks) / (40 + 20)
        assert_eq!(canary["window"]["failure_ratio"], 24.0 / 60.0);
        assert_eq!(canary["total"]["requests"], 60);
        assert_eq!(canary["total"]["share"], 60.0 / 960.0);
        assert_eq!(canary["total"]["rps"], Value::Null);
        assert_eq!(canary["endpoints"].as_array().unwrap().len(), 2);
        // One chart point per interval.
        let series = blue["series"].as_array().unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0]["rps"], 10.0);
        assert_eq!(series[1]["rps"], 10.0);
        assert_eq!(canary["series"][0]["failure_ratio"], 12.0 / 30.0);
        // Rules: conditions as compiled, never a whitelist's members.
        let rules = v["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["name"], "staff");
        assert_eq!(rules[0]["conditions"][0], "user key in whitelist (2 keys)");
        assert!(!v.to_string().contains("1001"));
        assert_eq!(rules[1]["conditions"][0], "bucket < 50 (salt \"s\")");
        assert_eq!(rules[1]["per_second"], 0.5);
        assert_eq!(rules[2]["name"], "default");
        assert_eq!(rules[2]["pool"], "blue");
        assert_eq!(rules[2]["matches"], 930);
        assert_eq!(rules[2]["per_second"], 10.333333333333334);
    }

    #[test]
    fn history_keeps_the_latest_readings() {
        let history = History::default();
        for i in 0..(KEEP as u64 + 10) {
            history.push(Reading {
                at_ms: i,
                pools: Vec::new(),
                rules: Vec::new(),
            });
        }
        let all = history.with_now(Reading {
            at_ms: 1_000,
            pools: Vec::new(),
            rules: Vec::new(),
        });
        assert_eq!(all.len(), KEEP + 1);
        assert_eq!(all[0].at_ms, 10);
        assert_eq!(all[KEEP].at_ms, 1_000);
    }
}
