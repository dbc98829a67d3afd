//! The gateway's own HTTP/1.1 loop for plain connections, for the requests that make up
//! nearly all gateway traffic: HTTP/1.1, a complete head, no body, no upgrade, no
//! `Expect`. It parses each head in place, runs the proxy, and writes the response
//! itself; while the connection is idle it holds no buffer at all.
//!
//! At the first request it does not serve (a body, an upgrade, HTTP/1.0, an
//! absolute-form target, a head that is malformed or too large), it hands the
//! connection to hyper for the rest of its life, that request's bytes first. hyper then
//! answers the errors (400, 431) and streams the bodies, so the rare and the hostile
//! cases keep one well-tested implementation.
//!
//! Why not hyper for everything: hyper's server cost about 11,000 of the 26,000
//! instructions of a proxied request (its dispatcher, a boxed timer per head, its write
//! buffering) and about 20 KiB per idle keep-alive connection (8 KiB read and 8 KiB
//! write buffers, the connection state, the slot for the request's future).

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::send_timeout::SendTimeout;
use super::{BoxError, ConnectionContext, ServerSettings};
use crate::h1::body::{chunk_size_line, LAST_CHUNK};
use crate::h1::request::{may_end_head, parse_request, Parsed};
use crate::h1::response::{encode_response_head, ResponseFraming};
use crate::proxy::ResponseBody;
use crate::shutdown::Shutdown;
/// The stack buffer a read goes through (see [`read_arrived`]).
const READ_CHUNK: usize = 4096;
/// Body frames up to this size are copied behind the head, so a small response leaves
/// in one write; larger ones are written as they are.
const COALESCE: usize = 16 * 1024;

/// How the loop ended.
pub enum Served {
    /// The connection is finished: either side closed it, or the gateway is shutting
    /// down.
    Done,
    /// A request this loop does not serve: hyper takes the connection, `unread` first.
    HandOff { stream: TcpStream, unread: Bytes },
}

/// No complete request head within `header_read_timeout`: a slow head, or a keep-alive
/// connection left idle (counted as hyper counts it, as a `header_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("no complete request head within the header read timeout")]
pub struct HeadTimeout;

/// Serves requests on `stream` until it ends or a request needs hyper. `buf` holds the
/// bytes already read from it.
pub async fn serve(
    stream: TcpStream,
    mut buf: BytesMut,
    context: &ConnectionContext,
    settings: &ServerSettings,
    shutdown: &Shutdown,
) -> Result<Served, BoxError> {
    let timed_out = context.proxy.shared().metrics.send_timeouts();
    let mut stream = SendTimeout::new(stream, settings.send_timeout, timed_out);
    // One registration with the shutdown channel for the connection's life, polled
    // only while the connection waits for a head.
    let mut shutdown_watch = shutdown.clone();
    let mut shutting_down = pin!(shutdown_watch.wait());
    // One timer for the connection's life too: it is moved on only when it fires
    // early, not re-armed for every request (a timer costs ~600 instructions to arm).
    let mut head_timer = pin!(tokio::time::sleep(settings.header_read_timeout));
    loop {
        // Read: the next head, within `header_read_timeout` of the previous response.
        let deadline = Instant::now() + settings.header_read_timeout;
        // How much of `buf` holds a partial head already parsed: it is parsed again
        // only once the newer bytes may end it.
        let mut parsed_partial: usize = 0;
        // The last read found nothing: wait before reading again.
        let mut read_nothing = false;
        let next = loop {
            let worth_parsing = parsed_partial == 0
                || buf.len() >= settings.max_header_bytes
                || may_end_head(&buf[parsed_partial.saturating_sub(2)..]);
            if !buf.is_empty() && worth_parsing {
                match parse_request(&mut buf, settings.max_header_bytes) {
                    Parsed::Request(next) => break next,
                    Parsed::Partial => parsed_partial = buf.len(),
                    Parsed::Unsupported => {
                        return Ok(Served::HandOff {
                            stream: stream.into_inner(),
                            unread: buf.freeze(),
                        })
                    }
                }
            }
            // Waiting first when nothing is buffered: a read now would most often find
            // nothing (readiness left over from the last read) and cost a syscall.
            if buf.is_empty() || read_nothing {
                let idle = buf.is_empty();
                let wait = await_bytes(
                    stream.get_ref(),
                    shutting_down.as_mut(),
                    head_timer.as_mut(),
                    idle,
                    deadline,
                );
                if !wait.await? {
                    return Ok(Served::Done);
                }
            }
            read_nothing = match read_arrived(stream.get_ref(), &mut buf)? {
                Arrived::Bytes => false,
                Arrived::Nothing => true,
                Arrived::Closed => return Ok(Served::Done),
            };
        };
        if buf.is_empty() {
            // Idle: no buffer while the request is served or the next one awaited.
            buf = BytesMut::new();
        }

        // Proxy, then write the response.
        let head_only = next.request.method() == Method::HEAD;
        let request = next.request.map(|()| None);
        let response = tokio::select! {
            biased;
            response = context.proxy.handle(request, &context.client) => response,
            () = client_gone(stream.get_ref(), &mut buf) => return Ok(Served::Done),
        };
        let keep_alive = next.keep_alive && !shutdown.is_fired();
        let complete =
            write_response(&mut stream, &mut buf, response, head_only, keep_alive).await?;
        if !(keep_alive && complete) {
            let _ = stream.shutdown().await;
            return Ok(Served::Done);
        }
    }
}

