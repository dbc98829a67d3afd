//! HTTP/1.1 on the wire, for both directions, as plain functions over byte buffers with
//! no I/O: the server loop parses requests and writes responses with it, the upstream
//! client writes requests and parses responses, as Pingora's `protocols/http/v1`
//! serves both. Every framing rule (RFC 9112 §6) is decided here once, so it is unit
//! tested, fuzzed (`fuzz/`) and compared with httparse and hyper (tests/h1_differential.rs)
//! in one place.
//!
//! - [`head`]: where headers sit in a buffer, tokens, `Content-Length`, hop-by-hop;
//! - [`request`]: request heads, parsed (server side) and encoded (client side);
//! - [`response`]: response heads, parsed with their body framing, and encoded;
//! - [`body`]: the body decoder (a length, chunked, or until close) and the chunk encoder.

pub mod body;
pub mod head;
pub mod request;
pub mod response;

/// A message HTTP/1.1 does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP/1.1 message: {0}")]
pub struct ProtocolError(pub &'static str);
