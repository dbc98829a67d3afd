//! The HTTP client that carries requests to upstreams, with keep-alive pooling.
//!
//! Clients live outside config snapshots: a reload that keeps an endpoint keeps its
//! warm connections. There is one client per distinct connect timeout, because the
//! timeout belongs to the connector.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// What the proxy sends upstream: the client's body, streamed, under the size limit.
pub type UpstreamRequestBody = Limited<Incoming>;

pub type UpstreamClient = Client<HttpConnector, UpstreamRequestBody>;

/// Idle upstream connections are closed after this long. It stays below the shortest
/// common upstream keep-alive (uvicorn and gunicorn: 5 s; nginx 75 s, Go 90 s) so the
/// gateway, not the upstream, closes an idle connection, and a request is not sent on
/// a connection the upstream is just closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Default)]
pub struct Clients {
    by_connect_timeout: Mutex<HashMap<Duration, UpstreamClient>>,
}

impl Clients {
    pub fn new() -> Self {
        Clients::default()
    }

    /// The shared client for a connect timeout; made on first use. Called when a
    /// config compiles, never per request.
    pub fn get(&self, connect_timeout: Duration) -> UpstreamClient {
        let mut clients = self
            .by_connect_timeout
            .lock()
            .expect("client cache poisoned");
        clients
            .entry(connect_timeout)
            .or_insert_with(|| build(connect_timeout))
            .clone()
    }
}

fn build(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}
