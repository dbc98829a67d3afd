//! The gateway's own HTTP/1.1 loop for plain connections (`src/server/http1.rs`), end
//! to end and byte for byte: pipelining, the hand-off to hyper in the middle of a
//! connection (bodies, more than 64 headers, HTTP/1.0), the response framing the loop
//! writes itself (content-length, chunked, `connection: close`, `date`, nothing after
//! a HEAD), heads that arrive in pieces, `header_read_timeout` on an idle or a stalled
//! connection, and a graceful shutdown.
//!
//! The client is a raw TCP socket ([`RawConn`]) whose every response is parsed strictly
//! here, so a wrong length, a missing chunked terminator or a stray byte between two
//! responses fails the test. The upstream is a raw-TCP server ([`Scripted`]) that
//! writes exact bytes and records every request as it read it off the wire. Every test
//! starts its own gateway (killed on drop) and bounds every wait.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use common::raw::*;
use common::*;
use tokio::io::AsyncWriteExt;

/// Pause between the pieces a client writes, and between the pieces of the upstream's
/// [`Reply::Pieces`] here: long enough for each to arrive in a read of its own.
const PIECE_GAP: Duration = Duration::from_millis(40);

// ---------------------------------------------------------------------------------
// A strict raw-TCP client
// ---------------------------------------------------------------------------------

/// How a response's body was delimited on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    /// No body: a response to HEAD, a 1xx, 204 or 304.
    Empty,
    Length(usize),
    /// Chunked, with the size of every chunk (the final zero included).
    Chunked(Vec<usize>),
    /// Neither length nor chunked: the body ran to the close.
    UntilClose,
}

/// A response exactly as it arrived.
#[derive(Debug)]
struct Wire {
    /// The head, verbatim, blank line included.
    head: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: String,
    status: u16,
    /// Names lowercased, values trimmed, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
}

