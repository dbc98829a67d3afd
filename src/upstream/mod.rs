//! Upstream pools: their endpoints, how one is picked, and the HTTP client that
//! carries requests to them.

pub mod active;
mod balance;
mod client;
mod endpoint;
pub mod health;
mod pool;
mod registry;

pub use balance::Balancer;
pub use client::{send, RequestBody, SendFailure, UpstreamConnection, UpstreamError, IDLE_TIMEOUT};
pub use endpoint::{parse_endpoint, Endpoint, InFlight};
pub use pool::Pool;
pub use registry::EndpointRegistry;
