//! graygate: an L7 reverse proxy for gray releases.
//!
//! A pure decision core ([`routing`]) sits inside an I/O shell: [`config`] turns
//! TOML into an immutable [`snapshot::Snapshot`], [`proxy`] runs one request through
//! it, [`upstream`] holds the pools, [`server`] accepts connections on each of the
//! [`workers`].
//!
//! No `unsafe` but one block, allowed where it stands: the own loop's read through an
//! uninitialised stack buffer (`server/http1.rs`, measured there).
#![deny(unsafe_code)]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod h1;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod rollout;
pub mod routing;
pub mod server;
pub mod shared;
pub mod shutdown;
pub mod snapshot;
pub mod sniff;
pub mod tls;
pub mod upstream;
pub mod workers;
