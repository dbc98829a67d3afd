//! The life of one request, in named phases:
//!
//! 1. **decide**: run the rule chain on the request, pick the pool;
//! 2. **admit**: refuse what must not go upstream (a body over the limit);
//! 3. **upstream request**: pick an endpoint, rewrite the head for the upstream;
//! 4. **forward**: send it over the pooled client, bounded by `request_timeout`;
//! 5. **respond**: clean the upstream's head, add decision headers, stream the body;
//!    or answer a short gateway error (502, 504, 413) that never leaves the client hanging;
//! 6. **record**: when the body is done, count the request and its duration for the
//!    pool and write the access-log line.
//!
//! Each phase is a plain function of the snapshot the request loaded at its start, so
//! a reload in the middle of a request cannot mix two configs.

mod body;
mod error;
mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Request, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use tracing::debug;

pub use body::{AccessStart, Completion, ResponseBody};
pub use error::GatewayError;

use crate::config::model::Fallback;
use crate::routing::{Decision, RequestView};
use crate::shared::Shared;
use crate::snapshot::{LiveConfig, Snapshot};
use crate::upstream::InFlight;

/// Per-connection facts the proxy needs for every request on it.
#[derive(Debug, Clone)]
pub struct ClientConnection {
    pub remote: SocketAddr,
    /// The client's IP as a header value, made once per connection.
    pub remote_ip: HeaderValue,
    /// `x-forwarded-proto`.
    pub scheme: HeaderValue,
}

impl ClientConnection {
    pub fn new(remote: SocketAddr, tls: bool) -> Self {
        let ip = remote.ip().to_canonical().to_string();
        ClientConnection {
            remote,
            remote_ip: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
            scheme: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    config: Arc<LiveConfig>,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(config: Arc<LiveConfig>, shared: Arc<Shared>) -> Self {
        Proxy { config, shared }
    }

    pub fn config(&self) -> &Arc<LiveConfig> {
        &self.config
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientConnection,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let snapshot = self.config.load();

        // Phase 1: decide.
        let mut decision = decide(&snapshot, &request);
        snapshot.count_match(&decision);
        let access = snapshot.access_log.is_some().then(|| {
            Box::new(AccessStart {
                time: SystemTime::now(),
                method: request.method().clone(),
                path: request.uri().path().to_string(),
            })
        });

        // Phases 2 to 5.
        let mut in_flight = None;
        let outcome = forward(&snapshot, &mut decision, request, client, &mut in_flight).await;
        if let Some(endpoint) = &in_flight {
            let healthy = outcome.as_ref().map_or_else(
                |e| e.upstream_kind().is_none(),
                |r| !r.status().is_server_error(),
            );
            snapshot.pool(&decision).report(endpoint, healthy);
        }
        let mut response = match outcome {
            Ok(response) => response,
            Err(err) => {
                if let Some(kind) = err.upstream_kind() {
                    snapshot.pool(&decision).metrics.upstream_error(kind);
                }
                debug!(pool = &*snapshot.pool(&decision).name, error = %err, "gateway error");
                err.response()
            }
        };
        if snapshot.settings.decision_headers {
            headers::add_decision(response.headers_mut(), &snapshot, &decision);
        }

        // Phase 6: record, once the body is done.
        let status = response.status().as_u16();
        let completion = Completion {
            snapshot,
            decision,
            started,
            status,
            bytes: 0,
            in_flight,
            access,
        };
        response.map(|body| body.with_completion(completion))
    }
}

/// Phase 1: the rule chain's decision.
pub fn decide(snapshot: &Snapshot, request: &Request<Incoming>) -> Decision {
    let view = RequestView::new(request.headers(), request.uri().query());
    snapshot.chain.decide(view, &mut fastrand::f64)
}

/// The chosen pool has no available endpoint. With `fallback = "stable"` the stable
/// pool takes the request (counted on `graygate_fallbacks_total`), so a broken canary
/// never takes users down; otherwise, or if the stable pool is down too, 503.
fn fall_back(snapshot: &Snapshot, decision: &mut Decision) -> Result<InFlight, GatewayError> {
    let stable = snapshot.chain.stable();
    if snapshot.settings.fallback == Fallback::Stable && decision.pool != stable {
        if let Some(endpoint) = snapshot.pools[stable.0].start_request() {
            snapshot.pool(decision).metrics.fallbacks.inc();
            decision.pool = stable;
            return Ok(endpoint);
        }
    }
    Err(GatewayError::NoEndpoint)
}

/// Phases 2 to 5 for a decided request. The chosen endpoint is left in `in_flight`,
/// so the request stays counted against it until the response body is done.
async fn forward(
    snapshot: &Snapshot,
    decision: &mut Decision,
    request: Request<Incoming>,
    client: &ClientConnection,
    in_flight: &mut Option<InFlight>,
) -> Result<Response<ResponseBody>, GatewayError> {
    // Phase 2: admit. A declared length over the limit is refused before any upstream
    // work; a chunked body is cut off by `Limited` as it streams.
    if request.method() == http::Method::CONNECT {
        return Err(GatewayError::Refused {
            status: http::StatusCode::METHOD_NOT_ALLOWED,
            text: "405 method not allowed: CONNECT is not proxied\n",
        });
    }
    let limit = snapshot.settings.max_body_bytes;
    if headers::content_length(request.headers()).is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge);
    }

    // Phase 3: the upstream request, to an available endpoint of the chosen pool or,
    // when it has none, per `routing.fallback`.
    let endpoint = match snapshot.pool(decision).start_request() {
        Some(endpoint) => endpoint,
        None => fall_back(snapshot, decision)?,
    };
    let pool = snapshot.pool(decision);
    let endpoint = in_flight.insert(endpoint);
    let (mut head, body) = request.into_parts();
    headers::to_upstream(
        &mut head,
        &endpoint.authority,
        client,
        pool,
        snapshot.rule_header(decision),
    )?;
    let body = Limited::new(body, limit.try_into().unwrap_or(usize::MAX));
    let upstream_request = Request::from_parts(head, body);

    // Phase 4: forward, bounded by the request timeout up to the response head.
    let response = tokio::time::timeout(
        snapshot.settings.request_timeout,
        pool.client.request(upstream_request),
    )
    .await
    .map_err(|_| GatewayError::Timeout)?
    .map_err(GatewayError::from_client)?;

    // Phase 5: the response head cleaned; the body streams back.
    let (mut head, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut head.headers);
    Ok(Response::from_parts(
        head,
        ResponseBody::upstream(body, snapshot.settings.request_timeout),
    ))
}
