//! A response body read straight from its upstream connection, in whatever task
//! polls it (the client connection's), framed as the response head said.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::client::UpstreamConnection;
use super::wire::{Chunked, Decoded, ResponseFraming};
use super::UpstreamError;

/// Read at least this much spare room before each read of the body.
const MIN_READ_ROOM: usize = 4 * 1024;
const READ_GROWTH: usize = 16 * 1024;

#[derive(Debug)]
pub struct UpstreamBody {
    /// The connection, until the body ends (or for an upgrade, the tunnel takes it).
    connection: Option<UpstreamConnection>,
    state: State,
    /// The connection may carry another request once the body is read to its end.
    reusable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// A 101: no body; the connection belongs to the tunnel.
    Upgraded,
    Done,
}

impl UpstreamBody {
    pub(super) fn new(
        connection: UpstreamConnection,
        framing: ResponseFraming,
        reusable: bool,
    ) -> Self {
        let state = match framing {
            ResponseFraming::Empty => State::Done,
            ResponseFraming::Length(n) => State::Length(n),
            ResponseFraming::Chunked => State::Chunked(Chunked::Size),
            ResponseFraming::UntilClose => State::UntilClose,
        };
        UpstreamBody {
            connection: Some(connection),
            state,
            reusable,
        }
    }

    pub(super) fn upgraded(connection: UpstreamConnection) -> Self {
        UpstreamBody {
            connection: Some(connection),
            state: State::Upgraded,
            reusable: false,
        }
    }

    /// The connection, once the body has been read to its end and the upstream may
    /// take another request on it: keep-alive, and nothing sent past the body.
    pub fn take_reusable(&mut self) -> Option<UpstreamConnection> {
        let clean = self.state == State::Done
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
        if self.state != State::Upgraded {
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
            let buffer = &mut connection.read;
            match &mut this.state {
                State::Done | State::Upgraded => return Poll::Ready(None),
                State::Length(remaining) if !buffer.is_empty() => {
                    let take =
                        usize::try_from(*remaining).map_or(buffer.len(), |r| r.min(buffer.len()));
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        this.state = State::Done;
                    }
                    return data(buffer.split_to(take).freeze());
                }
                State::UntilClose if !buffer.is_empty() => {
                    return data(buffer.split().freeze());
                }
                State::Chunked(chunked) => match chunked.step(buffer) {
                    Ok(Decoded::Data(bytes)) => return data(bytes),
                    Ok(Decoded::Done) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(err) => {
                        this.connection = None;
                        return Poll::Ready(Some(Err(err.into())));
                    }
                },
                State::Length(_) | State::UntilClose => {}
            }
            // The buffer holds nothing usable: read more.
            match poll_fill(connection, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.state == State::UntilClose => {
                    this.state = State::Done;
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(UpstreamError::Closed)));
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
        matches!(self.state, State::Done | State::Upgraded)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done | State::Upgraded => SizeHint::with_exact(0),
            State::Chunked(_) | State::UntilClose => SizeHint::default(),
        }
    }
}
