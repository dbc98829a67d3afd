//! Response heads: parsed on the client side with the framing of the body that follows
//! (RFC 9112 §6.3), encoded on the server side with the gateway's own framing.

use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::head::{self, header_spans, may_be_listed, span_bytes, tokens, HeaderSpan, HOP_BY_HOP};
use super::ProtocolError;

/// A response head larger than this is refused (nginx's `proxy_buffer_size` is 4 to
/// 8 KiB by default; hyper allows about 400 KiB).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Headers one response head may carry (hyper's default: 100).
pub const MAX_RESPONSE_HEADERS: usize = 128;

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
    let mut headers = HeaderMap::with_capacity(count);
    let (mut keep_alive, mut chunked, mut listed) = (version == Version::HTTP_11, None, false);
    for &span in &spans[..count] {
        let (name, _) = span_bytes(&head, span);
        let name =
            HeaderName::from_bytes(name).map_err(|_| ProtocolError("invalid header name"))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(span.2 as usize..(span.2 + span.3) as usize))
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
                    .next_back()
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
    // Rare: custom headers the upstream named in Connection are hop-by-hop too (but
    // never framing: see `may_be_listed`).
    if listed {
        for &span in &spans[..count] {
            let (name, value) = span_bytes(&head, span);
            if name.eq_ignore_ascii_case(b"connection") {
                for token in tokens(value).filter(|t| may_be_listed(t)) {
                    if let Ok(name) = HeaderName::from_bytes(token) {
                        headers.remove(name);
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

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: HEAD, 1xx, 204, 304 (and, read from an upstream, `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection, which then cannot be reused. Never
    /// written to a client: the gateway frames what it sends.
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
    Ok(match head::content_length(headers)? {
        None => (ResponseFraming::UntilClose, false),
        Some(0) => (ResponseFraming::Empty, true),
        Some(n) => (ResponseFraming::Length(n), true),
    })
}

/// Writes the status line and headers into `out`, adding what hyper would: `date` if
/// the response has none, the body's framing, and `connection: close` when the
/// connection ends after this response. The framing is the gateway's own, from what
/// the body will deliver (`exact_length`): an upstream `Content-Length` is not relayed,
/// so a wrong or duplicated one can never mis-frame the client's connection. A response
/// to HEAD (and a 304) keeps the upstream's, since it describes the body a GET would
/// get. Returns the framing the body must now be written with.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    exact_length: Option<u64>,
    head_only: bool,
    keep_alive: bool,
) -> ResponseFraming {
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
        if (name == header::CONTENT_LENGTH && !keep_length) || name == header::TRANSFER_ENCODING {
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
        ResponseFraming::Empty
    } else if let Some(length) = exact_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(length, &mut [0; 20]));
        out.extend_from_slice(b"\r\n");
        ResponseFraming::Length(length)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        ResponseFraming::Chunked
    };
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// `n` in decimal, into the end of `scratch`.
fn itoa(mut n: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut at = scratch.len();
    loop {
        at -= 1;
        scratch[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &scratch[at..];
        }
    }
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
    fn encoded(
        status: StatusCode,
        headers: &[(&str, &str)],
        exact: Option<u64>,
        head_only: bool,
        keep_alive: bool,
    ) -> (String, ResponseFraming) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut out = Vec::new();
        let framing = encode_response_head(&mut out, status, &map, exact, head_only, keep_alive);
        (String::from_utf8(out).unwrap(), framing)
    }

    #[test]
    fn the_head_carries_the_framing_a_client_needs() {
        let date = ("date", "Sun, 22 Nov 2026 03:00:00 GMT");
        let (text, framing) = encoded(
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
        assert_eq!(framing, ResponseFraming::Length(5));

        let (text, framing) = encoded(StatusCode::BAD_GATEWAY, &[date], Some(12), false, false);
        assert!(
            text.ends_with("content-length: 12\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        assert_eq!(framing, ResponseFraming::Length(12));

        let (text, framing) = encoded(StatusCode::OK, &[date], None, false, true);
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        assert_eq!(framing, ResponseFraming::Chunked);
    }

    #[test]
    fn head_204_and_304_answers_have_no_body_and_keep_their_headers() {
        let (text, framing) = encoded(
            StatusCode::OK,
            &[("content-length", "99")],
            None,
            true,
            true,
        );
        assert!(text.contains("content-length: 99\r\n"), "{text}");
        assert_eq!(framing, ResponseFraming::Empty);
        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            let (text, framing) = encoded(status, &[], None, false, true);
            assert!(!text.contains("transfer-encoding"), "{text}");
            assert!(!text.contains("content-length"), "{text}");
            assert_eq!(framing, ResponseFraming::Empty);
        }
    }

    #[test]
    fn the_upstream_content_length_never_frames_the_client_connection() {
        // Wrong, duplicated or unparsable: the gateway writes the length it will send.
        let (text, framing) = encoded(
            StatusCode::OK,
            &[("content-length", "0"), ("content-length", "5, 5")],
            Some(28),
            false,
            true,
        );
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(text.contains("content-length: 28\r\n"), "{text}");
        assert_eq!(framing, ResponseFraming::Length(28));
        let (text, framing) = encoded(
            StatusCode::OK,
            &[("content-length", "7")],
            None,
            false,
            true,
        );
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, ResponseFraming::Chunked);
        let (text, _) = encoded(
            StatusCode::NO_CONTENT,
            &[("content-length", "0")],
            Some(0),
            false,
            true,
        );
        assert!(!text.contains("content-length"), "{text}");
    }

    #[test]
    fn a_response_without_a_date_gets_one() {
        let (text, _) = encoded(StatusCode::OK, &[], Some(0), false, true);
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
