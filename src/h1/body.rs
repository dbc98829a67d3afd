//! Message bodies: the decoder for a body framed by a length, by chunks or by the
//! connection's end, and the chunk encoder.

use bytes::{Buf, Bytes, BytesMut};

use super::response::ResponseFraming;
use super::ProtocolError;

/// A chunk-size line or a trailer line longer than this, its CRLF included, is refused.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Where a body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDecoder {
    /// This many bytes to go.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the peer closes.
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: ResponseFraming) -> Self {
        match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => BodyDecoder::Done,
            ResponseFraming::Length(n) => BodyDecoder::Length(n),
            ResponseFraming::Chunked => BodyDecoder::Chunked(Chunked::Size),
            ResponseFraming::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// Decodes from the start of `buf`, taking what it used out of it. Bytes after the
    /// body stay in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        match self {
            BodyDecoder::Done => Ok(Decoded::Done),
            BodyDecoder::Length(_) | BodyDecoder::UntilClose if buf.is_empty() => {
                Ok(Decoded::NeedMore)
            }
            BodyDecoder::Length(remaining) => {
                let take = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = BodyDecoder::Done;
                }
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            BodyDecoder::UntilClose => Ok(Decoded::Data(buf.split().freeze())),
            BodyDecoder::Chunked(chunked) => {
                let decoded = chunked.step(buf)?;
                if decoded == Decoded::Done {
                    *self = BodyDecoder::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The peer closed the connection: the end of a body read until close, or else a
    /// body cut short.
    pub fn closed(&mut self) -> Result<(), ProtocolError> {
        match self {
            BodyDecoder::UntilClose | BodyDecoder::Done => {
                *self = BodyDecoder::Done;
                Ok(())
            }
            _ => Err(ProtocolError("the body ended before its framing said")),
        }
    }

    pub fn is_done(&self) -> bool {
        *self == BodyDecoder::Done
    }

    /// The bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length(n) => Some(*n),
            BodyDecoder::Done => Some(0),
            BodyDecoder::Chunked(_) | BodyDecoder::UntilClose => None,
        }
    }
}

/// Where the chunked decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, with this many data bytes to go.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines (dropped) up to an empty line.
    Trailers,
    Done,
}

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// `buf` holds too little to go on: read more.
    NeedMore,
    Done,
}

