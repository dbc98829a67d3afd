//! Accepting client connections and serving HTTP/1.1 and h2c (prior knowledge) on
//! one listener, with a bounded number of connections and a graceful drain.
//!
//! Plain HTTP/1.1 connections start in the gateway's own loop ([`http1`]), which hands
//! them to hyper at the first request it does not serve; h2c and TLS are hyper's.

mod http1;
mod send_timeout;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::model::ConfigFile;
use crate::metrics::ClientErrorKind;
use crate::proxy::{ClientConnection, Proxy, Tunnel};
use crate::shutdown::Shutdown;
use crate::sniff::{self, Prefixed, Protocol, SniffError};
use send_timeout::SendTimeout;

/// Streams one HTTP/2 connection may have open at once (nginx: 128, Envoy: 100).
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Streams reset by the client before the server accepted them (h2's default: 20).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server had to reset for the client's errors (h2's default: 1024).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Ping an idle HTTP/2 client this often, and drop it if the ping is not answered.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Connection-level settings. They are fixed when the listener starts: a reload
/// changes routing, pools and per-request limits, never the listener.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    /// An HTTP/2 connection with no open stream is closed after this long.
    pub idle_timeout: Duration,
    /// The longest one write to a client may wait (see [`send_timeout`]).
    pub send_timeout: Duration,
    /// A tunnel (after a 101) that moves no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

impl ServerSettings {
    pub fn from_config(file: &ConfigFile) -> Self {
        ServerSettings {
            header_read_timeout: file.limits.header_read_timeout,
            max_header_bytes: file.limits.max_header_bytes,
            max_headers: file.limits.max_headers,
            max_connections: file.limits.max_connections,
            shutdown_timeout: file.server.shutdown_timeout,
            idle_timeout: file.limits.idle_timeout,
            send_timeout: file.limits.send_timeout,
            tunnel_idle_timeout: file.limits.tunnel_idle_timeout,
        }
    }
}

/// What a connection's service needs: one `Arc` clone per request, not two.
pub(crate) struct ConnectionContext {
    proxy: Arc<Proxy>,
    client: ClientConnection,
    /// The tunnel a 101 left, for the connection to run once hyper lets go of it.
    tunnel: std::sync::Mutex<Option<Tunnel>>,
}

/// The listeners traffic arrives on: plain (HTTP/1.1 and h2c) and, optionally, TLS.
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<TcpListener>,
}

/// Connection slots: `max_connections` for the whole process, shared by its workers.
pub fn connection_slots(settings: &ServerSettings) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(settings.max_connections))
}

