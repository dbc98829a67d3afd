//! Comparing a copy's answer with the served one: plain data in, the differences out.
//!
//! - The status.
//! - The headers: names are compared lower-cased, as `http` keeps them. Hop-by-hop
//!   headers are gone already (the upstream client drops them while parsing). Framing
//!   (`content-length`, `transfer-encoding`) is left to the body, and the configured
//!   `diff_ignore_headers` are skipped.
//! - The body: two JSON documents are compared field by field, and each path that
//!   differs is named (`$.choices[0].text`). Anything else is compared by length and
//!   sha256. A body cut at the capture bound is only compared by what is known of it.

use http::header::{HeaderMap, HeaderName, CONTENT_LENGTH, TRANSFER_ENCODING};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// At most this many differing JSON paths are named per comparison.
const MAX_PATHS: usize = 50;

/// One side of a comparison.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body was longer than the capture bound; `body` is its start.
    pub truncated: bool,
    /// The body's whole length, when it was read to its end.
    pub length: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Differences {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<(u16, u16)>,
    /// Header names whose values differ, or that one side lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// JSON paths whose values differ (both bodies JSON).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json_paths: Vec<String>,
    /// The bodies differ (by the paths above, or by length and digest).
    pub body: bool,
    /// Why the bodies could not be fully compared, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_note: Option<String>,
}

impl Differences {
    pub fn any(&self) -> bool {
        self.status.is_some() || !self.headers.is_empty() || self.body
    }
}

/// The differences between the served answer and the copy's.
pub fn compare(served: &Answer, copy: &Answer, ignore: &[HeaderName]) -> Differences {
    let mut d = Differences {
        status: (served.status != copy.status).then_some((served.status, copy.status)),
        headers: differing_headers(&served.headers, &copy.headers, ignore),
        ..Differences::default()
    };
    compare_bodies(served, copy, &mut d);
    d
}

fn differing_headers(a: &HeaderMap, b: &HeaderMap, ignore: &[HeaderName]) -> Vec<String> {
    let skipped = |name: &HeaderName| {
        *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING || ignore.contains(name)
    };
    let mut names: Vec<&HeaderName> = a.keys().chain(b.keys()).filter(|n| !skipped(n)).collect();
    names.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    names.dedup();
    names
        .into_iter()
        .filter(|name| !a.get_all(*name).iter().eq(b.get_all(*name).iter()))
        .map(|name| name.as_str().to_string())
        .collect()
}