impl Wire {
    /// Every value of header `name` (lowercase).
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of header `name`; panics if it is there more than once.
    fn header(&self, name: &str) -> Option<&str> {
        let values = self.values(name);
        assert!(values.len() <= 1, "{name} repeated in {:?}", self.head);
        values.first().copied()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a 200 whose body is `body`.
    fn assert_ok(&self, body: &str) {
        assert_eq!(
            (self.status, self.text().as_str()),
            (200, body),
            "head: {:?}",
            self.head
        );
    }
}

/// The client side: writes raw bytes and parses responses strictly.
impl RawConn {
    async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// Writes `pieces` one by one with [`PIECE_GAP`] between them.
    async fn send_pieces(&mut self, pieces: &[&[u8]]) {
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(PIECE_GAP).await;
            }
            self.send(piece).await;
        }
    }

    /// The next response, with a body as its head declares.
    async fn response(&mut self) -> Wire {
        self.next_response(false).await
    }

    /// The next response, read as the answer to a HEAD: no body bytes are taken.
    async fn head_response(&mut self) -> Wire {
        self.next_response(true).await
    }

    /// Writes `bytes` and reads the response.
    async fn request(&mut self, bytes: &[u8]) -> Wire {
        self.send(bytes).await;
        self.response().await
    }

    /// Writes `GET path` and asserts a 200 whose body is `body`.
    async fn get_ok(&mut self, path: &str, body: &str) {
        self.request(&get(path)).await.assert_ok(body);
    }

    async fn next_response(&mut self, head_only: bool) -> Wire {
        match tokio::time::timeout(STEP, self.read_response(head_only)).await {
            Ok(Ok(wire)) => wire,
            Ok(Err(err)) => panic!(
                "bad response: {err}; bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(_) => panic!(
                "no complete response within {STEP:?}; bytes so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    async fn read_response(&mut self, head_only: bool) -> Result<Wire, String> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                return Err("the connection closed before a whole head".into());
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|e| format!("head not UTF-8: {e}"))?
            .to_string();
        let mut lines = head[..head.len() - 4].split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| (s.len() == 3).then(|| s.parse().ok()).flatten())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(format!("bad header name in {line:?}"));
            }
            if value.contains('\n') || value.contains('\r') {
                return Err(format!("bare CR or LF in {line:?}"));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let values = |name: &str| -> Vec<&str> {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let lengths = values("content-length");
        let codings = values("transfer-encoding");
        let bodiless = head_only || (100..200).contains(&status) || status == 204 || status == 304;
        let mut at = head_end;
        let (framing, body) = if bodiless {
            (Framing::Empty, Vec::new())
        } else if !codings.is_empty() {
            if codings != ["chunked"] || !lengths.is_empty() {
                return Err(format!(
                    "framing: transfer-encoding {codings:?}, content-length {lengths:?}"
                ));
            }
            loop {
                match decode_chunked(&self.buf[at..])? {
                    Some(decoded) => {
                        at += decoded.used;
                        break (Framing::Chunked(decoded.sizes), decoded.data);
                    }
                    None if !self.fill().await => {
                        return Err("the connection closed inside a chunked body".into())
                    }
                    None => {}
                }
            }
        } else if let Some(first) = lengths.first() {
            let length: usize = first
                .parse()
                .map_err(|_| format!("bad content-length {first:?}"))?;
            if lengths.len() > 1 {
                return Err(format!("content-length repeated: {lengths:?}"));
            }
            while self.buf.len() < at + length {
                if !self.fill().await {
                    return Err(format!(
                        "the connection closed after {} of {length} body bytes",
                        self.buf.len() - at
                    ));
                }
            }
            let body = self.buf[at..at + length].to_vec();
            at += length;
            (Framing::Length(length), body)
        } else {
            while self.fill().await {}
            let body = self.buf[at..].to_vec();
            at = self.buf.len();
            (Framing::UntilClose, body)
        };
        self.buf.drain(..at);
        Ok(Wire {
            head,
            version,
            status,
            headers,
            body,
            framing,
        })
    }

    /// Asserts the gateway closes the connection within `limit`, sending nothing more.
    /// Returns how long the close took.
    async fn assert_closed_within(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let closed = tokio::time::timeout(limit, async { while self.fill().await {} }).await;
        assert!(
            closed.is_ok(),
            "the connection was still open {limit:?} later; bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        assert!(
            self.buf.is_empty(),
            "bytes before the close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        start.elapsed()
    }

    /// Asserts nothing is pending: no bytes left over from the responses read, and
    /// none arriving for a short while, and the connection still open.
    async fn assert_quiet(&mut self) {
        let arrived = tokio::time::timeout(Duration::from_millis(150), self.fill()).await;
        assert!(
            arrived.is_err() && self.buf.is_empty(),
            "expected nothing more; eof: {}, bytes: {:?}",
            self.eof,
            String::from_utf8_lossy(&self.buf)
        );
    }
}

// ---------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------

/// A gateway with one pool, `blue`, whose single endpoint is `upstream`, and `limits`
/// as the body of its `[limits]` table.
fn gateway(upstream: SocketAddr, limits: &str) -> Gateway {
    // One worker: its idle upstream connections are the only ones, so counts are exact.
    Gateway::start(&one_pool_config(upstream, 1, limits))
}

/// An upstream that answers each request with its path ([`echo_path`]), and a
/// [`gateway`] in front of it with `limits`.
async fn echo_gateway(limits: &str) -> (Scripted, Gateway) {
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, limits);
    (up, gw)
}

/// `200 OK` whose body is the request's method and path, then `what`.
fn answer_with(request: &Received, what: String) -> Reply {
    Reply::Send(ok(&format!(
        "{} {} {what}",
        request.method(),
        request.path()
    )))
}

/// `GET path` with a Host header, as one request.
fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------
// 1. Pipelining
// ---------------------------------------------------------------------------------