/// Serves until `shutdown` fires, then stops accepting, lets in-flight requests finish
/// (HTTP/2 clients get GOAWAY, idle keep-alive connections close) and returns once all
/// connections are done or `shutdown_timeout` has passed.
pub async fn serve(
    listeners: Listeners,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    slots: Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    let builders = Arc::new(Builders::new(&settings));
    let settings = Arc::new(settings);
    let graceful = GracefulShutdown::new();
    // This worker's own copy of the shutdown signal for its connections: each waiting
    // connection registers with it, and a channel shared by all workers would make
    // those registrations contend across cores.
    let (worker_trigger, worker_shutdown) = crate::shutdown::channel();
    loop {
        let (accepted, tls) = tokio::select! {
            accepted = listeners.plain.accept() => (accepted, false),
            accepted = accept_optional(listeners.tls.as_ref()) => (accepted, true),
            _ = shutdown.wait() => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Past the limit, this worker holds the connection it just accepted, unserved,
        // until a slot frees, and accepts nothing more; later ones wait in the kernel's
        // accept queue. (Taking the slot before accepting would let a worker wait on an
        // empty socket while the waiting connection sits in another worker's queue.)
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let active = proxy.shared().metrics.active_connections().clone();
        active.inc();
        let context = Arc::new(ConnectionContext {
            proxy: Arc::clone(&proxy),
            client: ClientConnection::new(remote, tls),
            tunnel: std::sync::Mutex::new(None),
        });
        let (builders, watcher) = (Arc::clone(&builders), graceful.watcher());
        let connection_shutdown = worker_shutdown.clone();
        let settings = Arc::clone(&settings);
        tokio::spawn(async move {
            let metrics = &context.proxy.shared().metrics;
            // The TLS path is boxed: its state (the TLS session inline) would otherwise
            // size every plain connection's task too.
            let result = if tls {
                Box::pin(serve_tls(
                    &builders,
                    watcher,
                    stream,
                    Arc::clone(&context),
                    &settings,
                    connection_shutdown,
                ))
                .await
            } else {
                serve_plain(
                    &builders,
                    watcher,
                    stream,
                    Arc::clone(&context),
                    &settings,
                    connection_shutdown,
                )
                .await
            };
            if let Err(err) = result {
                if let Some(kind) = client_error_kind(&*err) {
                    metrics.client_error(kind);
                }
                debug!(%remote, error = %err, "client connection ended with an error");
            }
            active.dec();
            drop(permit);
        });
    }
    drop(listeners);
    worker_trigger.fire();
    info!("stopped accepting; waiting for in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => info!("all connections closed"),
        _ = tokio::time::sleep(settings.shutdown_timeout) => {
            warn!(timeout = ?settings.shutdown_timeout, "shutdown_timeout passed; closing the remaining connections")
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connection builders, one per protocol: the protocol is known before serving (sniffed
/// on plain connections, negotiated by ALPN on TLS).
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(settings: &ServerSettings) -> Self {
        let auto = connection_builder(settings);
        Builders {
            http1: auto.clone().http1_only(),
            http2: auto.http2_only(),
        }
    }
}

/// A plain connection: HTTP/1.1 or HTTP/2 prior knowledge, told apart from its first
/// bytes under `header_read_timeout` (see `sniff`). A shutdown ends the wait. HTTP/1.1
/// goes to the gateway's own loop first, and to hyper from the first request that
/// loop hands over.
async fn serve_plain(
    builders: &Builders,
    watcher: Watcher,
    stream: TcpStream,
    context: Arc<ConnectionContext>,
    settings: &ServerSettings,
    mut shutdown: Shutdown,
) -> Result<(), BoxError> {
    let sniffed = tokio::select! {
        sniffed = sniff::sniff(stream, settings.header_read_timeout) => sniffed?,
        _ = shutdown.wait() => return Ok(()),
    };
    match sniffed {
        (Protocol::Http2, stream) => {
            let idle = Some(settings.idle_timeout);
            serve_connection(
                &builders.http2,
                watcher,
                stream,
                context,
                settings,
                shutdown,
                idle,
            )
            .await
        }
        (Protocol::Http1, stream) => {
            let (prefix, stream) = stream.into_parts();
            let served = http1::serve(
                stream,
                BytesMut::from(prefix),
                &context,
                settings,
                &shutdown,
            )
            .await?;
            match served {
                http1::Served::Done => Ok(()),
                http1::Served::HandOff { stream, unread } => {
                    let stream = Prefixed::new(unread, stream);
                    serve_connection(
                        &builders.http1,
                        watcher,
                        stream,
                        context,
                        settings,
                        shutdown,
                        None,
                    )
                    .await
                }
            }
        }
    }
}

/// The handshake runs under `header_read_timeout` with the certificate in force now
/// (a reload rotates it for new connections); ALPN then picks HTTP/2 or HTTP/1.1.
async fn serve_tls(
    builders: &Builders,
    watcher: Watcher,
    stream: TcpStream,
    context: Arc<ConnectionContext>,
    settings: &ServerSettings,
    shutdown: Shutdown,
) -> Result<(), BoxError> {
    let handshake_timeout = settings.header_read_timeout;
    let Some(config) = context.proxy.config().load().tls.clone() else {
        return Err("TLS is no longer configured; restart to remove the listener".into());
    };
    let stream =
        match tokio::time::timeout(handshake_timeout, TlsAcceptor::from(config).accept(stream))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(format!("TLS handshake failed: {err}").into()),
            Err(_) => return Err("TLS handshake timed out".into()),
        };
    let (builder, idle) = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        (&builders.http2, Some(settings.idle_timeout))
    } else {
        (&builders.http1, None)
    };
    serve_connection(builder, watcher, stream, context, settings, shutdown, idle).await
}

/// What a connection-level error says about the client, for
/// `graygate_client_errors_total`: answers hyper makes itself (400, 431, closing on a
/// slow head) never reach the proxy, so they are counted here.
fn client_error_kind(err: &(dyn std::error::Error + 'static)) -> Option<ClientErrorKind> {
    if matches!(err.downcast_ref::<SniffError>(), Some(SniffError::Timeout))
        || err.is::<http1::HeadTimeout>()
    {
        return Some(ClientErrorKind::HeaderTimeout);
    }
    let err = err.downcast_ref::<hyper::Error>()?;
    if err.is_parse_too_large() {
        Some(ClientErrorKind::HeaderTooLarge)
    } else if err.is_parse() {
        Some(ClientErrorKind::BadRequest)
    } else if err.is_timeout() {
        Some(ClientErrorKind::HeaderTimeout)
    } else {
        None
    }
}

/// Serves one connection through hyper until it ends. A shutdown drains it (HTTP/2
/// gets GOAWAY, HTTP/1.1 closes once idle); with `idle` set (HTTP/2), a connection with
/// no open stream for that long is closed the same way, so idle connections cannot
/// hold every slot of `max_connections`.
async fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: IO,
    context: Arc<ConnectionContext>,
    settings: &ServerSettings,
    mut shutdown: Shutdown,
    idle: Option<Duration>,
) -> Result<(), BoxError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let streams = idle.map(|_| Arc::new(Streams::new()));
    let counted = streams.clone();
    let served = Arc::clone(&context);
    let service = service_fn(move |request| {
        let context = Arc::clone(&served);
        let open = counted.as_ref().map(Streams::open);
        async move {
            let mut response = context
                .proxy
                .handle(request.map(Some), &context.client)
                .await;
            if let Some(tunnel) = crate::proxy::take_tunnel(&mut response) {
                *lock(&context.tunnel) = Some(tunnel);
            }
            Ok::<_, Infallible>(response.map(|body| Counted { body, _open: open }))
        }
    });
    let timed_out = context.proxy.shared().metrics.send_timeouts();
    let io = SendTimeout::new(io, settings.send_timeout, timed_out);
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let mut connection = std::pin::pin!(connection);
    // Held for the connection's life, a tunnel's included: the drain waits until every
    // watcher is gone, or `shutdown_timeout`.
    let _watched = watcher;
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                // hyper has written the 101 and let go of the connection: the tunnel
                // is this connection now, in its slot, until it ends.
                let tunnel = lock(&context.tunnel).take();
                if let (Ok(()), Some(tunnel)) = (&result, tunnel) {
                    tunnel.run(settings.tunnel_idle_timeout).await;
                }
                return result;
            }
            _ = shutdown.wait(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_for(streams.as_deref(), idle), if !closing && idle.is_some() => {
                debug!("closing an idle HTTP/2 connection");
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection's open streams, and when the last one closed.
#[derive(Debug)]
struct Streams {
    open: std::sync::atomic::AtomicUsize,
    /// The connection's start, which `last_closed` counts from.
    epoch: std::time::Instant,
    /// Milliseconds since `epoch`.
    last_closed: std::sync::atomic::AtomicU64,
}

/// One open stream, until its answer's body is done or dropped.
#[derive(Debug)]
struct StreamOpen(Arc<Streams>);

impl Streams {
    fn new() -> Self {
        Streams {
            open: Default::default(),
            epoch: std::time::Instant::now(),
            last_closed: Default::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn open(self: &Arc<Self>) -> StreamOpen {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StreamOpen(Arc::clone(self))
    }
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        self.0
            .last_closed
            .store(now, std::sync::atomic::Ordering::Relaxed);
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Resolves once the connection has had no open stream for `idle`.
async fn idle_for(streams: Option<&Streams>, idle: Option<Duration>) {
    let (Some(streams), Some(idle)) = (streams, idle) else {
        return std::future::pending().await;
    };
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        let last = streams
            .last_closed
            .load(std::sync::atomic::Ordering::Relaxed);
        let waited = streams.now_ms().saturating_sub(last);
        if streams.open.load(std::sync::atomic::Ordering::Relaxed) == 0 && waited >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(
            idle_ms.saturating_sub(waited).max(idle_ms / 4).max(10),
        ))
        .await;
    }
}

/// An answer's body that keeps its stream counted open until it is done.
struct Counted<B> {
    body: B,
    _open: Option<StreamOpen>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Accepts on the listener if there is one; never resolves otherwise.
async fn accept_optional(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

fn connection_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers);
    // HTTP/2: bounded streams per connection, and hyper's guards against rapid reset
    // (CVE-2023-44487): a client that opens and resets streams faster than they are
    // accepted, or keeps provoking stream errors, loses its connection.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    builder
}
