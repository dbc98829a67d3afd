//! The life of one request, in named phases:
//!
//! 1. **decide**: run the rule chain on the request, pick the pool;
//! 2. **admit**: refuse what must not go upstream (CONNECT, a body over the limit);
//! 3. **upstream request**: rewrite the head for the upstream;
//! 4. **forward**: pick an available endpoint and send, retrying on another endpoint
//!    only when that cannot duplicate the request, all within `request_timeout`;
//! 5. **respond**: clean the upstream's head, add decision headers, stream the body;
//!    or answer a short gateway error (502, 503, 504, 413) that never leaves the
//!    client hanging;
//! 6. **record**: when the body is done, count the request and its duration for the
//!    pool, write the access-log line, and return the upstream connection for reuse.
//!
//! Each phase is a plain function of the snapshot the request loaded at its start, so
//! a reload in the middle of a request cannot mix two configs.

mod body;
mod error;
mod headers;
mod sticky;
mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use tracing::debug;

pub use body::{Completion, ResponseBody};
pub use error::GatewayError;
pub use headers::X_GRAYGATE_POOL;
pub use sticky::mint as mint_sticky_id;
pub use upgrade::{take_tunnel, Tunnel};

use crate::access_log::AccessStart;
use crate::config::model::Fallback;
use crate::h1::request::ExtraHeaders;
use crate::metrics::{ClientErrorKind, ErrorKind};
use crate::mirror::copy::{Capture, Draft};
use crate::mirror::{Mirror, Slot};
use crate::routing::{Decision, RequestView};
use crate::shared::Shared;
use crate::snapshot::{LiveConfig, Snapshot};
use crate::upstream::{
    self, is_idempotent, Endpoint, InFlight, RequestBody, Tee, UpstreamBody, UpstreamError,
};

/// Retries of one request, on other endpoints, beyond its first attempt.
pub const MAX_RETRIES: usize = 2;

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

    /// Serves one request. Its body is hyper's stream, or `None` when the gateway's own
    /// HTTP/1.1 loop read a request that has none.
    pub async fn handle(
        &self,
        request: Request<Option<Incoming>>,
        client: &ClientConnection,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let snapshot = self.config.load();

        // Phase 1: decide. A visitor with no user key and no sticky cookie gets an id
        // made now, used for this decision and set on the answer.
        let sticky = snapshot.settings.sticky.as_ref().and_then(|cookie| {
            if !snapshot.chain.needs_sticky_id(&view(&request, None)) {
                return None;
            }
            let secure = headers::is_https(request.headers(), client, &cookie.trusted_proxies);
            Some((sticky::mint()?, secure))
        });
        let minted = sticky.as_ref().map(|(id, _)| id.as_bytes());
        let mut decision = decide(&snapshot, &request, minted);
        // The mirrors whose share this request is in, if its pool has any.
        let copied_to = mirror_targets(&snapshot, &decision, &request, minted);
        snapshot.count_match(&decision);
        // A rollout's cohort request is counted even if the client gives up first.
        let pending = decision.cohort.and_then(|cohort| {
            let rollout = snapshot.rollout.as_ref()?;
            rollout.pending(cohort, decision.group, started)
        });
        let mut access = snapshot
            .access_log
            .as_ref()
            .map(|_| access_start(&snapshot, &request, client, minted));
        // The pool the rules chose; `forward` moves the decision to the stable pool
        // when it falls back.
        let chosen = decision.pool;

        // Phases 2 to 5.
        // The endpoint the request ended up on; its connection travels in the body.
        let mut in_flight = None;
        let mut copies = Vec::new();
        let forwarded = forward(
            &snapshot,
            &mut decision,
            request,
            client,
            (&mut in_flight, access.as_deref_mut()),
            (copied_to, &mut copies),
        )
        .await;
        let fallback_from = (decision.pool != chosen).then_some(chosen);
        let upstream_answered = forwarded.is_ok();
        if let Ok(response) = &forwarded {
            // The time to the upstream's head, from the clock reading its body took
            // then: no second reading.
            if let Some(head_at) = response.body().upstream_head_at() {
                let waited = head_at.saturating_duration_since(started);
                snapshot.pool(&decision).metrics.first_byte(waited);
            }
        }
        let mut response = match forwarded {
            Ok(response) => response,
            Err(err) => {
                debug!(pool = &*snapshot.pool(&decision).name, error = %err, "gateway error");
                if matches!(err, GatewayError::BodyTimeout) {
                    self.shared
                        .metrics
                        .client_error(ClientErrorKind::BodyTimeout);
                }
                err.response()
            }
        };
        // The copies start now that the served answer's head is in, if the pool they
        // copy served it (not a fallback, not a gateway error).
        let capture = (upstream_answered && !copies.is_empty())
            .then(|| launch_copies(copies, &decision, &response))
            .flatten();
        if snapshot.settings.decision_headers {
            headers::add_decision(response.headers_mut(), &snapshot, &decision, fallback_from);
        }
        if let Some(access) = &mut access {
            access.fallback_from = fallback_from;
        }
        if let (Some((id, secure)), Some(cookie)) = (&sticky, &snapshot.settings.sticky) {
            response.headers_mut().append(
                http::header::SET_COOKIE,
                sticky::set_cookie(cookie, id, *secure),
            );
        }

        // Phase 6: record, once the body is done.
        if let Some(pending) = pending {
            pending.answered();
        }
        let status = response.status().as_u16();
        let completion = Completion {
            snapshot,
            decision,
            started,
            status,
            bytes: 0,
            in_flight,
            connection: None,
            finished: false,
            access,
            capture,
        };
        response.map(|body| body.with_completion(completion))
    }
}

