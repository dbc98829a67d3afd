//! The hand-written upstream HTTP/1.1 client, end to end: keep-alive reuse, every
//! RFC 9112 response framing (content-length, chunked with extensions and trailers,
//! close-delimited, bodiless), 1xx interim answers, stale idle connections and the
//! resend of a bodiless idempotent request, malformed responses, the framing of the
//! request the upstream sees, a 101 with bytes right behind it, and multi-MiB bodies.
//!
//! Every test starts its own gateway (one pool, `blue`, with a single endpoint) in
//! front of a [`Scripted`] upstream: a raw-TCP server on 127.0.0.1 that writes exact
//! bytes, counts the connections it accepts and records every request as it arrived
//! on the wire (head verbatim, body with its framing). So a test can tell which
//! upstream connection carried which request, and prove reuse or its absence.
//! Every wait is bounded; the gateway process is killed on drop.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::*;
use common::*;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------

/// `data` as a chunked body, cycling through `sizes` for the chunk sizes.
fn chunk_encode(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let size = sizes[i % sizes.len()].min(data.len() - at);
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        out.extend_from_slice(&data[at..at + size]);
        out.extend_from_slice(b"\r\n");
        at += size;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Asserts two large byte strings are equal without printing them.
fn assert_same_bytes(got: &[u8], expected: &[u8], what: &str) {
    let first_difference = got.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        got.len() == expected.len() && first_difference.is_none(),
        "{what}: got {} bytes, expected {}; first difference at {first_difference:?}",
        got.len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------------
// Gateway and clients
// ---------------------------------------------------------------------------------

/// A gateway with one pool, `blue`, whose single endpoint is `upstream`, and
/// `limits` as the body of its `[limits]` table.
fn gateway(upstream: SocketAddr, limits: &str) -> Gateway {
    // One worker: each worker keeps its own idle upstream connections, and these tests
    // count how connections are reused.
    Gateway::start(&one_pool_config(upstream, 1, limits))
}

/// Lets the gateway hand a finished upstream connection back to its idle pool: that
/// happens when the response body is dropped, just after its last byte went out.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// A response as a test client saw it; `body` is the error text if the body did not
/// arrive whole.
#[derive(Debug)]
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, String>,
    elapsed: Duration,
}

impl Fetched {
    /// The body, which must have arrived whole.
    fn bytes(&self) -> &Bytes {
        match &self.body {
            Ok(body) => body,
            Err(err) => panic!("the body broke off: {err} (status {})", self.status),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request on a fresh HTTP/1.1 client connection, bounded by [`STEP`].
async fn fetch(request: Request<Full<Bytes>>) -> Fetched {
    let start = Instant::now();
    tokio::time::timeout(STEP, async {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(request).await.expect("a response head");
        let (head, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("{e:?}"));
        Fetched {
            status: head.status,
            headers: head.headers,
            body,
            elapsed: start.elapsed(),
        }
    })
    .await
    .expect("the exchange ended in time (no hang)")
}

async fn fetch_method(gw: &Gateway, method: Method, path: &str) -> Fetched {
    fetch(
        Request::builder()
            .method(method)
            .uri(gw.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

async fn fetch_get(gw: &Gateway, path: &str) -> Fetched {
    fetch_method(gw, Method::GET, path).await
}

/// Writes `pieces` on a fresh raw connection, a short pause between them, then reads
/// until the gateway closes (the requests carry `Connection: close`), bounded.
async fn raw_request(addr: SocketAddr, pieces: &[&[u8]]) -> String {
    tokio::time::timeout(STEP, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for piece in pieces {
            stream.write_all(piece).await.unwrap();
            tokio::time::sleep(Scripted::PIECE_GAP).await;
        }
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("the raw exchange ended in time")
}

/// Reads a response head byte by byte, so nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => panic!(
                "connection ended inside a head: {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---------------------------------------------------------------------------------
// 1-4. Keep-alive and response framing
// ---------------------------------------------------------------------------------

/// Three sequential GETs to a keep-alive upstream answering with content-length
/// bodies travel on one upstream connection, each getting its own body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_is_reused_for_sequential_requests() {
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "");
    for path in ["/one", "/two", "/three"] {
        let answer = fetch_get(&gw, path).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), format!("answer to {path}"));
        settle().await;
    }
    assert_eq!(up.connections(), 1, "{:?}", up.received());
    assert_eq!(up.sequence(), ["1.1 /one", "1.2 /two", "1.3 /three"]);
}

/// A chunked response with chunk extensions and a trailer, split across writes at
/// awkward places (inside a size line, inside data, between CR and LF), arrives
/// whole; the connection is then reused for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_with_extensions_and_trailers_arrives_whole_and_reuses() {
    let up = Scripted::start(|r: &Received| {
        if r.path() == "/chunked" {
            Reply::Pieces(vec![
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5;name=value\r\nhel".to_vec(),
                b"lo\r\n1;a=\"q\"\r\n \r\n1".to_vec(),
                b"A\r\nabcdefghijklm".to_vec(),
                b"nopqrstuvwxyz\r".to_vec(),
                b"\n0\r\nx-checksum: abc\r\n".to_vec(),
                b"x-other: 1\r\n\r\n".to_vec(),
            ])
        } else {
            Reply::Send(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nnext\r\n0\r\n\r\n"
                    .to_vec(),
            )
        }
    })
    .await;
    let gw = gateway(up.addr, "");
    let first = fetch_get(&gw, "/chunked").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "hello abcdefghijklmnopqrstuvwxyz");
    settle().await;
    let second = fetch_get(&gw, "/next").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "next");
    assert_eq!(up.connections(), 1, "{:?}", up.received());
    assert_eq!(up.on_connection(1).len(), 2);
}

/// A close-delimited response (HTTP/1.1 200 with neither content-length nor
/// transfer-encoding, the upstream closing after the body) arrives whole, and the
/// next request opens a new upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_response_arrives_whole_and_is_not_reused() {
    let body = "a body delimited by the close of the connection\n".repeat(3000);
    let response =
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n{body}").into_bytes();
    let up = Scripted::start(move |r: &Received| {
        if r.conn == 1 {
            Reply::SendThenClose(response.clone())
        } else {
            echo_path(r)
        }
    })
    .await;
    let gw = gateway(up.addr, "");
    let first = fetch_get(&gw, "/until-close").await;
    assert_eq!(first.status, 200);
    assert_same_bytes(first.bytes(), body.as_bytes(), "close-delimited body");
    settle().await;
    let second = fetch_get(&gw, "/next").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "answer to /next");
    assert_eq!(up.connections(), 2);
    assert_eq!(up.on_connection(2).len(), 1);
}

