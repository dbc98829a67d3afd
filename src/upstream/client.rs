//! The upstream side of a request: HTTP/1.1 keep-alive connections pooled on each
//! endpoint, and a send that hands back a request when nothing of it reached the
//! upstream, so the proxy can safely try another endpoint.
//!
//! The connection is driven by the request's own task: the head is written, the
//! response head read, and the body (see [`UpstreamBody`]) read as the client takes
//! it, with no connection task in between. Callgrind measured hyper's
//! `client::conn::http1` (a task per connection, fed through channels) at 36% of the
//! instructions of a proxied request; this client does the same job without the
//! task hand-offs. The wire format is `crate::h1`'s; the connections and their idle
//! pools are in `connection`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::body::UpstreamBody;
use super::connection::{UpstreamConnection, READ_BUFFER};
use super::endpoint::Endpoint;
use crate::h1::body::{encode_chunk, LAST_CHUNK};
use crate::h1::request::{encode_request_head, ExtraHeaders, RequestFraming};
use crate::h1::response::{parse_response_head, response_framing, ResponseHead};
use crate::h1::ProtocolError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Interim (1xx) answers taken before the final one; more are a 502.
const MAX_INTERIM: usize = 16;

/// What the proxy sends upstream: nothing, the client's body streamed under the size
/// limit (and copied as it goes, for a mirror, when a [`Tee`] is attached), or a body
/// already in memory (a mirror's copy; its head declares its length). A bodiless
/// request can be rebuilt and resent; a streamed one cannot.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Streaming(Streamed),
    Buffered(Bytes),
}

/// A client's body on its way upstream.
#[derive(Debug)]
pub struct Streamed {
    body: Limited<Incoming>,
    /// Boxed: most bodies have none, and this travels with every request.
    tee: Option<Box<Tee>>,
    /// Bounds each wait for the client's next bytes (`limits.body_read_timeout`).
    read_timeout: Duration,
    /// Set once the whole body has come from the client.
    received: Arc<AtomicBool>,
}

/// The client sent no body bytes for a whole `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
pub struct BodyStalled;

impl RequestBody {
    /// The client's body under the size limit, each wait for it bounded by
    /// `read_timeout`.
    pub fn new(body: Option<Incoming>, limit: u64, read_timeout: Duration) -> Self {
        match body {
            Some(body) if !body.is_end_stream() => RequestBody::Streaming(Streamed {
                body: Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)),
                tee: None,
                read_timeout,
                received: Arc::new(AtomicBool::new(false)),
            }),
            _ => RequestBody::Empty,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    /// Copies a streamed body into `tee` as it is sent.
    pub fn tee(&mut self, tee: Tee) {
        if let RequestBody::Streaming(streamed) = self {
            streamed.tee = Some(Box::new(tee));
        }
    }

    /// For a streamed body, whether it has all come from the client yet: a deadline
    /// that passes before it has is the client's doing, not the upstream's.
    pub fn received(&self) -> Option<Arc<AtomicBool>> {
        match self {
            RequestBody::Streaming(streamed) => Some(Arc::clone(&streamed.received)),
            _ => None,
        }
    }
}

/// A copy of a request body, taken as the body streams to the upstream, for receivers
/// each with a bound of its own. A receiver gets `Some(body)` once the body has been
/// sent whole, `None` as soon as the body grows past its bound, and sees the sender
/// gone if the body does not arrive whole. It never holds the body up, never buffers
/// more than the largest bound still wanted, and stops buffering once no receiver is
/// left (a copy given up on).
#[derive(Debug)]
pub struct Tee {
    buffer: BytesMut,
    to: Vec<TeeReceiver>,
}

/// Where a [`Tee`] sends its copy, and the most it takes.
pub type TeeReceiver = (usize, tokio::sync::oneshot::Sender<Option<Bytes>>);

