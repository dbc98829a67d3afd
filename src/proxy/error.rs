//! Answers the gateway makes itself: a status, a short plain-text body, and no hang.

use std::error::Error as _;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::LengthLimitError;

use super::body::ResponseBody;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("upstream connect failed: {0}")]
    Connect(#[source] UpstreamError),
    #[error("no available endpoint in the pool")]
    NoEndpoint,
    #[error("upstream did not answer within the request timeout")]
    Timeout,
    #[error("request body exceeds limits.max_body_bytes")]
    BodyTooLarge,
    #[error("upstream request failed: {0}")]
    Upstream(#[source] UpstreamError),
    /// The gateway refuses the request itself (a CONNECT, a head it cannot forward).
    #[error("refused: {text}")]
    Refused {
        status: StatusCode,
        text: &'static str,
    },
}

impl GatewayError {
    /// Sorts an upstream failure: a request body that ran over the limit surfaces as
    /// a send error too, and is the client's fault, not the upstream's.
    pub fn from_upstream(error: UpstreamError) -> Self {
        if error.is_connect() {
            return GatewayError::Connect(error);
        }
        let mut source = error.source();
        while let Some(cause) = source {
            if cause.is::<LengthLimitError>() {
                return GatewayError::BodyTooLarge;
            }
            source = cause.source();
        }
        GatewayError::Upstream(error)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Connect(_) | GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Refused { status, .. } => *status,
        }
    }

    fn text(&self) -> &'static str {
        match self {
            GatewayError::Connect(_) => "502 bad gateway: upstream unreachable\n",
            GatewayError::Upstream(_) => "502 bad gateway: upstream failed\n",
            GatewayError::Timeout => "504 gateway timeout: upstream did not answer in time\n",
            GatewayError::NoEndpoint => "503 service unavailable: no healthy upstream endpoint\n",
            GatewayError::BodyTooLarge => "413 payload too large\n",
            GatewayError::Refused { text, .. } => text,
        }
    }

    pub fn response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::text(self.text()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