/// A response with `Connection: close`, and an HTTP/1.0 response without
/// keep-alive, are relayed whole, and their connections are not reused even though
/// this upstream leaves them open and would read another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_and_http10_responses_are_not_reused() {
    let up = Scripted::start(|r: &Received| match r.conn {
        1 => Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfirst".to_vec(),
        ),
        2 => Reply::Send(b"HTTP/1.0 200 OK\r\ncontent-length: 6\r\n\r\nsecond".to_vec()),
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "");
    none_reused(&gw, &up, "first", "second").await;
}

/// GETs `/first`, `/second` and `/third` in turn: the first two answer `first` and
/// `second`, the third is echoed, and each request went on a connection of its own.
async fn none_reused(gw: &Gateway, up: &Scripted, first: &str, second: &str) {
    for (path, want) in [("/first", first), ("/second", second)] {
        let answer = fetch_get(gw, path).await;
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (StatusCode::OK, want)
        );
        settle().await;
    }
    let third = fetch_get(gw, "/third").await;
    assert_eq!(third.status, 200);
    assert_eq!(third.text(), "answer to /third");
    assert_eq!(up.connections(), 3, "{:?}", up.received());
    for conn in 1..=3 {
        assert_eq!(up.on_connection(conn).len(), 1, "connection {conn}");
    }
}

// ---------------------------------------------------------------------------------
// 5-8. Interim and bodiless responses, extra bytes
// ---------------------------------------------------------------------------------