/// Three GETs in one write get three complete responses, in order, on the one
/// connection, with nothing between or after them; the connection then serves a
/// fourth request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_in_one_write_are_answered_in_order_on_one_connection() {
    let (up, gw) = echo_gateway("").await;
    let mut client = RawConn::connect(gw.addr).await;
    client
        .send(&[get("/one"), get("/two?x=2"), get("/three")].concat())
        .await;
    for path in ["/one", "/two?x=2", "/three"] {
        let answer = client.response().await;
        answer.assert_ok(&format!("answer to {path}"));
        assert_eq!(answer.version, "HTTP/1.1");
        assert_eq!(answer.framing, Framing::Length(answer.body.len()));
        assert_eq!(answer.header("connection"), None, "{:?}", answer.head);
    }
    client.assert_quiet().await;
    client.get_ok("/four", "answer to /four").await;
    assert_eq!(up.paths(), ["/one", "/two?x=2", "/three", "/four"]);
}

// ---------------------------------------------------------------------------------
// 2. Hand-off to hyper in the middle of a connection
// ---------------------------------------------------------------------------------

/// A bodiless GET (the gateway's own loop), a POST with a content-length body (hyper
/// from here on), then another GET, on one connection: all three are answered in
/// order and the upstream gets the POST body intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_a_body_after_a_get_is_handed_over_with_its_body_intact() {
    let up =
        Scripted::start(|r: &Received| answer_with(r, format!("got {} bytes", r.data().len())))
            .await;
    let gw = gateway(up.addr, "");
    let body = pseudo_text(3000, 7);
    let post = [
        format!(
            "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body.clone(),
    ]
    .concat();

    let mut client = RawConn::connect(gw.addr).await;
    client.get_ok("/before", "GET /before got 0 bytes").await;
    client
        .request(&post)
        .await
        .assert_ok("POST /upload got 3000 bytes");
    client.get_ok("/after", "GET /after got 0 bytes").await;
    client.assert_quiet().await;

    let seen = up.received();
    let methods: Vec<_> = seen
        .iter()
        .map(|r| format!("{} {}", r.method(), r.path()))
        .collect();
    assert_eq!(methods, ["GET /before", "POST /upload", "GET /after"]);
    assert_eq!(seen[1].data(), body, "the POST body the upstream got");
    assert_eq!(seen[1].header_values("content-type"), ["text/plain"]);

    // The same three in one write: the hand-off takes the POST and the GET behind it
    // out of the loop's buffer.
    let mut client = RawConn::connect(gw.addr).await;
    client
        .send(&[get("/p-before"), post.clone(), get("/p-after")].concat())
        .await;
    client
        .response()
        .await
        .assert_ok("GET /p-before got 0 bytes");
    client
        .response()
        .await
        .assert_ok("POST /upload got 3000 bytes");
    client
        .response()
        .await
        .assert_ok("GET /p-after got 0 bytes");
    client.assert_quiet().await;
    let seen = up.received();
    assert_eq!(seen.len(), 6, "{:?}", up.paths());
    assert_eq!(seen[4].data(), body, "the pipelined POST body");
}

/// A chunked POST after a GET: the chunked body reaches the upstream whole, and a GET
/// after it on the same connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_post_after_a_get_is_handed_over_with_its_body_intact() {
    let up = Scripted::start(|r: &Received| {
        answer_with(r, format!("body {:?}", String::from_utf8_lossy(&r.data())))
    })
    .await;
    let gw = gateway(up.addr, "");
    let mut client = RawConn::connect(gw.addr).await;
    client.get_ok("/first", "GET /first body \"\"").await;
    // The head and the chunks in separate writes.
    client
        .send_pieces(&[
            b"POST /chunks HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"7\r\n, world\r\n",
            b"0\r\n\r\n",
        ])
        .await;
    client
        .response()
        .await
        .assert_ok("POST /chunks body \"hello, world\"");
    client.get_ok("/last", "GET /last body \"\"").await;
    let seen = up.received();
    assert_eq!(seen.len(), 3, "{:?}", up.paths());
    assert_eq!(seen[1].data(), b"hello, world");
}

// ---------------------------------------------------------------------------------
// 3. Connection: close
// ---------------------------------------------------------------------------------

