//! Header rewriting between client and upstream: hop-by-hop removal in both
//! directions, the forwarded headers, and graygate's own decision headers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Uri};
use http::{StatusCode, Version};

use super::ClientConnection;
use crate::h1::head::strip_hop_by_hop;
use crate::h1::request::ExtraHeaders;
use crate::routing::{Decision, PoolId};
use crate::snapshot::Snapshot;
use crate::upstream::Pool;

pub const X_GRAYGATE_POOL: HeaderName = HeaderName::from_static("x-graygate-pool");
pub const X_GRAYGATE_RULE: HeaderName = HeaderName::from_static("x-graygate-rule");
/// The pool the rules chose, on both sides, when another pool served the request.
pub const X_GRAYGATE_FALLBACK_FROM: HeaderName =
    HeaderName::from_static("x-graygate-fallback-from");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const GRAYGATE_PREFIX: &str = "x-graygate-";

/// Whether the client reached the gateway over HTTPS: on the TLS listener, or through a
/// trusted proxy that says so in `x-forwarded-proto`. A client's own word is not
/// enough: anyone can send the header.
pub fn is_https(headers: &HeaderMap, client: &ClientConnection, trusted: &[ipnet::IpNet]) -> bool {
    if client.scheme == "https" {
        return true;
    }
    let ip = client.remote.ip().to_canonical();
    // The last value, the one the trusted proxy added: one that appends keeps what
    // the client sent before it (`x-forwarded-proto: https, http`).
    let last = headers
        .get_all(X_FORWARDED_PROTO)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .map(<[u8]>::trim_ascii);
    trusted.iter().any(|net| net.contains(&ip))
        && last.is_some_and(|proto| proto.eq_ignore_ascii_case(b"https"))
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`; and whatever the
/// version, the host a request names (`Host`, or the target's authority) is a plain
/// `host[:port]`, with no user info, path or query that an upstream could read as
/// something else (`Host: good@evil`, `Host: evil/x?y`).
pub fn check_host<B>(request: &http::Request<B>) -> Result<(), &'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("400 bad request: more than one Host header\n");
    }
    if host.is_none() && request.version() == Version::HTTP_11 {
        return Err("400 bad request: an HTTP/1.1 request needs a Host header\n");
    }
    if host.is_some_and(|h| !is_host_and_port(h.as_bytes())) {
        return Err("400 bad request: the Host header is not host[:port]\n");
    }
    if request
        .uri()
        .authority()
        .is_some_and(|a| !is_host_and_port(a.as_str().as_bytes()))
    {
        return Err("400 bad request: the request target names user info\n");
    }
    Ok(())
}

/// The bytes of a reg-name (RFC 3986 §3.2.2): unreserved, pct-encoded and sub-delims.
/// Not a user's `@`, a path's `/`, a query's `?`, a fragment's `#`, spaces or controls.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// `host [ ":" port ]` of RFC 3986 §3.2.2: a reg-name, an IPv4 address or a bracketed
/// IP literal, then digits. A byte loop rather than `http::uri::Authority`, whose parse
/// copies the value and cost 400 instructions a request (callgrind).
fn is_host_and_port(text: &[u8]) -> bool {
    let port = match text.first() {
        Some(b'[') => match text.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &text[1..end];
                if literal.is_empty()
                    || !literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
                {
                    return false;
                }
                &text[end + 1..]
            }
            None => return false,
        },
        _ => {
            // One pass: reg-name bytes up to the first `:`.
            let mut end = 0;
            while end < text.len() && REG_NAME[usize::from(text[end])] {
                end += 1;
            }
            if end == 0 {
                return false;
            }
            &text[end..]
        }
    };
    match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// Makes an upstream answer's framing the gateway's own, whichever way it goes to the
