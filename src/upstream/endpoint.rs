//! One upstream address and its live in-flight count, and the endpoints a config
//! writes (an address, or a name resolved on the control plane).

use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;

use super::connection::{IdleConnections, UpstreamConnection};
use super::health::{Health, CONSECUTIVE_FAILURES, MAX_EJECTED_PERCENT};
use tracing::warn;

#[derive(Debug)]
pub struct Endpoint {
    /// As written in the config, or the address a name resolved to; for logs.
    pub address: Box<str>,
    /// `host:port` as written (a name stays a name), for `Host` when a client sent none.
    pub authority: Authority,
    /// Where connections go: no lookup on the request path.
    pub socket: SocketAddr,
    in_flight: AtomicUsize,
    /// Marked down until this instant (milliseconds on the process clock); see
    pub(super) health: Health,
    /// Keep-alive connections waiting for the next request.
    pub(super) idle: IdleConnections,
}

impl Endpoint {
    pub fn new(address: &str, authority: Authority, socket: SocketAddr) -> Self {
        Endpoint {
            address: address.into(),
            authority,
            socket,
            in_flight: AtomicUsize::new(0),
            health: Health::default(),
            idle: IdleConnections::default(),
        }
    }

    /// Requests sent to this endpoint whose responses have not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the endpoint may take requests: neither ejected by passive health nor
    /// marked down by active checks.
    pub fn is_available(&self) -> bool {
        self.health.is_up()
    }

    /// Records a request that went well: the failure streak ends.
    pub fn report_success(&self) {
        self.health.succeeded();
    }

    /// Records a failed request; ejects the endpoint when its streak reaches the limit
    /// and `pool` (the endpoints it is one of) may lose one more. Returns whether it
    /// was ejected.
    pub fn report_failure(&self, pool: &[Arc<Endpoint>], pool_name: &str) -> bool {
        let streak = self.health.failed();
        if streak < CONSECUTIVE_FAILURES || !self.is_available() {
            return false;
        }
        let ejected = pool.iter().filter(|e| !e.is_available()).count();
        if ejected > 0 && (ejected + 1) * 100 > pool.len() * MAX_EJECTED_PERCENT {
            return false;
        }
        let duration = self.health.eject();
        warn!(
            pool = pool_name,
            endpoint = &*self.address,
            streak,
            ?duration,
            "endpoint ejected"
        );
        true
    }

    /// Counts a request as in flight until the returned guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// An endpoint with one request counted against it; dropping it ends the count.
/// The proxy keeps it inside the response body, so a streaming response counts
/// until its last byte.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> Arc<Endpoint> {
        Arc::clone(&self.0)
    }
}

impl Deref for InFlight {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Parses `host:port` or `http://host:port` (a trailing `/` is allowed). The port is
/// required: a gateway that guesses ports sends canary traffic to the wrong place.
pub fn parse_endpoint(text: &str) -> Result<Authority, String> {
    let rest = if let Some(rest) = text.strip_prefix("http://") {
        rest
    } else if text.starts_with("https://") {
        return Err("https upstreams are not supported; use http://host:port".into());
    } else if text.contains("://") {
        return Err("only http:// endpoints are supported".into());
    } else {
        text
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') {
        return Err("an endpoint is host:port, without a path".into());
    }
    if rest.contains('@') {
        return Err("an endpoint cannot carry credentials".into());
    }
    // `Authority` reads an out-of-range port as no port at all; say which it is.
    if let Some((_, port)) = rest.rsplit_once(':') {
        if !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_err()
        {
            return Err(format!("port {port} is out of range (1-65535)"));
        }
    }
    let authority: Authority = rest
        .parse()
        .map_err(|_| format!("`{rest}` is not host:port"))?;
    match authority.port_u16() {
        None => Err("the port is missing (host:port)".into()),
        Some(0) => Err("port 0 is not a valid upstream port".into()),
        Some(_) if authority.host().is_empty() => Err("the host is empty".into()),
        Some(_) => Ok(authority),
    }
}

/// An endpoint as the config writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// As written, for errors.
    pub text: Box<str>,
    /// `host:port`, without the scheme.
    pub authority: Authority,
    pub target: Target,
}

/// What an endpoint's host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address: used as it is, no resolver involved.
    Address(SocketAddr),
    /// A DNS name, resolved on the control plane; each address it resolves to is an
    /// endpoint.
    Name { host: Box<str>, port: u16 },
}

