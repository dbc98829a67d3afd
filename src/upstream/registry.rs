//! Endpoints outlive config generations: a reload that keeps `blue`'s `10.0.0.1:80`
//! keeps its in-flight count and its health, so a reload neither forgets that an
//! endpoint is down nor skews least-request balancing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use http::uri::Authority;

use super::endpoint::Endpoint;

#[derive(Debug, Default)]
pub struct EndpointRegistry {
    /// By pool name and endpoint address; weak, so endpoints no config uses go away.
    endpoints: Mutex<HashMap<(String, String), Weak<Endpoint>>>,
}

impl EndpointRegistry {
    /// The live endpoint for `pool` and `address`, or a new one. Called when a config
    /// compiles, never per request.
    pub fn get(&self, pool: &str, address: &str, authority: Authority) -> Arc<Endpoint> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        endpoints.retain(|_, weak| weak.strong_count() > 0);
        let key = (pool.to_string(), address.to_string());
        if let Some(endpoint) = endpoints.get(&key).and_then(Weak::upgrade) {
            return endpoint;
        }
        let endpoint = Arc::new(Endpoint::new(address, authority));
        endpoints.insert(key, Arc::downgrade(&endpoint));
        endpoint
    }
}
