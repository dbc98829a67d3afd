//! A named group of interchangeable endpoints (`blue`, `green`, `canary`).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::balance::Balancer;
use super::endpoint::{Endpoint, EndpointSpec, InFlight};
use super::health::HealthCheck;
use crate::metrics::PoolMetrics;

#[derive(Debug)]
pub struct Pool {
    pub name: Box<str>,
    pub version: Option<Box<str>>,
    /// The endpoints as the config writes them: addresses, and names to resolve.
    pub specs: Arc<[EndpointSpec]>,
    /// What `specs` stand for now; empty while no name has resolved yet.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How often the names in `specs` are resolved again.
    pub resolve_every: Duration,
    pub balancer: Balancer,
    pub connect_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// The pool's name as a header value, built once for `x-graygate-pool`.
    pub name_header: HeaderValue,
    /// Recording handles, resolved when the config compiled.
    pub metrics: PoolMetrics,
}

impl Pool {
    /// Picks an available endpoint and counts the request against it; `None` when
    /// every endpoint is marked down.
    pub fn start_request(&self) -> Option<InFlight> {
        self.start_request_avoiding(&[])
    }

    /// As [`Pool::start_request`], skipping endpoints a retry has already failed on.
    pub fn start_request_avoiding(&self, failed: &[Arc<Endpoint>]) -> Option<InFlight> {
        if self.endpoints.is_empty() {
            return None;
        }
        let usable =
            |e: &Arc<Endpoint>| e.is_available() && !failed.iter().any(|f| Arc::ptr_eq(f, e));
        let picked = self.balancer.pick(&self.endpoints);
        if usable(picked) {
            return Some(picked.start());
        }
        // Take the next usable one from a random start, so the load of a down endpoint
        // spreads instead of landing on its neighbour.
        let n = self.endpoints.len();
        let start = fastrand::usize(..n);
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| usable(e))
            .map(|e| e.start())
    }

    pub fn has_available_endpoint(&self) -> bool {
        self.endpoints.iter().any(|e| e.is_available())
    }

    /// Feeds a request's outcome to passive health.
    pub fn report(&self, endpoint: &Endpoint, success: bool) {
        if success {
            endpoint.report_success();
        } else {
            endpoint.report_failure(&self.endpoints, &self.name);
        }
    }

    /// This pool around other endpoints (its names resolved anew), its settings and
    /// metric handles the same.
    pub fn with_endpoints(&self, endpoints: Vec<Arc<Endpoint>>) -> Pool {
        Pool {
            name: self.name.clone(),
            version: self.version.clone(),
            specs: Arc::clone(&self.specs),
            endpoints,
            resolve_every: self.resolve_every,
            balancer: self.balancer.fresh(),
            connect_timeout: self.connect_timeout,
            health_check: self.health_check.clone(),
            name_header: self.name_header.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Sets the `graygate_pool_endpoints` gauges from the endpoints' current state.
    pub fn publish_endpoint_states(&self) {
        let healthy = self.endpoints.iter().filter(|e| e.is_available()).count();
        self.metrics.endpoints_healthy.set(healthy as i64);
        self.metrics
            .endpoints_unhealthy
            .set((self.endpoints.len() - healthy) as i64);
    }
}