impl Chunked {
    /// Decodes from the start of `buf`, taking what it used out of it.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match *self {
                // Only the first MAX_CHUNK_LINE bytes are looked at, so a line is
                // refused by its length alone, however it arrives: a long line that
                // came in one read was taken, the same line in two was refused.
                Chunked::Size => match httparse::parse_chunk_size(line_window(buf)) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() >= MAX_CHUNK_LINE => {
                        return Err(ProtocolError("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(ProtocolError("invalid chunk size")),
                },
                Chunked::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let left = remaining - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => match line_window(buf).windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.advance(2);
                        *self = Chunked::Done;
                    }
                    Some(end) => buf.advance(end + 2),
                    None if buf.len() >= MAX_CHUNK_LINE => {
                        return Err(ProtocolError("trailer line too long"))
                    }
                    None => return Ok(Decoded::NeedMore),
                },
                Chunked::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// The part of `buf` a chunk-size or trailer line may take, its CRLF included.
fn line_window(buf: &[u8]) -> &[u8] {
    &buf[..buf.len().min(MAX_CHUNK_LINE)]
}

/// Writes one chunk of a chunked body: its size line, the data, CRLF.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    chunk_size_line(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk's size line (`1a\r\n`); the data and its CRLF follow.
pub fn chunk_size_line(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_encoding_is_hex_length_data_crlf() {
        let mut out = Vec::new();
        encode_chunk(&[b'x'; 26], &mut out);
        assert_eq!(&out[..4], b"1a\r\n");
        assert!(out.ends_with(b"x\r\n"));
        assert_eq!(out.len(), 4 + 26 + 2);
    }

    #[test]
    fn chunk_size_lines_are_lower_hex() {
        for (len, line) in [
            (0, "0"),
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (26, "1a"),
            (4096, "1000"),
        ] {
            let mut out = Vec::new();
            chunk_size_line(len, &mut out);
            assert_eq!(out, format!("{line}\r\n").as_bytes());
        }
    }

    #[test]
    fn a_length_body_ends_at_its_length_and_leaves_what_follows() {
        let mut decoder = BodyDecoder::new(ResponseFraming::Length(5));
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"hel")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::NeedMore));
        assert!(decoder.closed().is_err(), "cut short");
        let mut decoder = BodyDecoder::Length(2);
        let mut buf = BytesMut::from(&b"loNEXT"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"lo")))
        );
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Done));
        assert_eq!(&buf[..], b"NEXT");
        let mut until_close = BodyDecoder::new(ResponseFraming::UntilClose);
        assert_eq!(until_close.closed(), Ok(()));
        assert!(until_close.is_done());
    }

    fn decode_all(input: &[&[u8]]) -> Result<(Vec<u8>, BytesMut), ProtocolError> {
        let mut state = Chunked::Size;
        let (mut buf, mut out) = (BytesMut::new(), Vec::new());
        for (i, piece) in input.iter().enumerate() {
            buf.extend_from_slice(piece);
            loop {
                match state.step(&mut buf)? {
                    Decoded::Data(data) => out.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::Done => {
                        input[i + 1..].iter().for_each(|p| buf.extend_from_slice(p));
                        return Ok((out, buf));
                    }
                }
            }
        }
        Err(ProtocolError("test: input ended before the body"))
    }

    #[test]
    fn chunked_decodes_across_any_split() {
        let wire: &[u8] =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let (out, rest) = decode_all(&[&wire[..split], &wire[split..]]).unwrap();
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "split at {split}");
            assert_eq!(&rest[..], b"NEXT", "split at {split}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(
            decode_all(&bytes).unwrap().0,
            b"helloabcdefghijklmnopqrstuvwxyz"
        );
    }

    #[test]
    fn a_long_line_is_refused_however_it_arrives() {
        // Found by fuzz/chunked_decoder: a chunk-size line (or a trailer line) longer
        // than MAX_CHUNK_LINE was taken when it arrived in one read, refused when it
        // arrived in pieces.
        let long_ext = [&b"1;"[..], &[b'e'; MAX_CHUNK_LINE], b"\r\nx\r\n0\r\n\r\n"].concat();
        let long_trailer = [
            &b"1\r\nx\r\n0\r\nx-t: "[..],
            &[b'v'; MAX_CHUNK_LINE],
            b"\r\n\r\n",
        ]
        .concat();
        for (wire, error) in [
            (&long_ext, "chunk size line too long"),
            (&long_trailer, "trailer line too long"),
        ] {
            assert_eq!(decode_all(&[wire]).unwrap_err(), ProtocolError(error));
            let pieces: Vec<&[u8]> = wire.chunks(100).collect();
            assert_eq!(decode_all(&pieces).unwrap_err(), ProtocolError(error));
        }
        // A line of exactly MAX_CHUNK_LINE bytes, CRLF included, is taken either way.
        let ext = MAX_CHUNK_LINE - b"1;\r\n".len();
        let longest = [&b"1;"[..], &vec![b'e'; ext], b"\r\nx\r\n0\r\n\r\n"].concat();
        assert_eq!(decode_all(&[&longest]).unwrap().0, b"x");
        let pieces: Vec<&[u8]> = longest.chunks(100).collect();
        assert_eq!(decode_all(&pieces).unwrap().0, b"x");
    }

    #[test]
    fn chunked_errors() {
        assert!(decode_all(&[b"zz\r\n"]).is_err());
        assert_eq!(
            decode_all(&[b"2\r\nabX\r\n"]).unwrap_err(),
            ProtocolError("chunk data not followed by CRLF")
        );
        assert!(decode_all(&[&[b'1'; MAX_CHUNK_LINE + 1]]).is_err());
        assert!(decode_all(&[b"ffffffffffffffffff\r\n"]).is_err());
    }
}