/// `100 Continue` and `103 Early Hints` (with a link header) before the final
/// response are skipped: the client gets the 200 and its body, whether the interim
/// answers come in the same write or in separate ones, and the connection is reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_1xx_responses_are_skipped_before_the_final_one() {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    const HINTS: &[u8] =
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n";
    let up = Scripted::start(|r: &Received| {
        let last = ok(&format!("final for {}", r.path()));
        if r.nth == 1 {
            Reply::Send([CONTINUE, HINTS, &last].concat())
        } else {
            Reply::Pieces(vec![
                HINTS.to_vec(),
                CONTINUE.to_vec(),
                HINTS.to_vec(),
                last,
            ])
        }
    })
    .await;
    let gw = gateway(up.addr, "");
    let first = fetch_get(&gw, "/together").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "final for /together");
    settle().await;
    let second = fetch_get(&gw, "/apart").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "final for /apart");
    assert_eq!(up.connections(), 1, "{:?}", up.received());
}

/// A HEAD answered with `content-length: 5` and no body: the client gets the head,
/// and the connection is reused for a GET that gets its own body (the client did not
/// wait for, or take, five body bytes after the HEAD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_has_no_body_and_the_connection_stays_in_sync() {
    let up = Scripted::start(|r: &Received| {
        if r.method() == "HEAD" {
            Reply::Send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::Send(ok("the GET body"))
        }
    })
    .await;
    let gw = gateway(up.addr, "");
    let head = fetch_method(&gw, Method::HEAD, "/resource").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("5"));
    assert!(head.bytes().is_empty());
    assert!(
        head.elapsed < Duration::from_secs(2),
        "the HEAD took {:?}",
        head.elapsed
    );
    settle().await;
    let get = fetch_get(&gw, "/resource").await;
    assert_eq!(get.status, 200);
    assert_eq!(get.text(), "the GET body");
    assert_eq!(up.connections(), 1, "{:?}", up.received());
    let methods: Vec<_> = up
        .received()
        .iter()
        .map(|r| r.method().to_string())
        .collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

/// 204 and 304 (the 304 declaring `content-length: 9`, as the 200 would) carry no
/// body: both are relayed, and the same connection then serves a 200 with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_are_relayed_and_reused() {
    let up = Scripted::start(|r: &Received| match r.path() {
        "/no-content" => Reply::Send(b"HTTP/1.1 204 No Content\r\nx-n: 1\r\n\r\n".to_vec()),
        "/not-modified" => Reply::Send(
            b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 9\r\n\r\n".to_vec(),
        ),
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "");
    let no_content = fetch_get(&gw, "/no-content").await;
    assert_eq!(no_content.status, 204);
    assert_eq!(no_content.header("x-n"), Some("1"));
    assert!(no_content.bytes().is_empty());
    settle().await;
    let not_modified = fetch(
        Request::get(gw.url("/not-modified"))
            .header("if-none-match", "\"v1\"")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert!(not_modified.bytes().is_empty());
    settle().await;
    let after = fetch_get(&gw, "/after").await;
    assert_eq!(after.status, 200);
    assert_eq!(after.text(), "answer to /after");
    assert_eq!(up.connections(), 1, "{:?}", up.received());
    assert_eq!(up.on_connection(1).len(), 3);
}

/// An upstream that sends more than its content-length declared (in the same write,
/// or just after) gets its first response relayed correctly, and its connection is
/// not reused: the next request goes on a new connection and gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_content_length_body_prevent_reuse() {
    let up = Scripted::start(|r: &Received| match (r.conn, r.nth) {
        (1, 1) => Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"
                .to_vec(),
        ),
        (2, 1) => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nworld".to_vec(),
            b"EXTRA".to_vec(),
        ]),
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "");
    none_reused(&gw, &up, "hello", "world").await;
}

// ---------------------------------------------------------------------------------
// 9. Stale idle connections and the resend
// ---------------------------------------------------------------------------------

