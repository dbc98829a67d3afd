//! Endpoint names (`"blue-svc:8000"`), resolved on the control plane, never on the
//! request path: every address a name resolves to becomes an endpoint of its own,
//! with its own health and warm connections, kept while the name keeps resolving to it.
//!
//! [`ResolvedNames`] holds what each name resolved to last, for every config
//! generation to build its endpoints from; the control plane (`control::dns`) looks
//! names up with a [`Resolver`] and swaps in a new snapshot when an address set
//! changes. A name that stops resolving keeps its last addresses; one that never
//! resolved has none, and its pool falls back as any pool without endpoints does.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;

/// How names are resolved: `server.dns`, as plain values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverSettings {
    /// `ip:port` of each name server; empty: the system's (`/etc/resolv.conf`, and
    /// `/etc/hosts` first).
    pub nameservers: Vec<SocketAddr>,
    /// One query's timeout.
    pub timeout: Duration,
}

/// A DNS resolver for endpoint names. Lookups are asked of the name servers every
/// time: the schedule of lookups (`resolve_every`, the answers' TTLs) is the control
/// plane's, not a cache's.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Sorted, without repeats; never empty.
    pub addresses: Vec<IpAddr>,
    /// How long the answer may be kept (its records' smallest TTL).
    pub ttl: Duration,
}

impl Resolver {
    pub fn new(settings: &ResolverSettings) -> Result<Resolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|address| {
                    let mut server = NameServerConfig::udp_and_tcp(address.ip());
                    for connection in &mut server.connections {
                        connection.port = address.port();
                    }
                    server
                })
                .collect();
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                provider,
            );
            // Given name servers are the whole truth: no hosts file.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = settings.timeout;
        options.attempts = 2;
        // Every address, so a headless Service's pods all take traffic.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let inner = builder
            .build()
            .map_err(|e| format!("cannot build the resolver: {e}"))?;
        Ok(Resolver {
            inner,
            timeout: settings.timeout,
        })
    }

    /// Looks `host` up now. The error is the resolver's, in words.
    pub async fn lookup(&self, host: &str) -> Result<Answer, String> {
        // The schedule is ours: an answer cached from an earlier lookup would hide a
        // change until its TTL ends, whatever `resolve_every` says.
        self.inner.clear_cache();
        // Each of the two attempts at each name server is bounded by `timeout`; this
        // bounds the whole, whatever the number of servers.
        let limit = self.timeout * 4;
        let answer = tokio::time::timeout(limit, self.inner.lookup_ip(host))
            .await
            .map_err(|_| format!("no answer within {}", humantime::format_duration(limit)))?
            .map_err(describe)?;
        let mut addresses: Vec<IpAddr> = answer.iter().map(|ip| ip.to_canonical()).collect();
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err("no address records".to_string());
        }
        let ttl = answer
            .valid_until()
            .saturating_duration_since(Instant::now());
        Ok(Answer { addresses, ttl })
    }
}

/// The resolver's error in an operator's words, rather than the query's debug form.
fn describe(error: NetError) -> String {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none)) => match none.response_code {
            ResponseCode::NXDomain => "the name does not exist (NXDOMAIN)".to_string(),
            ResponseCode::NoError => "the name has no address records".to_string(),
            code => format!("no records ({code})"),
        },
        other => other.to_string(),
    }
}

/// What each endpoint name resolved to last, by host (lower case), shared by every
/// config generation. A name absent here has never resolved.
#[derive(Debug, Default)]
pub struct ResolvedNames {
    names: Mutex<HashMap<Box<str>, Arc<[IpAddr]>>>,
}

impl ResolvedNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<[IpAddr]>>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The addresses `host` resolved to last; `None` if it never resolved.
    pub fn get(&self, host: &str) -> Option<Arc<[IpAddr]>> {
        self.lock().get(&*host.to_ascii_lowercase()).cloned()
    }

    /// Records a successful lookup; whether the set of addresses changed.
    pub fn set(&self, host: &str, addresses: &[IpAddr]) -> bool {
        let mut names = self.lock();
        let key: Box<str> = host.to_ascii_lowercase().into();
        if names.get(&key).is_some_and(|known| **known == *addresses) {
            return false;
        }
        names.insert(key, addresses.into());
        true
    }

    /// Forgets the names no config uses any more.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|host, _| keep(host));
    }
}

/// When to look a name up again after an answer: at `resolve_every`, or sooner when
/// the answer's TTL ends first, but not sooner than [`MIN_WAIT`] (a TTL of 0 must not
/// make a busy loop) unless `resolve_every` itself is shorter.
pub fn next_lookup(resolve_every: Duration, ttl: Duration) -> Duration {
    resolve_every.min(ttl.max(MIN_WAIT))
}

/// The shortest wait between two lookups of a name that a short TTL can cause.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sooner_of_resolve_every_and_the_ttl() {
        let s = Duration::from_secs;
        assert_eq!(next_lookup(s(10), s(300)), s(10));
        assert_eq!(next_lookup(s(10), s(3)), s(3));
        assert_eq!(next_lookup(s(10), s(0)), MIN_WAIT);
        assert_eq!(
            next_lookup(Duration::from_millis(300), s(0)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn a_set_changes_only_when_its_addresses_do() {
        let names = ResolvedNames::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(names.get("svc").is_none());
        assert!(names.set("Svc", &[a, b]));
        assert!(!names.set("svc", &[a, b]));
        assert_eq!(names.get("SVC").as_deref(), Some(&[a, b][..]));
        assert!(names.set("svc", &[b]));
        names.retain(|host| host != "svc");
        assert!(names.get("svc").is_none());
    }
}
