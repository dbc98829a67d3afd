//! Where a routing value (user key, city, channel) is read from.

use std::borrow::Cow;

use http::header::{HeaderName, COOKIE};

use super::RequestView;

/// One place in a request that carries a value.
#[derive(Debug, Clone)]
pub enum ValueSource {
    Header(HeaderName),
    Cookie(Box<str>),
    Query(Box<str>),
}

impl ValueSource {
    /// The value, or `None` when the request does not carry it. An empty value counts
    /// as absent: an empty user key identifies nobody.
    ///
    /// Borrows from the request except for a percent-encoded query value, which has to
    /// be decoded.
    pub fn extract<'r>(&self, req: &RequestView<'r>) -> Option<Cow<'r, [u8]>> {
        let value: Cow<'r, [u8]> = match self {
            ValueSource::Header(name) => Cow::Borrowed(req.headers.get(name)?.as_bytes()),
            ValueSource::Cookie(name) => Cow::Borrowed(cookie(req, name)?),
            ValueSource::Query(name) => query(req.query?, name)?,
        };
        (!value.is_empty()).then_some(value)
    }

    /// How the source reads in config and in `explain` output.
    pub fn describe(&self) -> String {
        match self {
            ValueSource::Header(name) => format!("header {name}"),
            ValueSource::Cookie(name) => format!("cookie {name}"),
            ValueSource::Query(name) => format!("query {name}"),
        }
    }
}

/// The first non-empty cookie called `name` across every `Cookie` header (RFC 6265 §5.4 allows
/// one header; HTTP/2 clients may split it into several).
fn cookie<'r>(req: &RequestView<'r>, name: &str) -> Option<&'r [u8]> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            // An empty one is passed over: a stale `gg_uid=` set for a narrower
            // path would otherwise hide the real one on every request.
            let value = strip_quotes(value);
            (key == name.as_bytes() && !value.is_empty()).then_some(value)
        })
}

fn strip_quotes(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// The first query parameter called `name`, decoded as HTML forms encode it (`+` is a
/// space, `%XX` a byte). Decoded to bytes, not text, so a key that is not UTF-8 hashes
/// the same as when it arrives in a header.
fn query<'r>(query: &'r str, name: &str) -> Option<Cow<'r, [u8]>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (*form_decode(key) == *name.as_bytes()).then(|| form_decode(value))
    })
}

/// Borrows unless there is something to decode.
fn form_decode(text: &str) -> Cow<'_, [u8]> {
    if !text.contains('+') {
        return percent_encoding::percent_decode(text.as_bytes()).into();
    }
    let spaced: Vec<u8> = text
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_encoding::percent_decode(&spaced).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn get(source: &ValueSource, map: &HeaderMap, q: Option<&str>) -> Option<Vec<u8>> {
        source
            .extract(&RequestView::new(map, q))
            .map(|v| v.into_owned())
    }

    #[test]
    fn header_first_value_and_empty_is_absent() {
        let src = ValueSource::Header(HeaderName::from_static("x-user-id"));
        assert_eq!(
            get(
                &src,
                &headers(&[("x-user-id", "42"), ("x-user-id", "7")]),
                None
            ),
            Some(b"42".to_vec())
        );
        assert_eq!(get(&src, &headers(&[("x-user-id", "")]), None), None);
        assert_eq!(get(&src, &headers(&[]), None), None);
    }

    #[test]
    fn cookie_across_headers_with_spaces_and_quotes() {
        let src = ValueSource::Cookie("uid".into());
        let map = headers(&[
            ("cookie", "a=1; uidx=9"),
            ("cookie", " b=2 ;uid=\"42\"; uid=43"),
        ]);
        assert_eq!(get(&src, &map, None), Some(b"42".to_vec()));
        // An empty one (a stale cookie of a narrower path, say) is passed over.
        let stale = headers(&[("cookie", "uid=; uid=\"\"; uid=44")]);
        assert_eq!(get(&src, &stale, None), Some(b"44".to_vec()));
        assert_eq!(get(&src, &headers(&[("cookie", "uid=")]), None), None);
        assert_eq!(get(&src, &headers(&[("cookie", "uid")]), None), None);
        assert_eq!(get(&src, &headers(&[("cookie", "uid=")]), None), None);
        assert_eq!(get(&src, &headers(&[]), None), None);
    }

    #[test]
    fn query_decodes_and_takes_the_first() {
        let src = ValueSource::Query("uid".into());
        let map = HeaderMap::new();
        assert_eq!(
            get(&src, &map, Some("a=1&uid=4%202&uid=5")),
            Some(b"4 2".to_vec())
        );
        assert_eq!(get(&src, &map, Some("uid=a+b")), Some(b"a b".to_vec()));
        assert_eq!(get(&src, &map, Some("uidx=1")), None);
        assert_eq!(get(&src, &map, Some("uid=")), None);
        assert_eq!(get(&src, &map, None), None);
    }
}
