//! Edge resilience and security: slow and hostile clients, broken upstreams, request
//! smuggling, HTTP/2 abuse, retries, fallback and graceful shutdown, against the real
//! binary on 127.0.0.1.
//!
//! Every test starts its own gateway and upstreams (nothing is shared, so the tests
//! run in parallel) and bounds every wait. The misbehaving upstreams are small raw-TCP
//! servers defined here ([`RawUpstream`]); each counts the connections and request
//! heads it received, so a test can prove that nothing was sent twice.
//!
//! Run with `--nocapture` to see the per-vector smuggling table rows and the other
//! observations the tests print.

mod common;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::raw::*;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------
// Raw-TCP test upstreams
// ---------------------------------------------------------------------------------

/// How a [`RawUpstream`] treats each connection.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Accept, then reset the connection (SO_LINGER 0) without reading anything.
    ResetOnAccept,
    /// Read the request head, then reset.
    ResetAfterHead,
    /// Read the request, never answer, keep the connection open.
    Hang,
    /// Read the request, wait `delay`, answer `status` with `body`, close.
    Reply {
        delay: Duration,
        status: u16,
        body: &'static str,
    },
    /// Answer 200 at once with a chunked body of `chunks` chunks, one every `gap`.
    Drip { chunks: usize, gap: Duration },
    /// Answer 200 chunked, send one chunk (`first\n`), then nothing, connection open.
    Stall,
}

/// A raw-TCP upstream that follows a [`Script`] and counts what reached it.
struct RawUpstream {
    addr: SocketAddr,
    server: RawServer,
    requests: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(script: Script) -> RawUpstream {
        let requests = Arc::new(AtomicUsize::new(0));
        let received = Arc::clone(&requests);
        let server =
            RawServer::start(move |stream, _| serve_script(stream, script, Arc::clone(&received)))
                .await;
        RawUpstream {
            addr: server.addr,
            server,
            requests,
        }
    }

    /// Request heads read in full.
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    fn connections(&self) -> usize {
        self.server.connections()
    }
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// The value of header `name` (lowercase) in a lowercased head.
fn head_value<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        (n.trim() == name).then(|| v.trim())
    })
}

/// Reads one request head; `None` if the peer went away first.
async fn read_request_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut scratch = [0u8; 4096];
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Some(i + 4);
        }
        match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
        }
    }
}

/// Reads the body of the request whose head ends at `head_end` (Content-Length, or
/// chunked up to the last chunk), so closing the socket later sends a FIN, not a RST.
async fn consume_request_body(stream: &mut TcpStream, buf: &mut Vec<u8>, head_end: usize) {
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let mut scratch = [0u8; 4096];
    let done = |buf: &Vec<u8>| -> bool {
        if let Some(len) = head_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok())
        {
            buf.len() >= head_end + len
        } else if head_value(&head, "transfer-encoding").is_some() {
            buf[head_end..].ends_with(b"0\r\n\r\n")
        } else {
            true
        }
    };
    while !done(buf) {
        match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
        }
    }
}

async fn serve_script(mut stream: TcpStream, script: Script, requests: Arc<AtomicUsize>) {
    if let Script::ResetOnAccept = script {
        return reset(stream);
    }
    let mut buf = Vec::new();
    let Some(head_end) = read_request_head(&mut stream, &mut buf).await else {
        return;
    };
    requests.fetch_add(1, Ordering::SeqCst);
    if let Script::ResetAfterHead = script {
        return reset(stream);
    }
    consume_request_body(&mut stream, &mut buf, head_end).await;
    match script {
        Script::ResetOnAccept | Script::ResetAfterHead => unreachable!(),
        Script::Hang => std::future::pending::<()>().await,
        Script::Reply {
            delay,
            status,
            body,
        } => {
            tokio::time::sleep(delay).await;
            let response = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            linger_until_peer_closes(stream).await;
        }
        Script::Drip { chunks, gap } => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for i in 0..chunks {
                tokio::time::sleep(gap).await;
                let piece = format!("chunk-{i:02}\n");
                let frame = format!("{:x}\r\n{piece}\r\n", piece.len());
                if stream.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
            linger_until_peer_closes(stream).await;
        }
        Script::Stall => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            // Keep the connection open and silent.
            std::future::pending::<()>().await
        }
    }
}

// ---------------------------------------------------------------------------------
// A recording upstream that also records whether the request body arrived whole
// ---------------------------------------------------------------------------------

/// A request as the [`Recorder`] saw it; `body` is the error text when the body
/// did not arrive whole (the gateway aborted it).
#[derive(Debug, Clone)]
struct Record {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Result<Bytes, String>,
}

/// A strict (hyper) HTTP/1.1 upstream answering 200 with its name.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Record>>>,
    /// Accepts and serves until the recorder is dropped.
    _server: RawServer,
}

impl Recorder {
    async fn start(name: &'static str) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let server = RawServer::start(move |stream, _| {
            let log = Arc::clone(&log);
            let service = service_fn(move |req: Request<Incoming>| {
                let log = Arc::clone(&log);
                async move {
                    let record = Recorder::record(req).await;
                    log.lock().unwrap().push(record);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                }
            });
            async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await;
        Recorder {
            addr: server.addr,
            seen,
            _server: server,
        }
    }

    /// The record of `req`: its body read whole, or the error that broke it off.
    async fn record(req: Request<Incoming>) -> Record {
        let (head, body) = req.into_parts();
        Record {
            method: head.method.to_string(),
            path: head.uri.path().to_string(),
            headers: head.headers,
            body: body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| e.to_string()),
        }
    }

    fn records(&self) -> Vec<Record> {
        self.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------
// Raw-TCP client
// ---------------------------------------------------------------------------------

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    body: String,
}

/// The client side: speaks raw bytes and parses HTTP/1.1 responses.
impl RawConn {
    /// Writes `bytes`; a failure (the peer already closed) is returned, not a panic.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    async fn need(&mut self, len: usize) -> bool {
        while self.buf.len() < len {
            if !self.fill().await {
                return false;
            }
        }
        true
    }

    /// The next response, or `None` when the connection closed or `limit` passed first.
    async fn response(&mut self, limit: Duration) -> Option<RawResponse> {
        tokio::time::timeout(limit, self.read_response())
            .await
            .ok()
            .flatten()
    }

    async fn read_response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head.get(9..12)?.parse().ok()?;
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        let mut at = head_end;
        if let Some(len) = head_value(&lower, "content-length").and_then(|v| v.parse().ok()) {
            let len: usize = len;
            if !self.need(at + len).await {
                return None;
            }
            body.extend_from_slice(&self.buf[at..at + len]);
            at += len;
        } else if head_value(&lower, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf[at..], b"\r\n") {
                        break at + i;
                    }
                    if !self.fill().await {
                        return None;
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[at..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
                at = line_end + 2;
                if size == 0 {
                    if !self.need(at + 2).await {
                        return None;
                    }
                    at += 2;
                    break;
                }
                if !self.need(at + size + 2).await {
                    return None;
                }
                body.extend_from_slice(&self.buf[at..at + size]);
                at += size + 2;
            }
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // Delimited by the close.
            while self.fill().await {}
            at = self.buf.len();
            body.extend_from_slice(&self.buf[head_end..]);
        }
        self.buf.drain(..at);
        Some(RawResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Waits for the peer to close the connection; `Some(elapsed)` if it did within
    /// `limit`. Whatever arrives meanwhile is kept in the buffer.
    async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        if self.eof {
            return Some(Duration::ZERO);
        }
        let closed = tokio::time::timeout(limit, async { while self.fill().await {} }).await;
        closed.ok().map(|()| start.elapsed())
    }
}

