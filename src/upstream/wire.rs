//! HTTP/1.1 on the wire toward an upstream: the request head out, the response head
//! in, how the response body is framed (RFC 9112 §6.3), and the chunked decoder.
//!
//! Plain functions over byte buffers, no I/O, so every framing rule is unit tested.
//! The proxy speaks only HTTP/1.1 upstream and always asks for keep-alive, which keeps
//! this small: no HTTP/1.0 requests, no pipelining, no request trailers.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

/// A response head larger than this is refused (nginx's `proxy_buffer_size` is 4 to
/// 8 KiB by default; hyper allows about 400 KiB).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Headers one response head may carry (hyper's default: 100).
const MAX_RESPONSE_HEADERS: usize = 128;
/// A chunk-size line or a trailer line longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// A response the upstream sent that HTTP/1.1 does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upstream sent an invalid response: {0}")]
pub struct ProtocolError(pub &'static str);

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, or a body of the length its `Content-Length` header declares.
    AsDeclared,
    /// A streamed body of unknown length: `Transfer-Encoding: chunked`.
    Chunked,
}

/// Headers written onto the wire after the request's own: what the proxy adds to every
/// request (the forwarded headers, the decision). Inserting new names into the client's
/// header map instead would regrow (rehash) the map on every request.
#[derive(Debug, Default, Clone)]
pub struct ExtraHeaders {
    slots: [Option<(HeaderName, HeaderValue)>; 6],
}

impl ExtraHeaders {
    /// Adds a header; more than the slots hold is a programming error.
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        let slot = self.slots.iter_mut().find(|s| s.is_none());
        *slot.expect("ExtraHeaders has a slot for every header the proxy adds") =
            Some((name, value));
    }

    /// Sets `name` to `value`, in the slot it has or a free one.
    pub fn replace(&mut self, name: HeaderName, value: HeaderValue) {
        match self.slots.iter_mut().flatten().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.push(name, value),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.slots.iter().flatten().map(|(n, v)| (n, v))
    }
}

/// Writes the request line and headers, then `extra`. `headers` arrive with hop-by-hop
/// headers already removed, so the framing header is this function's to add.
pub fn encode_request_head<B>(
    request: &Request<B>,
    extra: &ExtraHeaders,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers().iter().chain(extra.iter()) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // RFC 9110 §8.6: a request whose method defines a body should say it is empty.
        RequestFraming::AsDeclared
            if expects_body(request.method())
                && !request.headers().contains_key(header::CONTENT_LENGTH) =>
        {
            out.extend_from_slice(b"content-length: 0\r\n")
        }
        RequestFraming::AsDeclared => {}
    }
    out.extend_from_slice(b"\r\n");
}

fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Writes one chunk of a chunked request body.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A parsed response head: the response (its body still to be framed), with the
/// hop-by-hop headers already taken out, and what they said.
#[derive(Debug)]
pub struct ResponseHead {
    pub response: Response<()>,
    /// The connection may carry another request once this response's body is read.
    pub keep_alive: bool,
    /// `Transfer-Encoding` was present; `Some(true)` when chunked is its final coding.
    pub chunked: Option<bool>,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the proxy-auth pair and `Trailer`, as Go's
/// and nginx's proxies drop them). They describe one connection, never the next hop's:
/// the proxy drops them from requests, and the response parser below as it parses.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where one header's name and value sit in the buffer httparse read from: (name offset,
/// name length, value offset, value length). Recorded while httparse borrows the buffer,
/// so the head can then be split off it and the values sliced out of one shared copy.
pub type HeaderSpan = (u32, u32, u32, u32);

/// Where `part`, a slice httparse returned, starts in `buf`.
pub fn offset_in(buf: &[u8], part: &[u8]) -> u32 {
    (part.as_ptr() as usize - buf.as_ptr() as usize) as u32
}

/// The [`HeaderSpan`] of each header httparse parsed out of `buf`.
pub fn header_spans<'a>(
    buf: &'a [u8],
    headers: &'a [httparse::Header<'a>],
) -> impl Iterator<Item = HeaderSpan> + 'a {
    headers.iter().map(move |h| {
        (
            offset_in(buf, h.name.as_bytes()),
            h.name.len() as u32,
            offset_in(buf, h.value),
            h.value.len() as u32,
        )
    })
}