/// `Connection: close` on a GET: the response says `connection: close` and the gateway
/// closes the socket after it. A request pipelined behind it is not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_gets_connection_close_and_the_socket_is_closed() {
    let (up, gw) = echo_gateway("").await;
    let mut client = RawConn::connect(gw.addr).await;
    client.get_ok("/keep", "answer to /keep").await;
    let answer = client
        .request(b"GET /bye HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await;
    answer.assert_ok("answer to /bye");
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{:?}",
        answer.head
    );
    client.assert_closed_within(Duration::from_secs(2)).await;

    // With a second request right behind it in the same write.
    let mut client = RawConn::connect(gw.addr).await;
    client
        .send(
            &[
                b"GET /last HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, Close\r\n\r\n"
                    .to_vec(),
                get("/never"),
            ]
            .concat(),
        )
        .await;
    let answer = client.response().await;
    answer.assert_ok("answer to /last");
    assert_eq!(answer.header("connection"), Some("close"));
    client.assert_closed_within(Duration::from_secs(2)).await;
    assert_eq!(up.paths(), ["/keep", "/bye", "/last"]);
}

// ---------------------------------------------------------------------------------
// 4-5. Bodies of unknown length
// ---------------------------------------------------------------------------------

/// An upstream's chunked response, several chunks in separate writes (one of them
/// 40,000 bytes, over the loop's 16 KiB coalescing size), reaches the client as strict chunked
/// framing (one `transfer-encoding: chunked`, no content-length, the `0\r\n\r\n`
/// terminator) that decodes to the exact body; the connection then serves another
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upstream_body_reaches_the_client_as_valid_chunked_framing() {
    let big = pseudo_text(40_000, 3);
    let expected = [&b"Wikipedia in\r\n\r\nchunks."[..], &big].concat();
    let big_for_upstream = big.clone();
    let up = Scripted::with_piece_gap(PIECE_GAP, move |r: &Received| {
        if r.path() != "/chunked" {
            return echo_path(r);
        }
        let mut last = format!("{:x}\r\n", big_for_upstream.len()).into_bytes();
        last.extend_from_slice(&big_for_upstream);
        last.extend_from_slice(b"\r\n0\r\nx-trailer: t\r\n\r\n");
        Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n4\r\nWiki\r\n"
                .to_vec(),
            b"5\r\npedia\r\n".to_vec(),
            b"E\r\n in\r\n\r\nchunks.\r\n".to_vec(),
            last,
        ])
    })
    .await;
    let gw = gateway(up.addr, "");
    let mut client = RawConn::connect(gw.addr).await;
    let answer = client.request(&get("/chunked")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.values("transfer-encoding"), ["chunked"]);
    assert!(answer.values("content-length").is_empty());
    assert!(
        matches!(&answer.framing, Framing::Chunked(sizes) if sizes.last() == Some(&0)),
        "{:?}",
        answer.framing
    );
    assert!(
        answer.body == expected,
        "body: {} bytes, expected {}",
        answer.body.len(),
        expected.len()
    );
    client.assert_quiet().await;
    client.get_ok("/next", "answer to /next").await;
    assert_eq!(up.paths(), ["/chunked", "/next"]);
}

/// An HTTP/1.1 upstream response with neither content-length nor chunked, delimited by
/// the upstream's close, reaches the client intact (chunked, as its length was not
/// known), and the client connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_upstream_body_reaches_the_client_chunked_and_the_connection_stays() {
    let body = "delimited by the close of the upstream connection\n".repeat(2000);
    let response = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n{body}");
    let up = Scripted::start(move |r: &Received| {
        if r.path() == "/until-close" {
            Reply::SendThenClose(response.clone().into_bytes())
        } else {
            echo_path(r)
        }
    })
    .await;
    let gw = gateway(up.addr, "");
    let mut client = RawConn::connect(gw.addr).await;
    let answer = client.request(&get("/until-close")).await;
    assert_eq!(answer.status, 200);
    assert!(
        matches!(answer.framing, Framing::Chunked(_)),
        "{:?}",
        answer.head
    );
    assert!(
        answer.body == body.as_bytes(),
        "body: {} bytes, expected {}",
        answer.body.len(),
        body.len()
    );
    assert_eq!(answer.header("connection"), None);
    client.assert_quiet().await;
    client.get_ok("/next", "answer to /next").await;
    assert_eq!(up.paths(), ["/until-close", "/next"]);
    assert_eq!(up.connections(), 2);
    assert_eq!(
        up.received()[1].conn,
        2,
        "the request after the close-delimited body went on the closed connection"
    );
}

