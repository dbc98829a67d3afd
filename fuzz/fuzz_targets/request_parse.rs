//! Bytes from a client -> `parse_request`, at the default `max_header_bytes`.
//!
//! Checks, beyond "never panics":
//! - a parsed head took a prefix of the buffer, no longer than `max_head`, and left
//!   the rest untouched; `Partial` and `Unsupported` leave every byte;
//! - a taken request carries no body framing (the loop serves bodiless requests only):
//!   no `Transfer-Encoding`, `Expect`, `Upgrade`, at most one `Content-Length`, "0";
//! - the request line and headers it read are what httparse reads from the same bytes;
//! - the server loop's shortcut (`may_end_head` over the new bytes after a `Partial`)
//!   never skips a head that is complete: the input is split at a point chosen by its
//!   last byte, parsed as it would arrive in two reads, and must give what one read
//!   gives.
#![no_main]

use bytes::BytesMut;
use graygate::h1::request::{may_end_head, parse_request, Parsed};
use libfuzzer_sys::fuzz_target;

/// `limits.max_header_bytes`' default.
const MAX_HEAD: usize = 64 * 1024;

fn summary(parsed: &Parsed) -> Option<(String, String, Vec<(String, Vec<u8>)>, bool)> {
    match parsed {
        Parsed::Request(head) => Some((
            head.request.method().to_string(),
            head.request.uri().to_string(),
            head.request
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            head.keep_alive,
        )),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let parsed = parse_request(&mut buf, MAX_HEAD);
    match &parsed {
        Parsed::Request(head) => {
            let used = data.len() - buf.len();
            assert!(used > 0 && used <= MAX_HEAD);
            assert_eq!(&buf[..], &data[used..], "bytes after the head changed");
            let request = &head.request;
            assert!(request.uri().path().starts_with('/'));
            let h = request.headers();
            for name in ["transfer-encoding", "expect", "upgrade"] {
                assert!(!h.contains_key(name), "{name} taken by the own loop");
            }
            let lengths: Vec<_> = h.get_all("content-length").iter().collect();
            assert!(lengths.len() <= 1 && lengths.iter().all(|v| v.as_bytes() == b"0"));
            // httparse, on the same bytes, reads the same head.
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(data).expect("httparse rejects what was taken");
            assert_eq!(status, httparse::Status::Complete(used));
            assert_eq!(req.method, Some(request.method().as_str()));
            // A fragment (not allowed in a request target, RFC 9112 §3.2) is dropped
            // by `http::Uri`, as hyper drops it: the rest must be httparse's path.
            let path = req.path.expect("a path");
            let path = path.split('#').next().unwrap_or(path);
            assert_eq!(path, request.uri().to_string());
            let mut theirs: Vec<(String, Vec<u8>)> = req
                .headers
                .iter()
                .filter(|hd| !hd.name.eq_ignore_ascii_case("content-length"))
                .map(|hd| (hd.name.to_ascii_lowercase(), hd.value.to_vec()))
                .collect();
            let mut ours: Vec<(String, Vec<u8>)> = h
                .iter()
                .filter(|(n, _)| *n != "content-length")
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            theirs.sort();
            ours.sort();
            assert_eq!(ours, theirs, "headers differ from httparse's");
        }
        Parsed::Partial => {
            assert_eq!(&buf[..], data, "a partial head lost bytes");
            assert!(data.len() < MAX_HEAD);
        }
        Parsed::Unsupported => assert_eq!(&buf[..], data, "an unsupported head lost bytes"),
    }

    // Two reads, as the server loop handles them.
    if data.len() < 2 {
        return;
    }
    let split = 1 + usize::from(data[data.len() - 1]) * (data.len() - 1) / 256;
    let mut buf = BytesMut::from(&data[..split]);
    let first = parse_request(&mut buf, MAX_HEAD);
    let again = match first {
        Parsed::Partial => {
            let parsed_partial = buf.len();
            buf.extend_from_slice(&data[split..]);
            let worth_parsing =
                buf.len() >= MAX_HEAD || may_end_head(&buf[parsed_partial.saturating_sub(2)..]);
            if !worth_parsing {
                // The loop would wait for more: the whole input must not hold a
                // complete head the loop would take.
                assert!(
                    !matches!(parsed, Parsed::Request(_)),
                    "a complete head was left waiting"
                );
                return;
            }
            parse_request(&mut buf, MAX_HEAD)
        }
        // The first read was already decisive: the head was complete (or refused)
        // within it, which the one-read parse must agree with.
        Parsed::Request(head) => {
            assert_eq!(
                summary(&Parsed::Request(head)),
                summary(&parsed),
                "a head complete in the first read differs from one read"
            );
            return;
        }
        Parsed::Unsupported => {
            assert!(
                !matches!(parsed, Parsed::Request(_)),
                "refused in part, taken whole"
            );
            return;
        }
    };
    assert_eq!(
        summary(&again),
        summary(&parsed),
        "two reads differ from one"
    );
});