/// Parses a response head from the start of `buf`, taking its bytes out of `buf`.
/// `Ok(None)`: the head is not complete yet.
pub fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, ProtocolError> {
    // Where each header's name and value sit in `buf`: the values are then sliced out
    // of one shared copy of the head, with no allocation per header.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut spans: [HeaderSpan; MAX_RESPONSE_HEADERS] = [(0, 0, 0, 0); MAX_RESPONSE_HEADERS];
    let (length, count, code, version) = {
        let mut parsed = httparse::Response::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(ProtocolError("response head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ProtocolError("too many response headers"))
            }
            Err(_) => return Err(ProtocolError("malformed response head")),
        };
        if length > MAX_RESPONSE_HEAD {
            return Err(ProtocolError("response head too large"));
        }
        for (span, found) in spans.iter_mut().zip(header_spans(buf, parsed.headers)) {
            *span = found;
        }
        (length, parsed.headers.len(), parsed.code, parsed.version)
    };
    let status = code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(ProtocolError("invalid status code"))?;
    let version = match version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let head = buf.split_to(length).freeze();
    let bytes = |at: u32, len: u32| head.slice(at as usize..(at + len) as usize);
    let mut headers = HeaderMap::with_capacity(count);
    let (mut keep_alive, mut chunked, mut listed) = (version == Version::HTTP_11, None, false);
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[name_at as usize..(name_at + name_len) as usize])
            .map_err(|_| ProtocolError("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes(value_at, value_len))
            .map_err(|_| ProtocolError("invalid header value"))?;
        if !HOP_BY_HOP.contains(&name)
            || (name == header::UPGRADE && status == StatusCode::SWITCHING_PROTOCOLS)
        {
            headers.append(name, value);
            continue;
        }
        if name == header::CONNECTION {
            for token in tokens(value.as_bytes()) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive")
                    && !token.eq_ignore_ascii_case(b"upgrade")
                {
                    listed = true;
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            // The final coding of the last Transfer-Encoding line decides.
            chunked = Some(
                tokens(value.as_bytes())
                    .last()
                    .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")),
            );
        }
    }
    // RFC 9112 §6.3: with Transfer-Encoding, a Content-Length is wrong by definition.
    // Relayed, it would frame the client's connection differently from the body sent;
    // the message is suspect (request smuggling), so its connection is not reused.
    if chunked.is_some() && headers.remove(header::CONTENT_LENGTH).is_some() {
        keep_alive = false;
    }
    // Rare: custom headers the upstream named in Connection are hop-by-hop too. Framing
    // never is, whatever Connection says: without its Content-Length the body would be
    // read until the upstream closes.
    if listed {
        for &(name_at, name_len, value_at, value_len) in &spans[..count] {
            if head[name_at as usize..(name_at + name_len) as usize]
                .eq_ignore_ascii_case(b"connection")
            {
                for token in tokens(&head[value_at as usize..(value_at + value_len) as usize]) {
                    if let Ok(name) = HeaderName::from_bytes(token) {
                        if name != header::CONTENT_LENGTH {
                            headers.remove(name);
                        }
                    }
                }
            }
        }
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(ResponseHead {
        response,
        keep_alive,
        chunked,
    }))
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: HEAD, 204, 304, or `Content-Length: 0`.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection, which then cannot be reused.
    UntilClose,
}

/// RFC 9112 §6.3 for a final (non-1xx) response to a request with `method`, given
/// what its `Transfer-Encoding` said (see [`ResponseHead::chunked`]). Returns the
/// framing and whether the connection may be reused afterwards.
pub fn response_framing(
    method: &Method,
    status: StatusCode,
    chunked: Option<bool>,
    headers: &HeaderMap,
) -> Result<(ResponseFraming, bool), ProtocolError> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((ResponseFraming::Empty, true));
    }
    if let Some(chunked_last) = chunked {
        // Chunked must be the final coding. (A Content-Length beside it was dropped
        // while parsing, and the connection marked not to be reused.)
        return Ok(if chunked_last {
            (ResponseFraming::Chunked, true)
        } else {
            (ResponseFraming::UntilClose, false)
        });
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok((ResponseFraming::UntilClose, false));
    };
    let length = parse_content_length(first.as_bytes())?;
    // Repeated Content-Length is allowed only with one value (RFC 9110 §8.6).
    if lengths.any(|other| parse_content_length(other.as_bytes()) != Ok(length)) {
        return Err(ProtocolError("conflicting content-length"));
    }
    Ok(match length {
        0 => (ResponseFraming::Empty, true),
        n => (ResponseFraming::Length(n), true),
    })
}