/// What the access log takes from a request at its start. A request the access log
/// records has an id: the client's, or one made now (and sent upstream). Out of line:
/// most gateways log nothing, and their requests should not carry this code.
#[inline(never)]
fn access_start<B>(
    snapshot: &Snapshot,
    request: &Request<B>,
    client: &ClientConnection,
    minted: Option<&[u8]>,
) -> Box<AccessStart> {
    let user_key = snapshot
        .settings
        .log_user_key
        .then(|| snapshot.chain.user_key(&view(request, minted)))
        .flatten()
        .map(|key| String::from_utf8_lossy(&key).into_owned());
    let mut start = Box::new(AccessStart::new(
        request.method(),
        request.uri(),
        request.headers(),
        client.remote,
        user_key,
    ));
    if start.request_id.is_none() {
        start.request_id = Some(headers::mint_request_id());
        start.request_id_made = true;
    }
    start
}

/// What the rules read of a request, with the sticky id made for it if any.
fn view<'r, B>(request: &'r Request<B>, minted: Option<&'r [u8]>) -> RequestView<'r> {
    let view = RequestView::new(request.headers(), request.uri().query());
    match minted {
        Some(key) => view.with_minted_key(key),
        None => view,
    }
}

/// Phase 1: the rule chain's decision, with the sticky id made for this request if any.
pub fn decide<B>(snapshot: &Snapshot, request: &Request<B>, minted: Option<&[u8]>) -> Decision {
    snapshot
        .chain
        .decide(view(request, minted), &mut fastrand::f64)
}

/// The mirrors of the decided pool that take this request, each with its slot: its
/// method is theirs, it is in their share, and a slot was free. Nothing is looked at
/// unless the pool has mirrors.
fn mirror_targets<B>(
    snapshot: &Snapshot,
    decision: &Decision,
    request: &Request<B>,
    minted: Option<&[u8]>,
) -> Vec<(Arc<Mirror>, Slot)> {
    let mut mirrors = snapshot
        .mirrors
        .iter()
        .filter(|m| m.from == decision.pool)
        .peekable();
    if mirrors.peek().is_none() {
        return Vec::new();
    }
    let key = snapshot.chain.user_key(&view(request, minted));
    let declared = headers::content_length(request.headers());
    mirrors
        .filter_map(
            |m| match m.takes(request.method(), key.as_deref(), declared) {
                Ok(true) => Some((Arc::clone(m), m.slot()?)),
                Ok(false) => None,
                Err(outcome) => {
                    m.state.count(outcome);
                    None
                }
            },
        )
        .collect()
}