/// An idle keep-alive connection the upstream closed without `Connection: close`
/// (with a FIN, or with a reset) is not used: with a single endpoint, the next GET
/// still succeeds, on a new connection. A POST with a body after such a close also
/// succeeds, sent exactly once: it cannot be resent, so only the liveness probe of
/// the idle connection, before any byte is written, can save it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_idle_connection_is_replaced_with_a_single_endpoint() {
    let up = Scripted::start(|r: &Received| {
        let bytes = ok(&format!("answer to {}", r.path()));
        match r.conn {
            1..=3 => Reply::SendThenCloseIdle {
                bytes,
                after: Duration::from_millis(50),
                reset: r.conn == 3,
            },
            _ => Reply::Send(bytes),
        }
    })
    .await;
    let gw = gateway(up.addr, "request_timeout = \"4s\"");
    let steps = [
        (Method::GET, "/first"),
        (Method::GET, "/after-fin"),
        (Method::POST, "/post-after-fin"),
        (Method::GET, "/after-reset"),
    ];
    for (method, path) in &steps {
        let body = if method == Method::POST {
            Bytes::from_static(b"a body")
        } else {
            Bytes::new()
        };
        let answer = fetch(
            Request::builder()
                .method(method)
                .uri(gw.url(path))
                .body(Full::new(body))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{method} {path}: {:?}", answer.body);
        assert_eq!(answer.text(), format!("answer to {path}"));
        // The upstream closes the idle connection 50 ms after answering.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seen: Vec<_> = up
        .received()
        .iter()
        .map(|r| (r.conn, r.method().to_string(), r.path().to_string()))
        .collect();
    let expected: Vec<_> = steps
        .iter()
        .enumerate()
        .map(|(i, (method, path))| (i + 1, method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        seen, expected,
        "each request once, each on a new connection"
    );
    assert_eq!(up.received()[2].body, b"a body");
}

/// On a reused connection, an upstream that reads a GET and closes without answering
/// makes the client resend it once on a fresh connection, which answers: the client
/// gets 200 and the upstream saw the GET twice (allowed: GET is idempotent and no
/// response byte came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_a_reused_connection_closed_unanswered_is_resent_once() {
    let up = Scripted::start(|r: &Received| match (r.conn, r.nth) {
        (1, 2) => Reply::Close,
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "request_timeout = \"4s\"");
    let warm = fetch_get(&gw, "/warm").await;
    assert_eq!(warm.status, 200);
    settle().await;
    let again = fetch_get(&gw, "/again").await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.text(), "answer to /again");
    assert_eq!(up.sequence(), ["1.1 /warm", "1.2 /again", "2.1 /again"]);
}

/// The same failure for a POST with a body is answered 502 and never resent: the
/// upstream saw the POST at most once, and the gateway serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_on_a_reused_connection_closed_unanswered_is_not_resent() {
    let up = Scripted::start(|r: &Received| match (r.conn, r.nth) {
        (1, 2) => Reply::Close,
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "request_timeout = \"4s\"");
    let warm = fetch_get(&gw, "/warm").await;
    assert_eq!(warm.status, 200);
    settle().await;
    let post = fetch(
        Request::post(gw.url("/submit"))
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, 502, "{:?}", post.body);
    let posts: Vec<_> = up
        .received()
        .into_iter()
        .filter(|r| r.method() == "POST")
        .collect();
    assert!(
        posts.len() <= 1,
        "the POST reached the upstream {} times",
        posts.len()
    );
    assert!(posts.iter().all(|r| r.body == b"payload"), "{posts:?}");
    settle().await;
    let after = fetch_get(&gw, "/after").await;
    assert_eq!(after.status, 200);
    assert_eq!(after.text(), "answer to /after");
}

/// The resend happens once: when every idle connection the gateway holds takes a
/// GET and closes without answering (a request that kills its worker, say), the GET
/// is not sent down each of them in turn. RFC 9110 §9.2.2: a client SHOULD NOT
/// automatically retry a failed automatic retry. Three concurrent slow requests
/// leave three idle connections; the upstream then reads `/doomed` on any reused
/// connection and closes. At most two sends may reach it (the first, and one resend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resend_is_not_resent_again_on_other_idle_connections() {
    let up = Scripted::start(|r: &Received| match r.path() {
        "/slow" => Reply::Later(Duration::from_millis(300), ok("slow")),
        "/doomed" if r.nth > 1 => Reply::Close,
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "request_timeout = \"4s\"");
    let (a, b, c) = tokio::join!(
        fetch_get(&gw, "/slow"),
        fetch_get(&gw, "/slow"),
        fetch_get(&gw, "/slow")
    );
    assert!([a.status, b.status, c.status].iter().all(|s| *s == 200));
    assert_eq!(up.connections(), 3, "three idle connections to start from");
    settle().await;
    let doomed = fetch_get(&gw, "/doomed").await;
    let sends: Vec<_> = up
        .received()
        .into_iter()
        .filter(|r| r.path() == "/doomed")
        .map(|r| (r.conn, r.nth))
        .collect();
    assert!(doomed.status == 200 || doomed.status == 502, "{doomed:?}");
    assert!(
        sends.len() <= 2,
        "the GET reached the upstream {} times (connection, position): {sends:?}; \
         the client answered {}",
        sends.len(),
        doomed.status
    );
}

/// An interim response is a response byte: a GET on a reused connection that got
/// `103 Early Hints` and then saw the connection close is not resent (the upstream
/// had started on it); the client gets 502 and the upstream saw the GET once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resend_after_an_interim_response() {
    let up = Scripted::start(|r: &Received| match (r.conn, r.nth) {
        (1, 2) => Reply::SendThenClose(
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n".to_vec(),
        ),
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "request_timeout = \"4s\"");
    let warm = fetch_get(&gw, "/warm").await;
    assert_eq!(warm.status, 200);
    settle().await;
    let hinted = fetch_get(&gw, "/hinted").await;
    let sends: Vec<_> = up
        .received()
        .into_iter()
        .filter(|r| r.path() == "/hinted")
        .map(|r| (r.conn, r.nth))
        .collect();
    assert_eq!(
        sends,
        [(1, 2)],
        "sent again after a 103 came back; the client answered {}",
        hinted.status
    );
    assert_eq!(hinted.status, 502, "{hinted:?}");
}

// ---------------------------------------------------------------------------------
// 10. Malformed responses
// ---------------------------------------------------------------------------------

/// Malformed responses give the client a 502 (an invalid status line, a status code
/// out of range, two different content-lengths, a head over 64 KiB whether complete
/// or never ending), well before the request timeout; a bad chunk size in the middle
/// of a body cuts the response off. After each, the gateway serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_are_502_or_cut_off_and_the_gateway_recovers() {
    let padding: String = (0..80)
        .map(|i| format!("x-pad-{i:02}: {}\r\n", "a".repeat(1000)))
        .collect();
    let huge = format!("HTTP/1.1 200 OK\r\n{padding}content-length: 2\r\n\r\nhi").into_bytes();
    let endless = format!("HTTP/1.1 200 OK\r\n{padding}").into_bytes();
    let up = Scripted::start(move |r: &Received| match r.path() {
        "/garbage-status" => Reply::Send(b"hello there\r\ncontent-length: 0\r\n\r\n".to_vec()),
        "/bad-code" => Reply::Send(b"HTTP/1.1 2000 Too Big\r\ncontent-length: 0\r\n\r\n".to_vec()),
        "/two-lengths" => Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
        ),
        "/huge-head" => Reply::Send(huge.clone()),
        "/endless-head" => Reply::Send(endless.clone()),
        "/bad-chunk" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            b"zz\r\nmore\r\n0\r\n\r\n".to_vec(),
        ]),
        _ => echo_path(r),
    })
    .await;
    let gw = gateway(up.addr, "request_timeout = \"4s\"");
    let quick = Duration::from_secs(3);
    for path in [
        "/garbage-status",
        "/bad-code",
        "/two-lengths",
        "/huge-head",
        "/endless-head",
    ] {
        let bad = fetch_get(&gw, path).await;
        assert_eq!(bad.status, 502, "{path}: {:?}", bad.body);
        assert!(bad.elapsed < quick, "{path} took {:?}", bad.elapsed);
        let next = fetch_get(&gw, "/ok").await;
        assert_eq!(next.status, 200, "after {path}");
        assert_eq!(next.text(), "answer to /ok");
    }

    let cut = fetch_get(&gw, "/bad-chunk").await;
    assert!(
        cut.status == 502 || (cut.status == 200 && cut.body.is_err()),
        "a bad chunk size mid-body must cut the response off: {cut:?}"
    );
    assert!(cut.elapsed < quick, "the cut-off took {:?}", cut.elapsed);
    let next = fetch_get(&gw, "/ok").await;
    assert_eq!(next.status, 200, "after /bad-chunk");
    assert_eq!(next.text(), "answer to /ok");
}