/// client (the own HTTP/1.1 loop, hyper's HTTP/1.1, HTTP/2, TLS). Its `Content-Length`
/// lines are dropped: the client is told the length the body will deliver (hyper and
/// the own loop take it from the body's exact size, and a body never yields more than
/// its framing allowed). Only an answer to HEAD and a 304 keep theirs, since it
/// describes another answer's body: folded to one value, or dropped if the lines are
/// malformed or disagree (`5, 6`). `Transfer-Encoding` never reaches this far.
pub fn frame_for_client(headers: &mut HeaderMap, status: StatusCode, head_only: bool) {
    if !headers.contains_key(header::CONTENT_LENGTH) {
        return;
    }
    let described = (head_only || status == StatusCode::NOT_MODIFIED)
        .then(|| crate::h1::head::content_length(headers).ok().flatten())
        .flatten();
    headers.remove(header::CONTENT_LENGTH);
    if let Some(length) = described {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
}

/// Rewrites a client request head into the upstream request head, in place, and
/// returns the headers the gateway adds, to be written after the client's.
///
/// Most requests carry none of the headers the gateway sets, so the added ones go onto
/// the wire directly (see [`ExtraHeaders`]); a client-sent one is replaced or extended
/// in the map instead, as before.
pub fn to_upstream(
    head: &mut Parts,
    client: &ClientConnection,
    pool: &HeaderValue,
    rule: &HeaderValue,
) -> ExtraHeaders {
    let headers = &mut head.headers;
    strip_hop_by_hop(headers);
    let sent = Sent::scan(headers);
    if sent.graygate {
        drop_graygate_headers(headers);
    }
    if sent.underscore {
        drop_underscored_headers(headers);
    }
    let mut extra = ExtraHeaders::default();

    // The host the client asked for: the target's authority when it has one (HTTP/2's
    // :authority, or an absolute-form HTTP/1.1 target, which RFC 9112 §3.2.2 says
    // overrides Host), else the Host header.
    let host = match head.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str())
            .ok()
            .inspect(|host| {
                headers.insert(header::HOST, host.clone());
            }),
        None => headers.get(header::HOST).cloned(),
    };
    if let Some(host) = host {
        if sent.forwarded_host {
            headers.remove(X_FORWARDED_HOST);
        }
        extra.push(X_FORWARDED_HOST, host);
    }
    if sent.forwarded_for {
        append_forwarded_for(headers, &client.remote_ip);
    } else {
        extra.push(X_FORWARDED_FOR, client.remote_ip.clone());
    }
    if sent.forwarded_proto {
        headers.remove(X_FORWARDED_PROTO);
    }
    extra.push(X_FORWARDED_PROTO, client.scheme.clone());
    if sent.via {
        append_via(headers, head.version);
    } else {
        extra.push(header::VIA, HeaderValue::from_static(via(head.version)));
    }
    extra.push(X_GRAYGATE_POOL, pool.clone());
    extra.push(X_GRAYGATE_RULE, rule.clone());

    // Upstreams get the origin form (`/path?query`) over HTTP/1.1, whatever the client
    // sent; `OPTIONS *` keeps its asterisk.
    let target = match head.uri.path_and_query() {
        Some(pq) => pq.clone(),
        None => PathAndQuery::from_static("/"),
    };
    head.uri = Uri::from(target);
    head.version = Version::HTTP_11;
    extra
}

/// Which of the headers the gateway sets the client sent itself: one pass over the
/// names instead of a hashed lookup for each.
#[derive(Debug, Default)]
struct Sent {
    forwarded_host: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    via: bool,
    graygate: bool,
    /// A name with `_`, such as `X_User_Id` beside `X-User-Id`.
    underscore: bool,
}

impl Sent {
    fn scan(headers: &HeaderMap) -> Self {
        let mut sent = Sent::default();
        for name in headers.keys() {
            if name == header::VIA {
                sent.via = true;
            } else if name == X_FORWARDED_FOR {
                sent.forwarded_for = true;
            } else if name == X_FORWARDED_HOST {
                sent.forwarded_host = true;
            } else if name == X_FORWARDED_PROTO {
                sent.forwarded_proto = true;
            } else if name.as_str().starts_with(GRAYGATE_PREFIX) {
                sent.graygate = true;
            }
            // A byte loop: `str::contains` goes through memchr, slower on names this short.
            if name.as_str().bytes().any(|b| b == b'_') {
                sent.underscore = true;
            }
        }
        sent
    }
}

/// Header names with an underscore are dropped, as nginx does by default
/// (`underscores_in_headers off`): many upstreams (CGI, WSGI, PHP) read `X_User_Id`
/// and `X-User-Id` as one variable, so a client could pass a value the gateway never
/// looked at, beside the one it did.
fn drop_underscored_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// An HTTP/1.0 client may send no Host; the upstream then gets the endpoint's.
pub fn ensure_host(headers: &mut HeaderMap, endpoint: &Authority) {
    if !headers.contains_key(header::HOST) {
        if let Ok(host) = HeaderValue::from_str(endpoint.as_str()) {
            headers.insert(header::HOST, host);
        }
    }
}

