//! Upstream pools: their endpoints, how one is picked, and the HTTP client that
//! carries requests to them.

pub mod active;
mod balance;
mod body;
mod client;
mod connection;
mod endpoint;
pub mod health;
mod pool;
mod registry;
mod resolve;

pub use balance::Balancer;
pub use body::UpstreamBody;
pub use client::{
    is_idempotent, send, BodyStalled, RequestBody, SendFailure, Tee, TeeReceiver, UpstreamError,
};
pub use connection::{enter_worker, set_worker_count, UpstreamConnection, IDLE_TIMEOUT};
pub use endpoint::{parse_endpoint, Endpoint, EndpointSpec, InFlight, Target};
pub use health::HealthCheck;
pub use pool::Pool;
pub use registry::EndpointRegistry;
pub use resolve::{next_lookup, Answer, ResolvedNames, Resolver, ResolverSettings};