// ---------------------------------------------------------------------------------
// 11. The request as the upstream sees it
// ---------------------------------------------------------------------------------

/// The request framing on the upstream wire: a chunked client body goes out chunked
/// (valid chunks, no empty chunk before the terminator), a content-length body with
/// its length and exact bytes, a bodiless POST with `content-length: 0`, a GET with
/// no framing header; request lines are origin-form `HTTP/1.1`, even for an
/// absolute-form target or an HTTP/1.0 client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_framing_seen_by_the_upstream() {
    let up = Scripted::start(echo_path).await;
    let gw = gateway(up.addr, "");
    let requests: [&[&[u8]]; 6] = [
        &[
            b"POST /chunked?x=1 HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            b"5;ext=1\r\nhello\r\n",
            b"6\r\n world\r\n",
            b"1\r\n!\r\n0\r\n\r\n",
        ],
        &[b"POST /length HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world"],
        &[b"POST /bodiless HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"],
        &[b"POST /zero HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"],
        &[b"GET http://app/absolute?q=1 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"],
        &[b"GET /old HTTP/1.0\r\nHost: app\r\n\r\n"],
    ];
    for pieces in requests {
        let answer = raw_request(gw.addr, pieces).await;
        assert!(
            answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
            "{answer}"
        );
    }
    let seen = up.received();
    assert_eq!(seen.len(), 6, "{seen:?}");
    let lines: Vec<_> = seen.iter().map(|r| r.request_line().to_string()).collect();
    assert_eq!(
        lines,
        [
            "POST /chunked?x=1 HTTP/1.1",
            "POST /length HTTP/1.1",
            "POST /bodiless HTTP/1.1",
            "POST /zero HTTP/1.1",
            "GET /absolute?q=1 HTTP/1.1",
            "GET /old HTTP/1.1",
        ]
    );

    let chunked = &seen[0];
    assert_eq!(
        chunked.header_values("transfer-encoding"),
        ["chunked"],
        "{}",
        chunked.head
    );
    assert!(
        chunked.header_values("content-length").is_empty(),
        "{}",
        chunked.head
    );
    let decoded = decode_chunked(&chunked.body)
        .expect("a valid chunked body")
        .expect("a complete chunked body");
    assert_eq!(decoded.data, b"hello world!");
    assert_eq!(
        decoded.used,
        chunked.body.len(),
        "bytes after the terminator"
    );
    assert!(
        chunked.body.ends_with(b"\r\n0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&chunked.body)
    );
    let (last, data_chunks) = decoded.sizes.split_last().unwrap();
    assert_eq!(*last, 0);
    assert!(
        !data_chunks.is_empty() && data_chunks.iter().all(|&s| s > 0),
        "{:?}",
        decoded.sizes
    );

    let length = &seen[1];
    assert_eq!(
        length.header_values("content-length"),
        ["11"],
        "{}",
        length.head
    );
    assert!(
        length.header_values("transfer-encoding").is_empty(),
        "{}",
        length.head
    );
    assert_eq!(length.body, b"hello world");

    for bodiless in &seen[2..4] {
        assert_eq!(
            bodiless.header_values("content-length"),
            ["0"],
            "{}",
            bodiless.head
        );
        assert!(
            bodiless.header_values("transfer-encoding").is_empty(),
            "{}",
            bodiless.head
        );
        assert!(bodiless.body.is_empty());
    }

    for get in &seen[4..] {
        assert!(
            get.header_values("content-length").is_empty(),
            "{}",
            get.head
        );
        assert!(
            get.header_values("transfer-encoding").is_empty(),
            "{}",
            get.head
        );
    }
}

