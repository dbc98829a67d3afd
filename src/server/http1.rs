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
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use http_body::Body;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::{BoxError, ConnectionContext, ServerSettings};
use crate::proxy::ResponseBody;
use crate::shutdown::Shutdown;
use crate::upstream::wire::{header_spans, offset_in, HeaderSpan};

/// Header lines a request served here may have; one with more goes to hyper.
const MAX_HEADERS: usize = 64;
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
    mut stream: TcpStream,
    mut buf: BytesMut,
    context: &ConnectionContext,
    settings: &ServerSettings,
    shutdown: &Shutdown,
) -> Result<Served, BoxError> {
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
                    Parsed::HandOff => {
                        return Ok(Served::HandOff {
                            stream,
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
                    &stream,
                    shutting_down.as_mut(),
                    head_timer.as_mut(),
                    idle,
                    deadline,
                );
                if !wait.await? {
                    return Ok(Served::Done);
                }
            }
            read_nothing = match read_arrived(&stream, &mut buf)? {
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
        let response = tokio::select! {
            biased;
            response = context.proxy.handle(next.request, &context.client) => response,
            () = client_gone(&stream, &mut buf) => return Ok(Served::Done),
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

/// Whether these bytes hold an empty line (`\n\r\n`, or a bare `\n\n`, which httparse
/// accepts too), the end of a head. A head that arrives a byte at a time is so parsed
/// once when it is complete, not again from its start at every byte.
fn may_end_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

enum Arrived {
    Bytes,
    Nothing,
    Closed,
}

/// Reads what has arrived through a stack buffer, so `buf` is allocated at the size of
/// what came (a small allocation, from the allocator's fast path) rather than ahead of it.
fn read_arrived(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<Arrived> {
    // Left uninitialized: clearing 4 KiB on every read would cost more than the read.
    let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    match stream.try_read_buf(&mut scratch.as_mut_slice()) {
        Ok(0) => Ok(Arrived::Closed),
        Ok(n) => {
            // SAFETY: the read initialized the first `n` bytes.
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

/// A request this loop serves, with whether the connection may stay open after it.
struct NextRequest {
    request: Request<Option<Incoming>>,
    keep_alive: bool,
}

// Built in place and matched at once, never moved around: boxing the large variant
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(NextRequest),
    /// The head is not complete yet.
    Partial,
    /// hyper's to serve: `buf` is left holding every byte of the request.
    HandOff,
}

/// Parses a head at the start of `buf`, taking its bytes out of `buf` when this loop
/// serves it. The header values are slices of one shared copy of the head.
fn parse_request(buf: &mut BytesMut, max_head: usize) -> Parsed {
    // Where the target and each header sit in the head, so the head can be split off
    // `buf` once httparse's borrow of it ends.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut spans = [const { MaybeUninit::<HeaderSpan>::uninit() }; MAX_HEADERS];
    let (length, count, method, target) = {
        let mut parsed = httparse::Request::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(length)) if length <= max_head => length,
            Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
            // Too large, too many headers or malformed: hyper gives the answer.
            _ => return Parsed::HandOff,
        };
        // HTTP/1.0 keep-alive rules, absolute-form and `*` targets: hyper's.
        let (Some(1), Some(method), Some(path)) = (parsed.version, parsed.method, parsed.path)
        else {
            return Parsed::HandOff;
        };
        if !path.starts_with('/') {
            return Parsed::HandOff;
        }
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::HandOff;
        };
        for (span, found) in spans.iter_mut().zip(header_spans(buf, parsed.headers)) {
            span.write(found);
        }
        let target = (offset_in(buf, path.as_bytes()), path.len() as u32);
        (length, parsed.headers.len(), method, target)
    };
    let head = buf.split_to(length).freeze();
    let slice = |at: u32, len: u32| head.slice(at as usize..(at + len) as usize);
    let built = (|| {
        let uri = Uri::from_maybe_shared(slice(target.0, target.1)).ok()?;
        let mut headers = HeaderMap::with_capacity(count);
        let mut keep_alive = true;
        for span in &spans[..count] {
            // SAFETY: the first `count` spans were written above.
            let (name_at, name_len, value_at, value_len) = unsafe { span.assume_init() };
            let name =
                HeaderName::from_bytes(&head[name_at as usize..(name_at + name_len) as usize])
                    .ok()?;
            let value = HeaderValue::from_maybe_shared(slice(value_at, value_len)).ok()?;
            // A body, or a hint that one follows: hyper's to frame and stream.
            let body_follows = name == header::TRANSFER_ENCODING
                || name == header::EXPECT
                || name == header::UPGRADE
                || (name == header::CONTENT_LENGTH && value.as_bytes() != b"0");
            if body_follows {
                return None;
            } else if name == header::CONTENT_LENGTH && headers.contains_key(&name) {
                continue; // one `Content-Length: 0` is enough upstream, as hyper sends
            } else if name == header::CONNECTION {
                for token in value.as_bytes().split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    }
                }
            }
            headers.append(name, value);
        }
        let mut request = Request::new(None);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Some(NextRequest {
            request,
            keep_alive,
        })
    })();
    match built {
        Some(next) => Parsed::Request(next),
        None => {
            // Put the head back in front of what followed it, for hyper.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::HandOff
        }
    }
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes: a response to HEAD, a 1xx, 204 or 304.
    None,
    Length(u64),
    Chunked,
}

/// Writes the response and streams its body. Returns whether it was written whole, so
/// the connection can carry another request.
async fn write_response(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    response: Response<ResponseBody>,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::with_capacity(512);
    let framing = encode_head(
        &mut out,
        parts.status,
        &parts.headers,
        body.size_hint().exact(),
        head_only,
        keep_alive,
    );
    if framing == Framing::None {
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
            () = client_gone(stream, buf) => return Ok(false),
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
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                stream.write_all(&out).await?;
                return Ok(framing == Framing::Chunked || framing == Framing::Length(sent));
            }
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers are not relayed
        };
        if let Framing::Length(length) = framing {
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
        if framing == Framing::Chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        write_data(stream, &mut out, &data).await?;
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Queues small data behind what is pending; writes large data straight out.
async fn write_data(stream: &mut TcpStream, out: &mut Vec<u8>, data: &Bytes) -> io::Result<()> {
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

/// Writes the status line and headers into `out`, adding what hyper would: `date` if
/// the response has none, the body's framing, and `connection: close` when the
/// connection ends after this response. The framing is the gateway's own, from what
/// the body will deliver (`exact_length`): an upstream `Content-Length` is not relayed,
/// so a wrong or duplicated one can never mis-frame the client's connection. A response
/// to HEAD keeps the upstream's, since it describes the body a GET would get.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    exact_length: Option<u64>,
    head_only: bool,
    keep_alive: bool,
) -> Framing {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // RFC 9110: no body after 1xx, 204 and 304; no Content-Length on 1xx and 204.
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let keep_length = head_only || status == StatusCode::NOT_MODIFIED;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH && !keep_length {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        append_date(out);
        out.extend_from_slice(b"\r\n");
    }
    let framing = if no_body || head_only {
        Framing::None
    } else if let Some(length) = exact_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(length.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        Framing::Length(length)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// The `date` header's value, formatted once a second per thread.
fn append_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse_request(&mut buf, 8192);
        (parsed, buf)
    }

    fn request(bytes: &[u8]) -> (NextRequest, BytesMut) {
        match parse(bytes) {
            (Parsed::Request(next), rest) => (next, rest),
            (Parsed::Partial, _) => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
            (Parsed::HandOff, _) => panic!("handed off: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn a_bodiless_request_is_served_here_and_what_follows_stays_unread() {
        let (next, rest) = request(
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-User-Id: 42\r\nX-User-Id: 43\r\n\r\nGET /next",
        );
        let request = next.request;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers()["host"], "x");
        let ids: Vec<_> = request.headers().get_all("x-user-id").iter().collect();
        assert_eq!(ids, ["42", "43"]);
        assert!(request.body().is_none());
        assert!(next.keep_alive);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_is_honoured_and_a_zero_length_is_no_body() {
        let (next, _) = request(
            b"DELETE /x HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(!next.keep_alive);
        assert_eq!(next.request.method(), Method::DELETE);
    }

    #[test]
    fn a_repeated_zero_length_goes_upstream_once() {
        let (next, _) =
            request(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            next.request
                .headers()
                .get_all("content-length")
                .iter()
                .count(),
            1
        );
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n").0,
            Parsed::Partial
        ));
    }

    #[test]
    fn what_hyper_must_serve_is_handed_off_with_every_byte() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad\xffName: x\r\n\r\n",
        ] {
            let (parsed, rest) = parse(raw);
            assert!(
                matches!(parsed, Parsed::HandOff),
                "{:?} was not handed off",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(&rest[..], raw, "bytes lost in the hand-off");
        }
    }

    #[test]
    fn a_head_over_the_limit_or_with_too_many_headers_is_hyper_s_to_refuse() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nx-big: aaaaaaaaaaaaaaaaaaaa"[..]);
        assert!(matches!(parse_request(&mut buf, 32), Parsed::HandOff));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(raw.as_bytes()).0, Parsed::HandOff));
    }

    fn head(
        status: StatusCode,
        headers: &[(&str, &str)],
        exact: Option<u64>,
        head_only: bool,
        keep_alive: bool,
    ) -> (String, Framing) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut out = Vec::new();
        let framing = encode_head(&mut out, status, &map, exact, head_only, keep_alive);
        (String::from_utf8(out).unwrap(), framing)
    }

    #[test]
    fn the_head_carries_the_framing_a_client_needs() {
        let date = ("date", "Sun, 22 Nov 2026 03:00:00 GMT");
        let (text, framing) = head(
            StatusCode::OK,
            &[date, ("content-length", "5")],
            Some(5),
            false,
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 03:00:00 GMT\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(framing, Framing::Length(5));

        let (text, framing) = head(StatusCode::BAD_GATEWAY, &[date], Some(12), false, false);
        assert!(
            text.ends_with("content-length: 12\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        assert_eq!(framing, Framing::Length(12));

        let (text, framing) = head(StatusCode::OK, &[date], None, false, true);
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        assert_eq!(framing, Framing::Chunked);
    }

    #[test]
    fn head_204_and_304_answers_have_no_body_and_keep_their_headers() {
        let (text, framing) = head(
            StatusCode::OK,
            &[("content-length", "99")],
            None,
            true,
            true,
        );
        assert!(text.contains("content-length: 99\r\n"), "{text}");
        assert_eq!(framing, Framing::None);
        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            let (text, framing) = head(status, &[], None, false, true);
            assert!(!text.contains("transfer-encoding"), "{text}");
            assert!(!text.contains("content-length"), "{text}");
            assert_eq!(framing, Framing::None);
        }
    }

    #[test]
    fn the_upstream_content_length_never_frames_the_client_connection() {
        // Wrong, duplicated or unparsable: the gateway writes the length it will send.
        let (text, framing) = head(
            StatusCode::OK,
            &[("content-length", "0"), ("content-length", "5, 5")],
            Some(28),
            false,
            true,
        );
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(text.contains("content-length: 28\r\n"), "{text}");
        assert_eq!(framing, Framing::Length(28));
        let (text, framing) = head(
            StatusCode::OK,
            &[("content-length", "7")],
            None,
            false,
            true,
        );
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, Framing::Chunked);
        let (text, _) = head(
            StatusCode::NO_CONTENT,
            &[("content-length", "0")],
            Some(0),
            false,
            true,
        );
        assert!(!text.contains("content-length"), "{text}");
    }

    #[test]
    fn only_an_empty_line_may_end_a_head() {
        assert!(may_end_head(b"x: y\r\n\r\n"));
        assert!(may_end_head(b"\n\r\n"));
        assert!(may_end_head(b"x: y\n\n"));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!may_end_head(b"\r\n\r"));
        assert!(!may_end_head(b""));
    }

    #[test]
    fn a_response_without_a_date_gets_one() {
        let (text, _) = head(StatusCode::OK, &[], Some(0), false, true);
        let line = text
            .lines()
            .find(|l| l.starts_with("date: "))
            .expect("a date line");
        assert!(
            httpdate::parse_http_date(&line["date: ".len()..]).is_ok(),
            "{line}"
        );
    }
}