impl EndpointSpec {
    /// Parses `host:port` or `http://host:port` (see [`parse_endpoint`]).
    pub fn parse(text: &str) -> Result<EndpointSpec, String> {
        let authority = parse_endpoint(text)?;
        let port = authority
            .port_u16()
            .expect("parse_endpoint requires a port");
        let host = authority.host();
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let target = match literal.parse::<IpAddr>() {
            Ok(ip) => Target::Address(SocketAddr::new(ip, port)),
            Err(_) => Target::Name {
                host: host.to_ascii_lowercase().into(),
                port,
            },
        };
        Ok(EndpointSpec {
            text: text.into(),
            authority,
            target,
        })
    }

    /// The DNS name to resolve, if the endpoint is not an address.
    pub fn name(&self) -> Option<&str> {
        match &self.target {
            Target::Name { host, .. } => Some(host),
            Target::Address(_) => None,
        }
    }
}

impl Endpoint {
    /// Returns a connection whose last response was read to its end, for reuse.
    pub fn release(&self, connection: UpstreamConnection) {
        self.idle.put(connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_forms() {
        for (text, want) in [
            ("127.0.0.1:9001", "127.0.0.1:9001"),
            ("http://127.0.0.1:9001", "127.0.0.1:9001"),
            ("http://model-a.internal:80/", "model-a.internal:80"),
            ("[::1]:8080", "[::1]:8080"),
        ] {
            assert_eq!(parse_endpoint(text).unwrap().as_str(), want);
        }
    }

    #[test]
    fn rejects_the_rest() {
        for text in [
            "127.0.0.1",
            "https://a:1",
            "ftp://a:1",
            "a:1/x",
            "a:0",
            ":80",
            "a:99999",
            "u@a:1",
            "",
        ] {
            assert!(parse_endpoint(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn an_address_is_used_as_it_is_and_a_name_is_resolved() {
        let spec = EndpointSpec::parse("http://10.0.0.7:8000").unwrap();
        assert_eq!(
            spec.target,
            Target::Address("10.0.0.7:8000".parse().unwrap())
        );
        assert_eq!(spec.name(), None);
        let spec = EndpointSpec::parse("[::1]:80").unwrap();
        assert_eq!(spec.target, Target::Address("[::1]:80".parse().unwrap()));
        let spec = EndpointSpec::parse("Blue-Svc:8000").unwrap();
        assert_eq!(spec.name(), Some("blue-svc"));
        assert_eq!(&*spec.text, "Blue-Svc:8000");
    }

    #[test]
    fn in_flight_guard_counts() {
        let endpoint = Arc::new(Endpoint::new(
            "a:1",
            "a:1".parse().unwrap(),
            "10.0.0.1:1".parse().unwrap(),
        ));
        let first = endpoint.start();
        let second = endpoint.start();
        assert_eq!(endpoint.in_flight(), 2);
        drop(first);
        assert_eq!(second.in_flight(), 1);
        drop(second);
        assert_eq!(endpoint.in_flight(), 0);
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;
    use std::time::Duration;

    fn pool(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let address = format!("127.0.0.1:{}", 1000 + i);
                Arc::new(Endpoint::new(
                    &address,
                    address.parse().unwrap(),
                    address.parse().unwrap(),
                ))
            })
            .collect()
    }

    #[test]
    fn consecutive_failures_eject_and_success_resets_the_streak() {
        let eps = pool(2);
        for _ in 0..CONSECUTIVE_FAILURES - 1 {
            assert!(!eps[0].report_failure(&eps, "p"));
        }
        eps[0].report_success();
        for _ in 0..CONSECUTIVE_FAILURES - 1 {
            assert!(!eps[0].report_failure(&eps, "p"));
        }
        assert!(eps[0].is_available());
        assert!(eps[0].report_failure(&eps, "p"));
        assert!(!eps[0].is_available());
        assert!(eps[1].is_available());
    }

    #[test]
    fn at_most_half_the_pool_is_ejected_but_one_always_may_be() {
        let eps = pool(2);
        for _ in 0..CONSECUTIVE_FAILURES {
            eps[0].report_failure(&eps, "p");
        }
        for _ in 0..CONSECUTIVE_FAILURES * 3 {
            eps[1].report_failure(&eps, "p");
        }
        assert!(!eps[0].is_available());
        assert!(eps[1].is_available(), "the second of two would exceed 50%");

        let single = pool(1);
        for _ in 0..CONSECUTIVE_FAILURES {
            single[0].report_failure(&single, "p");
        }
        assert!(
            !single[0].is_available(),
            "a single endpoint can be ejected"
        );
    }

    #[test]
    fn ejection_expires() {
        let eps = pool(1);
        eps[0].health.mark_down(Duration::from_millis(30));
        assert!(!eps[0].is_available());
        std::thread::sleep(Duration::from_millis(60));
        assert!(eps[0].is_available());
    }
}
