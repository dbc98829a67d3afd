//! What both directions share: where each header sits in the buffer it was parsed
//! from, comma-separated tokens, `Content-Length` values, and the hop-by-hop headers.

use http::header::{self, HeaderMap, HeaderName};

use super::ProtocolError;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the proxy-auth pair and `Trailer`, as Go's
/// and nginx's proxies drop them). They describe one connection, never the next hop's:
/// requests are cleaned of them by [`strip_hop_by_hop`], responses as they are parsed.
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

/// Whether `Connection` may make this header hop-by-hop. Framing never is, whatever
/// `Connection` says: a message without its `Content-Length` would be read until the
/// peer closes. Nor is `Host`: the next hop would have to guess where the request went.
pub fn may_be_listed(name: &[u8]) -> bool {
    !name.eq_ignore_ascii_case(b"content-length") && !name.eq_ignore_ascii_case(b"host")
}

/// Removes hop-by-hop headers, and any that `Connection` names (see [`may_be_listed`]).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most heads carry none: one pass over the names (standard names compare without
    // hashing) is far cheaper than nine hashed removals that find nothing.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Names listed in Connection, other than the standard ones removed below; the Vec
    // allocates only if a peer lists a custom header.
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in tokens(value.as_bytes()) {
            if token.eq_ignore_ascii_case(b"close")
                || !may_be_listed(token)
                || HOP_BY_HOP
                    .iter()
                    .any(|h| token.eq_ignore_ascii_case(h.as_str().as_bytes()))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                listed.push(name);
            }
        }
    }
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

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

/// The bytes of a span's name and value in `head`.
pub fn span_bytes(head: &[u8], span: HeaderSpan) -> (&[u8], &[u8]) {
    let (name_at, name_len, value_at, value_len) = span;
    (
        &head[name_at as usize..(name_at + name_len) as usize],
        &head[value_at as usize..(value_at + value_len) as usize],
    )
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// One `Content-Length` line's value. A list of equal values (`5, 5`) is one length
/// (RFC 9110 §8.6); differing ones, signs, spaces inside or more than 19 digits are not.
pub fn parse_content_length(value: &[u8]) -> Result<u64, ProtocolError> {
    let mut result = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(ProtocolError("invalid content-length"));
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if result.is_some_and(|r| r != n) {
            return Err(ProtocolError("conflicting content-length"));
        }
        result = Some(n);
    }
    result.ok_or(ProtocolError("invalid content-length"))
}

/// Every `Content-Length` line of `headers` as one length: `Ok(None)` without any,
/// an error when they disagree or one is malformed.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProtocolError> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    let length = parse_content_length(first.as_bytes())?;
    // Repeated lines are allowed only with one value (RFC 9110 §8.6).
    for other in lengths {
        if parse_content_length(other.as_bytes())? != length {
            return Err(ProtocolError("conflicting content-length"));
        }
    }
    Ok(Some(length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(parse_content_length(b" 42 "), Ok(42));
        assert_eq!(parse_content_length(b"5, 5"), Ok(5));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Ok(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1x",
            b"1 2",
            b"5, 6",
            b"5,",
            b",5",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert!(
                parse_content_length(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), Ok(None));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        assert_eq!(content_length(&headers), Ok(Some(5)));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(content_length(&headers).is_err());
    }

    #[test]
    fn strips_standard_and_connection_listed_headers_but_never_framing_or_host() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret , close, Host, Content-Length"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        for name in HOP_BY_HOP.iter().skip(1) {
            headers.insert(name, HeaderValue::from_static("x"));
        }
        for name in ["x-secret", "x-other", "x-kept", "host", "content-length"] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host", "x-kept"]);
    }
}
