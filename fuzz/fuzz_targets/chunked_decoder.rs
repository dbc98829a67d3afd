//! Body bytes -> `BodyDecoder` (chunked, a length, or until close), in one piece and
//! in pieces, and the two must agree.
//!
//! Input: `[mode, n_hi, n_lo, seed, body...]`. `mode % 4`: 0 and 1 chunked, 2 a length
//! of `n` bytes, 3 until close. `seed` drives the piece sizes (1 byte to 64 KiB,
//! mostly small). Checks, beyond "never panics":
//! - split-invariance: the same body data, the same verdict (done / error and which /
//!   cut short at the close) and the same bytes left after the body, however it
//!   arrives;
//! - a `Data` frame is never empty, and every step takes bytes or asks for more (no
//!   busy loop);
//! - a length body yields exactly its length, or what arrived of it.
#![no_main]

use bytes::BytesMut;
use graygate::h1::body::{BodyDecoder, Decoded};
use graygate::h1::response::ResponseFraming;
use graygate::h1::ProtocolError;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The body ended; these bytes followed it.
    Done(Vec<u8>),
    Error(ProtocolError),
    /// The input ended: what `closed()` said.
    Closed(Result<(), ProtocolError>),
}

fn decode(framing: ResponseFraming, pieces: &[&[u8]]) -> (Vec<u8>, Verdict) {
    let mut decoder = BodyDecoder::new(framing);
    let (mut buf, mut out) = (BytesMut::new(), Vec::new());
    // Even with no bytes, the decoder is asked once (a body that is already done says
    // so at once).
    let pieces = if pieces.is_empty() {
        &[&[][..]][..]
    } else {
        pieces
    };
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(data)) => {
                    assert!(!data.is_empty(), "an empty data frame");
                    assert!(buf.len() < before, "data out of nothing");
                    out.extend_from_slice(&data);
                }
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::Done) => {
                    assert!(decoder.is_done());
                    let mut rest = buf.to_vec();
                    pieces[i + 1..]
                        .iter()
                        .for_each(|p| rest.extend_from_slice(p));
                    return (out, Verdict::Done(rest));
                }
                Err(err) => return (out, Verdict::Error(err)),
            }
        }
    }
    (out, Verdict::Closed(decoder.closed()))
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let (control, body) = input.split_at(4);
    let framing = match control[0] % 4 {
        0 | 1 => ResponseFraming::Chunked,
        2 => ResponseFraming::Length(u64::from(u16::from_be_bytes([control[1], control[2]]))),
        _ => ResponseFraming::UntilClose,
    };
    let whole = decode(framing, &[body]);

    // Pieces: a xorshift over the seed; sizes mostly 1..=16, sometimes up to 64 KiB.
    let mut state = u32::from(control[3]) | 0x9e37_7900;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let r = next();
        let size = match r % 8 {
            0 => 1 + (r >> 8) as usize % 65536,
            1 => 1,
            _ => 1 + (r >> 8) as usize % 16,
        }
        .min(rest.len());
        let (piece, tail) = rest.split_at(size);
        pieces.push(piece);
        rest = tail;
    }
    let split = decode(framing, &pieces);
    assert_eq!(
        split,
        whole,
        "pieces {:?}",
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    // Pieces of one size, from 1 to 97 bytes.
    let size = 1 + usize::from(control[3]) % 97;
    let even: Vec<&[u8]> = body.chunks(size).collect();
    assert_eq!(decode(framing, &even), whole, "pieces of {size} bytes");
    // A byte at a time, too, for short bodies.
    if body.len() <= 512 {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode(framing, &bytes), whole, "a byte at a time");
    }

    if let ResponseFraming::Length(n) = framing {
        let n = n as usize;
        let (out, verdict) = &whole;
        assert_eq!(&out[..], &body[..n.min(body.len())]);
        match verdict {
            Verdict::Done(rest) => assert_eq!(&rest[..], &body[n..]),
            Verdict::Closed(result) => assert!(result.is_err() && body.len() < n),
            Verdict::Error(_) => panic!("a length body cannot be malformed"),
        }
    }
    if framing == ResponseFraming::UntilClose {
        assert_eq!(whole, (body.to_vec(), Verdict::Closed(Ok(()))));
    }
});