/// A client must not be able to tell the upstream which pool or rule it came through.
fn drop_graygate_headers(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|name| name.as_str().starts_with(GRAYGATE_PREFIX))
    {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(GRAYGATE_PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// `x-forwarded-for: <what the client sent>, <client ip>`. Repeated headers are
/// joined first, as nginx's `$proxy_add_x_forwarded_for` does.
fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    let joined = join_with(headers, &X_FORWARDED_FOR, ip.as_bytes());
    headers.insert(X_FORWARDED_FOR, joined.unwrap_or_else(|| ip.clone()));
}

/// This hop's `Via` entry, by the protocol version the client used.
fn via(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9 graygate",
        Version::HTTP_10 => "1.0 graygate",
        Version::HTTP_2 => "2 graygate",
        Version::HTTP_3 => "3 graygate",
        _ => "1.1 graygate",
    }
}

fn append_via(headers: &mut HeaderMap, version: Version) {
    let ours = via(version);
    let joined = join_with(headers, &header::VIA, ours.as_bytes());
    headers.insert(
        header::VIA,
        joined.unwrap_or(HeaderValue::from_static(ours)),
    );
}

/// `<existing values joined by ", ">, <last>`, or `None` when the header is absent.
fn join_with(headers: &HeaderMap, name: &HeaderName, last: &[u8]) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut joined = Vec::with_capacity(64);
    for value in values {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(last);
    HeaderValue::from_bytes(&joined).ok()
}

/// `x-graygate-pool` (the pool that served) and `x-graygate-rule` on the response to
/// the client, and `x-graygate-fallback-from` after a fallback.
pub fn add_decision(
    headers: &mut HeaderMap,
    snapshot: &Snapshot,
    decision: &Decision,
    fallback_from: Option<PoolId>,
) {
    headers.insert(X_GRAYGATE_POOL, snapshot.pool(decision).name_header.clone());
    headers.insert(X_GRAYGATE_RULE, snapshot.rule_header(decision).clone());
    if let Some(from) = fallback_from {
        let from = snapshot.pools[from.0].name_header.clone();
        headers.insert(X_GRAYGATE_FALLBACK_FROM, from);
    }
}

/// The upstream request after a fallback: `x-graygate-pool` names the pool that
/// serves it, and `x-graygate-fallback-from` the one the rules chose. The second goes
/// into the map (a client's own was dropped): a fallback is rare, and `extra` is sized
/// for every request.
pub fn fell_back(extra: &mut ExtraHeaders, headers: &mut HeaderMap, serving: &Pool, from: &Pool) {
    extra.replace(X_GRAYGATE_POOL, serving.name_header.clone());
    headers.insert(X_GRAYGATE_FALLBACK_FROM, from.name_header.clone());
}

/// A request id for a request that came without one: 128 random bits in the UUID
/// form (version 4).
pub fn mint_request_id() -> HeaderValue {
    let bits = fastrand::u128(..) & !(0xf000 << 64) & !(0xc << 60) | (0x4000 << 64) | (0x8 << 60);
    let hex = format!("{bits:032x}");
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    HeaderValue::from_str(&id).expect("hex digits and dashes are a header value")
}

