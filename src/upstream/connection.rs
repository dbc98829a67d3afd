//! One keep-alive HTTP/1.1 connection to an upstream, the idle pool each endpoint keeps
//! of them, and which worker a thread is (each worker has its own share of every pool).

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Idle upstream connections are closed after this long. It stays below the shortest
/// common upstream keep-alive (uvicorn and gunicorn: 5 s; nginx 75 s, Go 90 s) so the
/// gateway, not the upstream, closes an idle connection, and a request is rarely sent
/// on a connection the upstream is just closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per endpoint; more are closed when they come back.
pub const MAX_IDLE_PER_ENDPOINT: usize = 512;
/// The read buffer starts this large and grows only for a larger response head.
pub(super) const READ_BUFFER: usize = 8 * 1024;

/// One keep-alive HTTP/1.1 connection to an endpoint, with its buffers.
#[derive(Debug)]
pub struct UpstreamConnection {
    pub(super) stream: TcpStream,
    /// Bytes read and not yet used: the rest of a head, or body bytes.
    pub(super) read: BytesMut,
    /// The request head (or a chunk) being written; kept for its capacity.
    pub(super) write: Vec<u8>,
    idle_since: Instant,
}

impl UpstreamConnection {
    pub(super) fn new(stream: TcpStream) -> Self {
        UpstreamConnection {
            stream,
            read: BytesMut::with_capacity(READ_BUFFER),
            write: Vec::new(),
            idle_since: Instant::now(),
        }
    }

    /// An idle connection is usable if the upstream has neither closed it nor sent
    /// anything unasked. The check reads at most one byte, without waiting.
    fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Workers the process runs (see `workers`); each has its own share of every idle pool.
static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The worker this thread is; threads outside the workers (tests, the admin
    /// side) share worker 0's pool.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Sets how many workers share the idle pools; call before any request is served.
pub fn set_worker_count(count: usize) {
    WORKERS.store(count.max(1), Ordering::Relaxed);
}

/// Marks the calling thread as worker `index`.
pub fn enter_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

/// An endpoint's idle connections, one pool per worker, most recently used last.
///
/// A connection's socket is registered with the runtime of the worker that opened
/// it, so reusing it from another worker would route every wake-up across threads.
#[derive(Debug, Default)]
pub(super) struct IdleConnections(OnceLock<Box<[WorkerPool]>>);

/// One worker's pool, alone on its cache lines: two workers' locks side by side would
/// bounce one line between their cores on every request.
#[derive(Debug, Default)]
#[repr(align(128))]
struct WorkerPool(Mutex<VecDeque<UpstreamConnection>>);

impl IdleConnections {
    /// This worker's pool.
    fn own(&self) -> std::sync::MutexGuard<'_, VecDeque<UpstreamConnection>> {
        let pools = self.0.get_or_init(|| {
            (0..WORKERS.load(Ordering::Relaxed))
                .map(|_| WorkerPool::default())
                .collect()
        });
        let pool = &pools[WORKER.with(Cell::get) % pools.len()];
        pool.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection that is fresh and still open. The
    /// liveness probe runs outside the lock.
    pub(super) fn take(&self) -> Option<UpstreamConnection> {
        loop {
            let connection = self.own().pop_back()?;
            if connection.idle_since.elapsed() < IDLE_TIMEOUT && connection.is_usable() {
                return Some(connection);
            }
        }
    }

    pub(super) fn put(&self, mut connection: UpstreamConnection) {
        connection.idle_since = Instant::now();
        let mut idle = self.own();
        while idle
            .front()
            .is_some_and(|c| c.idle_since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push_back(connection);
        }
    }
}