/// Writes `bytes` on a fresh connection, then reads responses until the connection
/// closes or none comes within `limit`. Returns the responses and whether it closed.
async fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<RawResponse>, bool) {
    let mut conn = RawConn::connect(addr).await;
    let _ = conn.send(bytes).await;
    let mut responses = Vec::new();
    while let Some(response) = conn.response(limit).await {
        responses.push(response);
    }
    let closed = conn
        .closed_within(Duration::from_millis(300))
        .await
        .is_some();
    (responses, closed)
}

// ---------------------------------------------------------------------------------
// Other helpers
// ---------------------------------------------------------------------------------

/// `"a", "b"` for a TOML array.
fn endpoint_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[routing]` with `stable = "blue"`, decision headers, the given `fallback`, and a
/// rule sending requests with an `x-canary` header to the canary pool.
fn routing(fallback: &str) -> String {
    format!(
        r#"[routing]
stable = "blue"
decision_headers = true
fallback = "{fallback}"

[[rules]]
name = "canary-header"
match = {{ header = {{ name = "x-canary", present = true }} }}
to = "canary"
"#
    )
}

/// A gateway config with multi-endpoint blue and canary pools, `limits` (the body
/// of a `[limits]` table) and `routing`.
fn pools_config(blue: &[SocketAddr], canary: &[SocketAddr], limits: &str, routing: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[limits]
{limits}

[pools.blue]
endpoints = [{}]
[pools.canary]
endpoints = [{}]

{routing}
"#,
        endpoint_list(blue),
        endpoint_list(canary)
    )
}

/// A gateway whose three pools all point at `upstream`, with `[limits]` `limits`.
fn single(upstream: SocketAddr, limits: &str) -> Gateway {
    Gateway::start(&pools_config(
        &[upstream],
        &[upstream],
        limits,
        &routing("stable"),
    ))
}

/// One request on a fresh HTTP/1.1 client: status, the body (or its error) and how
/// long the whole exchange took. Bounded by `limit`.
async fn fetch(
    request: Request<Full<Bytes>>,
    limit: Duration,
) -> (StatusCode, Result<Bytes, String>, Duration) {
    let start = Instant::now();
    tokio::time::timeout(limit, async {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(request).await.expect("response head");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("{e:?}"));
        (status, body, start.elapsed())
    })
    .await
    .expect("the exchange ended within its limit (no hang)")
}

fn get_request(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

fn post_request(url: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Sends `SIGTERM` to the gateway.
fn sigterm(gw: &Gateway) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Whether the gateway process still runs.
fn alive(gw: &mut Gateway) -> bool {
    tokio::task::block_in_place(|| gw.wait_exit(Duration::from_millis(50)).is_none())
}

/// An h2c (prior knowledge) connection made with the `h2` crate.
async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = tokio::time::timeout(STEP, h2::client::handshake(tcp))
        .await
        .expect("h2 handshake in time")
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// `GET uri` as one stream on an existing h2 connection: status and body.
async fn h2_get(
    send: &h2::client::SendRequest<Bytes>,
    request: Request<()>,
) -> Result<(StatusCode, Bytes), h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, _) = send.send_request(request, true)?;
    let response = response.await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut out = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok((status, out.freeze()))
}

// ---------------------------------------------------------------------------------
// 1. Timeouts
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_cut_off_by_header_read_timeout_while_others_are_served() {
    let blue = Upstream::named("blue").await;
    let gw = single(blue.addr, "header_read_timeout = \"1s\"");

    let slow = TcpStream::connect(gw.addr).await.unwrap();
    let head = b"GET /slowloris HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (mut reader, mut writer) = slow.into_split();
    let started = Instant::now();
    // One byte every 300 ms: the whole head would take ~25 s.
    let dripper = tokio::spawn(async move {
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    // Meanwhile another client is served normally.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let normal_started = Instant::now();
    let answer = get(&gw.url("/normal"), &[]).await;
    assert_eq!(answer.status, 200);
    assert!(
        normal_started.elapsed() < Duration::from_secs(2),
        "a normal client waited {:?} behind the slowloris",
        normal_started.elapsed()
    );

    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), async {
        let mut scratch = [0u8; 1024];
        loop {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&scratch[..n]),
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    dripper.abort();
    let got = String::from_utf8_lossy(&got);
    eprintln!(
        "slowloris: connection ended after {elapsed:?} (header_read_timeout 1s); bytes sent back: {:?}",
        got.lines().next().unwrap_or("")
    );
    assert!(
        closed.is_ok(),
        "the slowloris connection was still open after {elapsed:?}"
    );
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "the slowloris got an answer other than a close or 408: {got}"
    );
    assert!(
        elapsed >= Duration::from_millis(800),
        "cut off before the timeout: {elapsed:?}"
    );
    assert!(blue.requests().iter().all(|s| s.uri.path() != "/slowloris"));
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_by_the_header_read_timeout() {
    let blue = Upstream::named("blue").await;
    let gw = single(blue.addr, "header_read_timeout = \"1s\"");
    let mut silent = RawConn::connect(gw.addr).await;
    let mut preface = RawConn::connect(gw.addr).await;
    preface.send(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let silent_closed = silent.closed_within(Duration::from_secs(4)).await;
    let preface_closed = preface.closed_within(Duration::from_millis(100)).await;
    eprintln!(
        "silent connection closed after: {silent_closed:?}; partial h2 preface: {preface_closed:?}"
    );
    assert!(
        silent_closed.is_some(),
        "a connection that sent nothing was still open 4 s after connecting (header_read_timeout 1s)"
    );
    assert!(
        preface_closed.is_some(),
        "a connection that sent 16 bytes of the h2 preface was still open 4 s later"
    );
}

#[tokio::test]
async fn silent_connections_cannot_starve_max_connections() {
    let blue = Upstream::named("blue").await;
    let gw = single(
        blue.addr,
        "header_read_timeout = \"1s\"\nmax_connections = 2",
    );
    let _silent: Vec<RawConn> = vec![
        RawConn::connect(gw.addr).await,
        RawConn::connect(gw.addr).await,
    ];
    let mut third = RawConn::connect(gw.addr).await;
    third
        .send(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = third.response(Duration::from_secs(5)).await;
    assert_eq!(
        answer.map(|r| r.status),
        Some(200),
        "a real client was not served for 5 s while two silent sockets held both slots"
    );
}

#[tokio::test]
async fn hanging_upstream_gets_504_after_request_timeout() {
    let hang = RawUpstream::start(Script::Hang).await;
    let gw = single(hang.addr, "request_timeout = \"1s\"");
    let (status, body, elapsed) = fetch(get_request(&gw.url("/hang")), STEP).await;
    eprintln!("hanging upstream: {status} after {elapsed:?} (request_timeout 1s)");
    assert_eq!(status, 504);
    assert!(body.unwrap().starts_with(b"504"));
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "504 came after {elapsed:?}"
    );
    assert_eq!(hang.requests(), 1, "a hanging GET is not resent elsewhere");
    assert!(
        metric(
            &gw,
            "graygate_upstream_errors_total",
            &[("pool", "blue"), ("kind", "timeout")]
        )
        .await
            >= 1.0
    );
}

/// A client that hangs up while its request waits on a slow upstream cancels that
/// request: the gateway closes the upstream connection at once instead of holding it
/// until the upstream answers or `request_timeout` passes (nginx and hyper do the same).
#[tokio::test]
async fn a_client_hanging_up_mid_request_closes_its_upstream_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let slow = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_request_head(&mut stream, &mut buf)
            .await
            .expect("a request head");
        let asked = Instant::now();
        // Never answers; waits for the gateway to close the connection.
        let mut sink = [0u8; 64];
        let eof = tokio::time::timeout(Duration::from_secs(10), async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        let _ = closed_tx.send(eof.is_ok().then(|| asked.elapsed()));
    });
    let gw = single(upstream, "request_timeout = \"30s\"");
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    let closed = tokio::time::timeout(Duration::from_secs(12), closed_rx)
        .await
        .expect("the upstream task reports")
        .unwrap();
    eprintln!("upstream connection closed {closed:?} after the request reached it");
    let closed = closed.expect("the upstream connection was still open 10 s after the client left");
    assert!(
        closed < Duration::from_secs(3),
        "closed only after {closed:?}"
    );
    slow.abort();
}

#[tokio::test]
async fn dead_upstream_port_gets_a_fast_502() {
    let dead = dead_address().await;
    let gw = single(dead, "");
    let (status, _, elapsed) = fetch(get_request(&gw.url("/dead")), STEP).await;
    eprintln!("dead port: {status} after {elapsed:?}");
    assert_eq!(status, 502);
    assert!(
        elapsed < Duration::from_secs(1),
        "a refused connect took {elapsed:?}"
    );
    assert!(
        metric(
            &gw,
            "graygate_upstream_errors_total",
            &[("pool", "blue"), ("kind", "connect")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn connect_timeout_with_a_local_listener_whose_backlog_is_full() {
    // A listener that never accepts, with a backlog of 1, filled by our own connects:
    // the kernel then drops further SYNs, so a connect hangs instead of being refused.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let full_addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    let mut backlog_full = false;
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(full_addr)).await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(err)) => panic!("connect to the full listener failed: {err}"),
            Err(_) => {
                backlog_full = true;
                break;
            }
        }
    }
    assert!(backlog_full, "could not fill the listen backlog");

    let gw = Gateway::start(&format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[pools.blue]
endpoints = ["{full_addr}"]
connect_timeout = "300ms"

[routing]
stable = "blue"
"#
    ));
    let (status, _, elapsed) = fetch(get_request(&gw.url("/backlog")), STEP).await;
    eprintln!(
        "connect timeout (connect_timeout 300ms, {} filler connections): {status} after {elapsed:?}",
        fillers.len()
    );
    assert!(
        status == 502 || status == 504,
        "a connect timeout answered {status}"
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "the connect timeout answer came after {elapsed:?}"
    );
    assert!(
        metric(
            &gw,
            "graygate_upstream_errors_total",
            &[("pool", "blue"), ("kind", "connect")]
        )
        .await
            >= 1.0
    );
    drop(full);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let blue = Upstream::named("blue").await;
    let gw = single(blue.addr, "header_read_timeout = \"1s\"");
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = conn.response(STEP).await.expect("first response");
    assert_eq!(first.status, 200);
    // Still usable right away: keep-alive works.
    conn.send(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.response(STEP).await.expect("second").status, 200);
    let closed = conn.closed_within(Duration::from_secs(6)).await;
    eprintln!(
        "idle HTTP/1.1 keep-alive connection closed after {closed:?} idle (header_read_timeout 1s)"
    );
    let idle = closed.expect("an idle keep-alive connection was still open after 6 s");
    assert!(
        idle >= Duration::from_millis(800),
        "closed too soon: {idle:?}"
    );
    assert!(
        conn.buf.is_empty(),
        "no 408 or other bytes expected on an idle close"
    );
}

#[tokio::test]
async fn idle_h2c_connection_observation() {
    // Observation only: HTTP/2 has no header-read timer, and graygate sets no h2
    // keep-alive or idle timeout. Report what happens to an idle h2c connection.
    let blue = Upstream::named("blue").await;
    let gw = single(blue.addr, "header_read_timeout = \"1s\"");
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get(format!("http://{}/h2", gw.addr))
        .body(())
        .unwrap();
    let (status, _) = h2_get(&send, request).await.expect("h2 request");
    assert_eq!(status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(4), driver).await;
    eprintln!(
        "idle h2c connection after 4 s idle (header_read_timeout 1s): {}",
        match ended {
            Ok(result) => format!("closed by the gateway ({result:?})"),
            Err(_) => "still open (no idle timeout for h2c)".to_string(),
        }
    );
}

// ---------------------------------------------------------------------------------
// 2. Limits
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_header_gets_431_in_one_write() {
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "max_header_bytes = 8192");
    let big = "a".repeat(20 * 1024);
    let request = format!("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (responses, closed) = exchange(gw.addr, request.as_bytes(), STEP).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    eprintln!("20 KiB header in one write: {statuses:?}, closed: {closed}");
    assert_eq!(statuses, [431]);
    assert!(closed);
    assert!(
        blue.records().is_empty(),
        "the oversized head went upstream"
    );

    // A header under the limit still passes.
    let ok = get(&gw.url("/fits"), &[("x-fits", &"b".repeat(6000))]).await;
    assert_eq!(ok.status, 200);
}

/// Writes `parts` with a pause between them and returns the statuses answered.
async fn split_head(addr: SocketAddr, parts: &[Vec<u8>], pause: Duration) -> (Vec<u16>, bool) {
    let mut conn = RawConn::connect(addr).await;
    for part in parts {
        if conn.send(part).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let mut statuses = Vec::new();
    while let Some(response) = conn.response(Duration::from_secs(3)).await {
        statuses.push(response.status);
    }
    let closed = conn.eof
        || conn
            .closed_within(Duration::from_millis(300))
            .await
            .is_some();
    (statuses, closed)
}

#[tokio::test]
async fn oversized_header_split_across_reads_still_gets_431() {
    // hyper issue #4081: the size check used to run only when a read left the head
    // incomplete, so a head that completed in a later read slipped past the limit.
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "max_header_bytes = 8192");

    // The issue's exact shape: 7000 bytes, a pause, 5000 more, then the end.
    let parts = vec![
        b"GET /split HTTP/1.1\r\nHost: x\r\nX: ".to_vec(),
        vec![b'a'; 7000],
        vec![b'a'; 5000],
        b"\r\n\r\n".to_vec(),
    ];
    let (statuses, closed) = split_head(gw.addr, &parts, Duration::from_millis(100)).await;
    eprintln!("12 KiB header as 7000 + 5000 bytes: {statuses:?}, closed: {closed}");
    assert_eq!(statuses, [431]);

    // 20 KiB in 1 KiB writes with pauses.
    let mut parts = vec![b"GET /split2 HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec()];
    parts.extend((0..20).map(|_| vec![b'c'; 1024]));
    parts.push(b"\r\n\r\n".to_vec());
    let (statuses, closed) = split_head(gw.addr, &parts, Duration::from_millis(30)).await;
    eprintln!("20 KiB header in 1 KiB writes: {statuses:?}, closed: {closed}");
    assert_eq!(statuses, [431]);

    // Many small headers, 9 KiB in all, each its own write.
    let mut parts = vec![b"GET /split3 HTTP/1.1\r\nHost: x\r\n".to_vec()];
    parts.extend((0..90).map(|i| format!("X-H{i:03}: {}\r\n", "d".repeat(92)).into_bytes()));
    parts.push(b"\r\n".to_vec());
    let (statuses, _) = split_head(gw.addr, &parts, Duration::from_millis(5)).await;
    eprintln!("9 KiB of small headers, one write each: {statuses:?}");
    assert_eq!(statuses, [431]);

    assert!(
        blue.records().is_empty(),
        "an oversized head reached the upstream: {:?}",
        blue.records().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn body_over_max_body_bytes_gets_413_for_content_length_and_chunked() {
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "max_body_bytes = 1024");

    // Declared length over the limit: refused before anything goes upstream.
    let body = "x".repeat(4096);
    let request = format!(
        "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (responses, _) = exchange(gw.addr, request.as_bytes(), Duration::from_secs(2)).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    eprintln!("Content-Length 4096 over max_body_bytes 1024: {statuses:?}");
    assert_eq!(statuses, [413]);
    assert!(blue.records().iter().all(|r| r.path != "/cl"));

    // Chunked over the limit: cut off as it streams.
    let mut request =
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        request.extend_from_slice(format!("200\r\n{}\r\n", "y".repeat(512)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (responses, _) = exchange(gw.addr, &request, Duration::from_secs(2)).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    eprintln!("chunked 4096 bytes over max_body_bytes 1024: {statuses:?}");
    assert_eq!(statuses, [413]);
    assert!(
        blue.records()
            .iter()
            .filter(|r| r.path == "/chunked")
            .all(|r| r.body.as_ref().map_or(true, |b| b.len() <= 1024)),
        "more than max_body_bytes reached the upstream"
    );

    // Exactly at the limit passes, both ways.
    let at_limit = "z".repeat(1024);
    let request = format!(
        "POST /exact HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{at_limit}"
    );
    let (responses, _) = exchange(gw.addr, request.as_bytes(), STEP).await;
    assert_eq!(responses.first().map(|r| r.status), Some(200));
    let request = format!(
        "POST /exact-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n400\r\n{at_limit}\r\n0\r\n\r\n"
    );
    let (responses, _) = exchange(gw.addr, request.as_bytes(), STEP).await;
    assert_eq!(responses.first().map(|r| r.status), Some(200));
    let exact: Vec<usize> = blue
        .records()
        .iter()
        .filter(|r| r.path.starts_with("/exact"))
        .map(|r| r.body.as_ref().map_or(0, |b| b.len()))
        .collect();
    assert_eq!(exact, [1024, 1024]);
}

#[tokio::test]
async fn oversized_chunked_uploads_do_not_eject_a_healthy_endpoint() {
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "max_body_bytes = 1024");
    let mut request =
        b"POST /too-big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(format!("200\r\n{}\r\n", "y".repeat(512)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    for i in 0..6 {
        let (responses, _) = exchange(gw.addr, &request, Duration::from_secs(2)).await;
        assert_eq!(
            responses.first().map(|r| r.status),
            Some(413),
            "oversized upload {i}"
        );
    }
    let after = get(&gw.url("/after"), &[]).await;
    eprintln!(
        "after 6 oversized chunked uploads, a normal GET got {} ({})",
        after.status,
        after.body.trim()
    );
    assert_eq!(
        after.status, 200,
        "clients that send too much ejected the healthy stable endpoint"
    );
}

#[tokio::test]
async fn clients_that_abort_their_upload_do_not_eject_a_healthy_endpoint() {
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "");
    for _ in 0..6 {
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(b"POST /abort HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly-a-little")
            .await
            .unwrap();
        // Let the head reach the upstream, then go away mid-body.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(conn);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors = metric(&gw, "graygate_upstream_errors_total", &[("pool", "blue")]).await;
    let after = get(&gw.url("/after"), &[]).await;
    eprintln!(
        "after 6 aborted uploads: upstream_errors_total{{pool=blue}} = {errors}, a normal GET got {} ({})",
        after.status,
        after.body.trim()
    );
    assert_eq!(
        after.status, 200,
        "clients that hang up mid-upload ejected the healthy stable endpoint"
    );
    assert_eq!(
        errors, 0.0,
        "a client hang-up was counted as an upstream error"
    );
}

#[tokio::test]
async fn malformed_chunked_bodies_do_not_eject_a_healthy_endpoint() {
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "");
    let request =
        b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n";
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (responses, _) = exchange(gw.addr, request, Duration::from_secs(2)).await;
        statuses.extend(responses.iter().map(|r| r.status));
    }
    let errors = metric(&gw, "graygate_upstream_errors_total", &[("pool", "blue")]).await;
    let after = get(&gw.url("/after"), &[]).await;
    eprintln!(
        "6 requests with a malformed chunked body: {statuses:?}; upstream_errors_total{{pool=blue}} = {errors}; then a normal GET got {} ({})",
        after.status,
        after.body.trim()
    );
    assert_eq!(
        after.status, 200,
        "malformed client bodies ejected the healthy stable endpoint"
    );
    assert!(
        statuses.iter().all(|s| *s == 400),
        "a client framing error is a 400, not an upstream failure: {statuses:?}"
    );
    assert_eq!(
        errors, 0.0,
        "a client framing error was counted as an upstream error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queues_the_excess_connection_until_a_slot_frees() {
    let blue = Upstream::named("blue").await;
    let mut gw = single(
        blue.addr,
        "max_connections = 2\nheader_read_timeout = \"30s\"",
    );
    let mut held = Vec::new();
    for i in 0..2 {
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(format!("GET /held-{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(conn.response(STEP).await.expect("served").status, 200);
        held.push(conn);
    }
    let mut third = RawConn::connect(gw.addr).await;
    third
        .send(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let early = third.response(Duration::from_millis(1500)).await;
    assert!(
        early.is_none(),
        "the third connection was served while two were open: {early:?}"
    );
    assert!(
        !third.eof,
        "the third connection was closed instead of queued"
    );
    assert!(alive(&mut gw), "the gateway died at max_connections");
    let active = metric(&gw, "graygate_active_connections", &[]).await;
    assert!(active <= 2.0, "graygate_active_connections = {active}");

    let freed = Instant::now();
    drop(held.remove(0));
    let late = third
        .response(STEP)
        .await
        .expect("served once a slot freed");
    eprintln!(
        "max_connections = 2: third connection served {:?} after a slot freed",
        freed.elapsed()
    );
    assert_eq!(late.status, 200);
    assert_eq!(late.body, "blue");
    assert!(alive(&mut gw));
    assert_eq!(get(&gw.admin_url("/healthz"), &[]).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 3. HTTP/2
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_h2c_streams_on_one_connection_succeed() {
    let slow = RawUpstream::start(Script::Reply {
        delay: Duration::from_millis(400),
        status: 200,
        body: "slow",
    })
    .await;
    let gw = single(slow.addr, "");
    let send = h2_connect(gw.addr).await;
    let uri = format!("http://{}/stream", gw.addr);
    // One round trip so the server's SETTINGS have arrived.
    let (status, _) = h2_get(&send, Request::get(&uri).body(()).unwrap())
        .await
        .expect("first stream");
    assert_eq!(status, 200);
    let limit = send.current_max_send_streams();
    eprintln!("server SETTINGS_MAX_CONCURRENT_STREAMS = {limit}");
    assert!(
        (1..=10_000).contains(&limit),
        "unbounded concurrent streams: {limit}"
    );

    for wave in [limit, limit + 50] {
        let started = Instant::now();
        let mut streams = JoinSet::new();
        for i in 0..wave {
            let send = send.clone();
            let request = Request::get(format!("{uri}?i={i}")).body(()).unwrap();
            streams.spawn(async move { h2_get(&send, request).await });
        }
        let mut ok = 0;
        let all = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(done) = streams.join_next().await {
                let (status, body) = done.unwrap().expect("stream");
                assert_eq!(status, 200);
                assert_eq!(&body[..], b"slow");
                ok += 1;
            }
        })
        .await;
        eprintln!(
            "{wave} concurrent h2c streams: {ok} x 200 in {:?}",
            started.elapsed()
        );
        assert!(all.is_ok(), "streams did not finish in time");
        assert_eq!(ok, wave);
        // Concurrent, not one after another (that would take wave x 400 ms).
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_rapid_reset_does_not_take_the_gateway_down() {
    let blue = Upstream::named("blue").await;
    let mut gw = single(blue.addr, "");
    let uri = format!("http://{}/reset", gw.addr);
    let mut opened = 0usize;
    let mut ended = String::from("client stopped (limit reached)");
    let started = Instant::now();
    let mut send = h2_connect(gw.addr).await;
    'burst: while opened < 20_000 && started.elapsed() < Duration::from_secs(5) {
        let ready = tokio::time::timeout(Duration::from_secs(2), send.clone().ready()).await;
        send = match ready {
            Ok(Ok(send)) => send,
            Ok(Err(err)) => {
                ended = format!("connection ended: {err}");
                break 'burst;
            }
            Err(_) => {
                ended = "stream slots not released within 2 s".to_string();
                break 'burst;
            }
        };
        let request = Request::get(&uri).body(()).unwrap();
        match send.send_request(request, false) {
            Ok((response, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(response);
                opened += 1;
            }
            Err(err) => {
                ended = format!("connection ended: {err}");
                break 'burst;
            }
        }
        if opened % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    eprintln!(
        "rapid reset: {opened} streams opened and reset in {:?}; {ended}; upstream saw {} requests",
        started.elapsed(),
        blue.requests().len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(&mut gw), "the gateway died under rapid reset");
    assert_eq!(get(&gw.url("/after"), &[]).await.status, 200);
    let answer = send_h2c(
        gw.addr,
        Request::get(gw.url("/after-h2"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(get(&gw.admin_url("/healthz"), &[]).await.status, 200);
}

#[tokio::test]
async fn oversized_h2c_header_list_is_refused_and_not_forwarded() {
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "max_header_bytes = 8192");
    // Sent as the first stream, before the server's SETTINGS are known to the client,
    // so the client cannot refuse it locally.
    let send = h2_connect(gw.addr).await;
    let request = Request::get(format!("http://{}/big", gw.addr))
        .header("x-big", "a".repeat(20 * 1024))
        .body(())
        .unwrap();
    let outcome = tokio::time::timeout(STEP, h2_get(&send, request))
        .await
        .expect("no hang");
    eprintln!(
        "20 KiB header over h2c (max_header_bytes 8192): {:?}",
        outcome.as_ref().map(|(s, _)| *s)
    );
    match &outcome {
        Ok((status, _)) => assert_eq!(*status, 431),
        Err(err) => assert!(err.is_reset() || err.is_go_away(), "{err}"),
    }
    assert!(
        blue.records().is_empty(),
        "the oversized h2 request went upstream"
    );
    assert_eq!(get(&gw.url("/after"), &[]).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 4. Request smuggling
// ---------------------------------------------------------------------------------

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// What one smuggling vector produced.
struct Vector {
    statuses: Vec<u16>,
    closed: bool,
    seen: Vec<Record>,
}

impl Vector {
    fn row(&self, name: &str) {
        let seen: Vec<String> = self
            .seen
            .iter()
            .map(|r| match &r.body {
                Ok(body) => format!("{} {} (body {} B)", r.method, r.path, body.len()),
                Err(_) => format!("{} {} (body aborted)", r.method, r.path),
            })
            .collect();
        eprintln!(
            "SMUGGLING | {name} | answered {:?} | connection {} | upstream saw {}",
            self.statuses,
            if self.closed { "closed" } else { "kept open" },
            if seen.is_empty() {
                "nothing".to_string()
            } else {
                seen.join("; ")
            }
        );
    }

    /// No smuggled request upstream, and either a 400 with a close, or exactly one
    /// well-formed request upstream.
    fn assert_safe(&self, name: &str) {
        assert!(
            self.seen.iter().all(|r| !r.path.contains("smuggled")),
            "{name}: a smuggled request reached the upstream"
        );
        let rejected = self.statuses == [400] && self.closed;
        let one_clean = self.seen.len() == 1 && self.seen[0].body.is_ok();
        assert!(
            rejected || one_clean,
            "{name}: neither a 400 with a close nor one well-formed upstream request \
             (answered {:?}, closed {}, upstream saw {:?})",
            self.statuses,
            self.closed,
            self.seen
                .iter()
                .map(|r| (r.method.clone(), r.path.clone(), r.body.clone()))
                .collect::<Vec<_>>()
        );
    }
}

async fn smuggle(name: &str, bytes: &[u8]) -> Vector {
    let blue = Recorder::start("blue").await;
    let gw = single(blue.addr, "");
    let (responses, closed) = exchange(gw.addr, bytes, Duration::from_millis(1500)).await;
    // Let anything in flight upstream land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let vector = Vector {
        statuses: responses.iter().map(|r| r.status).collect(),
        closed,
        seen: blue.records(),
    };
    vector.row(name);
    // The gateway survives every vector.
    assert_eq!(get(&gw.url("/after"), &[]).await.status, 200);
    vector
}

#[tokio::test]
async fn smuggling_cl_te_body_is_chunked_and_connection_closed() {
    // A CL-honouring front would see one request; the pipelined GET must not run.
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let name = "CL+TE (CL covers a pipelined GET)";
    let v = smuggle(name, request.as_bytes()).await;
    v.assert_safe(name);
    assert!(v.closed, "RFC 9112 §6.1: close after responding to CL+TE");
}

#[tokio::test]
async fn smuggling_te_cl_chunk_hides_a_request_from_a_cl_backend() {
    // A CL-honouring backend would see the chunk's content as a second request.
    let chunk = format!("{SMUGGLED}x=1");
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let name = "TE+CL (chunk holds a request)";
    let v = smuggle(name, request.as_bytes()).await;
    v.assert_safe(name);
    if let Some(first) = v.seen.first() {
        assert!(
            first.headers.get("content-length").is_none()
                || first.headers.get("transfer-encoding").is_none(),
            "both framing headers went upstream"
        );
    }
}

#[tokio::test]
async fn smuggling_two_different_content_lengths() {
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{SMUGGLED}",
        5 + SMUGGLED.len()
    );
    let name = "two different Content-Length";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_content_length_list_with_different_values() {
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, {}\r\n\r\nhello{SMUGGLED}",
        5 + SMUGGLED.len()
    );
    let name = "Content-Length: 5, N";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_transfer_encoding_chunkedx() {
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let name = "Transfer-Encoding: chunkedx";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_transfer_encoding_with_space_before_colon() {
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let name = "`Transfer-Encoding : chunked` (space before colon)";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_transfer_encoding_obs_fold() {
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let name = "TE obs-fold (`Transfer-Encoding:\\r\\n chunked`)";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_hex_prefixed_chunk_size() {
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
    );
    let name = "chunk size `0x5`";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_bare_lf_in_chunked_framing() {
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n{SMUGGLED}"
    );
    let name = "bare LF in chunked framing";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_transfer_encoding_on_http_1_0() {
    let request = format!(
        "POST /a HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let name = "Transfer-Encoding on HTTP/1.0";
    smuggle(name, request.as_bytes()).await.assert_safe(name);
}

#[tokio::test]
async fn smuggling_upgrade_then_pipelined_request_is_not_tunnelled() {
    // The upstream answers 200 to the upgrade request: no tunnel, and the pipelined
    // request behind it is parsed and forwarded as an ordinary request.
    let request = "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let name = "Upgrade + pipelined request (upstream answers 200)";
    let v = smuggle(name, request.as_bytes()).await;
    assert!(v.seen.iter().all(|r| !r.path.contains("smuggled")));
    assert_eq!(v.statuses, [200, 200], "two ordinary responses");
    let paths: Vec<&str> = v.seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/up", "/second"]);
    let second = &v.seen[1];
    assert_eq!(
        second
            .headers
            .get("x-graygate-pool")
            .and_then(|h| h.to_str().ok()),
        Some("blue"),
        "the pipelined request did not go through the proxy's request path (tunnelled raw?)"
    );
    assert!(second.headers.get("via").is_some());
}

// ---------------------------------------------------------------------------------
// 5. Retries
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn pool_with_a_dead_endpoint_serves_every_get() {
    let dead = dead_address().await;
    let live = Recorder::start("live").await;
    let canary = Upstream::named("canary").await;
    let gw = Gateway::start(&pools_config(
        &[dead, live.addr],
        &[canary.addr],
        "",
        &routing("stable"),
    ));
    for i in 0..30 {
        let answer = get(&gw.url(&format!("/get-{i}")), &[]).await;
        assert_eq!(answer.status, 200, "GET {i}: {}", answer.body);
        assert_eq!(answer.body, "live");
    }
    let paths: Vec<String> = live.records().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths.len(),
        30,
        "each GET reached the live endpoint exactly once"
    );
    for i in 0..30 {
        assert_eq!(
            paths.iter().filter(|p| **p == format!("/get-{i}")).count(),
            1
        );
    }
    let retries = metric(&gw, "graygate_retries_total", &[("pool", "blue")]).await;
    eprintln!("dead + live endpoint, 30 GETs: all 200, retries_total{{pool=blue}} = {retries}");
    assert!(retries >= 1.0);
}

#[tokio::test]
async fn get_reset_after_the_head_is_retried_on_another_endpoint() {
    let resetter = RawUpstream::start(Script::ResetAfterHead).await;
    let live = Recorder::start("live").await;
    let gw = Gateway::start(&pools_config(
        &[resetter.addr, live.addr],
        &[live.addr],
        "",
        &routing("stable"),
    ));
    for i in 0..6 {
        let answer = get(&gw.url(&format!("/r-{i}")), &[]).await;
        assert_eq!(answer.status, 200, "GET {i}: {}", answer.body);
        assert_eq!(answer.body, "live");
    }
    assert_eq!(
        live.records().len(),
        6,
        "each GET answered exactly once by live"
    );
    let retries = metric(&gw, "graygate_retries_total", &[("pool", "blue")]).await;
    let resets = metric(
        &gw,
        "graygate_upstream_errors_total",
        &[("pool", "blue"), ("kind", "reset")],
    )
    .await;
    eprintln!(
        "reset-after-head + live, 6 GETs: resetter read {} heads, retries_total{{pool=blue}} = {retries}, reset errors = {resets}",
        resetter.requests()
    );
    assert!(resetter.requests() >= 1);
    assert!(retries > 0.0);
    assert_eq!(retries as usize, resetter.requests());
}

#[tokio::test]
async fn get_reset_on_accept_is_retried_on_another_endpoint() {
    let resetter = RawUpstream::start(Script::ResetOnAccept).await;
    let live = Recorder::start("live").await;
    let gw = Gateway::start(&pools_config(
        &[resetter.addr, live.addr],
        &[live.addr],
        "",
        &routing("stable"),
    ));
    for i in 0..6 {
        let answer = get(&gw.url(&format!("/a-{i}")), &[]).await;
        assert_eq!(answer.status, 200, "GET {i}: {}", answer.body);
    }
    assert_eq!(live.records().len(), 6);
    assert!(resetter.connections() >= 1);
    assert!(metric(&gw, "graygate_retries_total", &[("pool", "blue")]).await > 0.0);
}

#[tokio::test]
async fn post_reset_after_the_head_is_not_resent() {
    let resetter = RawUpstream::start(Script::ResetAfterHead).await;
    let live = Recorder::start("live").await;
    let gw = Gateway::start(&pools_config(
        &[resetter.addr, live.addr],
        &[live.addr],
        "",
        &routing("stable"),
    ));
    let mut hit = false;
    for i in 0..4 {
        let before = (resetter.requests(), live.records().len());
        let (status, _, _) =
            fetch(post_request(&gw.url(&format!("/p-{i}")), "payload"), STEP).await;
        let after = (resetter.requests(), live.records().len());
        if after.0 > before.0 {
            eprintln!(
                "POST to reset-after-head endpoint: {status}; resetter +{}, live +{}",
                after.0 - before.0,
                after.1 - before.1
            );
            assert_eq!(
                after.0 - before.0,
                1,
                "the POST reached the resetting endpoint once"
            );
            assert_eq!(
                after.1, before.1,
                "the POST was resent to the live endpoint"
            );
            assert_eq!(status, 502);
            hit = true;
            break;
        }
        assert_eq!(status, 200);
        assert_eq!(after.1 - before.1, 1);
    }
    assert!(hit, "no POST was routed to the resetting endpoint");
    assert_eq!(
        metric(&gw, "graygate_retries_total", &[("pool", "blue")]).await,
        0.0
    );
    assert!(live
        .records()
        .iter()
        .all(|r| r.method == "POST" && r.body.is_ok()));
}

#[tokio::test]
async fn post_to_a_refusing_endpoint_is_retried_on_the_live_one() {
    let dead = dead_address().await;
    let live = Recorder::start("live").await;
    let gw = Gateway::start(&pools_config(
        &[dead, live.addr],
        &[live.addr],
        "",
        &routing("stable"),
    ));
    let bodies = ["one", "two", "three", "four"];
    for (i, body) in bodies.iter().enumerate() {
        let (status, answer, _) =
            fetch(post_request(&gw.url(&format!("/p-{i}")), body), STEP).await;
        assert_eq!(status, 200, "POST {i}");
        assert_eq!(answer.unwrap(), "live");
    }
    let got: Vec<String> = live
        .records()
        .iter()
        .map(|r| String::from_utf8_lossy(r.body.as_ref().unwrap()).into_owned())
        .collect();
    assert_eq!(got, bodies, "every POST arrived whole, exactly once");
    let retries = metric(&gw, "graygate_retries_total", &[("pool", "blue")]).await;
    eprintln!("POSTs to dead + live: all 200, retries_total{{pool=blue}} = {retries}");
    assert!(retries >= 1.0);
}

#[tokio::test]
async fn retries_are_bounded_when_every_endpoint_resets() {
    let resetters = [
        RawUpstream::start(Script::ResetAfterHead).await,
        RawUpstream::start(Script::ResetAfterHead).await,
        RawUpstream::start(Script::ResetAfterHead).await,
        RawUpstream::start(Script::ResetAfterHead).await,
    ];
    let addrs: Vec<SocketAddr> = resetters.iter().map(|r| r.addr).collect();
    let canary = Upstream::named("canary").await;
    let gw = Gateway::start(&pools_config(
        &addrs,
        &[canary.addr],
        "",
        &routing("stable"),
    ));
    let (status, _, elapsed) = fetch(get_request(&gw.url("/bounded")), STEP).await;
    let attempts: usize = resetters.iter().map(RawUpstream::requests).sum();
    let retries = metric(&gw, "graygate_retries_total", &[("pool", "blue")]).await;
    eprintln!("4 resetting endpoints: {status} after {attempts} attempts in {elapsed:?}, retries_total = {retries}");
    assert_eq!(status, 502);
    assert!((1..=3).contains(&attempts), "{attempts} attempts");
    assert_eq!(attempts, 3, "first attempt + MAX_RETRIES (2)");
    assert_eq!(retries, 2.0);
    assert!(
        resetters.iter().all(|r| r.requests() <= 1),
        "an endpoint was tried twice"
    );
}

#[tokio::test]
async fn upstream_5xx_is_relayed_and_not_retried() {
    let failing = RawUpstream::start(Script::Reply {
        delay: Duration::ZERO,
        status: 503,
        body: "upstream-503",
    })
    .await;
    let live = Recorder::start("live").await;
    let gw = Gateway::start(&pools_config(
        &[failing.addr, live.addr],
        &[live.addr],
        "",
        &routing("stable"),
    ));
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (status, body, _) = fetch(get_request(&gw.url(&format!("/f-{i}"))), STEP).await;
        let body = body.unwrap();
        if status == 503 {
            assert_eq!(body, "upstream-503", "the upstream's own 5xx is relayed");
        }
        statuses.push(status.as_u16());
    }
    eprintln!("5xx + live endpoints, 4 GETs: {statuses:?}");
    assert_eq!(
        failing.requests() + live.records().len(),
        4,
        "no request was sent twice"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        failing.requests()
    );
    assert_eq!(
        metric(&gw, "graygate_retries_total", &[("pool", "blue")]).await,
        0.0
    );
}

// ---------------------------------------------------------------------------------
// 6. Dead canary
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn dead_canary_falls_back_to_stable_and_loses_nothing() {
    let blue = Upstream::named("blue").await;
    let dead = dead_address().await;
    let gw = Gateway::start(&pools_config(&[blue.addr], &[dead], "", &routing("stable")));
    for i in 0..50 {
        let answer = get(&gw.url(&format!("/c-{i}")), &[("x-canary", "1")]).await;
        assert_eq!(
            answer.status, 200,
            "canary-bound request {i}: {}",
            answer.body
        );
        assert_eq!(answer.body, "blue");
        assert_eq!(answer.header("x-graygate-pool"), Some("blue"));
    }
    assert_eq!(blue.requests().len(), 50);
    let fallbacks = metric(
        &gw,
        "graygate_fallbacks_total",
        &[("from", "canary"), ("to", "blue")],
    )
    .await;
    eprintln!("dead canary, fallback = stable: 50 x 200 from blue, fallbacks_total{{canary->blue}} = {fallbacks}");
    assert!(fallbacks > 0.0);
    assert_eq!(fallbacks, 50.0, "every canary-bound request was a fallback");
}

#[tokio::test]
async fn dead_canary_with_fallback_fail_answers_503_once_ejected() {
    let blue = Upstream::named("blue").await;
    let dead = dead_address().await;
    let gw = Gateway::start(&pools_config(&[blue.addr], &[dead], "", &routing("fail")));
    let mut statuses = Vec::new();
    for i in 0..12 {
        let answer = get(&gw.url(&format!("/c-{i}")), &[("x-canary", "1")]).await;
        statuses.push(answer.status.as_u16());
    }
    eprintln!("dead canary, fallback = fail: {statuses:?}");
    assert!(
        blue.requests().is_empty(),
        "fallback = fail sent traffic to blue"
    );
    let first_503 = statuses
        .iter()
        .position(|s| *s == 503)
        .expect("the canary was never ejected");
    assert!(
        first_503 <= 5,
        "ejection after at most 5 failures: {statuses:?}"
    );
    assert!(statuses[..first_503].iter().all(|s| *s == 502));
    assert!(statuses[first_503..].iter().all(|s| *s == 503));
    assert_eq!(
        metric(&gw, "graygate_fallbacks_total", &[("from", "canary")]).await,
        0.0
    );
    // Stable traffic is unaffected.
    assert_eq!(get(&gw.url("/stable"), &[]).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 7. Slow and dripping upstreams
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn slow_answer_within_request_timeout_succeeds() {
    let slow = RawUpstream::start(Script::Reply {
        delay: Duration::from_millis(700),
        status: 200,
        body: "slow",
    })
    .await;
    let gw = single(slow.addr, "request_timeout = \"3s\"");
    let (status, body, elapsed) = fetch(get_request(&gw.url("/slow")), STEP).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), "slow");
    assert!(elapsed >= Duration::from_millis(650));
    assert_eq!(slow.requests(), 1);
}

#[tokio::test]
async fn drip_body_with_gaps_below_request_timeout_streams_fully() {
    // 15 chunks 100 ms apart: 1.5 s in all, longer than request_timeout = 1s, but no
    // gap comes near it. request_timeout bounds the wait for the head and each gap.
    let drip = RawUpstream::start(Script::Drip {
        chunks: 15,
        gap: Duration::from_millis(100),
    })
    .await;
    let gw = single(drip.addr, "request_timeout = \"1s\"");
    let (status, body, elapsed) = fetch(get_request(&gw.url("/drip")), STEP).await;
    let body = body.expect("the dripped body arrived whole");
    let expected: String = (0..15).map(|i| format!("chunk-{i:02}\n")).collect();
    eprintln!(
        "drip body (15 x 100 ms, request_timeout 1s): {status}, {} bytes in {elapsed:?}",
        body.len()
    );
    assert_eq!(status, 200);
    assert_eq!(body, expected.as_bytes());
}

#[tokio::test]
async fn stalled_body_is_cut_after_request_timeout_never_hangs() {
    let stall = RawUpstream::start(Script::Stall).await;
    let gw = single(stall.addr, "request_timeout = \"1s\"");
    let (status, body, elapsed) =
        fetch(get_request(&gw.url("/stall")), Duration::from_secs(6)).await;
    eprintln!("stalled body (request_timeout 1s): head {status}, body {body:?} after {elapsed:?}");
    assert_eq!(status, 200, "the head had already been relayed");
    assert!(
        body.is_err(),
        "a cut-off body must not look complete to the client: {body:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "cut after {elapsed:?}"
    );
    assert!(
        metric(
            &gw,
            "graygate_upstream_errors_total",
            &[("pool", "blue"), ("kind", "timeout")]
        )
        .await
            >= 1.0
    );
}

// ---------------------------------------------------------------------------------
// 8. Graceful shutdown
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_in_flight_request_refuses_new_ones_and_exits_zero() {
    let blue = Upstream::named("blue").await;
    let slow = RawUpstream::start(Script::Reply {
        delay: Duration::from_secs(1),
        status: 200,
        body: "slow-done",
    })
    .await;
    let mut gw = Gateway::start(&pools_config(
        &[blue.addr],
        &[slow.addr],
        "",
        &routing("stable"),
    ));

    // An idle keep-alive connection, open during the whole shutdown.
    let mut idle = RawConn::connect(gw.addr).await;
    idle.send(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        idle.response(STEP).await.expect("idle conn served").status,
        200
    );

    let url = gw.url("/in-flight");
    let in_flight = tokio::spawn(async move {
        let request = Request::get(url)
            .header("x-canary", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        fetch(request, STEP).await
    });
    assert!(
        wait_until(STEP, || slow.requests() == 1).await,
        "the slow request did not arrive"
    );

    let term = Instant::now();
    sigterm(&gw);

    // New connections are refused once the listener is closed.
    let mut refused_after = None;
    while term.elapsed() < Duration::from_secs(2) {
        match TcpStream::connect(gw.addr).await {
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                refused_after = Some(term.elapsed());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }

    let idle_closed = idle.closed_within(Duration::from_secs(3)).await;
    let (status, body, _) = in_flight.await.unwrap();
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(8)));
    let exited_after = term.elapsed();
    eprintln!(
        "SIGTERM: new connections refused after {refused_after:?}; idle keep-alive closed after {idle_closed:?}; in-flight got {status} {body:?}; exit {exit:?} after {exited_after:?} (shutdown_timeout 5s)"
    );
    assert!(
        refused_after.is_some(),
        "new connections still accepted 2 s after SIGTERM"
    );
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), "slow-done");
    assert!(
        idle_closed.is_some(),
        "the idle keep-alive connection was left open"
    );
    let exit = exit.expect("the gateway did not exit");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        exited_after < Duration::from_secs(5),
        "exit took {exited_after:?}, not within shutdown_timeout"
    );
    assert_eq!(slow.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_hold_up_the_exit() {
    let blue = Upstream::named("blue").await;
    let mut gw = single(blue.addr, "header_read_timeout = \"30s\"");
    // An idle HTTP/1.1 keep-alive connection, a connection that never sent a byte, and
    // an idle h2c connection.
    let mut keep_alive = RawConn::connect(gw.addr).await;
    keep_alive
        .send(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(keep_alive.response(STEP).await.expect("served").status, 200);
    let mut silent = RawConn::connect(gw.addr).await;
    let h2 = h2_connect(gw.addr).await;
    let (status, _) = h2_get(&h2, Request::get(gw.url("/h2")).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 200);

    let term = Instant::now();
    sigterm(&gw);
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(8)));
    let exited_after = term.elapsed();
    let keep_alive_closed = keep_alive.closed_within(Duration::from_millis(500)).await;
    let silent_closed = silent.closed_within(Duration::from_millis(500)).await;
    eprintln!("SIGTERM with only idle connections: exit {exit:?} after {exited_after:?}");
    let exit = exit.expect("the gateway did not exit");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        exited_after < Duration::from_secs(3),
        "idle connections held the exit for {exited_after:?} (shutdown_timeout 5s)"
    );
    assert!(keep_alive_closed.is_some() && silent_closed.is_some());
    drop(h2);
}
