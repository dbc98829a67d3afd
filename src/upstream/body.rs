//! A response body read straight from its upstream connection, in whatever task
//! polls it (the client connection's), framed as the response head said.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::connection::UpstreamConnection;
use super::UpstreamError;
use crate::h1::body::{BodyDecoder, Decoded};
use crate::h1::response::ResponseFraming;

/// Read at least this much spare room before each read of the body.
const MIN_READ_ROOM: usize = 4 * 1024;
const READ_GROWTH: usize = 16 * 1024;

#[derive(Debug)]
pub struct UpstreamBody {
    /// The connection, until the body ends (or for an upgrade, the tunnel takes it).
    connection: Option<UpstreamConnection>,
    decoder: BodyDecoder,
    /// A 101: no body; the connection belongs to the tunnel.
    upgraded: bool,
    /// The connection may carry another request once the body is read to its end.
    reusable: bool,
}

impl UpstreamBody {
    pub(super) fn new(
        connection: UpstreamConnection,
        framing: ResponseFraming,
        reusable: bool,
    ) -> Self {
        UpstreamBody {
            connection: Some(connection),
            decoder: BodyDecoder::new(framing),
            upgraded: false,
            reusable,
        }
    }

    pub(super) fn upgraded(connection: UpstreamConnection) -> Self {
        UpstreamBody {
            connection: Some(connection),
            decoder: BodyDecoder::Done,
            upgraded: true,
            reusable: false,
        }
    }

    /// The connection, once the body has been read to its end and the upstream may
    /// take another request on it: keep-alive, and nothing sent past the body.
    pub fn take_reusable(&mut self) -> Option<UpstreamConnection> {
        let clean = self.decoder.is_done()
            && !self.upgraded
            && self.reusable
            && self.connection.as_ref().is_some_and(|c| c.read.is_empty());
        if clean {
            self.connection.take()
        } else {
            None
        }
    }

    /// For a 101: the connection's socket and any bytes the upstream already sent in
    /// the new protocol.
    pub fn take_upgraded(&mut self) -> Option<(TcpStream, BytesMut)> {
        if !self.upgraded {
            return None;
        }
        self.connection.take().map(|c| (c.stream, c.read))
    }
}

fn data(data: Bytes) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
    Poll::Ready(Some(Ok(Frame::data(data))))
}

/// Reads more of the body into the connection's buffer. `Ok(0)`: the upstream closed.
fn poll_fill(connection: &mut UpstreamConnection, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if connection.read.capacity() - connection.read.len() < MIN_READ_ROOM {
        connection.read.reserve(READ_GROWTH);
    }
    loop {
        ready!(connection.stream.poll_read_ready(cx))?;
        match connection.stream.try_read_buf(&mut connection.read) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            if this.upgraded {
                return Poll::Ready(None);
            }
            match this.decoder.decode(&mut connection.read) {
                Ok(Decoded::Data(bytes)) => return data(bytes),
                Ok(Decoded::Done) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(err) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
            // The buffer holds nothing usable: read more.
            match poll_fill(connection, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    this.connection = None;
                    return match this.decoder.closed() {
                        Ok(()) => Poll::Ready(None),
                        Err(_) => Poll::Ready(Some(Err(UpstreamError::Closed))),
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(UpstreamError::Io(err))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upgraded || self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) if !self.upgraded => SizeHint::with_exact(n),
            Some(_) => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