/// Resolves when the client closes the connection while its request is proxied. The
/// request is then dropped, which closes its upstream connection, as hyper (without
/// `half_close`) and nginx (without `proxy_ignore_client_abort`) do. Once the client
/// has pipelined bytes, nothing more is read, so they are all served before its close
/// is seen (as hyper does), and `buf` holds at most one read.
async fn client_gone(stream: &TcpStream, buf: &mut BytesMut) {
    while buf.is_empty() {
        if read_ready(stream).await.is_err() {
            return;
        }
        match read_arrived(stream, buf) {
            Ok(Arrived::Closed) | Err(_) => return,
            Ok(Arrived::Bytes | Arrived::Nothing) => {}
        }
    }
    std::future::pending().await
}

/// Waits for the stream to be readable through the stream's single read waker, which
/// costs no lock: this connection's task is the only reader. (`readable()` queues a
/// waiter under the stream's lock on every wait.)
async fn read_ready(stream: &TcpStream) -> io::Result<()> {
    poll_fn(|cx| stream.poll_read_ready(cx)).await
}

enum Arrived {
    Bytes,
    Nothing,
    Closed,
}

/// Reads what has arrived through a stack buffer, so `buf` is allocated at the size of
/// what came (a small allocation, from the allocator's fast path) rather than ahead of it.
///
/// The crate's one `unsafe`: the scratch is left uninitialised because zeroing 4 KiB
/// before every read would cost more than copying what the read brought, and reading
/// straight into `buf` would size it ahead of what came.
#[allow(unsafe_code)]
fn read_arrived(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<Arrived> {
    // Left uninitialized: clearing 4 KiB on every read would cost more than the read.
    let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    match stream.try_read_buf(&mut scratch.as_mut_slice()) {
        Ok(0) => Ok(Arrived::Closed),
        Ok(n) => {
            // SAFETY: `try_read_buf` wrote the first `n` bytes of `scratch` (it returns
            // how many it initialised), and `n <= READ_CHUNK`.
            let read = unsafe { std::slice::from_raw_parts(scratch.as_ptr().cast::<u8>(), n) };
            buf.extend_from_slice(read);
            Ok(Arrived::Bytes)
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Arrived::Nothing),
        Err(err) => Err(err),
    }
}

/// Waits until the stream is readable. `Ok(false)`: the gateway is shutting down and
/// the connection is `idle`, so it ends quietly. The deadline passing is an error.
/// `timer` is never set later than `deadline`.
async fn await_bytes(
    stream: &TcpStream,
    mut shutting_down: Pin<&mut impl Future<Output = ()>>,
    mut timer: Pin<&mut Sleep>,
    idle: bool,
    deadline: Instant,
) -> Result<bool, BoxError> {
    loop {
        tokio::select! {
            biased;
            ready = read_ready(stream) => return ready.map(|()| true).map_err(Into::into),
            () = shutting_down.as_mut(), if idle => return Ok(false),
            () = timer.as_mut() => {
                if Instant::now() < deadline {
                    timer.as_mut().reset(deadline);
                    continue;
                }
                // As with hyper: closed without an answer, and counted.
                return Err(HeadTimeout.into());
            }
        }
    }
}

/// Writes the response and streams its body, each write bounded by `send_timeout`.
/// Returns whether it was written whole, so the connection can carry another request.
async fn write_response(
    stream: &mut SendTimeout<TcpStream>,
    buf: &mut BytesMut,
    response: Response<ResponseBody>,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::with_capacity(512);
    let framing = encode_response_head(
        &mut out,
        parts.status,
        &parts.headers,
        body.size_hint().exact(),
        head_only,
        keep_alive,
    );
    if framing == ResponseFraming::Empty {
        stream.write_all(&out).await?;
        // A 101 nobody asked for (upgrades are hyper's): whatever follows is not HTTP.
        return Ok(!parts.status.is_informational());
    }
    let mut sent: u64 = 0;
    loop {
        // Take whatever frames are ready; write out only when the body has to wait or
        // enough has gathered. While the body waits with nothing to write, a client
        // that hangs up ends the response (and the upstream connection) at once.
        let polled = tokio::select! {
            biased;
            polled = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending if !out.is_empty() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
                Poll::Ready(next) => Poll::Ready(Some(next)),
            }) => polled,
            () = client_gone(stream.get_ref(), buf) => return Ok(false),
        };
        let frame = match polled {
            None => {
                stream.write_all(&out).await?;
                out.clear();
                continue;
            }
            Some(Some(Ok(frame))) => frame,
            // The upstream failed or stalled mid-body: cut the response short, so the
            // client sees a truncated body rather than a complete wrong one.
            Some(Some(Err(_))) => {
                stream.write_all(&out).await?;
                return Ok(false);
            }
            Some(None) => {
                if framing == ResponseFraming::Chunked {
                    out.extend_from_slice(LAST_CHUNK);
                }
                stream.write_all(&out).await?;
                return Ok(
                    framing == ResponseFraming::Chunked || framing == ResponseFraming::Length(sent)
                );
            }
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers are not relayed
        };
        if let ResponseFraming::Length(length) = framing {
            // Never past the length the head announced: what follows would be read as
            // the next response.
            let room = length - sent;
            if data.len() as u64 > room {
                data.truncate(room as usize);
                write_data(stream, &mut out, &data).await?;
                stream.write_all(&out).await?;
                return Ok(false);
            }
        }
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if framing == ResponseFraming::Chunked {
            chunk_size_line(data.len(), &mut out);
        }
        write_data(stream, &mut out, &data).await?;
        if framing == ResponseFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Queues small data behind what is pending; writes large data straight out.
async fn write_data(
    stream: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    data: &Bytes,
) -> io::Result<()> {
    if data.len() <= COALESCE {
        out.extend_from_slice(data);
        return Ok(());
    }
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    stream.write_all(data).await
}
