//! What the decision core may read of a request.

use http::HeaderMap;

/// A borrowed view of the parts of a request that rules can test.
///
/// The proxy builds it from the live request; `graygate explain` and
/// `/admin/explain` build it from command-line or query arguments. Either way the
/// chain sees the same thing.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, without the leading `?`.
    pub query: Option<&'a str>,
    /// A sticky id the proxy made for a visitor who carries no user key and no sticky
    /// cookie (`routing.sticky_cookie`): the user key for this request.
    pub minted_key: Option<&'a [u8]>,
}

impl<'a> RequestView<'a> {
    pub fn new(headers: &'a HeaderMap, query: Option<&'a str>) -> Self {
        RequestView {
            headers,
            query,
            minted_key: None,
        }
    }

    /// The same request, with a sticky id made for it.
    pub fn with_minted_key(self, key: &'a [u8]) -> Self {
        RequestView {
            minted_key: Some(key),
            ..self
        }
    }
}
