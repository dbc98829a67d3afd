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
use crate::mirror::Mirror;
use crate::rollout::Tap;
use crate::routing::{Chain, Decision, RequestView};
use crate::shared::Shared;
use crate::upstream::{Endpoint, Pool};

#[derive(Debug)]
pub struct Snapshot {
    pub chain: Chain,
    /// Indexed by `routing::PoolId`. Shared with the snapshots a rollout derives.
    pub pools: Arc<[Pool]>,
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
    pub series: Arc<Series>,
    pub settings: Settings,
    /// The effective config (defaults filled in), for `/admin/config`.
    pub file: Arc<ConfigFile>,
    pub origin: Origin,
    /// The rollout driving one of the rules, when `[rollout]` is set.
    pub rollout: Option<Tap>,
    /// `[[mirror]]`: copies of what pools serve.
    pub mirrors: Vec<Arc<Mirror>>,
}

/// Per-request settings taken from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub decision_headers: bool,
    pub fallback: Fallback,
    pub request_timeout: Duration,
    pub max_body_bytes: u64,
    /// Bounds each wait for a request body's next bytes.
    pub body_read_timeout: Duration,
    pub sticky: Option<StickyCookie>,
    /// `log.user_key`: the access log carries each request's user key.
    pub log_user_key: bool,
}

/// `routing.sticky_cookie`, compiled: what the `Set-Cookie` for a new visitor says.
#[derive(Debug, Clone)]
pub struct StickyCookie {
    pub name: Box<str>,
    pub max_age_seconds: u64,
    /// Proxies whose `x-forwarded-proto: https` makes the cookie `Secure`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
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

    /// This snapshot with the rollout's rule at `tap.weight`, its cohorts marked, and
    /// recorded in `tap.cohorts` while it is judged. Everything else is shared or copied
    /// as it is: a change of weight is not a new config generation.
    pub fn with_rollout(&self, tap: Tap) -> Snapshot {
        let chain = self
            .chain
            .with_permille(tap.plan.rule, tap.weight, true)
            .expect("a rollout's rule has a per-mille condition");
        self.derive(
            chain,
            Arc::clone(&self.pools),
            self.mirrors.clone(),
            Some(tap),
        )
    }

    /// This snapshot with its endpoint names as they resolve now, or `None` when no
    /// pool's or mirror's endpoints would change. Endpoints that stay are the same
    /// endpoints (health, connections); everything else is shared or copied as it is:
    /// a lookup is not a new config generation.
    pub fn with_resolved(&self, shared: &Shared) -> Option<Snapshot> {
        let same = |a: &[Arc<Endpoint>], b: &[Arc<Endpoint>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        let mut changed = false;
        let pools: Vec<Pool> = self
            .pools
            .iter()
            .map(|pool| {
                let endpoints = shared
                    .endpoints
                    .endpoints(&pool.name, &pool.specs, &shared.names);
                changed |= !same(&endpoints, &pool.endpoints);
                pool.with_endpoints(endpoints)
            })
            .collect();
        let mirrors: Vec<Arc<Mirror>> = self
            .mirrors
            .iter()
            .map(|mirror| {
                let owner = Mirror::owner(&mirror.from_name, &mirror.to_name);
                let endpoints =
                    shared
                        .endpoints
                        .endpoints(&owner, &mirror.target.specs, &shared.names);
                changed |= !same(&endpoints, &mirror.target.endpoints);
                Arc::new(mirror.with_endpoints(endpoints))
            })
            .collect();
        changed.then(|| {
            let chain = self.chain.clone();
            self.derive(chain, pools.into(), mirrors, self.rollout.clone())
        })
    }

    /// A snapshot of the same config generation with these parts, the rest shared or
    /// copied.
    fn derive(
        &self,
        chain: Chain,
        pools: Arc<[Pool]>,
        mirrors: Vec<Arc<Mirror>>,
        rollout: Option<Tap>,
    ) -> Snapshot {
        Snapshot {
            chain,
            pools,
            rule_headers: self.rule_headers.clone(),
            rule_matches: self.rule_matches.clone(),
            default_matches: self.default_matches.clone(),
            access_log: self.access_log.clone(),
            tls: self.tls.clone(),
            series: Arc::clone(&self.series),
            settings: self.settings.clone(),
            file: Arc::clone(&self.file),
            origin: self.origin.clone(),
            rollout,
            mirrors,
        }
    }
}

impl Snapshot {
    /// `explain`'s answer for one request: the chain's explanation, and when a rollout
    /// drives a rule, the weight it gave the rule and where it is. `source` says where
    /// that weight came from, for the offline command.
    pub fn explain(
        &self,
        request: RequestView<'_>,
        random: &mut dyn FnMut() -> f64,
        source: &str,
    ) -> serde_json::Value {
        // A new visitor, with no user key and no sticky cookie, gets a sticky id made.
        let minted = self
            .settings
            .sticky
            .as_ref()
            .filter(|_| self.chain.needs_sticky_id(&request))
            .and_then(|_| crate::proxy::mint_sticky_id());
        let request = match &minted {
            Some(id) => request.with_minted_key(id.as_bytes()),
            None => request,
        };
        let explanation = self.chain.explain(request, random);
        let mut value = serde_json::to_value(&explanation).expect("serializable");
        if let Some(tap) = &self.rollout {
            let plan = &tap.plan;
            let set_by = if tap.position.is_some() {
                "rollout"
            } else {
                "config file"
            };
            value["rollout"] = serde_json::json!({
                "rule": plan.rule_name,
                "weight_permille": tap.weight,
                "file_permille": plan.file_permille,
                "set_by": set_by,
                "source": source,
                "state": tap.position.map(|(phase, _)| phase.as_str()),
                "step": tap.position.map(|(_, step)| step),
                "steps": plan.steps,
            });
        }
        value
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
