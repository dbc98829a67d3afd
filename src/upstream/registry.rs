//! Endpoints outlive config generations: a reload that keeps `blue`'s `10.0.0.1:80`
//! keeps its in-flight count and its health, so a reload neither forgets that an
//! endpoint is down nor skews least-request balancing. So does a new lookup of a name
//! for each address it still resolves to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use super::endpoint::{Endpoint, EndpointSpec, Target};
use super::resolve::ResolvedNames;

/// By owner (a pool, or a mirror's copy of one), endpoint as written, and address.
type Key = (String, Box<str>, SocketAddr);

#[derive(Debug, Default)]
pub struct EndpointRegistry {
    /// Weak, so endpoints no config uses go away.
    endpoints: Mutex<HashMap<Key, Weak<Endpoint>>>,
}

impl EndpointRegistry {
    /// The endpoints `specs` stand for now: each address as it is, and each name as
    /// the addresses it last resolved to (none if it never did), live ones kept. Called
    /// when a config compiles or a name's addresses change, never per request.
    pub fn endpoints(
        &self,
        owner: &str,
        specs: &[EndpointSpec],
        names: &ResolvedNames,
    ) -> Vec<Arc<Endpoint>> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        endpoints.retain(|_, weak| weak.strong_count() > 0);
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let sockets: Vec<SocketAddr> = match &spec.target {
                Target::Address(socket) => vec![*socket],
                Target::Name { host, port } => names
                    .get(host)
                    .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, *port)).collect())
                    .unwrap_or_default(),
            };
            for socket in sockets {
                let key = (owner.to_string(), spec.text.clone(), socket);
                if let Some(endpoint) = endpoints.get(&key).and_then(Weak::upgrade) {
                    out.push(endpoint);
                    continue;
                }
                let address = match spec.target {
                    Target::Address(_) => spec.text.to_string(),
                    Target::Name { .. } => socket.to_string(),
                };
                let endpoint = Arc::new(Endpoint::new(&address, spec.authority.clone(), socket));
                endpoints.insert(key, Arc::downgrade(&endpoint));
                out.push(endpoint);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_a_name_still_resolves_to_keeps_its_endpoint() {
        let registry = EndpointRegistry::default();
        let names = ResolvedNames::default();
        let specs = [
            EndpointSpec::parse("10.0.0.9:80").unwrap(),
            EndpointSpec::parse("svc:8000").unwrap(),
        ];
        let before = registry.endpoints("blue", &specs, &names);
        assert_eq!(before.len(), 1, "a name never resolved has no endpoint");
        let (a, b, c) = ("10.1.0.1", "10.1.0.2", "10.1.0.3");
        names.set("svc", &[a.parse().unwrap(), b.parse().unwrap()]);
        let first = registry.endpoints("blue", &specs, &names);
        let addresses: Vec<&str> = first.iter().map(|e| &*e.address).collect();
        assert_eq!(addresses, ["10.0.0.9:80", "10.1.0.1:8000", "10.1.0.2:8000"]);
        assert_eq!(first[1].authority.as_str(), "svc:8000");
        assert!(Arc::ptr_eq(&before[0], &first[0]));
        names.set("svc", &[b.parse().unwrap(), c.parse().unwrap()]);
        let second = registry.endpoints("blue", &specs, &names);
        assert!(Arc::ptr_eq(&first[2], &second[1]), "10.1.0.2 stays itself");
        assert_eq!(&*second[2].address, "10.1.0.3:8000");
        let other = registry.endpoints("green", &specs, &names);
        assert!(!Arc::ptr_eq(&other[0], &second[0]), "each pool has its own");
    }
}
