//! Prometheus metrics, named as SPEC.md's table.
//!
//! Label values come only from the config (pool and rule names), never from request
//! data. The per-pool and per-rule handles are resolved when a snapshot compiles; a
//! request records through them with atomic adds, no label lookup and no lock. After
//! every reload attempt, series for pools and rules the running config no longer has
//! are removed, so reloads leave no unbounded stale series.

mod cohorts;
mod exposition;
mod histogram;
mod process;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use cohorts::{bucket_bounds, CohortExport};
pub use exposition::{
    to_prometheus, wants_openmetrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE,
};
pub use histogram::{BucketCounts, LatencyHistogram, LATENCY_BUCKETS};
pub use process::{ProcessCollector, ProcessFigures};

/// `graygate_upstream_errors_total{kind}` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
    Protocol = 3,
}

const ERROR_KINDS: [&str; 4] = ["connect", "timeout", "reset", "protocol"];

/// `graygate_client_errors_total{kind}` values: answers hyper makes itself, before a
/// request reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// A malformed request head: 400.
    BadRequest = 0,
    /// A head over `max_header_bytes`: 431.
    HeaderTooLarge = 1,
    /// No complete head within `header_read_timeout`: the connection is closed.
    HeaderTimeout = 2,
    /// The request body stopped arriving: 408.
    BodyTimeout = 3,
    /// A write to the client waited `send_timeout`: the connection is closed.
    SendTimeout = 4,
}