// ---------------------------------------------------------------------------------
// 12. Upgrade with early bytes
// ---------------------------------------------------------------------------------

/// An upstream that answers `101 Switching Protocols` and, in the same write, the
/// first bytes of the new protocol: the client receives the 101, then those early
/// bytes before anything else, and the tunnel then echoes both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_delivers_bytes_sent_right_after_the_101_first() {
    // A WebSocket text frame ("hello", unmasked as from a server).
    const EARLY: &[u8] = b"\x81\x05hello";
    let up = Scripted::start(|_: &Received| {
        Reply::Tunnel(
            [
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".as_slice(),
                EARLY,
            ]
            .concat(),
        )
    })
    .await;
    let gw = gateway(up.addr, "");
    tokio::time::timeout(STEP, async {
        let mut client = TcpStream::connect(gw.addr).await.unwrap();
        client
            .write_all(b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(header_values(&head, "upgrade"), ["websocket"], "{head}");
        let mut early = vec![0u8; EARLY.len()];
        client.read_exact(&mut early).await.unwrap();
        assert_eq!(early, EARLY, "the bytes right behind the 101 come first");
        for message in [b"ping from the client".as_slice(), b"\x00\x01\x02 binary too"] {
            client.write_all(message).await.unwrap();
            let mut echoed = vec![0u8; message.len()];
            client.read_exact(&mut echoed).await.unwrap();
            assert_eq!(echoed, message);
        }
    })
    .await
    .expect("the tunnel worked in time");
    let seen = up.received();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let connection = seen[0]
        .header_values("connection")
        .join(",")
        .to_ascii_lowercase();
    assert!(connection.contains("upgrade"), "{}", seen[0].head);
    assert_eq!(
        seen[0].header_values("upgrade"),
        ["websocket"],
        "{}",
        seen[0].head
    );
}

