//! The life of one request, in named phases:
//!
//! 1. **decide**: run the rule chain on the request, pick the pool;
//! 2. **admit**: refuse what must not go upstream (a body over the limit);
//! 3. **upstream request**: pick an endpoint, rewrite the head for the upstream;
//! 4. **forward**: send it over the pooled client, bounded by `request_timeout`;
//! 5. **respond**: clean the upstream's head, add decision headers, stream the body;
//!    or answer a short gateway error (502, 504, 413) that never leaves the client hanging.
//!
//! Each phase is a plain function of the snapshot the request loaded at its start, so
//! a reload in the middle of a request cannot mix two configs.

mod body;
mod error;
mod headers;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use tracing::debug;

pub use body::ResponseBody;
pub use error::GatewayError;

use crate::routing::{Decision, RequestView};
use crate::snapshot::{LiveConfig, Snapshot};

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
}

impl Proxy {
    pub fn new(config: Arc<LiveConfig>) -> Self {
        Proxy { config }
    }

    pub fn config(&self) -> &Arc<LiveConfig> {
        &self.config
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientConnection,
    ) -> Response<ResponseBody> {
        let snapshot = self.config.load();
        let decision = decide(&snapshot, &request);
        let mut response = match forward(&snapshot, &decision, request, client).await {
            Ok(response) => response,
            Err(err) => {
                debug!(pool = snapshot.pool(&decision).name.as_ref(), error = %err, "gateway error");
                err.response()
            }
        };
        if snapshot.settings.decision_headers {
            headers::add_decision(response.headers_mut(), &snapshot, &decision);
        }
        response
    }
}

/// Phase 1: the rule chain's decision.
pub fn decide(snapshot: &Snapshot, request: &Request<Incoming>) -> Decision {
    let view = RequestView::new(request.headers(), request.uri().query());
    snapshot.chain.decide(view, &mut fastrand::f64)
}

/// Phases 2 to 5 for a decided request.
async fn forward(
    snapshot: &Snapshot,
    decision: &Decision,
    request: Request<Incoming>,
    client: &ClientConnection,
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

    // Phase 3: the upstream request.
    let pool = snapshot.pool(decision);
    let endpoint = pool.start_request();
    let (mut head, body) = request.into_parts();
    headers::to_upstream(
        &mut head,
        &endpoint.authority,
        client,
        pool,
        snapshot.rule_header(decision),
    )?;
    let upstream_request = Request::from_parts(
        head,
        Limited::new(body, limit.try_into().unwrap_or(usize::MAX)),
    );

    // Phase 4: forward, bounded by the request timeout up to the response head.
    let response = tokio::time::timeout(
        snapshot.settings.request_timeout,
        pool.client.request(upstream_request),
    )
    .await
    .map_err(|_| GatewayError::Timeout)?
    .map_err(GatewayError::from_client)?;

    // Phase 5: the response, streamed back while the endpoint's request stays counted.
    let (mut head, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut head.headers);
    Ok(Response::from_parts(
        head,
        ResponseBody::upstream(body, endpoint),
    ))
}
