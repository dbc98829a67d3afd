//! Protocol upgrades (WebSocket over HTTP/1.1): the upgrade headers go to the
//! upstream, and only when the upstream answers 101 does the connection become a
//! byte tunnel. Any other answer is an ordinary response, and a request pipelined
//! behind the upgrade request stays an ordinary request, never tunnelled raw.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use crate::upstream::UpstreamBody;

/// A client's request to switch protocols.
pub struct UpgradeRequest {
    protocol: HeaderValue,
    client: OnUpgrade,
}

/// Takes the upgrade out of an HTTP/1.1 request that asks for one (`Connection:
/// upgrade` and `Upgrade`), before its hop-by-hop headers are stripped. `h2c` is
/// never one: a tunnel after its 101 would carry HTTP/2 frames no rule, header filter
/// or limit of the gateway sees (Envoy refuses it too). A request that asks only for
/// h2c goes on as plain HTTP/1.1.
pub fn take(head: &mut Parts) -> Option<UpgradeRequest> {
    if head.version != Version::HTTP_11 || !connection_has_upgrade(&head.headers) {
        return None;
    }
    let offered = head.headers.get(header::UPGRADE)?;
    let kept: Vec<&str> = offered
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let protocol = HeaderValue::from_str(&kept.join(", ")).ok()?;
    let client = head.extensions.remove::<OnUpgrade>()?;
    Some(UpgradeRequest { protocol, client })
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

/// Puts the upgrade headers back on the upstream request.
pub fn restore_request_headers(headers: &mut HeaderMap, upgrade: &UpgradeRequest) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade.protocol.clone());
}

/// If the upstream switched protocols, puts the upgrade headers back on the 101 for
/// the client, leaves the [`Tunnel`] on the response for the connection to run, and
/// returns true.
pub fn tunnel(upgrade: UpgradeRequest, response: &mut Response<UpstreamBody>) -> bool {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let Some((upstream, early)) = response.body_mut().take_upgraded() else {
        return false;
    };
    let protocol = response
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(upgrade.protocol);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(header::UPGRADE, protocol);
    let tunnel = Tunnel {
        client: upgrade.client,
        upstream,
        early,
    };
    response
        .extensions_mut()
        .insert(PendingTunnel(Arc::new(Mutex::new(Some(tunnel)))));
    true
}

/// The tunnel a 101 leaves behind, for the connection that carried the request to
/// run once hyper has written the 101. It runs in that connection's task, not a
/// detached one, so it keeps the connection's slot of `max_connections`, stays in
/// `graygate_active_connections` and in the drain, for its whole life.
pub struct Tunnel {
    client: OnUpgrade,
    upstream: TcpStream,
    /// Bytes the upstream sent right behind its 101: the tunnel's first.
    early: BytesMut,
}

/// A response extension must be `Clone`; only one taker ever finds the tunnel.
#[derive(Clone)]
struct PendingTunnel(Arc<Mutex<Option<Tunnel>>>);

/// The tunnel a response leaves behind, if it is a 101 that switched protocols.
pub fn take_tunnel<B>(response: &mut Response<B>) -> Option<Tunnel> {
    let pending = response.extensions_mut().remove::<PendingTunnel>()?;
    let mut slot = pending
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    slot.take()
}

impl Tunnel {
    /// Copies bytes both ways until either side closes, or nothing has moved either
    /// way for `idle_timeout` (`limits.tunnel_idle_timeout`).
    pub async fn run(self, idle_timeout: Duration) {
        let mut client = match self.client.await {
            Ok(client) => TokioIo::new(client),
            Err(err) => return debug!(error = %err, "upgrade failed"),
        };
        if let Err(err) = client.write_all(&self.early).await {
            return debug!(error = %err, "upgraded connection ended with an error");
        }
        let activity = Activity::new();
        let mut upstream = self.upstream;
        let (mut client, mut upstream) = (
            Tracked::new(&mut client, &activity),
            Tracked::new(&mut upstream, &activity),
        );
        let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::select! {
            copied = copied => match copied {
                Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
                Err(err) => debug!(error = %err, "upgraded connection ended with an error"),
            },
            () = activity.idle_for(idle_timeout) => {
                debug!(timeout = ?idle_timeout, "closing an idle upgraded connection");
            }
        }
    }
}

/// When bytes last moved through a tunnel, either way.
struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`. It wakes about once per `idle`
    /// while bytes flow, never per byte.
    async fn idle_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let waited = self
                .now_ms()
                .saturating_sub(self.last.load(Ordering::Relaxed));
            if waited >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - waited)).await;
        }
    }
}

/// One side of a tunnel, marking the [`Activity`] whenever bytes move.
struct Tracked<'a, IO> {
    io: &'a mut IO,
    activity: &'a Activity,
}

impl<'a, IO> Tracked<'a, IO> {
    fn new(io: &'a mut IO, activity: &'a Activity) -> Self {
        Tracked { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<'_, IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}
