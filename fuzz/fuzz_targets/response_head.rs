//! Bytes from an upstream -> `parse_response_head`, then `response_framing` for the
//! request method the first byte picks, then the body decoder over what follows.
//!
//! Checks, beyond "never panics":
//! - a parsed head took a prefix of the buffer; `Ok(None)` and errors leave it whole;
//! - no hop-by-hop header survives parsing (but `Upgrade` on a 101), and no
//!   `Content-Length` beside `Transfer-Encoding`;
//! - the framing follows RFC 9112 §6.3 from the head alone (HEAD, 204, 304 empty;
//!   chunked only if chunked is the final coding; a `Length` is never 0);
//! - a head split over two reads at a point the last byte picks parses as in one read.
#![no_main]

use bytes::BytesMut;
use graygate::h1::body::{BodyDecoder, Decoded};
use graygate::h1::head::HOP_BY_HOP;
use graygate::h1::response::{
    parse_response_head, response_framing, ResponseFraming, ResponseHead,
};
use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
];

type Summary = (u16, Vec<(String, Vec<u8>)>, bool, Option<bool>);

fn summary(head: &ResponseHead) -> Summary {
    (
        head.response.status().as_u16(),
        head.response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        head.keep_alive,
        head.chunked,
    )
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, data)) = input.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(pick) % METHODS.len()];
    let mut buf = BytesMut::from(data);
    let parsed = parse_response_head(&mut buf);
    let head = match parsed {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => {
            assert_eq!(&buf[..], data, "bytes lost");
            split_agrees(data, None);
            return;
        }
    };
    let used = data.len() - buf.len();
    assert!(used > 0);
    assert_eq!(&buf[..], &data[used..], "bytes after the head changed");
    split_agrees(data, Some(summary(&head)));

    let status = head.response.status();
    let headers = head.response.headers();
    for name in &HOP_BY_HOP {
        if *name == http::header::UPGRADE && status == StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        assert!(!headers.contains_key(name), "hop-by-hop {name} kept");
    }
    if head.chunked.is_some() {
        assert!(!headers.contains_key("content-length"), "CL kept beside TE");
    }
    if status.is_informational() {
        return; // the client reads the next head; 101 hands the connection over
    }
    let Ok((framing, _reusable)) = response_framing(method, status, head.chunked, headers) else {
        return;
    };
    let no_body = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    match framing {
        ResponseFraming::Empty => {}
        ResponseFraming::Length(n) => assert!(!no_body && n > 0),
        ResponseFraming::Chunked => assert!(!no_body && head.chunked == Some(true)),
        ResponseFraming::UntilClose => assert!(!no_body),
    }
    if no_body {
        assert_eq!(framing, ResponseFraming::Empty);
    }
    // The body that follows, as the upstream client reads it (one read).
    let mut decoder = BodyDecoder::new(framing);
    for _ in 0..buf.len() + 2 {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => assert!(!d.is_empty(), "empty data frame"),
            Ok(Decoded::NeedMore) | Ok(Decoded::Done) | Err(_) => return,
        }
    }
    panic!("the decoder did not progress");
});

/// The same bytes in two reads: `None` after the first, then the one-read answer.
fn split_agrees(data: &[u8], whole: Option<Summary>) {
    if data.len() < 2 {
        return;
    }
    let split = 1 + usize::from(data[data.len() - 1]) * (data.len() - 1) / 256;
    let mut buf = BytesMut::from(&data[..split]);
    let first = match parse_response_head(&mut buf) {
        Ok(None) => {
            buf.extend_from_slice(&data[split..]);
            parse_response_head(&mut buf)
        }
        other => other,
    };
    match first {
        Ok(Some(head)) => assert_eq!(Some(summary(&head)), whole, "two reads differ"),
        Ok(None) | Err(_) => assert!(whole.is_none(), "two reads refused what one took"),
    }
}
