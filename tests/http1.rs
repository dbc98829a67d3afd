//! The gateway's own HTTP/1.1 loop for plain connections (`src/server/http1.rs`), end
//! to end and byte for byte: pipelining, the hand-off to hyper in the middle of a
//! connection (bodies, more than 64 headers, HTTP/1.0), the response framing the loop
//! writes itself (content-length, chunked, `connection: close`, `date`, nothing after
//! a HEAD), heads that arrive in pieces, `header_read_timeout` on an idle or a stalled
//! connection, and a graceful shutdown.
//!
//! The client is a raw TCP socket that parses every response strictly ([`Client`]), so
//! a wrong length, a missing chunked terminator or a stray byte between two responses
//! fails the test. The upstream is a raw-TCP server ([`Scripted`]) that writes exact
//! bytes and records every request as it read it off the wire. Every test starts its
//! own gateway (killed on drop) and bounds every wait.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------
// A scripted raw-TCP upstream
// ---------------------------------------------------------------------------------

/// One request as the [`Scripted`] upstream read it off the wire.
#[derive(Debug, Clone)]
struct Received {
    /// The accepted connection that carried it, counted from 1.
    conn: usize,
    /// The request head, verbatim, blank line included.
    head: String,
    /// The body, de-chunked when it came chunked.
    body: Vec<u8>,
}

impl Received {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or("")
    }

    fn path(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or("")
    }

    /// Every value of header `name` (any case), in order.
    fn header_values(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .collect()
    }
}

/// What the [`Scripted`] upstream does after reading a request.
enum Reply {
    /// Writes the bytes, then waits for the next request on the connection.
    Send(Vec<u8>),
    /// Writes each piece with [`PIECE_GAP`] between them, then waits for the next request.
    Pieces(Vec<Vec<u8>>),
    /// Writes the bytes, then closes the connection with a FIN.
    SendThenClose(Vec<u8>),
    /// Waits, writes the bytes, then waits for the next request.
    Later(Duration, Vec<u8>),
}

type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// Pause between the pieces of a [`Reply::Pieces`], and between the pieces a client
/// writes: long enough for each to arrive in a read of its own.
const PIECE_GAP: Duration = Duration::from_millis(40);

/// A raw-TCP upstream that answers each request as its responder says, counting the
/// connections it accepts and recording every request it reads.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(responder: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Scripted {
        let responder: Responder = Arc::new(responder);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (accepted, log) = (Arc::clone(&connections), Arc::clone(&received));
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so they end when the upstream is dropped.
            let mut tasks = JoinSet::new();
            loop {
                tokio::select! {
                    accepted_now = listener.accept() => {
                        let Ok((stream, _)) = accepted_now else { continue };
                        let conn = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                        tasks.spawn(serve_upstream(stream, conn, Arc::clone(&responder), Arc::clone(&log)));
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            }
        });
        Scripted {
            addr,
            connections,
            received,
            task,
        }
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far, in arrival order.
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The paths of the requests read so far, in order.
    fn paths(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.path().to_string())
            .collect()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_upstream(
    mut stream: TcpStream,
    conn: usize,
    responder: Responder,
    log: Arc<Mutex<Vec<Received>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let received = Received { conn, head, body };
        let reply = responder(&received);
        log.lock().unwrap().push(received);
        match reply {
            Reply::Send(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Pieces(pieces) => {
                for piece in pieces {
                    if stream.write_all(&piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(PIECE_GAP).await;
                }
            }
            Reply::SendThenClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                // A FIN, then wait (bounded) for the gateway to close its side.
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(STEP, async {
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                return;
            }
            Reply::Later(delay, bytes) => {
                tokio::time::sleep(delay).await;
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The values of header `name` (any case) in a raw head.
fn head_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .collect()
}

/// Reads one request (head, then the body its framing declares) from `buf` and the
/// stream; what follows stays in `buf`. `None` if the peer closed first.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        upstream_fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let chunked = head_values(&head, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    let (body, body_end) = if chunked {
        loop {
            match decode_chunked(&buf[head_end..]) {
                Ok(Some(decoded)) => break (decoded.data, head_end + decoded.used),
                // Malformed: keep what came, for the test to see.
                Err(_) => break (buf[head_end..].to_vec(), buf.len()),
                Ok(None) => upstream_fill(stream, buf).await?,
            }
        }
    } else {
        let length = head_values(&head, "content-length")
            .first()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let end = head_end + length;
        while buf.len() < end {
            upstream_fill(stream, buf).await?;
        }
        (buf[head_end..end].to_vec(), end)
    };
    buf.drain(..body_end);
    Some((head, body))
}

async fn upstream_fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut scratch = [0u8; 16 * 1024];
    match stream.read(&mut scratch).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&scratch[..n]);
            Some(())
        }
    }
}