impl Tee {
    pub fn new(to: Vec<TeeReceiver>) -> Self {
        Tee {
            buffer: BytesMut::new(),
            to,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.to.is_empty() {
            return;
        }
        let length = self.buffer.len() + data.len();
        let mut i = 0;
        while i < self.to.len() {
            let (limit, to) = &self.to[i];
            if length > *limit {
                let (_, to) = self.to.swap_remove(i);
                let _ = to.send(None);
            } else if to.is_closed() {
                self.to.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.to.is_empty() {
            self.buffer = BytesMut::new();
            return;
        }
        self.buffer.extend_from_slice(data);
    }

    fn finish(&mut self) {
        let body = self.buffer.split().freeze();
        for (_, to) in self.to.drain(..) {
            let _ = to.send(Some(body.clone()));
        }
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
            RequestBody::Streaming(streamed) => Pin::new(&mut streamed.body).poll_frame(cx),
            RequestBody::Buffered(bytes) if bytes.is_empty() => Poll::Ready(None),
            RequestBody::Buffered(bytes) => {
                Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming(streamed) => streamed.body.is_end_stream(),
            RequestBody::Buffered(bytes) => bytes.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streaming(streamed) => streamed.body.size_hint(),
            RequestBody::Buffered(bytes) => SizeHint::with_exact(bytes.len() as u64),
        }
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    #[error("connection failed: {0}")]
    Io(#[source] io::Error),
    #[error("upstream closed the connection before a complete response")]
    Closed,
    #[error("upstream answer: {0}")]
    Protocol(#[from] ProtocolError),
    /// The client's body broke off, was malformed or ran over the limit.
    #[error("request body: {0}")]
    ClientBody(#[source] BoxError),
}

impl UpstreamError {
    /// The send failed on the client's side: the upstream is not to blame, so no
    /// health report, no upstream error, no retry.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, UpstreamError::ClientBody(_))
    }
}

/// A failed send. `request` is the request back when none of it reached the upstream.
#[derive(Debug)]
pub struct SendFailure {
    pub error: UpstreamError,
    pub request: Option<Request<RequestBody>>,
}

/// How far an exchange got before it failed.
enum Failed {
    /// Nothing was written: the request can go anywhere else.
    Unsent(UpstreamError),
    /// The head (at least) was written, and no byte of a response came back.
    NoResponse(UpstreamError),
    /// Anything else.
    Late(UpstreamError),
}

/// Sends `request` to `endpoint` on an idle connection, or a new one. The response
/// body reads from the connection; once read to its end, the body hands the
/// connection back for reuse (see [`UpstreamBody::take_reusable`]).
pub async fn send(
    endpoint: &Endpoint,
    connect_timeout: Duration,
    mut request: Request<RequestBody>,
    extra: &ExtraHeaders,
) -> Result<Response<UpstreamBody>, SendFailure> {
    // Idle connections first. One the upstream closed while it sat idle fails before
    // any response byte; a bodiless request then goes on another connection, as
    // nginx does with its cached connections: the upstream never answered it, and for
    // an idempotent request RFC 9110 §9.2.2 allows the repeat.
    // The resend goes on a fresh connection, and only once (RFC 9110 §9.2.2: a failed
    // automatic retry is not retried again).
    while let Some(connection) = endpoint.idle.take() {
        let replayable = request.body().is_empty() && is_idempotent(request.method());
        match exchange(connection, &mut request, extra).await {
            Ok(response) => return Ok(response),
            Err(Failed::Unsent(error)) => {
                debug!(endpoint = &*endpoint.address, %error, "idle upstream connection failed; trying another");
            }
            Err(Failed::NoResponse(error)) if replayable => {
                debug!(endpoint = &*endpoint.address, %error, "idle upstream connection failed; resending once");
                break;
            }
            Err(Failed::NoResponse(error)) | Err(Failed::Late(error)) => {
                return Err(SendFailure {
                    error,
                    request: None,
                })
            }
        }
    }
    // Boxed: a new connection is the rare case under keep-alive, and its state would
    // otherwise size every request's future (which hyper keeps per client connection).
    let connection = match Box::pin(connect(endpoint, connect_timeout)).await {
        Ok(connection) => connection,
        Err(error) => {
            return Err(SendFailure {
                error,
                request: Some(request),
            })
        }
    };
    match exchange(connection, &mut request, extra).await {
        Ok(response) => Ok(response),
        Err(Failed::Unsent(error)) => Err(SendFailure {
            error,
            request: Some(request),
        }),
        Err(Failed::NoResponse(error)) | Err(Failed::Late(error)) => Err(SendFailure {
            error,
            request: None,
        }),
    }
}

/// Writes the request and reads the response head. A streamed body is taken out of
/// `request` as it is sent; a bodiless request stays whole for a resend.
async fn exchange(
    mut connection: UpstreamConnection,
    request: &mut Request<RequestBody>,
    extra: &ExtraHeaders,
) -> Result<Response<UpstreamBody>, Failed> {
    let framing = match request.body() {
        RequestBody::Streaming(_)
            if !request.headers().contains_key(http::header::CONTENT_LENGTH) =>
        {
            RequestFraming::Chunked
        }
        _ => RequestFraming::AsDeclared,
    };
    encode_request_head(request, extra, framing, &mut connection.write);
    // A first write that fails wrote nothing.
    let written = match connection.stream.write(&connection.write).await {
        Ok(0) => return Err(Failed::Unsent(UpstreamError::Closed)),
        Ok(n) => n,
        Err(err) => return Err(Failed::Unsent(UpstreamError::Io(err))),
    };
    let conn = &mut connection;
    let rest = &conn.write[written..];
    conn.stream
        .write_all(rest)
        .await
        .map_err(|e| Failed::NoResponse(UpstreamError::Io(e)))?;

    // An interim (1xx) answer is a response byte: after one, a failure is late.
    let mut interim = false;
    // A final answer that came while the body was still being sent.
    let mut early = None;
    match std::mem::replace(request.body_mut(), RequestBody::Empty) {
        RequestBody::Streaming(streamed) => {
            early = send_body_or_early_answer(conn, streamed, framing, &mut interim).await?;
        }
        // A copy's body: its length is in its head.
        RequestBody::Buffered(bytes) => conn
            .stream
            .write_all(&bytes)
            .await
            .map_err(|e| Failed::NoResponse(UpstreamError::Io(e)))?,
        RequestBody::Empty => {}
    }

    let method = request.method().clone();
    let body_cut_short = early.is_some();
    let mut interims = 0;
    loop {
        let head = match early.take() {
            Some(head) => head,
            None => match read_head(&mut conn.stream, &mut conn.read).await {
                Ok(head) => head,
                Err((error, false)) if !interim => return Err(Failed::NoResponse(error)),
                Err((error, _)) => return Err(Failed::Late(error)),
            },
        };
        let status = head.response.status();
        // 1xx answers (100 Continue, 103 Early Hints) precede the real one; 101 is
        // final: the connection then carries another protocol.
        if is_interim(status) {
            interim = true;
            interims += 1;
            // An upstream that sends 1xx answers without end would hold a core.
            if interims > MAX_INTERIM {
                return Err(Failed::Late(UpstreamError::Protocol(ProtocolError(
                    "too many interim (1xx) answers",
                ))));
            }
            continue;
        }
        let body = if status == http::StatusCode::SWITCHING_PROTOCOLS {
            UpstreamBody::upgraded(connection)
        } else {
            let (framing, reusable) =
                response_framing(&method, status, head.chunked, head.response.headers())
                    .map_err(|e| Failed::Late(e.into()))?;
            // After an early answer the rest of the request body was never sent.
            let reusable = reusable && head.keep_alive && !body_cut_short;
            UpstreamBody::new(connection, framing, reusable)
        };
        return Ok(head.response.map(|()| body));
    }
}

fn is_interim(status: http::StatusCode) -> bool {
    status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS
}

/// Streams the request body while watching for the response: an upstream may answer
/// before it has read the whole body (a 413, a 401), and that answer is relayed at
/// once, the rest of the body left unsent, as hyper's client did. Interim answers
/// (100 Continue) only mark `interim`; the body goes on.
async fn send_body_or_early_answer(
    connection: &mut UpstreamConnection,
    body: Streamed,
    framing: RequestFraming,
    interim: &mut bool,
) -> Result<Option<ResponseHead>, Failed> {
    let UpstreamConnection {
        stream,
        read,
        write,
        ..
    } = connection;
    let (mut reader, mut writer) = stream.split();
    let mut sending = std::pin::pin!(send_body(&mut writer, write, body, framing));
    let mut interims = 0;
    loop {
        tokio::select! {
            biased;
            head = read_head(&mut reader, read) => match head {
                Ok(head) if is_interim(head.response.status()) && interims >= MAX_INTERIM => {
                    return Err(Failed::Late(UpstreamError::Protocol(ProtocolError(
                        "too many interim (1xx) answers",
                    ))));
                }
                Ok(head) if is_interim(head.response.status()) => {
                    *interim = true;
                    interims += 1;
                }
                Ok(head) => return Ok(Some(head)),
                Err((error, _)) => return Err(Failed::Late(error)),
            },
            sent = &mut sending => return sent.map(|()| None).map_err(Failed::Late),
        }
    }
}

async fn send_body<W: AsyncWrite + Unpin>(
    out: &mut W,
    scratch: &mut Vec<u8>,
    streamed: Streamed,
    framing: RequestFraming,
) -> Result<(), UpstreamError> {
    let Streamed {
        mut body,
        mut tee,
        read_timeout,
        received,
    } = streamed;
    loop {
        let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
            Err(_elapsed) => return Err(UpstreamError::ClientBody(Box::new(BodyStalled))),
            Ok(None) => break,
            Ok(Some(frame)) => frame,
        };
        let frame = frame.map_err(UpstreamError::ClientBody)?;
        let Ok(data) = frame.into_data() else {
            continue; // request trailers are not forwarded
        };
        if let Some(tee) = &mut tee {
            tee.push(&data);
        }
        let bytes: &[u8] = match framing {
            RequestFraming::AsDeclared => &data,
            RequestFraming::Chunked => {
                if data.is_empty() {
                    continue; // an empty chunk would end the body
                }
                encode_chunk(&data, scratch);
                scratch
            }
        };
        out.write_all(bytes).await.map_err(UpstreamError::Io)?;
    }
    received.store(true, Ordering::Relaxed);
    if framing == RequestFraming::Chunked {
        out.write_all(LAST_CHUNK).await.map_err(UpstreamError::Io)?;
    }
    if let Some(tee) = &mut tee {
        tee.finish();
    }
    Ok(())
}

/// Reads one response head into `read` and parses it; the error says whether any
/// response byte had arrived. Cancel-safe: bytes read stay in `read`.
async fn read_head<R: AsyncRead + Unpin>(
    input: &mut R,
    read: &mut BytesMut,
) -> Result<ResponseHead, (UpstreamError, bool)> {
    loop {
        let got_bytes = !read.is_empty();
        if got_bytes {
            match parse_response_head(read) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(err) => return Err((err.into(), true)),
            }
        }
        if read.capacity() - read.len() < 1024 {
            read.reserve(READ_BUFFER);
        }
        match input.read_buf(read).await {
            Ok(0) => return Err((UpstreamError::Closed, got_bytes)),
            Ok(_) => {}
            Err(err) => return Err((UpstreamError::Io(err), got_bytes)),
        }
    }
}

async fn connect(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<UpstreamConnection, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint.socket))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(UpstreamConnection::new(stream))
}

/// RFC 9110 §9.2.2.
pub fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn a_tee_gives_each_receiver_the_body_within_its_own_bound() {
        let (small, mut small_rx) = oneshot::channel();
        let (large, mut large_rx) = oneshot::channel();
        let mut tee = Tee::new(vec![(10, small), (100, large)]);
        tee.push(b"0123456789");
        assert!(small_rx.try_recv().is_err(), "nothing before the end");
        tee.push(b"abc");
        assert_eq!(small_rx.try_recv().unwrap(), None, "over its bound at once");
        tee.finish();
        assert_eq!(
            large_rx.try_recv().unwrap().as_deref(),
            Some(&b"0123456789abc"[..])
        );
    }

    #[test]
    fn a_tee_keeps_nothing_once_its_receivers_are_gone() {
        let (to, rx) = oneshot::channel();
        let mut tee = Tee::new(vec![(1 << 20, to)]);
        tee.push(&[7; 1000]);
        assert_eq!(tee.buffer.len(), 1000);
        drop(rx); // the copy was given up on
        tee.push(&[7; 1000]);
        assert!(tee.to.is_empty());
        assert_eq!(tee.buffer.capacity(), 0, "the buffer is freed");
        tee.push(&[7; 1000]);
        assert_eq!(tee.buffer.len(), 0);
    }
}
