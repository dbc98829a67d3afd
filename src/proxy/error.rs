//! Answers the gateway makes itself: a status, a short plain-text body, and no hang.

use std::error::Error as _;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::LengthLimitError;

use super::body::ResponseBody;
use crate::upstream::{BodyStalled, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("upstream connect failed: {0}")]
    Connect(#[source] UpstreamError),
    #[error("upstream connect timed out")]
    ConnectTimeout,
    #[error("no available endpoint in the pool")]
    NoEndpoint,
    #[error("upstream did not answer within the request timeout")]
    Timeout,
    #[error("request body exceeds limits.max_body_bytes")]
    BodyTooLarge,
    #[error("the request body could not be read: {0}")]
    BadRequestBody(#[source] UpstreamError),
    /// The client stopped sending its body: `body_read_timeout` passed between its
    /// bytes, or `request_timeout` while the body was still arriving.
    #[error("the request body stopped arriving")]
    BodyTimeout,
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
    /// Sorts a failed send: the client's own body failures (over the limit,
    /// malformed, cut off) are the client's, not the upstream's.
    pub fn from_upstream(error: UpstreamError) -> Self {
        match error {
            UpstreamError::ConnectTimeout => return GatewayError::ConnectTimeout,
            UpstreamError::Connect(_) => return GatewayError::Connect(error),
            UpstreamError::Io(_)
            | UpstreamError::Closed
            | UpstreamError::Protocol(_)
            | UpstreamError::ClientBody(_) => {}
        }
        let mut source = error.source();
        while let Some(cause) = source {
            if cause.is::<LengthLimitError>() {
                return GatewayError::BodyTooLarge;
            }
            if cause.is::<BodyStalled>() {
                return GatewayError::BodyTimeout;
            }
            source = cause.source();
        }
        if error.is_client_fault() {
            return GatewayError::BadRequestBody(error);
        }
        GatewayError::Upstream(error)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Connect(_) | GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout | GatewayError::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequestBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Refused { status, .. } => *status,
        }
    }

    fn text(&self) -> &'static str {
        match self {
            GatewayError::Connect(_) => "502 bad gateway: upstream unreachable\n",
            GatewayError::Upstream(_) => "502 bad gateway: upstream failed\n",
            GatewayError::Timeout => "504 gateway timeout: upstream did not answer in time\n",
            GatewayError::ConnectTimeout => "504 gateway timeout: upstream connect timed out\n",
            GatewayError::NoEndpoint => "503 service unavailable: no healthy upstream endpoint\n",
            GatewayError::BodyTooLarge => "413 payload too large\n",
            GatewayError::BodyTimeout => "408 request timeout: the request body stopped arriving\n",
            GatewayError::BadRequestBody(_) => {
                "400 bad request: the request body could not be read\n"
            }
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
        // The rest of that body may still come: the connection cannot carry another
        // request after it.
        if matches!(self, GatewayError::BodyTimeout) {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
