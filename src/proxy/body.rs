//! The body of a response to a client: streamed from an upstream, or a short
//! gateway-made text. An enum rather than a box, so no allocation per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::upstream::InFlight;

#[derive(Debug)]
pub enum ResponseBody {
    /// Streams the upstream's body; the endpoint counts the request as in flight until
    /// this is dropped, so `least_request` sees long streams.
    Upstream {
        body: Incoming,
        _in_flight: InFlight,
    },
    Local(Full<Bytes>),
}

impl ResponseBody {
    pub fn upstream(body: Incoming, in_flight: InFlight) -> Self {
        ResponseBody::Upstream {
            body,
            _in_flight: in_flight,
        }
    }

    pub fn text(text: &'static str) -> Self {
        ResponseBody::Local(Full::new(Bytes::from_static(text.as_bytes())))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Both variants are Unpin, so no pin projection is needed.
        match self.get_mut() {
            ResponseBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            ResponseBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Local(full) => full.size_hint(),
        }
    }
}