fn parse_content_length(value: &[u8]) -> Result<u64, ProtocolError> {
    // A list of equal values ("5, 5") is one length.
    let mut result = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(ProtocolError("invalid content-length"));
        }
        let n: u64 = std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProtocolError("invalid content-length"))?;
        if result.is_some_and(|r| r != n) {
            return Err(ProtocolError("conflicting content-length"));
        }
        result = Some(n);
    }
    result.ok_or(ProtocolError("invalid content-length"))
}

/// Where the chunked decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, with this many data bytes to go.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines (dropped) up to an empty line.
    Trailers,
    Done,
}

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// `buf` holds too little to go on: read more.
    NeedMore,
    Done,
}

impl Chunked {
    /// Decodes from the start of `buf`, taking what it used out of it.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(ProtocolError("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(ProtocolError("invalid chunk size")),
                },
                Chunked::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let left = remaining - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.advance(2);
                        *self = Chunked::Done;
                    }
                    Some(end) => buf.advance(end + 2),
                    None if buf.len() > MAX_CHUNK_LINE => {
                        return Err(ProtocolError("trailer line too long"))
                    }
                    None => return Ok(Decoded::NeedMore),
                },
                Chunked::Done => return Ok(Decoded::Done),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<ResponseHead>, ProtocolError> {
        parse_response_head(&mut BytesMut::from(text))
    }

    fn framing(method: Method, text: &str) -> Result<(ResponseFraming, bool), ProtocolError> {
        let head = head(text).unwrap().unwrap();
        response_framing(
            &method,
            head.response.status(),
            head.chunked,
            head.response.headers(),
        )
    }

    #[test]
    fn a_content_length_beside_transfer_encoding_is_dropped() {
        let parsed =
            head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(parsed.chunked, Some(true));
        assert!(parsed.response.headers().get("content-length").is_none());
        let parsed = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(parsed.response.headers()["content-length"], "3");
    }

    #[test]
    fn request_head_is_origin_form_http11_with_framing() {
        let mut request = Request::post("http://example.com/a?b=1")
            .header("host", "example.com")
            .header("x-one", "1")
            .body(())
            .unwrap();
        let (mut out, none, mut extra) =
            (Vec::new(), ExtraHeaders::default(), ExtraHeaders::default());
        extra.push(
            HeaderName::from_static("x-added"),
            HeaderValue::from_static("2"),
        );
        encode_request_head(&request, &extra, RequestFraming::Chunked, &mut out);
        assert_eq!(
            out,
            b"POST /a?b=1 HTTP/1.1\r\nhost: example.com\r\nx-one: 1\r\nx-added: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        encode_request_head(&request, &none, RequestFraming::AsDeclared, &mut out);
        assert!(out.ends_with(b"x-one: 1\r\ncontent-length: 0\r\n\r\n"));
        request
            .headers_mut()
            .insert("content-length", HeaderValue::from_static("3"));
        encode_request_head(&request, &none, RequestFraming::AsDeclared, &mut out);
        assert!(out.ends_with(b"content-length: 3\r\n\r\n"));
        assert_eq!(
            out.windows(16).filter(|w| w == b"content-length: ").count(),
            1
        );
        let get = Request::get("/").body(()).unwrap();
        encode_request_head(&get, &none, RequestFraming::AsDeclared, &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn chunk_encoding_is_hex_length_data_crlf() {
        let mut out = Vec::new();
        encode_chunk(&[b'x'; 26], &mut out);
        assert_eq!(&out[..4], b"1a\r\n");
        assert!(out.ends_with(b"x\r\n"));
        assert_eq!(out.len(), 4 + 26 + 2);
    }

    #[test]
    fn response_head_parses_and_leaves_the_body_in_the_buffer() {
        let mut buf =
            BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nhi");
        let parsed = parse_response_head(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"hi");
        assert_eq!(parsed.response.status(), 200);
        assert!(parsed.keep_alive);
        let values: Vec<_> = parsed.response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn partial_head_asks_for_more_and_keeps_the_bytes() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(parse_response_head(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 27);
    }

    #[test]
    fn bad_heads_are_protocol_errors() {
        assert!(head("garbage\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 2000 OK\r\n\r\n").is_err());
        let many: String = (0..200).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).unwrap_err(),
            ProtocolError("too many response headers")
        );
        let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(
            head(&big).unwrap_err(),
            ProtocolError("response head too large")
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_while_parsing() {
        let parsed = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
             X-Secret: 1\r\nTransfer-Encoding: gzip, chunked\r\nUpgrade: h2c\r\nTE: x\r\n\
             Trailer: x-t\r\nProxy-Connection: x\r\nProxy-Authenticate: x\r\nX-Kept: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        let names: Vec<&str> = parsed
            .response
            .headers()
            .keys()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(names, ["x-kept"]);
        assert_eq!(parsed.chunked, Some(true));
        assert!(parsed.keep_alive);
        let upgrade = head(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(upgrade.response.headers()["upgrade"], "websocket");
        assert!(upgrade.response.headers().get("connection").is_none());
        let plain = head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain.chunked, None);
    }

    #[test]
    fn keep_alive_only_for_http11_without_close() {
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap().keep_alive);
    }

    #[test]
    fn framing_follows_rfc9112() {
        use ResponseFraming::*;
        let ok = |h: &str| format!("HTTP/1.1 200 OK\r\n{h}\r\n");
        assert_eq!(
            framing(Method::GET, &ok("content-length: 5\r\n")),
            Ok((Length(5), true))
        );
        assert_eq!(
            framing(Method::GET, &ok("content-length: 0\r\n")),
            Ok((Empty, true))
        );
        assert_eq!(
            framing(Method::HEAD, &ok("content-length: 5\r\n")),
            Ok((Empty, true))
        );
        assert_eq!(
            framing(Method::GET, "HTTP/1.1 204 No Content\r\n\r\n"),
            Ok((Empty, true))
        );
        assert_eq!(
            framing(
                Method::GET,
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"
            ),
            Ok((Empty, true))
        );
        assert_eq!(
            framing(Method::GET, &ok("transfer-encoding: chunked\r\n")),
            Ok((Chunked, true))
        );
        assert_eq!(
            framing(Method::GET, &ok("transfer-encoding: gzip, chunked\r\n")),
            Ok((Chunked, true))
        );
        // Read as chunked; the Content-Length is dropped and the connection not reused.
        assert_eq!(
            framing(
                Method::GET,
                &ok("transfer-encoding: chunked\r\ncontent-length: 5\r\n")
            ),
            Ok((Chunked, true))
        );
        let suspect = head(&ok("transfer-encoding: chunked\r\ncontent-length: 5\r\n"));
        assert!(!suspect.unwrap().unwrap().keep_alive);
        assert_eq!(
            framing(Method::GET, &ok("transfer-encoding: gzip\r\n")),
            Ok((UntilClose, false))
        );
        assert_eq!(framing(Method::GET, &ok("")), Ok((UntilClose, false)));
        assert_eq!(
            framing(
                Method::GET,
                &ok("content-length: 5\r\ncontent-length: 5\r\n")
            ),
            Ok((Length(5), true))
        );
        assert_eq!(
            framing(Method::GET, &ok("content-length: 5, 5\r\n")),
            Ok((Length(5), true))
        );
        for bad in [
            "content-length: 5\r\ncontent-length: 6\r\n",
            "content-length: -1\r\n",
            "content-length: 1x\r\n",
            "content-length: 5, 6\r\n",
            "content-length: 99999999999999999999\r\n",
            "content-length:\r\n",
        ] {
            assert!(framing(Method::GET, &ok(bad)).is_err(), "{bad}");
        }
    }

    fn decode_all(input: &[&[u8]]) -> Result<(Vec<u8>, BytesMut), ProtocolError> {
        let mut state = Chunked::Size;
        let (mut buf, mut out) = (BytesMut::new(), Vec::new());
        for (i, piece) in input.iter().enumerate() {
            buf.extend_from_slice(piece);
            loop {
                match state.step(&mut buf)? {
                    Decoded::Data(data) => out.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::Done => {
                        input[i + 1..].iter().for_each(|p| buf.extend_from_slice(p));
                        return Ok((out, buf));
                    }
                }
            }
        }
        Err(ProtocolError("test: input ended before the body"))
    }

    #[test]
    fn chunked_decodes_across_any_split() {
        let wire: &[u8] =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let (out, rest) = decode_all(&[&wire[..split], &wire[split..]]).unwrap();
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "split at {split}");
            assert_eq!(&rest[..], b"NEXT", "split at {split}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(
            decode_all(&bytes).unwrap().0,
            b"helloabcdefghijklmnopqrstuvwxyz"
        );
    }

    #[test]
    fn chunked_errors() {
        assert!(decode_all(&[b"zz\r\n"]).is_err());
        assert_eq!(
            decode_all(&[b"2\r\nabX\r\n"]).unwrap_err(),
            ProtocolError("chunk data not followed by CRLF")
        );
        assert!(decode_all(&[&[b'1'; MAX_CHUNK_LINE + 1]]).is_err());
        assert!(decode_all(&[b"ffffffffffffffffff\r\n"]).is_err());
    }
}
