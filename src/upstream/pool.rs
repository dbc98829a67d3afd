//! A named group of interchangeable endpoints (`blue`, `green`, `canary`).

use std::sync::Arc;

use http::HeaderValue;

use super::balance::Balancer;
use super::client::UpstreamClient;
use super::endpoint::{Endpoint, InFlight};

#[derive(Debug)]
pub struct Pool {
    pub name: Box<str>,
    pub version: Option<Box<str>>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub client: UpstreamClient,
    /// The pool's name as a header value, built once for `x-graygate-pool`.
    pub name_header: HeaderValue,
}

impl Pool {
    /// Picks an endpoint and counts the request against it.
    pub fn start_request(&self) -> InFlight {
        self.balancer.pick(&self.endpoints).start()
    }
}