// ---------------------------------------------------------------------------------
// 6. HEAD
// ---------------------------------------------------------------------------------

/// A HEAD is answered with the upstream's content-length and no body bytes, and a GET
/// after it on the same connection gets its own response: sequentially, and with the
/// HEAD and the GET in one write. A HEAD whose upstream answer says chunked gets no
/// chunked terminator either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_content_length_and_no_body_and_the_connection_stays_in_sync() {
    let up = Scripted::start(|r: &Received| match (r.method(), r.path()) {
        ("HEAD", "/chunky") => Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec(),
        ),
        ("HEAD", _) => Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n".to_vec(),
        ),
        _ => Reply::Send(ok(&format!("GET body of {}", r.path()))),
    })
    .await;
    let gw = gateway(up.addr, "");
    let head = |path: &str| format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes();

    let mut client = RawConn::connect(gw.addr).await;
    client.send(&head("/resource")).await;
    let answer = client.head_response().await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-length"),
        Some("5"),
        "{:?}",
        answer.head
    );
    assert!(answer.values("transfer-encoding").is_empty());
    client.assert_quiet().await;
    client.get_ok("/resource", "GET body of /resource").await;

    // HEAD then GET in one write: the GET's response must follow the HEAD's head at once.
    client
        .send(&[head("/pipelined"), get("/pipelined")].concat())
        .await;
    let answer = client.head_response().await;
    assert_eq!(answer.header("content-length"), Some("5"));
    client.response().await.assert_ok("GET body of /pipelined");

    client.send(&head("/chunky")).await;
    let answer = client.head_response().await;
    assert_eq!(answer.status, 200);
    client.assert_quiet().await;
    client.get_ok("/chunky", "GET body of /chunky").await;
    let methods: Vec<_> = up
        .received()
        .iter()
        .map(|r| format!("{} {}", r.method(), r.path()))
        .collect();
    assert_eq!(
        methods,
        [
            "HEAD /resource",
            "GET /resource",
            "HEAD /pipelined",
            "GET /pipelined",
            "HEAD /chunky",
            "GET /chunky"
        ]
    );
}

// ---------------------------------------------------------------------------------
// 7. Gateway-made answers
// ---------------------------------------------------------------------------------

