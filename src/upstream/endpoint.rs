//! One upstream address and its live in-flight count.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;

use super::client::IdleConnections;
use super::health::Health;

#[derive(Debug)]
pub struct Endpoint {
    /// As written in the config, for logs and `explain`.
    pub address: Box<str>,
    /// `host:port`, ready to become an upstream URI without parsing.
    pub authority: Authority,
    in_flight: AtomicUsize,
    /// Marked down until this instant (milliseconds on the process clock); see
    /// `health`.
    pub(super) down_until: AtomicU64,
    pub(super) health: Health,
    /// Keep-alive connections waiting for the next request.
    pub(super) idle: IdleConnections,
}

impl Endpoint {
    pub fn new(address: &str, authority: Authority) -> Self {
        Endpoint {
            address: address.into(),
            authority,
            in_flight: AtomicUsize::new(0),
            down_until: AtomicU64::new(0),
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
        !self.health.active.down.load(Ordering::Relaxed)
            && self.down_until.load(Ordering::Relaxed) <= super::health::now_millis()
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
    fn in_flight_guard_counts() {
        let endpoint = Arc::new(Endpoint::new("a:1", "a:1".parse().unwrap()));
        let first = endpoint.start();
        let second = endpoint.start();
        assert_eq!(endpoint.in_flight(), 2);
        drop(first);
        assert_eq!(second.in_flight(), 1);
        drop(second);
        assert_eq!(endpoint.in_flight(), 0);
    }
}
