//! Request heads: parsed on the server side for the gateway's own loop, encoded on the
//! client side toward an upstream.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};

use super::head::{header_spans, offset_in, span_bytes, tokens, HeaderSpan};

/// Header lines a request parsed here may have; one with more is left to hyper.
pub const MAX_HEADERS: usize = 64;

/// A request head the gateway's own loop serves, with whether the connection may stay
/// open after it.
#[derive(Debug)]
pub struct RequestHead {
    pub request: Request<()>,
    pub keep_alive: bool,
}

// Built in place and matched at once, never moved around: boxing the large variant
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    Request(RequestHead),
    /// The head is not complete yet.
    Partial,
    /// Not a request this parser takes (a body, an upgrade, `Expect`, HTTP/1.0, an
    /// absolute-form or `*` target, a malformed or too large head): `buf` is left
    /// holding every byte of it, for hyper.
    Unsupported,
}

/// Parses a bodiless HTTP/1.1 request head in origin form at the start of `buf`, taking
/// its bytes out of `buf`. The header values are slices of one shared copy of the head.
pub fn parse_request(buf: &mut BytesMut, max_head: usize) -> Parsed {
    // Where the target and each header sit in the head, so the head can be split off
    // `buf` once httparse's borrow of it ends.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut spans: [HeaderSpan; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
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
            _ => return Parsed::Unsupported,
        };
        // HTTP/1.0 keep-alive rules, absolute-form and `*` targets: hyper's.
        let (Some(1), Some(method), Some(path)) = (parsed.version, parsed.method, parsed.path)
        else {
            return Parsed::Unsupported;
        };
        if !path.starts_with('/') {
            return Parsed::Unsupported;
        }
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::Unsupported;
        };
        for (span, found) in spans.iter_mut().zip(header_spans(buf, parsed.headers)) {
            *span = found;
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
        for &span in &spans[..count] {
            let (name, _) = span_bytes(&head, span);
            let name = HeaderName::from_bytes(name).ok()?;
            let value = HeaderValue::from_maybe_shared(slice(span.2, span.3)).ok()?;
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
                for token in tokens(value.as_bytes()) {
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    }
                }
            }
            headers.append(name, value);
        }
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Some(RequestHead {
            request,
            keep_alive,
        })
    })();
    match built {
        Some(head) => Parsed::Request(head),
        None => {
            // Put the head back in front of what followed it, for hyper.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Unsupported
        }
    }
}

/// Whether these bytes hold an empty line (`\n\r\n`, or a bare `\n\n`, which httparse
/// accepts too), the end of a head. A head that arrives a byte at a time is so parsed
/// once when it is complete, not again from its start at every byte.
pub fn may_end_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// How a request body is framed on the wire.
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

/// Writes the request line (origin form, HTTP/1.1) and headers, then `extra`. `headers`
/// arrive with hop-by-hop headers already removed, so the framing header is this
/// function's to add.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse_request(&mut buf, 8192);
        (parsed, buf)
    }

    fn request(bytes: &[u8]) -> (RequestHead, BytesMut) {
        match parse(bytes) {
            (Parsed::Request(head), rest) => (head, rest),
            (Parsed::Partial, _) => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
            (Parsed::Unsupported, _) => {
                panic!("unsupported: {:?}", String::from_utf8_lossy(bytes))
            }
        }
    }

    #[test]
    fn a_bodiless_request_is_parsed_and_what_follows_stays_unread() {
        let (head, rest) = request(
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-User-Id: 42\r\nX-User-Id: 43\r\n\r\nGET /next",
        );
        let request = head.request;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers()["host"], "x");
        let ids: Vec<_> = request.headers().get_all("x-user-id").iter().collect();
        assert_eq!(ids, ["42", "43"]);
        assert!(head.keep_alive);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_is_honoured_and_a_zero_length_is_no_body() {
        let (head, _) = request(
            b"DELETE /x HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(!head.keep_alive);
        assert_eq!(head.request.method(), Method::DELETE);
    }

    #[test]
    fn a_repeated_zero_length_goes_upstream_once() {
        let (head, _) =
            request(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            head.request
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
    fn what_hyper_must_serve_is_left_with_every_byte() {
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
                matches!(parsed, Parsed::Unsupported),
                "{:?} was taken",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(&rest[..], raw, "bytes lost");
        }
    }

    #[test]
    fn a_head_over_the_limit_or_with_too_many_headers_is_hyper_s_to_refuse() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nx-big: aaaaaaaaaaaaaaaaaaaa"[..]);
        assert!(matches!(parse_request(&mut buf, 32), Parsed::Unsupported));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(raw.as_bytes()).0, Parsed::Unsupported));
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
}