/// The declared body length, if any. hyper has already rejected conflicting or
/// malformed values.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_the_trusted_proxys_last_word() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let behind = ClientConnection::new("10.1.2.3:5000".parse().unwrap(), false);
        let direct = ClientConnection::new("192.0.2.1:5000".parse().unwrap(), false);
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(X_FORWARDED_PROTO, HeaderValue::from_static(v));
            }
            headers
        };
        assert!(is_https(&with(&["https"]), &behind, &trusted));
        assert!(is_https(&with(&["http, https"]), &behind, &trusted));
        assert!(is_https(&with(&["http", "HTTPS "]), &behind, &trusted));
        // What the client sent comes first; the proxy appended what it saw.
        assert!(!is_https(&with(&["https, http"]), &behind, &trusted));
        assert!(!is_https(&with(&["https", "http"]), &behind, &trusted));
        assert!(!is_https(&with(&[]), &behind, &trusted));
        assert!(!is_https(&with(&["https"]), &direct, &trusted));
        let tls = ClientConnection::new("192.0.2.1:5000".parse().unwrap(), true);
        assert!(is_https(&with(&[]), &tls, &[]));
    }

    #[test]
    fn request_ids_are_uuids_of_version_4() {
        let a = mint_request_id();
        let b = mint_request_id();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{text}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{text}");
    }

    #[test]
    fn host_is_host_and_port_only() {
        for good in [
            "a",
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
            "a_b.local",
            // an empty port, which RFC 3986 allows
            "h:",
        ] {
            assert!(is_host_and_port(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "good@evil",
            "user:pw@evil:99",
            "evil/x?y",
            "evil?x",
            "evil#x",
            "a b",
            "a:80x",
            "a:123456",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:8a",
            "a\tb",
            "é.example",
            // zone ids (RFC 6874) are not taken
            "[fe80::1%25eth0]",
        ] {
            assert!(!is_host_and_port(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn strips_standard_and_connection_listed_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret , close"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        for name in [
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-connection",
            "x-secret",
            "x-other",
            "x-kept",
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    fn upstream_head(request: http::Request<()>) -> (Parts, Vec<(String, String)>) {
        let client = ClientConnection::new("10.0.0.9:5000".parse().unwrap(), true);
        let (mut head, ()) = request.into_parts();
        let pool = HeaderValue::from_static("canary");
        let rule = HeaderValue::from_static("r1");
        let extra = to_upstream(&mut head, &client, &pool, &rule);
        let extra = extra
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        (head, extra)
    }

    #[test]
    fn added_headers_go_on_the_wire_when_the_client_sent_none() {
        let request = http::Request::get("/p?q=1")
            .header("host", "shop.example")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let (head, extra) = upstream_head(request);
        let names: Vec<&str> = head.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["host"],
            "the client's map only loses hop-by-hop headers"
        );
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            extra,
            pairs(&[
                ("x-forwarded-host", "shop.example"),
                ("x-forwarded-for", "10.0.0.9"),
                ("x-forwarded-proto", "https"),
                ("via", "1.1 graygate"),
                ("x-graygate-pool", "canary"),
                ("x-graygate-rule", "r1"),
            ])
        );
        assert_eq!(head.uri, "/p?q=1");
    }

    #[test]
    fn client_sent_forwarding_headers_are_extended_or_replaced_once() {
        let request = http::Request::get("http://target.example/x")
            .header("host", "ignored.example")
            .header("x-forwarded-for", "1.2.3.4")
            .header("via", "1.0 edge")
            .header("x-forwarded-host", "spoofed")
            .header("x-forwarded-proto", "gopher")
            .header("x-graygate-pool", "blue")
            .body(())
            .unwrap();
        let (head, extra) = upstream_head(request);
        let h = &head.headers;
        assert_eq!(h["host"], "target.example");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["via"], "1.0 edge, 1.1 graygate");
        for gone in ["x-forwarded-host", "x-forwarded-proto", "x-graygate-pool"] {
            assert!(h.get(gone).is_none(), "{gone} left in the map");
        }
        let names: Vec<&str> = extra.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-graygate-pool",
                "x-graygate-rule"
            ]
        );
        assert_eq!(extra[0].1, "target.example");
        assert_eq!(extra[1].1, "https");
        // Every header reaches the upstream exactly once.
        for name in [
            "x-forwarded-for",
            "via",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            let total =
                h.get_all(name).iter().count() + names.iter().filter(|n| **n == name).count();
            assert_eq!(total, 1, "{name}");
        }
    }

    #[test]
    fn forwarded_for_appends_across_repeated_headers() {
        let ip = HeaderValue::from_static("10.1.1.1");
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, &ip);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.1.1.1");
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("5.6.7.8, 9.9.9.9"),
        );
        append_forwarded_for(&mut headers, &ip);
        assert_eq!(headers.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(
            headers[&X_FORWARDED_FOR],
            "1.2.3.4, 5.6.7.8, 9.9.9.9, 10.1.1.1"
        );
    }

    #[test]
    fn graygate_headers_from_clients_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-graygate-pool"),
            HeaderValue::from_static("canary"),
        );
        headers.insert(
            HeaderName::from_static("x-graygate-anything"),
            HeaderValue::from_static("1"),
        );
        headers.insert(
            HeaderName::from_static("x-graygatex"),
            HeaderValue::from_static("kept"),
        );
        drop_graygate_headers(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-graygatex"]);
    }
}
