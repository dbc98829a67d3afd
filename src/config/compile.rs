//! Validation and compilation in one pass: every check that can fail records an error
//! with its key path and goes on, so one run reports every problem; the snapshot is
//! built only when there were none.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue};

use super::error::{ConfigError, ConfigErrors, KeyPath};
use super::locate::Locator;
use super::model::{self, ConfigFile, Text};
use super::Source;
use crate::access_log::AccessLog;
use crate::metrics::{PoolMetrics, Series};
use crate::rollout::Tap;
use crate::routing::{self, Chain, Condition, HeaderTest, KeySet, PoolId, Sources, UaClassifier};
use crate::shared::Shared;
use crate::snapshot::{Origin, Settings, Snapshot};
use crate::upstream::{EndpointSpec, Pool};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

/// hyper refuses a smaller read buffer, and real clients send more than this.
const MIN_HEADER_BYTES: usize = 8 * 1024;
/// HTTP/2 carries the header-list limit as a u32 setting.
const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
/// Bounds on `pools.*.resolve_every`.
const MIN_RESOLVE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_RESOLVE_EVERY: std::time::Duration = std::time::Duration::from_secs(86_400);
/// The longest `server.dns.timeout`.
const MAX_DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Bounds the memory one regex may compile into.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Validates `file` and compiles it into a runtime snapshot, or returns every error.
pub fn compile(
    file: ConfigFile,
    source: &Source,
    shared: &Shared,
) -> Result<Snapshot, ConfigErrors> {
    let mut compiler = Compiler {
        source,
        shared,
        errors: Vec::new(),
        series: Series::default(),
        fingerprint: Sha256::new(),
    };
    let snapshot = compiler.snapshot(&file);
    // Whatever series the candidate created are known from now on, so the next
    // `Metrics::retain` can prune them if the candidate never goes live.
    shared.metrics.created(&compiler.series);
    if !compiler.errors.is_empty() {
        let locator = Locator::new(&source.text);
        let mut errors: Vec<ConfigError> = compiler
            .errors
            .into_iter()
            .map(|(path, message)| {
                let offset = locator.offset_of(&path);
                ConfigError::located(&source.path, &locator, offset, Some(path), message)
            })
            .collect();
        errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    Ok(snapshot.expect("no errors means every part compiled"))
}

pub(super) struct Compiler<'s> {
    pub(super) source: &'s Source,
    pub(super) shared: &'s Shared,
    pub(super) errors: Vec<(KeyPath, String)>,
    /// The metric label values this config creates series for.
    pub(super) series: Series,
    /// What the config means: the effective config and every whitelist file's
    /// contents. Equal fingerprints: a reload changes nothing.
    fingerprint: Sha256,
}