fn compare_bodies(served: &Answer, copy: &Answer, d: &mut Differences) {
    if let (Some(x), Some(y)) = (served.length, copy.length) {
        if x != y && (served.truncated || copy.truncated) {
            d.body = true;
            d.body_note = Some(format!("lengths {x} and {y}; too long to compare further"));
            return;
        }
    }
    if served.truncated || copy.truncated {
        d.body_note = Some("too long to compare".into());
        return;
    }
    if served.body == copy.body {
        return;
    }
    let json = |body: &[u8]| serde_json::from_slice::<Value>(body).ok();
    if let (Some(a), Some(b)) = (json(&served.body), json(&copy.body)) {
        let mut paths = Vec::new();
        json_paths(&a, &b, &mut String::from("$"), &mut paths);
        d.body = !paths.is_empty();
        if paths.len() > MAX_PATHS {
            // The walk stops once it has found more than MAX_PATHS.
            d.body_note = Some(format!(
                "more than {MAX_PATHS} paths differ; the first {MAX_PATHS} are listed"
            ));
            paths.truncate(MAX_PATHS);
        }
        d.json_paths = paths;
        return;
    }
    d.body = true;
    let digest = |body: &[u8]| {
        let hash = Sha256::digest(body);
        hash.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    d.body_note = Some(format!(
        "{} bytes (sha256 {}…) against {} bytes (sha256 {}…)",
        served.body.len(),
        digest(&served.body),
        copy.body.len(),
        digest(&copy.body)
    ));
}

/// The paths under `path` where `a` and `b` differ; object keys in order, array
/// elements by index, an array of another length at its own path.
fn json_paths(a: &Value, b: &Value, path: &mut String, out: &mut Vec<String>) {
    if out.len() > MAX_PATHS {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let at = path.len();
                if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
                    path.push('.');
                    path.push_str(key);
                } else {
                    path.push_str(&format!("[{}]", Value::String(key.clone())));
                }
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => json_paths(u, v, path, out),
                    _ => out.push(path.clone()),
                }
                path.truncate(at);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(path.clone());
            }
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                let at = path.len();
                path.push_str(&format!("[{i}]"));
                json_paths(u, v, path, out);
                path.truncate(at);
            }
        }
        _ if a == b => {}
        _ => out.push(path.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Answer {
            status,
            headers: map,
            body: body.as_bytes().to_vec(),
            truncated: false,
            length: Some(body.len() as u64),
        }
    }

    #[test]
    fn equal_answers_have_no_differences() {
        let a = answer(
            200,
            &[("content-type", "application/json"), ("date", "x")],
            r#"{"a":1}"#,
        );
        let b = answer(
            200,
            &[("date", "y"), ("content-type", "application/json")],
            r#"{ "a": 1 }"#,
        );
        let d = compare(&a, &b, &[http::header::DATE]);
        assert!(!d.any(), "{d:?}");
    }

    #[test]
    fn json_bodies_are_compared_field_by_field() {
        let served =
            r#"{"choices":[{"text":"hello","index":0}],"usage":{"total_tokens":7},"id":"a"}"#;
        let copy = r#"{"choices":[{"text":"hullo","index":0}],"usage":{"total_tokens":9},"model":"v2","id":"a"}"#;
        let d = compare(&answer(200, &[], served), &answer(200, &[], copy), &[]);
        assert_eq!(
            d.json_paths,
            ["$.choices[0].text", "$.model", "$.usage.total_tokens"]
        );
        assert!(d.body && d.status.is_none());
        let d = compare(
            &answer(200, &[], r#"{"a":[1,2]}"#),
            &answer(200, &[], r#"{"a":[1,3,4]}"#),
            &[],
        );
        assert_eq!(d.json_paths, ["$.a", "$.a[1]"]);
        let d = compare(
            &answer(200, &[], r#"{"a b":1}"#),
            &answer(200, &[], r#"{"a b":2}"#),
            &[],
        );
        assert_eq!(d.json_paths, [r#"$["a b"]"#]);
    }

    #[test]
    fn status_headers_and_other_bodies() {
        let d = compare(
            &answer(200, &[("x-model", "v1"), ("content-length", "3")], "abc"),
            &answer(
                503,
                &[("x-model", "v2"), ("x-new", "1"), ("content-length", "4")],
                "abcd",
            ),
            &[],
        );
        assert_eq!(d.status, Some((200, 503)));
        assert_eq!(d.headers, ["x-model", "x-new"]);
        assert!(d.body && d.json_paths.is_empty());
        assert!(d.body_note.unwrap().starts_with("3 bytes (sha256 "));
        // A repeated header compares as its list of values.
        let d = compare(
            &answer(200, &[("vary", "a"), ("vary", "b")], ""),
            &answer(200, &[("vary", "b"), ("vary", "a")], ""),
            &[],
        );
        assert_eq!(d.headers, ["vary"]);
    }

    #[test]
    fn truncated_bodies_compare_only_what_is_known() {
        let mut a = answer(200, &[], "aaaa");
        let mut b = answer(200, &[], "aaab");
        (a.truncated, b.truncated) = (true, true);
        let d = compare(&a, &b, &[]);
        assert!(!d.body && d.body_note.is_some());
        b.length = Some(9);
        assert!(compare(&a, &b, &[]).body, "known lengths differ");
    }
}