/// Starts each copy, and returns the capture of the served answer when a copy compares
/// with it. Copies of a pool other than the one that served (after a fallback) are not
/// sent.
fn launch_copies(
    copies: Vec<Draft>,
    decision: &Decision,
    response: &Response<ResponseBody>,
) -> Option<Box<Capture>> {
    let mut comparisons = Vec::new();
    for copy in copies
        .into_iter()
        .filter(|c| c.mirror().from == decision.pool)
    {
        let served = copy.mirror().diff.then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            comparisons.push(tx);
            rx
        });
        copy.launch(served);
    }
    (!comparisons.is_empty()).then(|| {
        Box::new(Capture::new(
            response.status().as_u16(),
            response.headers().clone(),
            comparisons,
        ))
    })
}

/// Phases 2 to 5 for a decided request. `landed` receives the endpoint the response
/// came from, which counts the request as in flight until its body is done; `access`,
/// when the access log is on, the request id, the retries and the upstream's time.
/// `mirrors` are the mirrors that copy the request, and where their drafts go.
async fn forward(
    snapshot: &Snapshot,
    decision: &mut Decision,
    request: Request<Option<Incoming>>,
    client: &ClientConnection,
    (landed, access): (&mut Option<InFlight>, Option<&mut AccessStart>),
    (mirrors, copies): (Vec<(Arc<Mirror>, Slot)>, &mut Vec<Draft>),
) -> Result<Response<ResponseBody>, GatewayError> {
    // Phase 2: admit. A declared length over the limit is refused before any upstream
    // work; a chunked body is cut off by the limit as it streams.
    if request.method() == Method::CONNECT {
        return Err(GatewayError::Refused {
            status: http::StatusCode::METHOD_NOT_ALLOWED,
            text: "405 method not allowed: CONNECT is not proxied\n",
        });
    }
    // TRACE echoes the request back, headers included (cookies, tokens added on the
    // way): refused, as nginx does.
    if request.method() == Method::TRACE {
        return Err(GatewayError::Refused {
            status: http::StatusCode::METHOD_NOT_ALLOWED,
            text: "405 method not allowed: TRACE is not proxied\n",
        });
    }
    if let Err(text) = headers::check_host(&request) {
        return Err(GatewayError::Refused {
            status: http::StatusCode::BAD_REQUEST,
            text,
        });
    }
    let limit = snapshot.settings.max_body_bytes;
    if headers::content_length(request.headers()).is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge);
    }

    // Phase 3: the upstream request.
    let (mut head, body) = request.into_parts();
    let head_only = head.method == Method::HEAD;
    let upgrade = upgrade::take(&mut head);
    let pool = snapshot.pool(decision);
    let mut extra = headers::to_upstream(
        &mut head,
        client,
        &pool.name_header,
        snapshot.rule_header(decision),
    );
    // An id the gateway made goes into the map, not into `extra`: only requests the
    // access log records have one, and `extra` is sized for every request.
    if let Some(id) = access
        .as_deref()
        .filter(|a| a.request_id_made)
        .and_then(|a| a.request_id.clone())
    {
        head.headers.insert(headers::X_REQUEST_ID, id);
    }
    if let Some(upgrade) = &upgrade {
        upgrade::restore_request_headers(&mut head.headers, upgrade);
    }
    let mut body = RequestBody::new(body, limit, snapshot.settings.body_read_timeout);
    let body_received = body.received();
    // A copy of the rewritten head for each mirror; a streamed body is copied as it
    // goes upstream, up to each mirror's bound.
    if !mirrors.is_empty() && upgrade.is_none() {
        let mut bodies = Vec::new();
        for (mirror, slot) in mirrors {
            let copied_body = (!body.is_empty()).then(|| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let bound = usize::try_from(mirror.max_body_bytes).unwrap_or(usize::MAX);
                bodies.push((bound, tx));
                rx
            });
            copies.push(Draft::new((mirror, slot), &head, &extra, copied_body));
        }
        if !bodies.is_empty() {
            body.tee(Tee::new(bodies));
        }
    }
    let request = Request::from_parts(head, body);

    // Phase 4: forward, the retries included, within the request timeout.
    let mut attempted: Option<Arc<Endpoint>> = None;
    let sent = tokio::time::timeout(
        snapshot.settings.request_timeout,
        send_with_retries(
            snapshot,
            decision,
            request,
            &mut extra,
            (landed, &mut attempted),
            access,
        ),
    )
    .await;
    let mut response = match sent {
        Ok(result) => result?,
        // Still waiting on the client's body: the client's doing, never the upstream's.
        Err(_elapsed) if body_received.is_some_and(|done| !done.load(Ordering::Relaxed)) => {
            return Err(GatewayError::BodyTimeout);
        }
        Err(_elapsed) => {
            let pool = snapshot.pool(decision);
            pool.metrics.upstream_error(ErrorKind::Timeout);
            if let Some(endpoint) = &attempted {
                pool.report(endpoint, false);
            }
            return Err(GatewayError::Timeout);
        }
    };

    // Phase 5: a 101 becomes a tunnel; any other response streams back. An upgraded connection is the tunnel's now, never reused.
    if let Some(upgrade) = upgrade {
        if upgrade::tunnel(upgrade, &mut response) {
            return Ok(response
                .map(|body| ResponseBody::upstream(body, snapshot.settings.request_timeout)));
        }
    }
    // The upstream client has already dropped the response's hop-by-hop headers. The
    // length a client is told is the gateway's own, on every client path.
    let status = response.status();
    headers::frame_for_client(response.headers_mut(), status, head_only);
    Ok(response.map(|body| ResponseBody::upstream(body, snapshot.settings.request_timeout)))
}