impl Compiler<'_> {
    pub(super) fn error(&mut self, path: KeyPath, message: impl Display) {
        self.errors.push((path, message.to_string()));
    }

    fn snapshot(&mut self, file: &ConfigFile) -> Option<Snapshot> {
        self.server(&file.server);
        self.limits(&file.limits);
        self.fingerprint
            .update(serde_json::to_vec(file).expect("the config serializes"));
        let access_log = self.access_log(&file.log);
        let tls = self.tls(file.server.tls.as_ref());
        let pools = self.pools(file);
        let pool_ids: HashMap<&str, PoolId> = file
            .pools
            .keys()
            .enumerate()
            .map(|(i, name)| (name.as_str(), PoolId(i)))
            .collect();
        let routing = KeyPath::root().key("routing");
        let stable = self.pool_ref(&pool_ids, &file.routing.stable, routing.key("stable"));
        let sticky = self.sticky_cookie(&file.routing, routing.clone());
        let sources = Sources {
            user_key: self.source(file.routing.user_key.as_ref(), routing.key("user_key")),
            city: self.source(file.routing.city.as_ref(), routing.key("city")),
            channel: self.source(file.routing.channel.as_ref(), routing.key("channel")),
            sticky_cookie: sticky
                .as_ref()
                .and_then(|s| s.as_ref())
                .map(|s| routing::ValueSource::Cookie(s.name.clone())),
        };
        let ua = self.ua_classes(&file.routing.ua_classes, routing.key("ua_classes"));
        let mut watched = vec![self.source.path.clone()];
        let rules = self.rules(file, &pool_ids, &sources, &ua, &mut watched);
        let rollout = self.rollout(file, &pool_ids);
        let mirrors = self.mirrors(file, &pool_ids);

        let (pools, stable, rules, ua, access_log, tls, rollout, sticky) = (
            pools?,
            stable?,
            rules?,
            ua?,
            access_log?,
            tls?,
            rollout?,
            sticky?,
        );
        let pool_names: Vec<Box<str>> = file.pools.keys().map(|n| n.as_str().into()).collect();
        let rule_matches = rules
            .iter()
            .map(|r| self.rule_series(&r.name, &pool_names[r.pool.0]))
            .collect();
        let default_matches = self.rule_series("default", &file.routing.stable);
        let rule_headers = rules
            .iter()
            .map(|r| {
                HeaderValue::from_str(&r.name).expect("rule names are validated as header values")
            })
            .collect();
        Some(Snapshot {
            chain: Chain::new(rules, stable, sources, ua, pool_names),
            pools: pools.into(),
            rule_headers,
            rule_matches,
            default_matches,
            access_log,
            tls: tls.map(|(config, files)| {
                watched.extend(files);
                config
            }),
            settings: Settings {
                decision_headers: file.routing.decision_headers,
                fallback: file.routing.fallback,
                request_timeout: file.limits.request_timeout,
                max_body_bytes: file.limits.max_body_bytes,
                body_read_timeout: file.limits.body_read_timeout,
                sticky,
                log_user_key: file.log.user_key,
            },
            file: Arc::new(file.clone()),
            origin: Origin {
                files: watched,
                loaded_at: SystemTime::now(),
                generation: 0,
                sha256: hex(&Sha256::digest(self.source.text.as_bytes())),
                fingerprint: std::mem::take(&mut self.fingerprint).finalize().into(),
            },
            series: Arc::new(std::mem::take(&mut self.series)),
            rollout: rollout.map(|plan| Tap::from_file(Arc::new(plan))),
            mirrors: mirrors?,
        })
    }

    /// A pool's metric handles, noting the series they create.
    fn pool_series(&mut self, pool: &str, version: Option<&str>, stable: &str) -> PoolMetrics {
        let version = version.unwrap_or("");
        self.series
            .pools
            .insert((pool.to_string(), version.to_string()));
        if pool != stable {
            let fallback = (pool.to_string(), stable.to_string());
            self.series.fallbacks.insert(fallback);
        }
        self.shared.metrics.pool(pool, version, stable)
    }

    fn rule_series(&mut self, rule: &str, pool: &str) -> Counter {
        self.series
            .rules
            .insert((rule.to_string(), pool.to_string()));
        self.shared.metrics.rule(rule, pool)
    }

    /// `[log] access`: `"stderr"` or a file, relative to the config file.
    fn access_log(&mut self, log: &model::Log) -> Option<Option<AccessLog>> {
        let Some(destination) = &log.access else {
            return Some(None);
        };
        let path = if destination == Path::new("stderr") {
            destination.clone()
        } else {
            self.source.base_dir().join(destination)
        };
        match self.shared.access_logs.get(&path) {
            Ok(log) => Some(Some(log)),
            Err(err) => {
                self.error(
                    KeyPath::root().key("log").key("access"),
                    format!("cannot open {}: {err}", path.display()),
                );
                None
            }
        }
    }

    /// `[server.tls]`: the certificate chain and key, read and checked now, so a bad
    /// pair is a config error (and a rejected reload) rather than failed handshakes.
    #[allow(clippy::type_complexity)]
    fn tls(
        &mut self,
        tls: Option<&model::Tls>,
    ) -> Option<Option<(Arc<rustls::ServerConfig>, [PathBuf; 2])>> {
        let Some(tls) = tls else {
            return Some(None);
        };
        let path = KeyPath::root().key("server").key("tls");
        let (cert_file, key_file) = (
            self.source.base_dir().join(&tls.cert),
            self.source.base_dir().join(&tls.key),
        );
        let cert_pem = self.read_pem(&cert_file, path.key("cert"));
        let key_pem = self.read_pem(&key_file, path.key("key"));
        let (cert_pem, key_pem) = (cert_pem?, key_pem?);
        match crate::tls::server_config(&cert_pem, &key_pem) {
            Ok(config) => Some(Some((config, [cert_file, key_file]))),
            Err(crate::tls::TlsError::Certificate(why)) => {
                self.error(path.key("cert"), format!("{}: {why}", cert_file.display()));
                None
            }
            Err(crate::tls::TlsError::Key(why)) => {
                self.error(path.key("key"), format!("{}: {why}", key_file.display()));
                None
            }
            Err(crate::tls::TlsError::Pair(why)) => {
                self.error(
                    path,
                    format!("the certificate and key do not form a usable pair: {why}"),
                );
                None
            }
        }
    }

    fn read_pem(&mut self, file: &Path, path: KeyPath) -> Option<Vec<u8>> {
        match super::read_regular(file, super::MAX_PEM_BYTES) {
            Ok(pem) => {
                self.fingerprint.update(&pem);
                Some(pem)
            }
            Err(err) => {
                self.error(path, format!("cannot read {}: {err}", file.display()));
                None
            }
        }
    }

    fn server(&mut self, server: &model::Server) {
        let path = KeyPath::root().key("server");
        // Each listener against those above it, so one clash is one error.
        let mut listeners = vec![("server.listen", server.listen, path.key("listen"))];
        if let Some(tls) = &server.tls {
            let key = path.key("tls").key("listen");
            listeners.push(("server.tls.listen", tls.listen, key));
        }
        listeners.push((
            "server.admin_listen",
            server.admin_listen,
            path.key("admin_listen"),
        ));
        if let Some(metrics) = server.metrics_listen {
            listeners.push(("server.metrics_listen", metrics, path.key("metrics_listen")));
        }
        for (i, (_, address, key)) in listeners.iter().enumerate() {
            if let Some((other, other_address, _)) = listeners[..i]
                .iter()
                .find(|(_, other, _)| share_a_port(*address, *other))
            {
                let message = if address == other_address {
                    format!("must differ from {other}")
                } else {
                    format!(
                        "must differ from {other} ({other_address}): they share port {}",
                        address.port()
                    )
                };
                self.error(key.clone(), message);
            }
        }
        if let Some(token) = &server.admin_token {
            if let Err(why) = check_admin_token(token.as_str()) {
                self.error(path.key("admin_token"), why);
            }
        }
        for (i, server) in server.dns.nameservers.iter().enumerate() {
            if server.port() == 0 {
                let key = path.key("dns").key("nameservers").index(i);
                self.error(
                    key,
                    format!("`{server}`: port 0 is not a name server's port"),
                );
            }
        }
        if server.dns.timeout.is_zero() || server.dns.timeout > MAX_DNS_TIMEOUT {
            self.error(
                path.key("dns").key("timeout"),
                "must be greater than 0 and at most 1m",
            );
        }
        if server.workers > 1024 {
            self.error(
                path.key("workers"),
                format!("{} is too many; use 0 for one per core", server.workers),
            );
        }
    }

    fn limits(&mut self, limits: &model::Limits) {
        let path = KeyPath::root().key("limits");
        for (key, value) in [
            ("header_read_timeout", limits.header_read_timeout),
            ("request_timeout", limits.request_timeout),
            ("body_read_timeout", limits.body_read_timeout),
            ("idle_timeout", limits.idle_timeout),
            ("send_timeout", limits.send_timeout),
            ("tunnel_idle_timeout", limits.tunnel_idle_timeout),
        ] {
            if value.is_zero() {
                self.error(path.key(key), "must be greater than 0");
            }
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&limits.max_header_bytes) {
            self.error(
                path.key("max_header_bytes"),
                format!(
                    "must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}, got {}",
                    limits.max_header_bytes
                ),
            );
        }
        if !(1..=10_000).contains(&limits.max_headers) {
            self.error(
                path.key("max_headers"),
                format!("must be between 1 and 10000, got {}", limits.max_headers),
            );
        }
        if limits.max_connections == 0 {
            self.error(path.key("max_connections"), "must be at least 1");
        }
    }

    fn pools(&mut self, file: &ConfigFile) -> Option<Vec<Pool>> {
        let root = KeyPath::root().key("pools");
        if file.pools.is_empty() {
            self.error(root.clone(), "at least one pool is required");
        }
        let mut pools = Vec::new();
        let mut ok = true;
        for (name, pool) in &file.pools {
            let path = root.key(name);
            if let Err(why) = check_name(name) {
                self.error(path.clone(), format!("pool name {why}"));
                ok = false;
            }
            if pool.endpoints.is_empty() {
                self.error(path.key("endpoints"), "a pool needs at least one endpoint");
                ok = false;
            }
            if let Some(check) = &pool.health_check {
                ok &= self.health_check(check, path.key("health_check"));
            }
            if pool.connect_timeout.is_zero() {
                self.error(path.key("connect_timeout"), "must be greater than 0");
                ok = false;
            }
            if !(MIN_RESOLVE_EVERY..=MAX_RESOLVE_EVERY).contains(&pool.resolve_every) {
                self.error(path.key("resolve_every"), "must be between 100ms and 1day");
                ok = false;
            }
            let mut specs = Vec::new();
            let mut seen = BTreeSet::new();
            for (i, address) in pool.endpoints.iter().enumerate() {
                match EndpointSpec::parse(address) {
                    Ok(spec) if !seen.insert(spec.authority.as_str().to_ascii_lowercase()) => {
                        self.error(
                            path.key("endpoints").index(i),
                            format!("`{address}` is listed twice"),
                        );
                        ok = false;
                    }
                    Ok(spec) => specs.push(spec),
                    Err(why) => {
                        self.error(
                            path.key("endpoints").index(i),
                            format!("`{address}`: {why}"),
                        );
                        ok = false;
                    }
                }
            }
            if !ok {
                continue;
            }
            let specs: Arc<[EndpointSpec]> = specs.into();
            let endpoints = self
                .shared
                .endpoints
                .endpoints(name, &specs, &self.shared.names);
            let mut metrics = self.pool_series(name, pool.version.as_deref(), &file.routing.stable);
            if specs.iter().any(|s| s.name().is_some()) {
                metrics.dns_failures = Some(self.shared.metrics.dns_failures(name));
            }
            pools.push(Pool {
                name: name.as_str().into(),
                version: pool.version.as_deref().map(Into::into),
                specs,
                endpoints,
                resolve_every: pool.resolve_every,
                balancer: pool.lb.balancer(),
                connect_timeout: pool.connect_timeout,
                health_check: pool.health_check.as_ref().map(model::HealthCheck::settings),
                metrics,
                name_header: HeaderValue::from_str(name).expect("pool names are validated"),
            });
        }
        ok.then_some(pools)
    }

    fn health_check(&mut self, check: &model::HealthCheck, path: KeyPath) -> bool {
        let before = self.errors.len();
        if !check.path.starts_with('/')
            || http::uri::PathAndQuery::try_from(check.path.as_str()).is_err()
        {
            self.error(
                path.key("path"),
                format!("`{}` is not a request path like /healthz", check.path),
            );
        }
        for (key, value) in [("interval", check.interval), ("timeout", check.timeout)] {
            if value.is_zero() {
                self.error(path.key(key), "must be greater than 0");
            }
        }
        if check.timeout > check.interval {
            self.error(path.key("timeout"), "must not exceed the interval");
        }
        for (key, value) in [("fall", check.fall), ("rise", check.rise)] {
            if value == 0 {
                self.error(path.key(key), "must be at least 1");
            }
        }
        self.errors.len() == before
    }

    pub(super) fn pool_ref(
        &mut self,
        pools: &HashMap<&str, PoolId>,
        name: &str,
        path: KeyPath,
    ) -> Option<PoolId> {
        let id = pools.get(name).copied();
        if id.is_none() {
            let mut known: Vec<&str> = pools.keys().copied().collect();
            known.sort();
            let message = if known.is_empty() {
                format!("unknown pool `{name}`; no pools are defined")
            } else {
                format!("unknown pool `{name}`; defined pools: {}", known.join(", "))
            };
            self.error(path, message);
        }
        id
    }

    fn source(
        &mut self,
        source: Option<&model::ValueSource>,
        path: KeyPath,
    ) -> Option<routing::ValueSource> {
        let source = source?;
        let given = [&source.header, &source.cookie, &source.query]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if given != 1 {
            self.error(path, "give exactly one of `header`, `cookie` or `query`");
            return None;
        }
        let (kind, name) = match (&source.header, &source.cookie, &source.query) {
            (Some(name), _, _) => ("header", name),
            (_, Some(name), _) => ("cookie", name),
            (_, _, Some(name)) => ("query", name),
            _ => unreachable!("exactly one is set"),
        };
        if name.is_empty() {
            self.error(path.key(kind), "the name is empty");
            return None;
        }
        match kind {
            "header" => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(routing::ValueSource::Header(name)),
                Err(_) => {
                    self.error(
                        path.key(kind),
                        format!("`{name}` is not a valid header name"),
                    );
                    None
                }
            },
            "cookie" => Some(routing::ValueSource::Cookie(name.as_str().into())),
            _ => Some(routing::ValueSource::Query(name.as_str().into())),
        }
    }

    fn ua_classes(&mut self, classes: &[model::UaClass], path: KeyPath) -> Option<UaClassifier> {
        let mut ok = true;
        if classes.len() > routing::MAX_UA_CLASSES {
            self.error(
                path.clone(),
                format!("at most {} classes", routing::MAX_UA_CLASSES),
            );
            ok = false;
        }
        let mut names = BTreeSet::new();
        for (i, class) in classes.iter().enumerate() {
            let path = path.index(i);
            if let Err(why) = check_name(&class.name) {
                self.error(path.key("name"), format!("class name {why}"));
                ok = false;
            } else if !names.insert(class.name.as_str()) {
                self.error(
                    path.key("name"),
                    format!("class `{}` is defined twice", class.name),
                );
                ok = false;
            }
            if class.contains.is_empty() {
                self.error(path.key("contains"), "give at least one substring");
                ok = false;
            }
            for (j, pattern) in class.contains.iter().enumerate() {
                if pattern.is_empty() {
                    self.error(
                        path.key("contains").index(j),
                        "an empty substring matches every User-Agent",
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        match UaClassifier::new(
            classes
                .iter()
                .map(|c| (c.name.as_str(), c.contains.as_slice())),
        ) {
            Ok(classifier) => Some(classifier),
            Err(err) => {
                self.error(path, format!("cannot build the matcher: {err}"));
                None
            }
        }
    }

    fn rules(
        &mut self,
        file: &ConfigFile,
        pools: &HashMap<&str, PoolId>,
        sources: &Sources,
        ua: &Option<UaClassifier>,
        watched: &mut Vec<PathBuf>,
    ) -> Option<Vec<routing::Rule>> {
        let mut rules = Vec::new();
        let mut ok = true;
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, rule) in file.rules.iter().enumerate() {
            let path = KeyPath::root().key("rules").index(i);
            if let Err(why) = check_name(&rule.name) {
                self.error(path.key("name"), format!("rule name {why}"));
                ok = false;
            } else if let Some(first) = names.insert(&rule.name, i) {
                self.error(
                    path.key("name"),
                    format!("rule `{}` is already defined at rules[{first}]", rule.name),
                );
                ok = false;
            }
            let pool = self.pool_ref(pools, &rule.to, path.key("to"));
            let conditions =
                self.conditions(&rule.conditions, path.key("match"), sources, ua, watched);
            match (pool, conditions) {
                (Some(pool), Some(conditions)) => rules.push(routing::Rule {
                    name: rule.name.as_str().into(),
                    conditions,
                    pool,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(rules)
    }

    /// The conditions of one rule, in a fixed order: the cheap, selective tests first,
    /// the random draw last, so a rule that fails early never spends a draw.
    fn conditions(
        &mut self,
        m: &model::Match,
        path: KeyPath,
        sources: &Sources,
        ua: &Option<UaClassifier>,
        watched: &mut Vec<PathBuf>,
    ) -> Option<Vec<Condition>> {
        let errors_before = self.errors.len();
        let mut conditions = Vec::new();

        if let Some(header) = &m.header {
            conditions.extend(self.header(header, path.key("header")));
        }
        if m.whitelist.is_some() || m.whitelist_file.is_some() {
            // Not the sticky cookie: a visitor picks its value, so it could name a
            // listed user.
            if sources.user_key.is_none() && sources.sticky_cookie.is_some() {
                self.error(
                    path.key("whitelist"),
                    "needs `routing.user_key`: the sticky cookie's value is the visitor's choice, so it never counts for a whitelist",
                );
            }
            self.requires(
                sources.user_key.is_some() || sources.sticky_cookie.is_some(),
                &path,
                "whitelist",
                "routing.user_key",
            );
            let mut set = KeySet::new();
            if let Some(list) = &m.whitelist {
                if list.is_empty() && m.whitelist_file.is_none() {
                    self.error(path.key("whitelist"), "an empty whitelist never matches");
                }
                self.key_set(list, path.key("whitelist"), &mut set);
            }
            if let Some(file) = &m.whitelist_file {
                let resolved = self.source.base_dir().join(file);
                self.whitelist_file(&resolved, path.key("whitelist_file"), &mut set);
                watched.push(resolved);
            }
            conditions.push(Condition::Whitelist(set));
        }
        if let Some(cities) = &m.city {
            self.requires(sources.city.is_some(), &path, "city", "routing.city");
            conditions.push(Condition::City(
                self.non_empty_set(cities, path.key("city")),
            ));
        }
        if let Some(channels) = &m.channel {
            self.requires(
                sources.channel.is_some(),
                &path,
                "channel",
                "routing.channel",
            );
            conditions.push(Condition::Channel(
                self.non_empty_set(channels, path.key("channel")),
            ));
        }
        if let Some(classes) = &m.ua {
            conditions.extend(self.ua_condition(classes, path.key("ua"), ua));
        }
        if let Some(permille) = m.permille {
            self.requires(
                sources.user_key.is_some() || sources.sticky_cookie.is_some(),
                &path,
                "permille",
                "routing.user_key",
            );
            if !(0..=1000).contains(&permille) {
                self.error(
                    path.key("permille"),
                    format!("must be between 0 and 1000, got {permille}"),
                );
            }
            let salt = m.salt.as_deref().unwrap_or("").as_bytes().into();
            conditions.push(Condition::Permille {
                permille: permille.clamp(0, 1000) as u16,
                salt,
            });
        } else if m.salt.is_some() {
            self.error(
                path.key("salt"),
                "`salt` only applies together with `permille`",
            );
        }
        if let Some(rate) = m.rate {
            if !(0.0..=1.0).contains(&rate) {
                self.error(
                    path.key("rate"),
                    format!("must be between 0 and 1, got {rate}"),
                );
            }
            conditions.push(Condition::Rate(rate));
        }
        if conditions.is_empty() && self.errors.len() == errors_before {
            self.error(path, "a rule needs at least one condition; to send all traffic to a pool, set routing.stable");
        }
        (self.errors.len() == errors_before).then_some(conditions)
    }

    /// `routing.sticky_cookie` and `routing.trusted_proxies`.
    fn sticky_cookie(
        &mut self,
        routing: &model::Routing,
        path: KeyPath,
    ) -> Option<Option<crate::snapshot::StickyCookie>> {
        let before = self.errors.len();
        let mut trusted = Vec::new();
        for (i, entry) in routing.trusted_proxies.iter().enumerate() {
            let parsed = entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted.push(net),
                Err(_) => self.error(
                    path.key("trusted_proxies").index(i),
                    format!("`{entry}` is not an address or a network like 10.0.0.0/8"),
                ),
            }
        }
        let Some(cookie) = &routing.sticky_cookie else {
            return (self.errors.len() == before).then_some(None);
        };
        let path = path.key("sticky_cookie");
        let separators = "()<>@,;:\\\"/[]?={} \t";
        if cookie.name.is_empty()
            || !cookie
                .name
                .chars()
                .all(|c| c.is_ascii_graphic() && !separators.contains(c))
        {
            self.error(
                path.key("name"),
                format!(
                    "`{}` is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                    cookie.name
                ),
            );
        }
        if let Some(model::ValueSource {
            cookie: Some(name), ..
        }) = &routing.user_key
        {
            if *name == cookie.name {
                self.error(
                    path.key("name"),
                    format!("`{name}` is already routing.user_key's cookie"),
                );
            }
        }
        let max_age = cookie.max_age.as_secs();
        if !(1..=10 * 365 * 86_400).contains(&max_age) {
            self.error(path.key("max_age"), "must be between 1s and 10 years");
        }
        (self.errors.len() == before).then(|| {
            Some(crate::snapshot::StickyCookie {
                name: cookie.name.as_str().into(),
                max_age_seconds: max_age,
                trusted_proxies: trusted,
            })
        })
    }

    fn requires(&mut self, present: bool, path: &KeyPath, key: &str, setting: &str) {
        if !present {
            self.error(
                path.key(key),
                format!("needs `{setting}` to say where the value is read from"),
            );
        }
    }

    fn header(&mut self, header: &model::HeaderMatch, path: KeyPath) -> Option<Condition> {
        let name = match HeaderName::from_bytes(header.name.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error(
                    path.key("name"),
                    format!("`{}` is not a valid header name", header.name),
                );
                None
            }
        };
        let given = [
            header.exact.is_some(),
            header.prefix.is_some(),
            header.regex.is_some(),
            header.present.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            self.error(
                path,
                "give exactly one of `exact`, `prefix`, `regex` or `present`",
            );
            return None;
        }
        let test = if let Some(exact) = &header.exact {
            self.header_bytes(exact, path.key("exact"))
                .map(HeaderTest::Exact)
        } else if let Some(prefix) = &header.prefix {
            self.header_bytes(prefix, path.key("prefix"))
                .map(HeaderTest::Prefix)
        } else if let Some(pattern) = &header.regex {
            match regex::bytes::RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(re) => Some(HeaderTest::Regex(re)),
                Err(err) => {
                    let first_line = err
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    self.error(
                        path.key("regex"),
                        format!("invalid regex `{pattern}`: {first_line}"),
                    );
                    None
                }
            }
        } else {
            header.present.map(HeaderTest::Present)
        };
        Some(Condition::Header {
            name: name?,
            test: test?,
        })
    }

    /// A value to compare header bytes with; one that no header can carry would
    /// silently never match.
    fn header_bytes(&mut self, value: &str, path: KeyPath) -> Option<Box<[u8]>> {
        if HeaderValue::from_str(value).is_err() {
            self.error(path, format!("{value:?} cannot appear in a header value"));
            return None;
        }
        Some(value.as_bytes().into())
    }

    fn key_set(&mut self, values: &[Text], path: KeyPath, set: &mut KeySet) {
        for (i, value) in values.iter().enumerate() {
            let text = value.to_string();
            if text.is_empty() {
                self.error(path.index(i), "an empty value never matches");
            } else {
                set.insert(text.into_bytes().into_boxed_slice());
            }
        }
    }

    fn non_empty_set(&mut self, values: &[Text], path: KeyPath) -> KeySet {
        if values.is_empty() {
            self.error(path.clone(), "an empty list never matches");
        }
        let mut set = KeySet::new();
        self.key_set(values, path, &mut set);
        set
    }

    /// One key a line; blank lines and `#` comments are skipped.
    fn whitelist_file(&mut self, file: &Path, path: KeyPath, set: &mut KeySet) {
        let text = super::read_regular(file, super::MAX_WHITELIST_BYTES).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
        });
        match text {
            Ok(text) => {
                self.fingerprint.update(file.as_os_str().as_encoded_bytes());
                self.fingerprint.update(text.as_bytes());
                for line in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    set.insert(line.as_bytes().into());
                }
            }
            Err(err) => self.error(path, format!("cannot read {}: {err}", file.display())),
        }
    }

    fn ua_condition(
        &mut self,
        classes: &[String],
        path: KeyPath,
        ua: &Option<UaClassifier>,
    ) -> Option<Condition> {
        if classes.is_empty() {
            self.error(path.clone(), "an empty list never matches");
        }
        let ua = ua.as_ref()?;
        let mut mask = 0u64;
        for (i, class) in classes.iter().enumerate() {
            match ua.id(class) {
                Some(id) => mask |= 1u64 << id,
                None if ua.is_empty() => self.error(
                    path.index(i),
                    format!(
                        "UA class `{class}` is not defined; define it in [[routing.ua_classes]]"
                    ),
                ),
                None => self.error(
                    path.index(i),
                    format!("UA class `{class}` is not defined in routing.ua_classes"),
                ),
            }
        }
        Some(Condition::Ua(mask))
    }
}

/// Whether two listeners would take the same port: the same address, or a wildcard and
/// an address it covers (`[::]` takes IPv4 too, as Linux binds it dual-stack). Port 0
/// is a fresh port each time, never a clash.
fn share_a_port(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |wild: std::net::IpAddr, other: std::net::IpAddr| {
        wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

/// A bearer token goes in a header as is: printable ASCII without spaces. The message
/// never repeats the token.
fn check_admin_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("must not be empty; remove the key to leave the admin API open".into());
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        let what = if c.is_whitespace() {
            "whitespace"
        } else if c.is_control() {
            "a control character"
        } else {
            "a character outside printable ASCII"
        };
        return Err(format!(
            "has {what}: a bearer token is printable ASCII without spaces"
        ));
    }
    Ok(())
}

/// Pool, rule and class names become metric labels and header values: keep them plain.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 128 {
        return Err("is longer than 128 characters".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')))
    {
        Some(c) => Err(format!(
            "`{name}` has {c:?}; use letters, digits and - _ . : /"
        )),
        None => Ok(()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
