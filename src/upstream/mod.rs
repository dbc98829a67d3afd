//! Upstream pools: their endpoints, how one is picked, and the HTTP client that
//! carries requests to them.

pub mod active;
mod balance;
mod body;
mod client;
mod endpoint;
pub mod health;
mod pool;
mod registry;
pub(crate) mod wire;

pub use balance::Balancer;
pub use body::UpstreamBody;
pub use client::{
    enter_worker, is_idempotent, send, set_worker_count, BodyStalled, RequestBody, SendFailure,
    Tee, TeeReceiver, UpstreamConnection, UpstreamError, IDLE_TIMEOUT,
};
pub use endpoint::{parse_endpoint, Endpoint, InFlight};
pub use pool::Pool;
pub use registry::EndpointRegistry;
pub use wire::{ExtraHeaders, ProtocolError, HOP_BY_HOP};
