//! Thread per core: each worker is an OS thread with its own single-threaded tokio
//! runtime and its own listening socket, bound with `SO_REUSEPORT` so the kernel
//! spreads new connections over the workers, as nginx's `reuseport` workers do.
//!
//! A client connection lives and dies on the worker that accepted it: no work
//! stealing, no wake-ups across threads, and its upstream connections come from that
//! worker's own share of each endpoint's idle pool (see `upstream::client`). The main
//! thread keeps the control plane: signals, reloads, the admin listener and health
//! checks.

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use crate::proxy::Proxy;
use crate::server::{self, Listeners, ServerSettings};
use crate::shutdown::Shutdown;
use crate::upstream;

/// Pending connections the kernel queues per listening socket (tokio's own default).
const BACKLOG: u32 = 1024;

/// Binds `count` listening sockets to `address`. Call within a runtime; the sockets
/// come back detached from it, for the workers to take.
///
/// `SO_REUSEPORT` would let a second process, a second graygate with another config
/// say, bind the same address silently and take half of the connections. So a probe
/// without it binds first: it fails with `EADDRINUSE` while anything listens there,
/// as nginx's bind does. The probe stays bound (not listening) while the workers bind,
/// so port 0 resolves to one port, the probe's, that nothing listened on; then it is
/// dropped. (`SO_REUSEADDR` on the probe and the workers lets a restart bind over its
/// predecessor's connections in TIME_WAIT, never over a listener.)
pub fn bind(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let socket = |address: SocketAddr| -> io::Result<TcpSocket> {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        Ok(socket)
    };
    let probe = socket(address)?;
    probe.bind(address)?;
    let address = probe.local_addr()?;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = socket(address)?;
        if count > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(address)?;
        listeners.push(socket.listen(BACKLOG)?.into_std()?);
    }
    drop(probe);
    Ok(listeners)
}

/// One worker's listening sockets, before its runtime registers them.
pub struct WorkerListeners {
    pub plain: std::net::TcpListener,
    pub tls: Option<std::net::TcpListener>,
}

/// Starts one worker thread per entry of `listeners` and returns once every worker
/// serves (or the first error). Each receiver resolves when its worker has drained.
pub fn start(
    listeners: Vec<WorkerListeners>,
    proxy: &Arc<Proxy>,
    settings: &ServerSettings,
    shutdown: &Shutdown,
) -> io::Result<Vec<oneshot::Receiver<()>>> {
    upstream::set_worker_count(listeners.len());
    let slots = server::connection_slots(settings);
    let (started_tx, started_rx) = mpsc::channel::<io::Result<()>>();
    let mut finished = Vec::with_capacity(listeners.len());
    for (index, own) in listeners.into_iter().enumerate() {
        let (done_tx, done_rx) = oneshot::channel();
        finished.push(done_rx);
        let (proxy, settings, shutdown) = (Arc::clone(proxy), settings.clone(), shutdown.clone());
        let slots = Arc::clone(&slots);
        let started = started_tx.clone();
        std::thread::Builder::new()
            .name(format!("graygate-worker-{index}"))
            .spawn(move || {
                upstream::enter_worker(index);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => return drop(started.send(Err(err))),
                };
                runtime.block_on(async move {
                    let registered = (|| {
                        Ok::<_, io::Error>(Listeners {
                            plain: TcpListener::from_std(own.plain)?,
                            tls: own.tls.map(TcpListener::from_std).transpose()?,
                        })
                    })();
                    // Report, then let go of the sender: once every worker has
                    // reported or died, the main thread stops waiting.
                    match registered {
                        Ok(listeners) => {
                            let _ = started.send(Ok(()));
                            drop(started);
                            server::serve(listeners, proxy, settings, slots, shutdown).await;
                        }
                        Err(err) => drop(started.send(Err(err))),
                    }
                });
                let _ = done_tx.send(());
            })?;
    }
    drop(started_tx);
    for result in started_rx.iter() {
        result?;
    }
    Ok(finished)
}
