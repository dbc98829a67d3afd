//! Telling HTTP/1.1 from HTTP/2 prior knowledge on a plain connection, under a timer.
//!
//! hyper-util's auto builder sniffs with no timer of its own, so a client that sends
//! nothing, or part of the HTTP/2 preface, would hold a connection slot forever. Here
//! the first bytes are read under `header_read_timeout`, and read only as far as
//! needed: an HTTP/1.1 request diverges from the preface at its first byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 prior-knowledge connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    #[error("the client sent no request head within the header read timeout")]
    Timeout,
    #[error("the client closed the connection before sending a request")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads the connection's first bytes and returns the protocol and the stream with
/// those bytes put back in front.
pub async fn sniff<S: AsyncRead + Unpin>(
    mut stream: S,
    limit: Duration,
) -> Result<(Protocol, Prefixed<S>), SniffError> {
    let mut prefix = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let protocol = tokio::time::timeout(limit, async {
        loop {
            let n = stream.read(&mut prefix[filled..]).await?;
            if n == 0 {
                return Err(SniffError::Closed);
            }
            filled += n;
            if prefix[..filled] != H2_PREFACE[..filled] {
                return Ok(Protocol::Http1);
            }
            if filled == H2_PREFACE.len() {
                return Ok(Protocol::Http2);
            }
        }
    })
    .await
    .map_err(|_| SniffError::Timeout)??;
    Ok((
        protocol,
        Prefixed::new(Bytes::copy_from_slice(&prefix[..filled]), stream),
    ))
}

/// A stream with bytes already read from it put back in front: the sniffed prefix, or
/// a request head the gateway's own HTTP/1.1 loop hands to hyper.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }

    /// The bytes not yet read back, and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            // Whatever else has arrived goes in the same read: a reader that got only
            // the prefix would read again, and hyper then grows its 8 KiB read buffer
            // to 16 KiB for the rest, for the life of the connection. An error or the
            // end of the stream shows up on the next read.
            if self.prefix.is_empty() && buf.remaining() > 0 {
                let _ = Pin::new(&mut self.inner).poll_read(cx, buf);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn http1_is_told_at_the_first_byte_and_replayed_whole() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (protocol, mut stream) = sniff(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut head = [0u8; 16];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn the_first_read_returns_the_prefix_and_what_followed_it() {
        let (mut client, server) = tokio::io::duplex(256);
        let request = b"GET /a/long/path/beyond/the/prefix HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(request).await.unwrap();
        let (_, mut stream) = sniff(server, Duration::from_secs(1)).await.unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], request, "one read, the whole request");
    }

    #[tokio::test]
    async fn http2_needs_the_whole_preface() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let sniffing = tokio::spawn(sniff(server, Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        let (protocol, mut stream) = sniffing.await.unwrap().unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut preface = [0u8; 24];
        stream.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, H2_PREFACE);
    }

    #[tokio::test]
    async fn silence_and_a_partial_preface_time_out() {
        let (_client, server) = tokio::io::duplex(64);
        assert!(matches!(
            sniff(server, Duration::from_millis(50)).await,
            Err(SniffError::Timeout)
        ));
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(matches!(
            sniff(server, Duration::from_millis(50)).await,
            Err(SniffError::Timeout)
        ));
    }
}
