//! The immutable runtime view of one config generation, and the one place that holds
//! the current one.
//!
//! A request loads the current snapshot once and uses it from start to finish; a
//! reload compiles a whole new snapshot and swaps it in with one store. Readers never
//! take a lock that a reload contends on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;

use prometheus_client::metrics::counter::Counter;

use crate::access_log::AccessLog;
use crate::config::model::{ConfigFile, Fallback};
use crate::metrics::Series;
use crate::routing::{Chain, Decision};
use crate::upstream::Pool;

#[derive(Debug)]
pub struct Snapshot {
    pub chain: Chain,
    /// Indexed by `routing::PoolId`.
    pub pools: Vec<Pool>,
    /// `x-graygate-rule` values, indexed by `routing::RuleId`.
    pub rule_headers: Vec<HeaderValue>,
    /// `graygate_rule_matches_total` handles, indexed by `routing::RuleId`.
    pub rule_matches: Vec<Counter>,
    /// `graygate_rule_matches_total{rule="default"}`.
    pub default_matches: Counter,
    pub access_log: Option<AccessLog>,
    /// The TLS listener's certificate and settings, when `[server.tls]` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The metric series this config created.
    pub series: Series,
    pub settings: Settings,
    /// The effective config (defaults filled in), for `/admin/config`.
    pub file: ConfigFile,
    pub origin: Origin,
}

/// Per-request settings taken from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub decision_headers: bool,
    pub fallback: Fallback,
    pub request_timeout: Duration,
    pub max_body_bytes: u64,
}

/// Where a snapshot came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Files whose change should reload: the config and every whitelist file.
    pub files: Vec<std::path::PathBuf>,
    pub loaded_at: SystemTime,
    /// Counts applied configs from 1; 0 until the reloader assigns it.
    pub generation: u64,
    /// sha256 of the config file's text, hex.
    pub sha256: String,
    /// sha256 of what the config means (effective config and whitelist contents).
    pub fingerprint: [u8; 32],
}

/// `x-graygate-rule` when no rule matched.
pub static DEFAULT_RULE: HeaderValue = HeaderValue::from_static("default");

impl Snapshot {
    pub fn pool(&self, decision: &Decision) -> &Pool {
        &self.pools[decision.pool.0]
    }

    pub fn rule_header(&self, decision: &Decision) -> &HeaderValue {
        decision
            .rule
            .map_or(&DEFAULT_RULE, |rule| &self.rule_headers[rule.0])
    }

    pub fn count_match(&self, decision: &Decision) {
        if cfg!(feature = "bench-no-metrics") {
            return;
        }
        decision
            .rule
            .map_or(&self.default_matches, |rule| &self.rule_matches[rule.0])
            .inc();
    }

    pub fn rule_name(&self, decision: &Decision) -> &str {
        decision
            .rule
            .map_or("default", |rule| &self.chain.rule(rule).name)
    }
}

/// The current snapshot, swapped whole on reload.
#[derive(Debug)]
pub struct LiveConfig {
    current: ArcSwap<Snapshot>,
}

impl LiveConfig {
    pub fn new(snapshot: Snapshot) -> Self {
        LiveConfig {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot. Keep the `Arc` for the whole request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Makes `snapshot` current for every request that starts from now on.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