const CLIENT_ERROR_KINDS: [&str; 5] = [
    "bad_request",
    "header_too_large",
    "header_timeout",
    "body_timeout",
    "send_timeout",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStatusLabels {
    pool: String,
    status_class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolKindLabels {
    pool: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolVersionLabels {
    pool: String,
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet, PartialOrd, Ord)]
struct PoolEndpointLabels {
    pool: String,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    pool: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FromToLabels {
    from: String,
    to: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorOutcomeLabels {
    to: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorDiffLabels {
    to: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutStateLabels {
    rule: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutVerdictLabels {
    rule: String,
    verdict: String,
}

/// The rollout's gauges and counters, labelled by the rule it drives. Their series
/// exist while a rollout is configured and go when it ends.
#[derive(Debug, Clone, Default)]
pub struct RolloutMetrics {
    weight: Family<RolloutLabels, Gauge>,
    step: Family<RolloutLabels, Gauge>,
    state: Family<RolloutStateLabels, Gauge>,
    analyses: Family<RolloutVerdictLabels, Counter>,
    follow_errors: Family<RolloutLabels, Counter>,
    /// The cohorts, exported for a fleet's judge.
    pub cohorts: Arc<CohortExport>,
}

/// `graygate_rollout_analyses_total{verdict}`: the judge's three, and `error` for an
/// analysis that could not be made (a failed Prometheus query).
const VERDICTS: [&str; 4] = ["pass", "fail", "inconclusive", "error"];

impl RolloutMetrics {
    /// The rollout of `rule` is in `phase` at `step` with the rule at `weight`.
    pub fn set(&self, rule: &str, phase: crate::rollout::machine::Phase, step: usize, weight: u16) {
        let labels = RolloutLabels {
            rule: rule.to_string(),
        };
        self.weight.get_or_create(&labels).set(i64::from(weight));
        self.step
            .get_or_create(&labels)
            .set(i64::try_from(step).unwrap_or(i64::MAX));
        for each in crate::rollout::machine::Phase::ALL {
            let labels = RolloutStateLabels {
                rule: rule.to_string(),
                state: each.as_str().to_string(),
            };
            self.state
                .get_or_create(&labels)
                .set(i64::from(each == phase));
        }
        // Every verdict's series exists from the start, so the first is an increase.
        for verdict in VERDICTS {
            let _zero = self.analyses.get_or_create(&RolloutVerdictLabels {
                rule: rule.to_string(),
                verdict: verdict.to_string(),
            });
        }
    }

    /// Counts an analysis: `pass`, `fail`, `inconclusive`, or `error`.
    pub fn analysis(&self, rule: &str, verdict: &str) {
        self.analyses
            .get_or_create(&RolloutVerdictLabels {
                rule: rule.to_string(),
                verdict: verdict.to_string(),
            })
            .inc();
    }

    /// A follower could not take the state of the instance it follows.
    pub fn follow_error(&self, rule: &str) {
        self.follow_errors
            .get_or_create(&RolloutLabels {
                rule: rule.to_string(),
            })
            .inc();
    }

    /// A follower's error counter exists from its start.
    pub fn following(&self, rule: &str) {
        let _zero = self.follow_errors.get_or_create(&RolloutLabels {
            rule: rule.to_string(),
        });
    }

    /// Removes the series of a rollout that ended.
    pub fn forget(&self, rule: &str) {
        let labels = RolloutLabels {
            rule: rule.to_string(),
        };
        self.weight.remove(&labels);
        self.step.remove(&labels);
        for each in crate::rollout::machine::Phase::ALL {
            self.state.remove(&RolloutStateLabels {
                rule: rule.to_string(),
                state: each.as_str().to_string(),
            });
        }
        for verdict in VERDICTS {
            self.analyses.remove(&RolloutVerdictLabels {
                rule: rule.to_string(),
                verdict: verdict.to_string(),
            });
        }
        self.follow_errors.remove(&RolloutLabels {
            rule: rule.to_string(),
        });
        self.cohorts.clear();
    }
}

/// Every metric family, registered once for the life of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The `process_*` metrics, unprefixed.
    process: Registry,
    requests: Family<PoolStatusLabels, Counter>,
    duration: Family<PoolLabels, LatencyHistogram>,
    first_byte: Family<PoolLabels, LatencyHistogram>,
    endpoint_up: Family<PoolEndpointLabels, Gauge>,
    /// The endpoints `endpoint_up` has series for, to remove those gone.
    endpoints_published: Mutex<BTreeSet<PoolEndpointLabels>>,
    upstream_errors: Family<PoolKindLabels, Counter>,
    rule_matches: Family<RuleLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    generation: Gauge,
    pool_info: Family<PoolVersionLabels, Gauge>,
    pool_endpoints: Family<PoolStateLabels, Gauge>,
    active_connections: Gauge,
    fallbacks: Family<FromToLabels, Counter>,
    retries: Family<PoolLabels, Counter>,
    access_log_dropped: Counter,
    client_errors: [Counter; CLIENT_ERROR_KINDS.len()],
    rollout: RolloutMetrics,
    mirror_requests: Family<MirrorOutcomeLabels, Counter>,
    mirror_diffs: Family<MirrorDiffLabels, Counter>,
    dns_failures: Family<PoolLabels, Counter>,
    /// The label values each family holds series for, to prune after reloads.
    series: Mutex<Series>,
}

/// The label values one config generation creates series for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    /// Pool name and version.
    pub pools: BTreeSet<(String, String)>,
    /// Rule name (or `default`) and pool.
    pub rules: BTreeSet<(String, String)>,
    /// Fallback `from` and `to` pools.
    pub fallbacks: BTreeSet<(String, String)>,
    /// Mirror targets.
    pub mirrors: BTreeSet<String>,
}

impl Series {
    fn extend(&mut self, other: &Series) {
        self.pools.extend(other.pools.iter().cloned());
        self.rules.extend(other.rules.iter().cloned());
        self.fallbacks.extend(other.fallbacks.iter().cloned());
        self.mirrors.extend(other.mirrors.iter().cloned());
    }
}

/// One pool's recording handles.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    requests: [Counter; 5],
    duration: LatencyHistogram,
    first_byte: LatencyHistogram,
    errors: [Counter; 4],
    pub retries: Counter,
    /// Requests this pool could not serve and sent to the stable pool.
    pub fallbacks: Counter,
    pub endpoints_healthy: Gauge,
    pub endpoints_unhealthy: Gauge,
    /// `graygate_dns_failures_total{pool}`, for a pool with endpoint names.
    pub dns_failures: Option<Counter>,
}

impl PoolMetrics {
    /// Counts a finished request by status class and records its duration.
    pub fn record(&self, status: u16, elapsed: Duration) {
        if cfg!(feature = "bench-no-metrics") {
            return;
        }
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(elapsed);
    }

    /// Records the time from the request's arrival to its upstream's response head.
    pub fn first_byte(&self, elapsed: Duration) {
        if cfg!(feature = "bench-no-metrics") {
            return;
        }
        self.first_byte.observe(elapsed);
    }

    pub fn upstream_error(&self, kind: ErrorKind) {
        if cfg!(feature = "bench-no-metrics") {
            return;
        }
        self.errors[kind as usize].inc();
    }

    /// The pool's counters as they are now (for `/admin/stats`).
    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            requests: std::array::from_fn(|i| self.requests[i].get()),
            fallbacks: self.fallbacks.get(),
            duration: self.duration.bucket_counts(),
        }
    }
}

/// One reading of a pool's counters: requests by status class (1xx to 5xx), the
/// requests it sent to the stable pool, and request durations per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub requests: [u64; 5],
    pub fallbacks: u64,
    pub duration: BucketCounts,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("graygate");
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        let requests = Family::default();
        let duration = Family::default();
        let first_byte = Family::default();
        let endpoint_up = Family::default();
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        let upstream_errors = Family::default();
        let rule_matches = Family::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        let generation = Gauge::default();
        let pool_info = Family::default();
        let pool_endpoints = Family::default();
        let active_connections = Gauge::default();
        let fallbacks = Family::default();
        let retries = Family::default();
        let access_log_dropped = Counter::default();
        let rollout = RolloutMetrics::default();
        let mirror_requests = Family::<MirrorOutcomeLabels, Counter>::default();
        let mirror_diffs = Family::<MirrorDiffLabels, Counter>::default();
        let dns_failures = Family::<PoolLabels, Counter>::default();
        let client_errors_family = Family::<KindLabels, Counter>::default();
        let client_errors = CLIENT_ERROR_KINDS.map(|kind| {
            client_errors_family
                .get_or_create(&KindLabels {
                    kind: kind.to_string(),
                })
                .clone()
        });
        // Both results exist from the start, so the first failure is an increase.
        for result in ["success", "failure"] {
            let _zero = reloads.get_or_create(&ResultLabels {
                result: result.to_string(),
            });
        }
        registry.register(
            "requests",
            "Requests answered, by pool and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to the end of its response, by pool",
            duration.clone(),
        );
        registry.register(
            "time_to_first_byte_seconds",
            "Time from the request's arrival to its upstream's response head, by the pool that answered",
            first_byte.clone(),
        );
        registry.register(
            "endpoint_up",
            "Whether an endpoint takes requests (1) or is marked down by health checks or ejection (0)",
            endpoint_up.clone(),
        );
        registry.register(
            "build_info",
            "The running graygate's version (always 1)",
            build_info,
        );
        registry.register(
            "upstream_errors",
            "Upstream failures, by pool and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "rule_matches",
            "Decisions, by rule (or default) and pool",
            rule_matches.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reload attempts, by result",
            reloads.clone(),
        );
        registry.register(
            "config_generation",
            "Generation of the config in force",
            generation.clone(),
        );
        registry.register(
            "pool_info",
            "Pools in the config and their version label (always 1)",
            pool_info.clone(),
        );
        registry.register(
            "pool_endpoints",
            "Endpoints per pool, by state",
            pool_endpoints.clone(),
        );
        registry.register(
            "active_connections",
            "Open client connections",
            active_connections.clone(),
        );
        registry.register(
            "fallbacks",
            "Requests sent to the stable pool because the chosen pool had no available endpoint",
            fallbacks.clone(),
        );
        registry.register(
            "retries",
            "Upstream request retries, by pool",
            retries.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        registry.register(
            "rollout_weight_permille",
            "The per-mille the rollout gives its rule",
            rollout.weight.clone(),
        );
        registry.register(
            "rollout_step",
            "The rollout's step, 0-based",
            rollout.step.clone(),
        );
        registry.register(
            "rollout_state",
            "The rollout's state: 1 for the current one",
            rollout.state.clone(),
        );
        registry.register(
            "rollout_analyses",
            "Rollout analyses, by verdict",
            rollout.analyses.clone(),
        );
        registry.register(
            "rollout_follow_errors",
            "Failed attempts to take the rollout's state from the instance followed",
            rollout.follow_errors.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&rollout.cohorts)));
        registry.register(
            "mirror_requests",
            "Copies of requests to a mirror target, by outcome",
            mirror_requests.clone(),
        );
        registry.register(
            "mirror_diffs",
            "Copies whose answer differed from the served one, by what differed",
            mirror_diffs.clone(),
        );
        registry.register(
            "dns_failures",
            "Failed lookups of a pool's endpoint names (the last addresses stay in use)",
            dns_failures.clone(),
        );
        registry.register(
            "client_errors",
            "Requests refused before routing (malformed head, head too large, head too slow), by kind",
            client_errors_family,
        );
        Metrics {
            registry,
            process,
            client_errors,
            requests,
            duration,
            first_byte,
            endpoint_up,
            endpoints_published: Mutex::new(BTreeSet::new()),
            upstream_errors,
            rule_matches,
            reloads,
            generation,
            pool_info,
            pool_endpoints,
            active_connections,
            fallbacks,
            retries,
            access_log_dropped,
            rollout,
            mirror_requests,
            mirror_diffs,
            dns_failures,
            series: Mutex::new(Series::default()),
        }
    }

    /// The handles for one pool; called when a snapshot compiles. `version` is the
    /// pool's version label (empty when unset), `stable` the fallback target.
    pub fn pool(&self, pool: &str, version: &str, stable: &str) -> PoolMetrics {
        // `get_or_create` returns a read guard on the family; each handle is cloned out
        // in its own statement so no guard is alive when the next entry is created.
        let name = || pool.to_string();
        let status = |class: &str| PoolStatusLabels {
            pool: name(),
            status_class: class.to_string(),
        };
        let kind = |kind: &str| PoolKindLabels {
            pool: name(),
            kind: kind.to_string(),
        };
        let state = |state: &str| PoolStateLabels {
            pool: name(),
            state: state.to_string(),
        };
        let info = PoolVersionLabels {
            pool: name(),
            version: version.to_string(),
        };
        self.pool_info.get_or_create(&info).set(1);
        let requests =
            STATUS_CLASSES.map(|class| self.requests.get_or_create(&status(class)).clone());
        let errors = ERROR_KINDS.map(|k| self.upstream_errors.get_or_create(&kind(k)).clone());
        let duration = self
            .duration
            .get_or_create(&PoolLabels { pool: name() })
            .clone();
        let first_byte = self
            .first_byte
            .get_or_create(&PoolLabels { pool: name() })
            .clone();
        let retries = self
            .retries
            .get_or_create(&PoolLabels { pool: name() })
            .clone();
        let fallback = FromToLabels {
            from: name(),
            to: stable.to_string(),
        };
        // The stable pool never falls back to itself: its counter is not exported.
        let fallbacks = if pool == stable {
            Counter::default()
        } else {
            self.fallbacks.get_or_create(&fallback).clone()
        };
        let endpoints_healthy = self.pool_endpoints.get_or_create(&state("healthy")).clone();
        let endpoints_unhealthy = self
            .pool_endpoints
            .get_or_create(&state("unhealthy"))
            .clone();
        PoolMetrics {
            requests,
            duration,
            first_byte,
            errors,
            retries,
            fallbacks,
            endpoints_healthy,
            endpoints_unhealthy,
            dns_failures: None,
        }
    }

    /// `graygate_dns_failures_total{pool}`: its series exists from the config that
    /// gives the pool a name to resolve.
    pub fn dns_failures(&self, pool: &str) -> Counter {
        self.dns_failures
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .clone()
    }

    /// The match counter for one rule (or `default`) and its pool.
    pub fn rule(&self, rule: &str, pool: &str) -> Counter {
        self.rule_matches
            .get_or_create(&RuleLabels {
                rule: rule.to_string(),
                pool: pool.to_string(),
            })
            .clone()
    }

    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn set_generation(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    pub fn active_connections(&self) -> &Gauge {
        &self.active_connections
    }

    pub fn client_error(&self, kind: ClientErrorKind) {
        self.client_errors[kind as usize].inc();
    }

    /// `client_errors{kind="send_timeout"}`, for a connection's writer to count in: the
    /// error it ends with reaches no one intact (h2 keeps only an I/O error's kind).
    pub fn send_timeouts(&self) -> Counter {
        self.client_errors[ClientErrorKind::SendTimeout as usize].clone()
    }

    /// A mirror's counters: by outcome, then by kind of difference.
    pub fn mirror(&self, to: &str) -> ([Counter; 6], [Counter; 3]) {
        let requests = crate::mirror::OUTCOMES.map(|outcome| {
            self.mirror_requests
                .get_or_create(&MirrorOutcomeLabels {
                    to: to.to_string(),
                    outcome: outcome.to_string(),
                })
                .clone()
        });
        let diffs = crate::mirror::DIFF_KINDS.map(|kind| {
            self.mirror_diffs
                .get_or_create(&MirrorDiffLabels {
                    to: to.to_string(),
                    kind: kind.to_string(),
                })
                .clone()
        });
        (requests, diffs)
    }

    pub fn rollout(&self) -> RolloutMetrics {
        self.rollout.clone()
    }

    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Records the series a config, or a candidate config, has created.
    pub fn created(&self, candidate: &Series) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(candidate);
    }

    /// Makes `current` the only config with series: those of pools and rules it does
    /// not have (an older config's, or a failed candidate's) are removed.
    pub fn retain(&self, current: &Series) {
        let mut known = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let current_pools: BTreeSet<&String> = current.pools.iter().map(|(pool, _)| pool).collect();
        for (pool, version) in known.pools.difference(&current.pools) {
            self.pool_info.remove(&PoolVersionLabels {
                pool: pool.clone(),
                version: version.clone(),
            });
            if !current_pools.contains(pool) {
                self.remove_pool(pool);
            }
        }
        for (rule, pool) in known.rules.difference(&current.rules) {
            self.rule_matches.remove(&RuleLabels {
                rule: rule.clone(),
                pool: pool.clone(),
            });
        }
        for (from, to) in known.fallbacks.difference(&current.fallbacks) {
            self.fallbacks.remove(&FromToLabels {
                from: from.clone(),
                to: to.clone(),
            });
        }
        for to in known.mirrors.difference(&current.mirrors) {
            for outcome in crate::mirror::OUTCOMES {
                self.mirror_requests.remove(&MirrorOutcomeLabels {
                    to: to.clone(),
                    outcome: outcome.to_string(),
                });
            }
            for kind in crate::mirror::DIFF_KINDS {
                self.mirror_diffs.remove(&MirrorDiffLabels {
                    to: to.clone(),
                    kind: kind.to_string(),
                });
            }
        }
        *known = current.clone();
    }

    fn remove_pool(&self, pool: &str) {
        let pool = pool.to_string();
        for class in STATUS_CLASSES {
            self.requests.remove(&PoolStatusLabels {
                pool: pool.clone(),
                status_class: class.to_string(),
            });
        }
        for kind in ERROR_KINDS {
            self.upstream_errors.remove(&PoolKindLabels {
                pool: pool.clone(),
                kind: kind.to_string(),
            });
        }
        for state in ["healthy", "unhealthy"] {
            self.pool_endpoints.remove(&PoolStateLabels {
                pool: pool.clone(),
                state: state.to_string(),
            });
        }
        self.duration.remove(&PoolLabels { pool: pool.clone() });
        self.dns_failures.remove(&PoolLabels { pool: pool.clone() });
        self.first_byte.remove(&PoolLabels { pool: pool.clone() });
        self.retries.remove(&PoolLabels { pool });
    }

    /// Sets `graygate_endpoint_up` to each endpoint's state, `(pool, endpoint, up)`,
    /// and removes the series of endpoints no longer listed. Called at scrape time.
    pub fn publish_endpoints<'a>(
        &self,
        endpoints: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    ) {
        let mut published = self
            .endpoints_published
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut now = BTreeSet::new();
        for (pool, endpoint, up) in endpoints {
            let labels = PoolEndpointLabels {
                pool: pool.to_string(),
                endpoint: endpoint.to_string(),
            };
            self.endpoint_up.get_or_create(&labels).set(i64::from(up));
            now.insert(labels);
        }
        for gone in published.difference(&now) {
            self.endpoint_up.remove(gone);
        }
        *published = now;
    }

    /// The exposition: OpenMetrics text, or the Prometheus text format.
    pub fn encode(&self, openmetrics: bool) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &self.process))
            .and_then(|()| encode_eof(&mut text))
            .expect("writing to a String cannot fail");
        if openmetrics {
            text
        } else {
            to_prometheus(&text)
        }
    }
}
