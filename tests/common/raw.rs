//! Raw-TCP pieces for the tests that speak HTTP/1.1 byte for byte: a counting
//! server ([`RawServer`]), a scripted upstream that records every request as it read
//! it off the wire ([`Scripted`]), a client connection that keeps what it reads
//! ([`RawConn`], parsed by the test files), the request reader and the strict chunked
//! decoder they share, and deterministic test data.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::STEP;

// ---------------------------------------------------------------------------------
// A counting raw-TCP server
// ---------------------------------------------------------------------------------

/// A raw-TCP server on 127.0.0.1 that counts the connections it accepts and serves
/// each in a task of its own; it stops, and its connection tasks end, when dropped.
pub struct RawServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    /// Serves every accepted connection with `serve(stream, n)`, `n` counting the
    /// connections from 1 (counted as accepted, before `serve` runs).
    pub async fn start<F, Fut>(serve: F) -> RawServer
    where
        F: Fn(TcpStream, usize) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so they end when the server is dropped.
            let mut tasks = JoinSet::new();
            loop {
                tokio::select! {
                    accepted_now = listener.accept() => {
                        let Ok((stream, _)) = accepted_now else { continue };
                        let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                        tasks.spawn(serve(stream, n));
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            }
        });
        RawServer {
            addr,
            connections,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Shuts down the write side and waits (bounded) for the peer to close, so the
/// close is a FIN, never a reset.
pub async fn linger_until_peer_closes(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(STEP, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

// ---------------------------------------------------------------------------------
// A scripted raw-TCP upstream
// ---------------------------------------------------------------------------------

/// One request as a [`Scripted`] upstream read it off the wire.
#[derive(Debug, Clone)]
pub struct Received {
    /// The accepted connection that carried it, counted from 1.
    pub conn: usize,
    /// Its position on that connection, counted from 1.
    pub nth: usize,
    /// The request head, verbatim, blank line included.
    pub head: String,
    /// The body exactly as framed on the wire (chunk-size lines included); see
    /// [`Received::data`] for it de-chunked.
    pub body: Vec<u8>,
}

impl Received {
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or("")
    }

    pub fn path(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or("")
    }

    /// Every value of header `name` (any case), in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    /// The body's data: de-chunked when it came chunked, as it arrived when its
    /// chunked framing was malformed (for the test to see).
    pub fn data(&self) -> Vec<u8> {
        if is_chunked(&self.head) {
            if let Ok(Some(decoded)) = decode_chunked(&self.body) {
                return decoded.data;
            }
        }
        self.body.clone()
    }
}

/// What a [`Scripted`] upstream does after reading a request.
pub enum Reply {
    /// Writes the bytes in one write, then waits for the next request on the
    /// connection (whatever the bytes said about keep-alive).
    Send(Vec<u8>),
    /// Writes each piece with a pause between them (the upstream's piece gap), then
    /// waits for the next request.
    Pieces(Vec<Vec<u8>>),
    /// Writes the bytes, then closes the connection (a FIN).
    SendThenClose(Vec<u8>),
    /// Writes the bytes, leaves the connection idle for the duration, then closes it
    /// while idle: with a FIN, or with a reset when `reset` is set.
    SendThenCloseIdle {
        bytes: Vec<u8>,
        after: Duration,
        reset: bool,
    },
    /// Waits, then writes the bytes and waits for the next request.
    Later(Duration, Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Writes the bytes in one write, then echoes everything it reads.
    Tunnel(Vec<u8>),
}

pub type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// A raw-TCP upstream that answers each request as its responder says, counting the
/// connections it accepts and recording every request it reads.
pub struct Scripted {
    pub addr: SocketAddr,
    server: RawServer,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Scripted {
    /// Pause between the pieces of a [`Reply::Pieces`], unless the upstream was
    /// started with another ([`Scripted::with_piece_gap`]).
    pub const PIECE_GAP: Duration = Duration::from_millis(30);

    pub async fn start(responder: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Scripted {
        Scripted::with_piece_gap(Scripted::PIECE_GAP, responder).await
    }

    /// An upstream that pauses `piece_gap` between the pieces of a [`Reply::Pieces`].
    pub async fn with_piece_gap(
        piece_gap: Duration,
        responder: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        let responder: Responder = Arc::new(responder);
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let server = RawServer::start(move |stream, conn| {
            serve(
                stream,
                conn,
                Arc::clone(&responder),
                Arc::clone(&log),
                piece_gap,
            )
        })
        .await;
        Scripted {
            addr: server.addr,
            server,
            received,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Requests read so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The paths of the requests read so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.path().to_string())
            .collect()
    }

    /// Every request read so far as `"<connection>.<nth on it> <path>"`, in order.
    pub fn sequence(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| format!("{}.{} {}", r.conn, r.nth, r.path()))
            .collect()
    }

    /// Requests read so far on connection `conn`.
    pub fn on_connection(&self, conn: usize) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.conn == conn)
            .collect()
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    responder: Responder,
    log: Arc<Mutex<Vec<Received>>>,
    piece_gap: Duration,
) {
    let mut buf = Vec::new();
    let mut nth = 0;
    loop {
        let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        nth += 1;
        let received = Received {
            conn,
            nth,
            head,
            body,
        };
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
                    tokio::time::sleep(piece_gap).await;
                }
            }
            Reply::SendThenClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return linger_until_peer_closes(stream).await;
            }
            Reply::SendThenCloseIdle {
                bytes,
                after,
                reset,
            } => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
                tokio::time::sleep(after).await;
                if reset {
                    let _ = stream.set_zero_linger();
                }
                return drop(stream);
            }
            Reply::Later(delay, bytes) => {
                tokio::time::sleep(delay).await;
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Close => return drop(stream),
            Reply::Tunnel(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
                let mut scratch = [0u8; 4096];
                loop {
                    match stream.read(&mut scratch).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&scratch[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `200 OK` with a content-length body: an ordinary keep-alive response.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `200 OK` whose body names the request path: which request got which answer.
pub fn echo_path(request: &Received) -> Reply {
    Reply::Send(ok(&format!("answer to {}", request.path())))
}

// ---------------------------------------------------------------------------------
// Reading requests off the wire
// ---------------------------------------------------------------------------------

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The values of header `name` (any case) in a raw head, in order.
pub fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .collect()
}

/// Whether a raw head declares a chunked body.
fn is_chunked(head: &str) -> bool {
    header_values(head, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// Reads one request (head, then the body its framing declares) from `buf` and the
/// stream; what follows it stays in `buf`. The body is returned as framed on the
/// wire. `None` if the peer closed first.
pub async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = header_values(&head, "content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok());
    let body_end = if is_chunked(&head) {
        loop {
            match decode_chunked(&buf[head_end..]) {
                Ok(Some(decoded)) => break head_end + decoded.used,
                // Malformed: keep what came, for the test to see.
                Err(_) => break buf.len(),
                Ok(None) => fill(stream, buf).await?,
            }
        }
    } else {
        let end = head_end + length.unwrap_or(0);
        while buf.len() < end {
            fill(stream, buf).await?;
        }
        end
    };
    let body = buf[head_end..body_end].to_vec();
    buf.drain(..body_end);
    Some((head, body))
}

/// Reads what the stream has into `buf`; `None` when the peer closed.
pub async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
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
pub struct Decoded {
    pub data: Vec<u8>,
    /// The size of every chunk, the last (zero) chunk included.
    pub sizes: Vec<usize>,
    /// Wire bytes the body took, trailers and the final CRLF included.
    pub used: usize,
}

/// Decodes a chunked body from the start of `wire`: `Ok(None)` when incomplete, an
/// error when any line or chunk is malformed.
pub fn decode_chunked(wire: &[u8]) -> Result<Option<Decoded>, String> {
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

// ---------------------------------------------------------------------------------
// A raw client connection
// ---------------------------------------------------------------------------------

/// A client connection that writes raw bytes and keeps what it reads in `buf`. Test
/// files add the response parsing they need (`impl RawConn` in the same crate).
pub struct RawConn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// The peer closed (EOF or reset).
    pub eof: bool,
}

impl RawConn {
    /// Connects, bounded by [`STEP`].
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Reads what has arrived into `buf`; `false`, with `eof` set, once the peer
    /// closed.
    pub async fn fill(&mut self) -> bool {
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
}

// ---------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------

/// `len` deterministic pseudo-random bytes (xorshift), different for each `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    xorshift(seed)
        .take(len)
        .map(|state| (state >> 24) as u8)
        .collect()
}

/// `len` printable pseudo-random bytes, different for each `seed`.
pub fn pseudo_text(len: usize, seed: u64) -> Vec<u8> {
    xorshift(seed)
        .take(len)
        .map(|state| b'!' + ((state >> 24) % 94) as u8)
        .collect()
}

/// The successive states of a xorshift generator seeded with `seed`.
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed | 1;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}