/// A 502 for a dead upstream carries a valid, current `date`, a content-length equal
/// to its body's size and no transfer-encoding, and the connection serves the next
/// request (another 502) the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_made_502_has_a_date_and_an_exact_length_and_the_connection_stays() {
    let gw = gateway(dead_address().await, "");
    let mut client = RawConn::connect(gw.addr).await;
    for path in ["/first", "/second", "/third"] {
        let started = Instant::now();
        let answer = client.request(&get(path)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(answer.status, 502, "{:?}", answer.head);
        assert!(answer.head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        let length = answer.header("content-length").expect("a content-length");
        assert_eq!(length, answer.body.len().to_string());
        assert!(!answer.body.is_empty());
        assert!(answer.values("transfer-encoding").is_empty());
        let date = answer.header("date").expect("a date header");
        let date = httpdate::parse_http_date(date).expect("an HTTP date");
        let skew = match date.duration_since(SystemTime::now()) {
            Ok(ahead) => ahead,
            Err(behind) => behind.duration(),
        };
        assert!(skew < Duration::from_secs(60), "date off by {skew:?}");
        assert_eq!(answer.header("connection"), None);
    }
    client.assert_quiet().await;
}

// ---------------------------------------------------------------------------------
// 8. A head in pieces
// ---------------------------------------------------------------------------------

/// A head that arrives in several writes with pauses, split inside the method, the
/// target, a header and between CR and LF, is served; so is a second one split the
/// same way on the same keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_split_across_writes_with_pauses_is_served() {
    let (up, gw) = echo_gateway("header_read_timeout = \"5s\"").await;
    let mut client = RawConn::connect(gw.addr).await;
    for n in 1..=2 {
        let target = format!("lit?n={n} HTTP/1.1\r");
        client
            .send_pieces(&[
                b"GE",
                b"T /sp",
                target.as_bytes(),
                b"\nHost: split.example\r\nX-Pie",
                b"ce: one",
                b"\r\n\r",
                b"\n",
            ])
            .await;
        client
            .response()
            .await
            .assert_ok(&format!("answer to /split?n={n}"));
    }
    client.assert_quiet().await;
    let seen = up.received();
    assert_eq!(up.paths(), ["/split?n=1", "/split?n=2"]);
    for r in &seen {
        assert_eq!(r.header_values("x-piece"), ["one"]);
        assert_eq!(r.header_values("host"), ["split.example"]);
    }
}

// ---------------------------------------------------------------------------------
// 9. More than 64 headers
// ---------------------------------------------------------------------------------

/// A GET with 80 small headers (more than the loop's 64, well under max_header_bytes)
/// is served by hyper, and the upstream sees every one of them with its value, in
/// order; the connection then serves another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_more_than_64_headers_is_served_with_every_header() {
    let (up, gw) = echo_gateway("").await;
    let mut client = RawConn::connect(gw.addr).await;
    client.get_ok("/few", "answer to /few").await;
    let many: String = (0..80)
        .map(|i| format!("X-H{i:02}: value-{i}-{}\r\n", "v".repeat(i % 7)))
        .collect();
    let request = format!("GET /many HTTP/1.1\r\nHost: test\r\n{many}\r\n");
    client
        .request(request.as_bytes())
        .await
        .assert_ok("answer to /many");
    client.get_ok("/after", "answer to /after").await;
    let seen = up.received();
    assert_eq!(up.paths(), ["/few", "/many", "/after"]);
    let forwarded: Vec<(String, String)> = seen[1]
        .head
        .split("\r\n")
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            let n = n.to_ascii_lowercase();
            n.starts_with("x-h").then(|| (n, v.trim().to_string()))
        })
        .collect();
    let expected: Vec<(String, String)> = (0..80)
        .map(|i| {
            (
                format!("x-h{i:02}"),
                format!("value-{i}-{}", "v".repeat(i % 7)),
            )
        })
        .collect();
    assert_eq!(forwarded, expected);
}

// ---------------------------------------------------------------------------------
// 10. HTTP/1.0
// ---------------------------------------------------------------------------------

/// An HTTP/1.0 request is answered, and the connection is closed after it; with
/// `Connection: keep-alive` it stays open for the next request. An HTTP/1.0 request
/// after an HTTP/1.1 one on the same connection is answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_is_answered_and_closed_unless_it_asks_for_keep_alive() {
    let (up, gw) = echo_gateway("").await;

    let mut client = RawConn::connect(gw.addr).await;
    let answer = client
        .request(b"GET /old HTTP/1.0\r\nHost: test\r\n\r\n")
        .await;
    answer.assert_ok("answer to /old");
    assert_eq!(answer.version, "HTTP/1.0", "{:?}", answer.head);
    assert_eq!(answer.framing, Framing::Length(answer.body.len()));
    client.assert_closed_within(Duration::from_secs(2)).await;

    let mut client = RawConn::connect(gw.addr).await;
    for path in ["/ka1", "/ka2"] {
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n");
        let answer = client.request(request.as_bytes()).await;
        answer.assert_ok(&format!("answer to {path}"));
        assert_eq!(
            answer.header("connection").map(str::to_ascii_lowercase),
            Some("keep-alive".to_string()),
            "{:?}",
            answer.head
        );
    }
    client.assert_quiet().await;
    drop(client);

    let mut client = RawConn::connect(gw.addr).await;
    client.get_ok("/new", "answer to /new").await;
    client
        .request(b"GET /old-after-new HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .assert_ok("answer to /old-after-new");
    client.assert_closed_within(Duration::from_secs(2)).await;
    assert_eq!(
        up.paths(),
        ["/old", "/ka1", "/ka2", "/new", "/old-after-new"]
    );
}