/// Sends to an available endpoint; on failure, tries another endpoint of the pool
/// (or the stable pool, per `routing.fallback`) when that cannot duplicate the request:
/// nothing of it was sent, or it is idempotent and has no body, so its head can be
/// sent again. A streamed body is never resent. `attempted` names the endpoint of the
/// attempt under way, for the caller to blame if the deadline passes; `access`, when
/// the access log is on, the retries and when the answer's head came. After a
/// fallback, the upstream is told the pool that serves and the one that could not.
async fn send_with_retries(
    snapshot: &Snapshot,
    decision: &mut Decision,
    mut request: Request<RequestBody>,
    extra: &mut ExtraHeaders,
    (landed, attempted): (&mut Option<InFlight>, &mut Option<Arc<Endpoint>>),
    mut access: Option<&mut AccessStart>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    // The head is copied only when a resend is both safe and possible: a lone endpoint
    // of the stable pool has no other endpoint to retry on.
    let replay = (is_idempotent(request.method())
        && request.body().is_empty()
        && could_retry_elsewhere(snapshot, decision))
    .then(|| Replay::of(&request));
    let mut failed: Vec<Arc<Endpoint>> = Vec::new();
    let mut last_error: Option<UpstreamError> = None;
    let chosen = decision.pool;
    loop {
        let in_flight = match choose_endpoint(snapshot, decision, &failed) {
            Ok(in_flight) => in_flight,
            // Nowhere left to retry: the client learns what went wrong upstream.
            Err(none) => return Err(last_error.map_or(none, GatewayError::from_upstream)),
        };
        let pool = snapshot.pool(decision);
        // Every attempt after a fallback: a replayed head is the one from before it.
        if decision.pool != chosen {
            let from = &snapshot.pools[chosen.0];
            headers::fell_back(extra, request.headers_mut(), pool, from);
        }
        if last_error.is_some() {
            pool.metrics.retries.inc();
        }
        *attempted = Some(in_flight.endpoint());
        headers::ensure_host(request.headers_mut(), &in_flight.authority);
        match upstream::send(&in_flight, pool.connect_timeout, request, extra).await {
            Ok(response) => {
                pool.report(&in_flight, !response.status().is_server_error());
                *landed = Some(in_flight);
                if let Some(access) = access {
                    access.upstream_head = Some(access.started.elapsed());
                }
                return Ok(response);
            }
            Err(failure) if failure.error.is_client_fault() => {
                return Err(GatewayError::from_upstream(failure.error));
            }
            Err(failure) => {
                pool.report(&in_flight, false);
                pool.metrics.upstream_error(error_kind(&failure.error));
                let again = failure
                    .request
                    .or_else(|| replay.as_ref().map(Replay::request));
                match again {
                    Some(next) if failed.len() < MAX_RETRIES => {
                        debug!(pool = &*pool.name, endpoint = &*in_flight.address, error = %failure.error, "trying another endpoint");
                        failed.push(in_flight.endpoint());
                        last_error = Some(failure.error);
                        if let Some(access) = access.as_deref_mut() {
                            access.retries += 1;
                        }
                        request = next;
                    }
                    _ => return Err(GatewayError::from_upstream(failure.error)),
                }
            }
        }
    }
}

