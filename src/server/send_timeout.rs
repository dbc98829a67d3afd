//! `limits.send_timeout`: the longest a write to a client may wait, as nginx's
//! `send_timeout`. It bounds each wait between two successful writes, not the whole
//! response, so a large answer to a slow but reading client still goes out, while a
//! client that stops reading (or reads a byte a second, which the kernel's window
//! rules turn into a stopped reader) gives its connection back.
//!
//! One wrapper for every client path: the own loop writes through it, and hyper
//! (HTTP/1.1, h2c, TLS, and the tunnel behind an upgrade) is handed the wrapped
//! stream. A write that goes out at once never touches the timer; the timer is made
//! at the first write that has to wait, and re-armed only for a new wait.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error a write gets once the client has not taken bytes for `send_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client took nothing for the send timeout ({0:?})")]
pub struct SendTimedOut(pub Duration);

/// A stream whose writes fail once one has waited `timeout`, counting each cut in
/// `timed_out` (`client_errors{kind="send_timeout"}`).
pub struct SendTimeout<IO> {
    io: IO,
    timeout: Duration,
    timed_out: Counter,
    /// Made at the first wait; boxed so the stream stays small until then.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is waiting and `timer` is armed for it.
    waiting: bool,
    /// The timeout has passed: every later write fails too.
    cut: bool,
}

impl<IO> SendTimeout<IO> {
    pub fn new(io: IO, timeout: Duration, timed_out: Counter) -> Self {
        SendTimeout {
            io,
            timeout,
            timed_out,
            timer: None,
            waiting: false,
            cut: false,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn into_inner(self) -> IO {
        self.io
    }

    /// Called with the inner write's result: a result ends the wait; `Pending` starts
    /// one, or fails it once the timer has fired.
    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() && !self.cut {
            self.waiting = false;
            return polled;
        }
        if !self.cut {
            let deadline = Instant::now() + self.timeout;
            let timer = match &mut self.timer {
                Some(timer) => {
                    if !self.waiting {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => self
                    .timer
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            self.waiting = true;
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Counted once: a writer may be polled again after it has failed.
            self.cut = true;
            self.timed_out.inc();
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            SendTimedOut(self.timeout),
        )))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bound(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.bound(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.bound(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_too_long_fails_once_and_one_that_moves_does_not() {
        // A pipe with room for 8 bytes whose reader takes 4 bytes every 50 ms: each
        // wait is short, so a long write goes through under a 100 ms bound.
        let (writer, mut reader) = tokio::io::duplex(8);
        let counted = Counter::default();
        let mut bounded = SendTimeout::new(writer, Duration::from_millis(100), counted.clone());
        let drain = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 4];
            for _ in 0..16 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = reader.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            // Then it stops reading, and keeps the pipe open.
            (got, reader)
        });
        bounded
            .write_all(&[7u8; 40])
            .await
            .expect("a reader that moves is never cut");
        assert_eq!(counted.get(), 0);
        let err = tokio::time::timeout(Duration::from_secs(10), bounded.write_all(&[9u8; 64]))
            .await
            .expect("cut within the bound, not waiting on")
            .expect_err("a reader that stops is cut");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            err.get_ref().is_some_and(|e| e.is::<SendTimedOut>()),
            "{err}"
        );
        // Cut for good, and counted once.
        assert!(bounded.write_all(b"more").await.is_err());
        assert!(bounded.flush().await.is_err());
        assert_eq!(counted.get(), 1);
        let (got, _reader) = drain.await.unwrap();
        assert!(got.starts_with(&[7u8; 40]), "{got:?}");
    }
}
