//! The upstream side of a request: HTTP/1.1 keep-alive connections pooled on each
//! endpoint, and a send that hands back a request when nothing of it reached the
//! upstream, so the proxy can safely try another endpoint.
//!
//! This is hyper's low-level `client::conn::http1` rather than a pooled client: the
//! connect step is explicit (a refused connect leaves the request intact), an idle
//! connection that turns out closed gives the request back (`try_send_request`), and
//! the pool lives on the endpoint, which outlives config reloads.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::endpoint::Endpoint;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle upstream connections are closed after this long. It stays below the shortest
/// common upstream keep-alive (uvicorn and gunicorn: 5 s; nginx 75 s, Go 90 s) so the
/// gateway, not the upstream, closes an idle connection, and a request is rarely sent
/// on a connection the upstream is just closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per endpoint; more are closed when they come back.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// What the proxy sends upstream: nothing, or the client's body streamed under the
/// size limit. A bodiless request can be rebuilt and resent; a streamed one cannot.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Streaming(Limited<Incoming>),
}

impl RequestBody {
    pub fn new(body: Incoming, limit: u64) -> Self {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Streaming(Limited::new(
                body,
                usize::try_from(limit).unwrap_or(usize::MAX),
            ))
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Streaming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streaming(body) => body.size_hint(),
        }
    }
}

/// One keep-alive HTTP/1.1 connection to an endpoint.
pub struct UpstreamConnection {
    sender: SendRequest<RequestBody>,
    idle_since: Instant,
}

impl std::fmt::Debug for UpstreamConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnection")
            .field("idle_since", &self.idle_since)
            .finish()
    }
}

/// An endpoint's idle connections, most recently used last.
#[derive(Debug, Default)]
pub(super) struct IdleConnections(std::sync::Mutex<VecDeque<UpstreamConnection>>);

impl IdleConnections {
    /// The most recently used idle connection that is still open and fresh.
    fn take(&self) -> Option<UpstreamConnection> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(connection) = idle.pop_back() {
            if connection.idle_since.elapsed() < IDLE_TIMEOUT && !connection.sender.is_closed() {
                return Some(connection);
            }
        }
        None
    }

    fn put(&self, mut connection: UpstreamConnection) {
        if connection.sender.is_closed() {
            return;
        }
        connection.idle_since = Instant::now();
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while idle
            .front()
            .is_some_and(|c| c.idle_since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push_back(connection);
        }
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

impl UpstreamError {
    /// The send failed on the client's side: its body broke off, was malformed or ran
    /// over the limit (hyper reports errors of the body it was given as user errors).
    /// The upstream is not to blame: no health report, no upstream error, no retry.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, UpstreamError::Http(err) if err.is_user())
    }

    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout | UpstreamError::Connect(_)
        )
    }
}

/// A failed send. `request` is the request back when none of it reached the upstream.
#[derive(Debug)]
pub struct SendFailure {
    pub error: UpstreamError,
    pub request: Option<Request<RequestBody>>,
}

/// Sends `request` to `endpoint` on an idle connection, or a new one.
///
/// On success the connection comes back with the response; hand it to
/// [`Endpoint::release`] once the response body has been read to its end.
pub async fn send(
    endpoint: &Endpoint,
    connect_timeout: Duration,
    mut request: Request<RequestBody>,
) -> Result<(Response<Incoming>, UpstreamConnection), SendFailure> {
    // Idle connections first; one that turns out closed hands the request back.
    while let Some(mut connection) = endpoint.idle.take() {
        if connection.sender.ready().await.is_err() {
            continue;
        }
        match connection.sender.try_send_request(request).await {
            Ok(response) => return Ok((response, connection)),
            Err(mut err) => match err.take_message() {
                Some(unsent) => {
                    debug!(
                        endpoint = &*endpoint.address,
                        "idle upstream connection was closed; trying another"
                    );
                    request = unsent;
                }
                None => {
                    return Err(SendFailure {
                        error: UpstreamError::Http(err.into_error()),
                        request: None,
                    })
                }
            },
        }
    }
    let mut connection = match connect(endpoint, connect_timeout).await {
        Ok(connection) => connection,
        Err(error) => {
            return Err(SendFailure {
                error,
                request: Some(request),
            })
        }
    };
    match connection.sender.try_send_request(request).await {
        Ok(response) => Ok((response, connection)),
        Err(mut err) => {
            let request = err.take_message();
            Err(SendFailure {
                error: UpstreamError::Http(err.into_error()),
                request,
            })
        }
    }
}

async fn connect(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<UpstreamConnection, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint.authority.as_str()))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    let address = endpoint.address.clone();
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            debug!(endpoint = &*address, error = %err, "upstream connection ended with an error");
        }
    });
    Ok(UpstreamConnection {
        sender,
        idle_since: Instant::now(),
    })
}

impl Endpoint {
    /// Returns a connection whose last response was read to its end, for reuse.
    pub fn release(&self, connection: UpstreamConnection) {
        self.idle.put(connection);
    }
}
