//! An answer's body, read from its connection as the caller asks for it:
//! by its length, in chunks, or until upstream closes. The body owns the
//! connection while it is read, and puts it back in the pool once read to
//! its end when the answer allows; a body dropped halfway closes it (what
//! is left of the answer would be taken for the next one).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use super::conn::{Conn, Idle};
use super::http1::{Framing, Http1Error};

/// Longest chunk-size line taken (the size and any extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Most bytes of trailers taken after the last chunk; they are dropped.
const MAX_TRAILERS: usize = 64 * 1024;

/// Where the body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// This many bytes still to come.
    Length(u64),
    /// A chunk-size line next.
    ChunkSize,
    /// This many bytes of the current chunk still to come.
    ChunkData(u64),
    /// The line end after a chunk's data.
    ChunkEnd,
    /// Trailer lines until an empty one; this many bytes of them so far.
    Trailers(usize),
    /// Everything until upstream closes.
    Close,
    Done,
}

/// What the bytes at hand give.
enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

/// An upstream answer's body, as the pool hands it over with its head.
pub struct AnswerBody {
    conn: Option<Box<Conn>>,
    decode: Decode,
    /// Whether the connection may carry another call once this body ends.
    reusable: bool,
    idle: Arc<Idle>,
}

impl AnswerBody {
    pub(super) fn new(conn: Box<Conn>, framing: Framing, reusable: bool, idle: Arc<Idle>) -> Self {
        let decode = match framing {
            Framing::Length(length) => Decode::Length(length),
            Framing::Chunked => Decode::ChunkSize,
            Framing::Close => Decode::Close,
        };
        let mut body = AnswerBody {
            conn: Some(conn),
            decode,
            reusable,
            idle,
        };
        if decode == Decode::Length(0) {
            body.end();
        }
        body
    }

    /// The body is read whole: its connection goes back to the pool when
    /// nothing more came with it.
    fn end(&mut self) {
        self.decode = Decode::Done;
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.reusable && conn.buf.is_empty() {
            self.idle.checkin(conn);
        }
    }

    /// Takes what `buf` holds of the body, by the current state.
    fn step(decode: &mut Decode, buf: &mut BytesMut) -> Result<Step, Http1Error> {
        loop {
            match *decode {
                Decode::Done => return Ok(Step::End),
                Decode::Length(0) => return Ok(Step::End),
                Decode::Length(left) | Decode::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    *decode = match *decode {
                        Decode::Length(_) => Decode::Length(left),
                        _ if left == 0 => Decode::ChunkEnd,
                        _ => Decode::ChunkData(left),
                    };
                    return Ok(Step::Data(buf.split_to(take).freeze()));
                }
                Decode::Close => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Decode::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *decode = if size == 0 {
                        Decode::Trailers(0)
                    } else {
                        Decode::ChunkData(size)
                    };
                }
                Decode::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Http1Error::Invalid("a chunk longer than its size"));
                    }
                    buf.advance(2);
                    *decode = Decode::ChunkSize;
                }
                Decode::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS - seen)? else {
                        return Ok(Step::NeedMore);
                    };
                    *decode = if line.is_empty() {
                        Decode::Done
                    } else {
                        Decode::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }
}

/// The next CRLF-ended line in `buf`, taken out without its end, when one
/// of at most `limit` bytes has arrived.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, Http1Error> {
    let Some(end) = buf.iter().take(limit).position(|&byte| byte == b'\n') else {
        return if buf.len() >= limit {
            Err(Http1Error::Invalid("a chunk line or trailers too long"))
        } else {
            Ok(None)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(Http1Error::Invalid("a bare line feed in a chunked body"));
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// A chunk-size line's size: hex digits, then optional extensions.
fn chunk_size(line: &[u8]) -> Result<u64, Http1Error> {
    const BAD: Http1Error = Http1Error::Invalid("a malformed chunk size");
    let digits = line
        .iter()
        .position(|&byte| byte == b';' || byte == b' ' || byte == b'\t')
        .map_or(line, |end| &line[..end]);
    if digits.is_empty() || digits.len() > 15 {
        return Err(BAD);
    }
    digits.iter().try_fold(0u64, |size, &byte| {
        let digit = (byte as char).to_digit(16).ok_or(BAD)?;
        Ok(size * 16 + u64::from(digit))
    })
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Http1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match Self::step(&mut this.decode, &mut conn.buf) {
                Ok(Step::Data(data)) => {
                    if this.decode == Decode::Length(0) {
                        // Its end is known now: the connection goes back
                        // at once, not when the caller asks again.
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(err) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(err)));
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.decode == Decode::Close => {
                    this.reusable = false;
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Http1Error::Truncated)));
                }
                Ok(_) => {}
                Err(err) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(left) => SizeHint::with_exact(left),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body `wire` decodes to under `decode`, fed `at_once` bytes at a
    /// time, and what is left of `wire` after it.
    fn decoded(
        mut decode: Decode,
        wire: &[u8],
        at_once: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), Http1Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match AnswerBody::step(&mut decode, &mut buf)? {
                Step::Data(data) => out.extend_from_slice(&data),
                Step::End => return Ok((out, buf.to_vec())),
                Step::NeedMore if fed == wire.len() => return Err(Http1Error::Truncated),
                Step::NeedMore => {
                    let next = (fed + at_once).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunks_are_joined_in_any_pieces_and_trailers_dropped() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for at_once in [1, 2, 3, 7, wire.len()] {
            let (body, rest) = decoded(Decode::ChunkSize, wire, at_once).unwrap();
            assert_eq!(body, b"hello, world", "{at_once}");
            // Bytes past the body stay for whoever reads next.
            let fed_past = rest.len() <= 4;
            assert!(
                fed_past && b"NEXT".starts_with(&rest),
                "{at_once}: {rest:?}"
            );
        }
    }

    #[test]
    fn a_length_takes_exactly_its_bytes() {
        let (body, rest) = decoded(Decode::Length(5), b"helloEXTRA", 64).unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (&b"hello"[..], &b"EXTRA"[..])
        );
        assert!(matches!(
            decoded(Decode::Length(9), b"hello", 2),
            Err(Http1Error::Truncated)
        ));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"z\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b"-1\r\n",
        ] {
            assert!(
                matches!(
                    decoded(Decode::ChunkSize, wire, 64),
                    Err(Http1Error::Invalid(_))
                ),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_line = [b"5;".as_slice(), &[b'x'; MAX_CHUNK_LINE]].concat();
        assert!(decoded(Decode::ChunkSize, &long_line, 512).is_err());
        let endless_trailers = [b"0\r\n".as_slice(), &b"x: y\r\n".repeat(MAX_TRAILERS)].concat();
        assert!(decoded(Decode::ChunkSize, &endless_trailers, 4096).is_err());
    }
}