/// Whether a failed attempt could go to another endpoint: the pool has more than one,
/// or the stable pool is there to fall back on.
fn could_retry_elsewhere(snapshot: &Snapshot, decision: &Decision) -> bool {
    snapshot.pool(decision).endpoints.len() > 1
        || (snapshot.settings.fallback == Fallback::Stable
            && decision.pool != snapshot.chain.stable())
}

/// An available endpoint of the decided pool not yet failed on; when there is none,
/// the stable pool's under `fallback = "stable"` (counted, and the decision now names
/// the stable pool), so a broken canary never takes users down. Otherwise 503.
fn choose_endpoint(
    snapshot: &Snapshot,
    decision: &mut Decision,
    failed: &[Arc<Endpoint>],
) -> Result<InFlight, GatewayError> {
    if let Some(endpoint) = snapshot.pool(decision).start_request_avoiding(failed) {
        return Ok(endpoint);
    }
    let stable = snapshot.chain.stable();
    if snapshot.settings.fallback == Fallback::Stable && decision.pool != stable {
        if let Some(endpoint) = snapshot.pools[stable.0].start_request_avoiding(failed) {
            snapshot.pool(decision).metrics.fallbacks.inc();
            decision.pool = stable;
            return Ok(endpoint);
        }
    }
    Err(GatewayError::NoEndpoint)
}

fn error_kind(error: &UpstreamError) -> ErrorKind {
    match error {
        UpstreamError::ConnectTimeout | UpstreamError::Connect(_) => ErrorKind::Connect,
        UpstreamError::Protocol(_) => ErrorKind::Protocol,
        UpstreamError::Io(_) | UpstreamError::Closed | UpstreamError::ClientBody(_) => {
            ErrorKind::Reset
        }
    }
}

/// The head of a bodiless idempotent request, kept so it can be sent again after an
/// upstream reset it.
struct Replay {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(request: &Request<RequestBody>) -> Self {
        Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    fn request(&self) -> Request<RequestBody> {
        let mut head = Request::new(RequestBody::Empty).into_parts().0;
        let Parts {
            method,
            uri,
            version,
            headers,
            ..
        } = &mut head;
        (*method, *uri, *version, *headers) = (
            self.method.clone(),
            self.uri.clone(),
            self.version,
            self.headers.clone(),
        );
        Request::from_parts(head, RequestBody::Empty)
    }
}
