//! Endpoint names, looked up on the control plane: at start before traffic is served,
//! before a reload compiles a config with a name not seen yet, and then every
//! `resolve_every` (sooner when an answer's TTL ends). When the addresses of a name
//! change, the reloader swaps in a snapshot with the new endpoints; the request path
//! never resolves anything.
//!
//! A failed lookup keeps the name's last addresses, is counted in
//! `graygate_dns_failures_total{pool}` for each pool using the name, and is logged with
//! the resolver's error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::reload::Reloader;
use crate::config::model::ConfigFile;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use crate::upstream::{next_lookup, Answer, EndpointSpec, Resolver, ResolverSettings};

/// The resolver of a running gateway, made on first use (an address-only config never
/// makes one). `server.dns` is read at start.
#[derive(Debug)]
pub struct Dns {
    settings: ResolverSettings,
    resolver: OnceLock<Result<Resolver, String>>,
}

impl Dns {
    pub fn new(file: &ConfigFile) -> Dns {
        Dns {
            settings: settings(file),
            resolver: OnceLock::new(),
        }
    }

    /// Looks `host` up; the error in words.
    pub async fn lookup(&self, host: &str) -> Result<Answer, String> {
        let resolver = self
            .resolver
            .get_or_init(|| Resolver::new(&self.settings))
            .clone()?;
        resolver.lookup(host).await
    }
}

/// `server.dns` as the upstream side takes it.
pub fn settings(file: &ConfigFile) -> ResolverSettings {
    ResolverSettings {
        nameservers: file.server.dns.nameservers.clone(),
        timeout: file.server.dns.timeout,
    }
}

/// One endpoint name of the live config: how often to look it up, and the pools that
/// use it (their names, and their failure counters).
struct NameUse {
    every: Duration,
    pools: Vec<(Box<str>, Option<Counter>)>,
}

fn names_of(snapshot: &Snapshot) -> BTreeMap<Box<str>, NameUse> {
    let mut names: BTreeMap<Box<str>, NameUse> = BTreeMap::new();
    for pool in snapshot.pools.iter() {
        for name in pool.specs.iter().filter_map(EndpointSpec::name) {
            let entry = names.entry(name.into()).or_insert(NameUse {
                every: pool.resolve_every,
                pools: Vec::new(),
            });
            entry.every = entry.every.min(pool.resolve_every);
            if !entry.pools.iter().any(|(p, _)| *p == pool.name) {
                let counter = pool.metrics.dns_failures.clone();
                entry.pools.push((pool.name.clone(), counter));
            }
        }
    }
    names
}

/// Looks up, at once, the names of the live config that have never resolved, and
/// applies what they resolve to. Called at start, before traffic is served.
pub async fn resolve_unknown(reloader: &Arc<Reloader>) {
    let snapshot = reloader.live().load();
    let hosts: Vec<Box<str>> = names_of(&snapshot).into_keys().collect();
    drop(snapshot);
    if lookup_unknown(reloader, hosts).await {
        refresh(reloader).await;
    }
}

/// Before a reload: looks up the names of the config file on disk that have never
/// resolved, so that the config it compiles has their endpoints. Failures are left to
/// the schedule, which counts and logs them.
pub async fn resolve_unknown_in_file(reloader: &Arc<Reloader>, path: &Path) {
    let Ok(file) = crate::config::Source::read(path).and_then(|s| crate::config::parse(&s)) else {
        return;
    };
    let hosts: Vec<Box<str>> = file
        .pools
        .values()
        .flat_map(|pool| pool.endpoints.iter())
        .filter_map(|text| EndpointSpec::parse(text).ok())
        .filter_map(|spec| spec.name().map(Box::from))
        .collect();
    lookup_unknown(reloader, hosts).await;
}

/// Looks up those of `hosts` that have no addresses yet; whether any now has.
async fn lookup_unknown(reloader: &Arc<Reloader>, mut hosts: Vec<Box<str>>) -> bool {
    let names = &reloader.shared().names;
    hosts.sort();
    hosts.dedup();
    hosts.retain(|host| names.get(host).is_none());
    let mut found = false;
    for (host, result) in lookup_all(reloader, hosts).await {
        match result {
            Ok(answer) => found |= names.set(&host, &answer.addresses),
            Err(error) => debug!(name = &*host, %error, "endpoint name does not resolve yet"),
        }
    }
    found
}

/// Looks every host up at once.
async fn lookup_all(
    reloader: &Arc<Reloader>,
    hosts: Vec<Box<str>>,
) -> Vec<(Box<str>, Result<Answer, String>)> {
    let mut lookups = JoinSet::new();
    for host in hosts {
        let reloader = Arc::clone(reloader);
        lookups.spawn(async move {
            let result = reloader.dns().lookup(&host).await;
            (host, result)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = lookups.join_next().await {
        if let Ok(result) = done {
            results.push(result);
        }
    }
    results
}

/// Swaps in a snapshot with the endpoints the names resolve to now (off the runtime:
/// it waits for a reload under way).
async fn refresh(reloader: &Arc<Reloader>) {
    let reloader = Arc::clone(reloader);
    let _ = tokio::task::spawn_blocking(move || reloader.refresh_endpoints()).await;
}

/// Looks each name of the live config up again when it is due, until shutdown.
pub async fn run(reloader: Arc<Reloader>, mut shutdown: Shutdown) {
    // When each name is due; a name not here is due now.
    let mut due: HashMap<Box<str>, Instant> = HashMap::new();
    // Names whose last lookup failed, so a failure is logged once, not at every try.
    let mut failing: HashSet<Box<str>> = HashSet::new();
    loop {
        let names = names_of(&reloader.live().load());
        reloader
            .shared()
            .names
            .retain(|host| names.contains_key(host));
        due.retain(|host, _| names.contains_key(host));
        failing.retain(|host| names.contains_key(host));
        let now = Instant::now();
        // A reload may have shortened `resolve_every`.
        for (host, at) in due.iter_mut() {
            *at = (*at).min(now + names[host].every);
        }
        let hosts: Vec<Box<str>> = names
            .keys()
            .filter(|host| due.get(*host).is_none_or(|at| *at <= now))
            .cloned()
            .collect();
        let mut changed = false;
        for (host, result) in lookup_all(&reloader, hosts).await {
            let Some(name) = names.get(&host) else {
                continue;
            };
            let pools: Vec<&str> = name.pools.iter().map(|(p, _)| &**p).collect();
            match result {
                Ok(answer) => {
                    changed |= reloader.shared().names.set(&host, &answer.addresses);
                    due.insert(host.clone(), now + next_lookup(name.every, answer.ttl));
                    if failing.remove(&host) {
                        info!(name = &*host, ?pools, addresses = ?answer.addresses, "endpoint name resolves again");
                    }
                }
                Err(error) => {
                    for counter in name.pools.iter().filter_map(|(_, c)| c.as_ref()) {
                        counter.inc();
                    }
                    due.insert(host.clone(), now + name.every);
                    let kept = reloader.shared().names.get(&host);
                    let consequence = match &kept {
                        Some(_) => "its last addresses stay in use",
                        None => "it has no endpoints until it resolves",
                    };
                    if failing.insert(host.clone()) {
                        warn!(name = &*host, ?pools, %error, kept = ?kept.as_deref(), "cannot resolve endpoint name; {consequence}");
                    } else {
                        debug!(name = &*host, ?pools, %error, "endpoint name still does not resolve");
                    }
                }
            }
        }
        if changed {
            refresh(&reloader).await;
        }
        let next = due.values().min().copied();
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = reloader.names_changed() => {}
            _ = shutdown.wait() => return,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