// ---------------------------------------------------------------------------------
// 11. Many requests on one connection
// ---------------------------------------------------------------------------------

/// 200 sequential requests on one keep-alive connection, with varying methods, paths
/// and header sizes (some heads larger than the loop's 4 KiB read), answered in turn
/// with content-length and chunked bodies: the upstream sees exactly one request per
/// client request, each with its own path and header, and each response carries its
/// own body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sequential_requests_each_reach_the_upstream_once_with_their_own_answer() {
    const N: usize = 200;
    let up = Scripted::start(|r: &Received| {
        let value = r.header_values("x-val").join("|");
        let body = format!("{} {} {}", r.method(), r.path(), value);
        let n: usize = r
            .path()
            .rsplit_once("n=")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        if n % 3 == 0 {
            let (a, b) = body.split_at(body.len() / 2);
            Reply::Send(
                format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                )
                .into_bytes(),
            )
        } else {
            Reply::Send(ok(&body))
        }
    })
    .await;
    let gw = gateway(up.addr, "");
    let mut client = RawConn::connect(gw.addr).await;
    let methods = ["GET", "GET", "DELETE", "OPTIONS"];
    let mut expected = Vec::new();
    for i in 0..N {
        let method = methods[i % methods.len()];
        let path = format!("/seq/{i}/{}?n={i}", "p".repeat(i % 37));
        let text = pseudo_text((i * 53) % 6000, i as u64 + 1);
        let value = format!("{i}-{}", String::from_utf8(text).unwrap());
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nX-Val: {value}\r\nAccept: */*\r\n\r\n"
        );
        let answer = client.request(request.as_bytes()).await;
        let want = format!("{method} {path} {value}");
        assert_eq!(answer.status, 200, "request {i}: {:?}", answer.head);
        assert!(
            answer.text() == want,
            "request {i}: got {:.80?}, expected {:.80?}",
            answer.text(),
            want
        );
        if i % 3 == 0 {
            assert!(matches!(answer.framing, Framing::Chunked(_)), "request {i}");
        }
        expected.push(want);
    }
    client.assert_quiet().await;
    let seen = up.received();
    assert_eq!(seen.len(), N, "requests the upstream saw");
    for (i, (r, want)) in seen.iter().zip(&expected).enumerate() {
        let got = format!(
            "{} {} {}",
            r.method(),
            r.path(),
            r.header_values("x-val").join("|")
        );
        assert!(got == *want, "upstream request {i}: {got:.80?}");
        assert!(r.data().is_empty(), "upstream request {i} had a body");
    }
}

// ---------------------------------------------------------------------------------
// header_read_timeout and shutdown
// ---------------------------------------------------------------------------------

/// After a served request, a keep-alive connection left idle is closed quietly at
/// `header_read_timeout` (no bytes sent); one that starts a head and stalls is closed
/// too, without an answer, and counted once as a `header_timeout` client error.
///
/// The two are timed out one after the other, so the stalled head's count is told
/// apart from whatever the idle close counts (nothing in 5384e0e).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closes_quietly_and_a_stalled_head_counts_as_a_header_timeout() {
    let (up, gw) = echo_gateway("header_read_timeout = \"1s\"").await;
    let timeouts = &[("kind", "header_timeout")];
    let name = "graygate_client_errors_total";
    assert_eq!(metric(&gw, name, timeouts).await, 0.0);

    let mut idle = RawConn::connect(gw.addr).await;
    idle.get_ok("/idle", "answer to /idle").await;
    let idle_after = idle.assert_closed_within(Duration::from_secs(4)).await;
    assert!(
        idle_after >= Duration::from_millis(700),
        "idle connection closed after only {idle_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_idle = metric(&gw, name, timeouts).await;

    let mut stalled = RawConn::connect(gw.addr).await;
    stalled.get_ok("/stalled", "answer to /stalled").await;
    stalled
        .send(b"GET /never HTTP/1.1\r\nHost: test\r\nX-Half: ")
        .await;
    let stalled_after = stalled.assert_closed_within(Duration::from_secs(4)).await;
    eprintln!(
        "idle closed after {idle_after:?} (header_timeout count then {after_idle}), stalled head after {stalled_after:?}"
    );
    let mut counted = after_idle;
    for _ in 0..50 {
        counted = metric(&gw, name, timeouts).await;
        if counted > after_idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    counted = counted.max(metric(&gw, name, timeouts).await);
    assert_eq!(
        counted - after_idle,
        1.0,
        "header_timeout count for the one stalled head"
    );
    assert_eq!(up.paths(), ["/idle", "/stalled"]);
}

/// SIGTERM: an idle keep-alive connection is closed without a byte, a request in
/// flight on the loop finishes with `connection: close` and its connection is then
/// closed, and the gateway exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_connections_and_lets_an_in_flight_request_finish_with_close() {
    let up = Scripted::start(|r: &Received| {
        if r.path() == "/slow" {
            Reply::Later(Duration::from_millis(800), ok("slow done"))
        } else {
            echo_path(r)
        }
    })
    .await;
    let mut gw = gateway(up.addr, "header_read_timeout = \"30s\"");
    let mut idle = RawConn::connect(gw.addr).await;
    idle.get_ok("/idle", "answer to /idle").await;
    let mut busy = RawConn::connect(gw.addr).await;
    busy.get_ok("/warm", "answer to /warm").await;
    busy.send(&get("/slow")).await;
    let arrived = wait_until(STEP, || up.paths().iter().any(|p| p == "/slow")).await;
    assert!(arrived, "the slow request did not reach the upstream");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let term = Instant::now();

    let closed = idle.assert_closed_within(Duration::from_secs(3)).await;
    eprintln!("idle connection closed {closed:?} after SIGTERM");
    let answer = busy.response().await;
    answer.assert_ok("slow done");
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{:?}",
        answer.head
    );
    busy.assert_closed_within(Duration::from_secs(2)).await;
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(8)));
    let exit = exit.expect("the gateway did not exit");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(term.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------
// Review findings: an unasked 101, and a FIN behind pipelined requests
// ---------------------------------------------------------------------------------

/// An upstream that answers a plain GET with 101 has switched protocols on its own:
/// the client gets the 101 and the connection closes, rather than staying open as if
/// HTTP went on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_101_from_the_upstream_closes_the_client_connection() {
    let up = Scripted::start(|_: &Received| {
        Reply::Send(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let gw = gateway(up.addr, "");
    let mut client = RawConn::connect(gw.addr).await;
    let answer = client.request(&get("/101")).await;
    assert_eq!(answer.status, 101, "{:?}", answer.head);
    client.assert_closed_within(Duration::from_secs(2)).await;
}

/// A request the client pipelined while an earlier one was in flight is kept, and a
/// FIN behind it does not cancel the request in flight: the first answer arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_behind_a_pipelined_request_does_not_cancel_the_one_in_flight() {
    let up = Scripted::start(|r: &Received| {
        Reply::Later(
            Duration::from_millis(300),
            ok(&format!("answer to {}", r.path())),
        )
    })
    .await;
    let gw = gateway(up.addr, "");
    let mut client = RawConn::connect(gw.addr).await;
    client.send(&get("/first")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send(&get("/second")).await;
    client.stream.shutdown().await.unwrap();
    client.response().await.assert_ok("answer to /first");
    client.assert_closed_within(Duration::from_secs(3)).await;
}