// ---------------------------------------------------------------------------------
// 13. Large bodies
// ---------------------------------------------------------------------------------

/// Several MiB, chunked (chunks of many sizes) and then with a content-length,
/// stream through byte for byte; the chunked response's connection is reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_and_content_length_bodies_stream_intact() {
    const SIZE: usize = 6 * 1024 * 1024 + 7;
    let chunked_data = pseudo_random(SIZE, 0x9e37_79b9_7f4a_7c15);
    let length_data = pseudo_random(SIZE, 0x2545_f491_4f6c_dd1d);
    let chunked_response = [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n".as_slice(),
        chunk_encode(&chunked_data, &[1, 100, 8191, 65_536, 3, 1_000_003, 16_384]).as_slice(),
    ]
    .concat();
    let length_response = [
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {SIZE}\r\n\r\n").as_bytes(),
        length_data.as_slice(),
    ]
    .concat();
    let up = Scripted::start(move |r: &Received| match r.path() {
        "/chunked" => Reply::Send(chunked_response.clone()),
        _ => Reply::Send(length_response.clone()),
    })
    .await;
    let gw = gateway(up.addr, "");
    let chunked = fetch_get(&gw, "/chunked").await;
    assert_eq!(chunked.status, 200);
    assert_same_bytes(chunked.bytes(), &chunked_data, "chunked body");
    settle().await;
    let length = fetch_get(&gw, "/length").await;
    assert_eq!(length.status, 200);
    assert_eq!(
        length.header("content-length"),
        Some(SIZE.to_string().as_str())
    );
    assert_same_bytes(length.bytes(), &length_data, "content-length body");
    assert_eq!(up.connections(), 1, "{:?}", up.received().len());
}

// ---------------------------------------------------------------------------------
// 14. Answers that come while the request body is still being sent
// ---------------------------------------------------------------------------------

/// Reads from `stream` until a blank line ends a request head; returns the head.
async fn read_request_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "connection closed inside the head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An upstream that refuses an upload as soon as it has the head (a 413 without
/// reading the body, as an upstream enforcing its own limit does) gets that answer
/// relayed at once, while the client is still sending: the rest of the body is not
/// waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_is_read_is_relayed_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request_head(&mut stream).await;
        stream
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
            )
            .await
            .unwrap();
        // Keep the connection open, unread, so the answer is not lost to a reset.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let gw = gateway(addr, "");

    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&[b'x'; 64 * 1024]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), client.read(&mut answer))
        .await
        .expect("the 413 arrives while the body is still incomplete")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    upstream.abort();
}

/// `100 Continue` in the middle of an upload is only an interim answer: the body
/// goes on to its end and the final answer, which counts the bytes, is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_during_an_upload_does_not_cut_the_body() {
    const LEN: usize = 256 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_request_head(&mut stream).await;
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .unwrap();
        let length: usize = header_values(&head, "content-length")[0].parse().unwrap();
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        let count = body.iter().filter(|&&b| b == b'y').count().to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{count}",
            count.len()
        );
        stream.write_all(reply.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let gw = gateway(addr, "");

    let request = Request::post(gw.url("/upload"))
        .body(Full::new(Bytes::from(vec![b'y'; LEN])))
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), send(request))
        .await
        .expect("answered within 10 s");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, LEN.to_string());
    upstream.abort();
}
