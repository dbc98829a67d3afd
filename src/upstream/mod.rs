//! Upstream pools: their endpoints, how one is picked, and the HTTP client that
//! carries requests to them.

mod balance;
mod client;
mod endpoint;
mod pool;

pub use balance::Balancer;
pub use client::{Clients, UpstreamClient, UpstreamRequestBody};
pub use endpoint::{parse_endpoint, Endpoint, InFlight};
pub use pool::Pool;
