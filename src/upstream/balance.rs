//! Picking an endpoint within a pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::endpoint::Endpoint;

#[derive(Debug)]
pub enum Balancer {
    RoundRobin {
        next: AtomicUsize,
    },
    /// Power of two random choices: of two distinct random endpoints, the one with
    /// fewer requests in flight. Close to least-loaded without scanning the pool.
    LeastRequest,
}

impl Balancer {
    pub fn round_robin() -> Self {
        Balancer::RoundRobin {
            next: AtomicUsize::new(0),
        }
    }

    /// The same way of balancing, from its start, for a pool rebuilt around new
    /// endpoints.
    pub fn fresh(&self) -> Balancer {
        match self {
            Balancer::RoundRobin { .. } => Balancer::round_robin(),
            Balancer::LeastRequest => Balancer::LeastRequest,
        }
    }

    /// Picks an endpoint. `endpoints` must not be empty (a pool whose names never
    /// resolved has none: its callers check).
    pub fn pick<'e>(&self, endpoints: &'e [Arc<Endpoint>]) -> &'e Arc<Endpoint> {
        let n = endpoints.len();
        if n == 1 {
            return &endpoints[0];
        }
        match self {
            Balancer::RoundRobin { next } => &endpoints[next.fetch_add(1, Ordering::Relaxed) % n],
            Balancer::LeastRequest => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ea, eb) = (&endpoints[a], &endpoints[b]);
                if eb.in_flight() < ea.in_flight() {
                    eb
                } else {
                    ea
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let address = format!("10.0.0.{i}:80");
                Arc::new(Endpoint::new(
                    &address,
                    address.parse().unwrap(),
                    address.parse().unwrap(),
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_evenly() {
        let eps = endpoints(3);
        let balancer = Balancer::round_robin();
        let picks: Vec<&str> = (0..6).map(|_| &*balancer.pick(&eps).address).collect();
        assert_eq!(
            picks,
            [
                "10.0.0.0:80",
                "10.0.0.1:80",
                "10.0.0.2:80",
                "10.0.0.0:80",
                "10.0.0.1:80",
                "10.0.0.2:80"
            ]
        );
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let eps = endpoints(2);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
        let balancer = Balancer::LeastRequest;
        for _ in 0..100 {
            assert_eq!(&*balancer.pick(&eps).address, "10.0.0.1:80");
        }
    }

    #[test]
    fn least_request_spreads_when_idle() {
        let eps = endpoints(4);
        let balancer = Balancer::LeastRequest;
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            let picked = balancer.pick(&eps);
            seen[eps.iter().position(|e| Arc::ptr_eq(e, picked)).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| c > 500), "{seen:?}");
    }
}