/// A chunked body decoded strictly.
#[derive(Debug)]
struct Decoded {
    data: Vec<u8>,
    /// The size of every chunk, the last (zero) chunk included.
    sizes: Vec<usize>,
    /// Wire bytes the body took, trailers and the final CRLF included.
    used: usize,
}

/// Decodes a chunked body from the start of `wire`: `Ok(None)` when incomplete, an
/// error when any line or chunk is malformed.
fn decode_chunked(wire: &[u8]) -> Result<Option<Decoded>, String> {
    let (mut at, mut data, mut sizes) = (0, Vec::new(), Vec::new());
    loop {
        let Some(line_len) = find(&wire[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&wire[at..at + line_len]).map_err(|e| e.to_string())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        if size_text.is_empty() || !size_text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("bad chunk-size line {line:?}"));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|e| e.to_string())?;
        sizes.push(size);
        at += line_len + 2;
        if size == 0 {
            // Trailer lines up to an empty line.
            loop {
                let Some(len) = find(&wire[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += len + 2;
                if len == 0 {
                    return Ok(Some(Decoded {
                        data,
                        sizes,
                        used: at,
                    }));
                }
            }
        }
        if wire.len() < at + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&wire[at..at + size]);
        at += size;
        if &wire[at..at + 2] != b"\r\n" {
            return Err(format!("chunk of {size} bytes not followed by CRLF"));
        }
        at += 2;
    }
}

/// `200 OK` with a content-length body.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `200 OK` whose body names the request: which request got which answer.
fn echo_path(request: &Received) -> Reply {
    Reply::Send(ok(&format!("answer to {}", request.path())))
}

/// `len` printable pseudo-random bytes, different for each `seed`.
fn pseudo_text(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'!' + ((state >> 24) % 94) as u8
        })
        .collect()
}

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

/// A client connection that writes raw bytes and parses responses strictly.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The gateway closed (EOF or reset).
    eof: bool,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

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

    async fn fill(&mut self) -> bool {
        let mut scratch = [0u8; 16 * 1024];
        match self.stream.read(&mut scratch).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&scratch[..n]);
                true
            }
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
    Gateway::start(&format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
# One worker: its idle upstream connections are the only ones, so counts are exact.
workers = 1

[limits]
{limits}

[pools.blue]
endpoints = ["{upstream}"]

[routing]
stable = "blue"
"#
    ))
}

/// `GET path` with a Host header, as one request.
fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// The sum of the series of metric `name` whose labels include all of `labels`.
async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = common::get(&gw.admin_url("/metrics"), &[]).await.body;
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let has = |(k, v): &(&str, &str)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        };
        if labels.iter().all(has) {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

// ---------------------------------------------------------------------------------
// 1. Pipelining
// ---------------------------------------------------------------------------------

/// Three GETs in one write get three complete responses, in order, on the one
/// connection, with nothing between or after them; the connection then serves a
/// fourth request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_in_one_write_are_answered_in_order_on_one_connection() {
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "");
    let mut client = Client::connect(gw.addr).await;
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
    client
        .request(&get("/four"))
        .await
        .assert_ok("answer to /four");
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
    let up = Scripted::start(|r: &Received| {
        Reply::Send(ok(&format!(
            "{} {} got {} bytes",
            r.method(),
            r.path(),
            r.body.len()
        )))
    })
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

    let mut client = Client::connect(gw.addr).await;
    client
        .request(&get("/before"))
        .await
        .assert_ok("GET /before got 0 bytes");
    client
        .request(&post)
        .await
        .assert_ok("POST /upload got 3000 bytes");
    client
        .request(&get("/after"))
        .await
        .assert_ok("GET /after got 0 bytes");
    client.assert_quiet().await;

    let seen = up.received();
    let methods: Vec<_> = seen
        .iter()
        .map(|r| format!("{} {}", r.method(), r.path()))
        .collect();
    assert_eq!(methods, ["GET /before", "POST /upload", "GET /after"]);
    assert_eq!(seen[1].body, body, "the POST body the upstream got");
    assert_eq!(seen[1].header_values("content-type"), ["text/plain"]);

    // The same three in one write: the hand-off takes the POST and the GET behind it
    // out of the loop's buffer.
    let mut client = Client::connect(gw.addr).await;
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
    assert_eq!(seen[4].body, body, "the pipelined POST body");
}

