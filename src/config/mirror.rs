//! `[[mirror]]`: validated and compiled into [`Mirror`]s, every mistake an error with
//! its key path, in the same pass as the rest of the config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Method;

use super::compile::Compiler;
use super::error::KeyPath;
use super::model::ConfigFile;
use crate::mirror::{Mirror, MirrorState, Target};
use crate::routing::PoolId;
use crate::upstream::EndpointSpec;

/// Methods a copy may repeat without doing anything twice (RFC 9110 §9.2.1).
const SAFE: [Method; 4] = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
/// A copy holds its request body in memory: at most this much each.
const MAX_COPIED_BODY: u64 = 16 << 20;
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

impl Compiler<'_> {
    /// The mirrors, or `None` after recording errors.
    pub(super) fn mirrors(
        &mut self,
        file: &ConfigFile,
        pools: &HashMap<&str, PoolId>,
    ) -> Option<Vec<Arc<Mirror>>> {
        let before = self.errors.len();
        let mut mirrors = Vec::new();
        let mut seen = HashMap::new();
        for (i, m) in file.mirror.iter().enumerate() {
            let path = KeyPath::root().key("mirror").index(i);
            let from = self.pool_ref(pools, &m.from, path.key("from"));
            let to = self.pool_ref(pools, &m.to, path.key("to"));
            if m.from == m.to {
                self.error(
                    path.key("to"),
                    format!("must differ from `from` (`{}`)", m.from),
                );
            }
            if let Some(first) = seen.insert((m.from.as_str(), m.to.as_str()), i) {
                self.error(
                    path.clone(),
                    format!("mirror[{first}] already copies `{}` to `{}`", m.from, m.to),
                );
            }
            if !(0..=1000).contains(&m.permille) {
                self.error(
                    path.key("permille"),
                    format!("must be between 0 and 1000, got {}", m.permille),
                );
            }
            let methods = self.mirror_methods(m, &path);
            if m.max_body_bytes > MAX_COPIED_BODY {
                self.error(
                    path.key("max_body_bytes"),
                    format!(
                        "at most {MAX_COPIED_BODY} (each copy holds its body in memory), got {}",
                        m.max_body_bytes
                    ),
                );
            }
            if m.timeout.is_zero() || m.timeout > MAX_TIMEOUT {
                self.error(path.key("timeout"), "must be above 0 and at most 1h");
            }
            if !(1..=100_000).contains(&m.max_in_flight) {
                self.error(
                    path.key("max_in_flight"),
                    format!("must be between 1 and 100000, got {}", m.max_in_flight),
                );
            }
            let mut ignore = Vec::new();
            for (j, name) in m.diff_ignore_headers.iter().enumerate() {
                match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(name) => ignore.push(name),
                    Err(_) => self.error(
                        path.key("diff_ignore_headers").index(j),
                        format!("`{name}` is not a header name"),
                    ),
                }
            }
            let (Some(from), Some(_), Some(methods)) = (from, to, methods) else {
                continue;
            };
            let Some(target) = file.pools.get(&m.to) else {
                continue;
            };
            // The target's addresses as endpoints of the mirror's own: their own
            // connections and their own health, so copies never take the connections
            // (or eject the endpoints) of real traffic to that pool.
            let owner = Mirror::owner(&m.from, &m.to);
            let specs: Arc<[EndpointSpec]> = target
                .endpoints
                .iter()
                .filter_map(|address| EndpointSpec::parse(address).ok())
                .collect();
            let endpoints = self
                .shared
                .endpoints
                .endpoints(&owner, &specs, &self.shared.names);
            self.series.mirrors.insert(m.to.clone());
            let metrics = &self.shared.metrics;
            let state = self.shared.mirrors.get(&m.from, &m.to, || {
                let (requests, diffs) = metrics.mirror(&m.to);
                MirrorState::new(requests, diffs)
            });
            mirrors.push(Arc::new(Mirror {
                from,
                from_name: m.from.as_str().into(),
                to_name: m.to.as_str().into(),
                to_header: HeaderValue::from_str(&m.to).expect("pool names are header values"),
                permille: m.permille.clamp(0, 1000) as u16,
                salt: owner.as_bytes().into(),
                methods,
                max_body_bytes: m.max_body_bytes,
                timeout: m.timeout,
                max_in_flight: m.max_in_flight.clamp(1, 100_000) as usize,
                diff: m.diff,
                ignore_headers: ignore,
                target: Target {
                    specs,
                    endpoints,
                    balancer: target.lb.balancer(),
                    connect_timeout: target.connect_timeout,
                },
                state,
            }));
        }
        (self.errors.len() == before).then_some(mirrors)
    }

    /// The methods copied: the safe ones by default; any other only with
    /// `allow_side_effects`, because the copy would do it a second time.
    fn mirror_methods(&mut self, m: &super::model::Mirror, path: &KeyPath) -> Option<Vec<Method>> {
        let Some(listed) = &m.methods else {
            return Some(SAFE[..3].to_vec());
        };
        if listed.is_empty() {
            self.error(path.key("methods"), "an empty list copies nothing");
            return None;
        }
        let before = self.errors.len();
        let mut methods = Vec::new();
        for (j, name) in listed.iter().enumerate() {
            let at = path.key("methods").index(j);
            match Method::from_bytes(name.as_bytes()) {
                Ok(_) if name.bytes().any(|b| b.is_ascii_lowercase()) => self.error(
                    at,
                    format!("methods are case-sensitive: write `{}`", name.to_ascii_uppercase()),
                ),
                Ok(method) if method == Method::CONNECT => {
                    self.error(at, "CONNECT is never proxied, so never copied")
                }
                Ok(method) if !SAFE.contains(&method) && !m.allow_side_effects => self.error(
                    at,
                    format!(
                        "{method} is not a safe method: a copy would do it a second time; set allow_side_effects = true to copy it anyway"
                    ),
                ),
                Ok(method) => methods.push(method),
                Err(_) => self.error(at, format!("`{name}` is not a method")),
            }
        }
        (self.errors.len() == before).then_some(methods)
    }
}