/// A chunked POST after a GET: the chunked body reaches the upstream whole, and a GET
/// after it on the same connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_post_after_a_get_is_handed_over_with_its_body_intact() {
    let up = Scripted::start(|r: &Received| {
        Reply::Send(ok(&format!(
            "{} {} body {:?}",
            r.method(),
            r.path(),
            String::from_utf8_lossy(&r.body)
        )))
    })
    .await;
    let gw = gateway(up.addr, "");
    let mut client = Client::connect(gw.addr).await;
    client
        .request(&get("/first"))
        .await
        .assert_ok("GET /first body \"\"");
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
    client
        .request(&get("/last"))
        .await
        .assert_ok("GET /last body \"\"");
    let seen = up.received();
    assert_eq!(seen.len(), 3, "{:?}", up.paths());
    assert_eq!(seen[1].body, b"hello, world");
}

// ---------------------------------------------------------------------------------
// 3. Connection: close
// ---------------------------------------------------------------------------------

/// `Connection: close` on a GET: the response says `connection: close` and the gateway
/// closes the socket after it. A request pipelined behind it is not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_gets_connection_close_and_the_socket_is_closed() {
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "");
    let mut client = Client::connect(gw.addr).await;
    client
        .request(&get("/keep"))
        .await
        .assert_ok("answer to /keep");
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
    let mut client = Client::connect(gw.addr).await;
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
    let up = Scripted::start(move |r: &Received| {
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
    let mut client = Client::connect(gw.addr).await;
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
    client
        .request(&get("/next"))
        .await
        .assert_ok("answer to /next");
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
    let mut client = Client::connect(gw.addr).await;
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
    client
        .request(&get("/next"))
        .await
        .assert_ok("answer to /next");
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

    let mut client = Client::connect(gw.addr).await;
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
    client
        .request(&get("/resource"))
        .await
        .assert_ok("GET body of /resource");

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
    client
        .request(&get("/chunky"))
        .await
        .assert_ok("GET body of /chunky");
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
    let mut client = Client::connect(gw.addr).await;
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
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "header_read_timeout = \"5s\"");
    let mut client = Client::connect(gw.addr).await;
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
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "");
    let mut client = Client::connect(gw.addr).await;
    client
        .request(&get("/few"))
        .await
        .assert_ok("answer to /few");
    let many: String = (0..80)
        .map(|i| format!("X-H{i:02}: value-{i}-{}\r\n", "v".repeat(i % 7)))
        .collect();
    let request = format!("GET /many HTTP/1.1\r\nHost: test\r\n{many}\r\n");
    client
        .request(request.as_bytes())
        .await
        .assert_ok("answer to /many");
    client
        .request(&get("/after"))
        .await
        .assert_ok("answer to /after");
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
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "");

    let mut client = Client::connect(gw.addr).await;
    let answer = client
        .request(b"GET /old HTTP/1.0\r\nHost: test\r\n\r\n")
        .await;
    answer.assert_ok("answer to /old");
    assert_eq!(answer.version, "HTTP/1.0", "{:?}", answer.head);
    assert_eq!(answer.framing, Framing::Length(answer.body.len()));
    client.assert_closed_within(Duration::from_secs(2)).await;

    let mut client = Client::connect(gw.addr).await;
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

    let mut client = Client::connect(gw.addr).await;
    client
        .request(&get("/new"))
        .await
        .assert_ok("answer to /new");
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
    let mut client = Client::connect(gw.addr).await;
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
        assert!(r.body.is_empty(), "upstream request {i} had a body");
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
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "header_read_timeout = \"1s\"");
    let timeouts = &[("kind", "header_timeout")];
    let name = "graygate_client_errors_total";
    assert_eq!(metric(&gw, name, timeouts).await, 0.0);

    let mut idle = Client::connect(gw.addr).await;
    idle.request(&get("/idle"))
        .await
        .assert_ok("answer to /idle");
    let idle_after = idle.assert_closed_within(Duration::from_secs(4)).await;
    assert!(
        idle_after >= Duration::from_millis(700),
        "idle connection closed after only {idle_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_idle = metric(&gw, name, timeouts).await;

    let mut stalled = Client::connect(gw.addr).await;
    stalled
        .request(&get("/stalled"))
        .await
        .assert_ok("answer to /stalled");
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
    let mut idle = Client::connect(gw.addr).await;
    idle.request(&get("/idle"))
        .await
        .assert_ok("answer to /idle");
    let mut busy = Client::connect(gw.addr).await;
    busy.request(&get("/warm"))
        .await
        .assert_ok("answer to /warm");
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
