//! HTTP/1.1 as the proxy speaks it to upstream: one request written whole,
//! one answer's head parsed (by `httparse`, the parser hyper uses) and its
//! body's framing decided as RFC 9112 section 6.3 says. The pool writes
//! and reads the bytes; this module only turns a call into bytes and bytes
//! into an answer, so every rule of the wire sits in one place.
//!
//! The answer's header values are slices of the bytes read, not copies.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

/// The largest answer head taken: WeChat's are a few hundred bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// The most headers an answer may have.
const MAX_HEADERS: usize = 100;

/// Why a call could not be written or its answer read. Never carries the
/// request target (it holds the token) or an answer's bytes.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("not a valid request target")]
    Target,
    #[error("upstream's answer is not valid HTTP/1.1 ({0})")]
    Invalid(&'static str),
    #[error("upstream's answer head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("upstream closed the connection in the middle of its answer")]
    Truncated,
    #[error("upstream connection failed")]
    Io(#[from] std::io::Error),
}

/// A call as sent: the target in origin form (the token already in its
/// query), the `Host`, the headers to pass on, and the whole body.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub target: &'a str,
    pub host: &'a HeaderValue,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

/// Writes `call`'s head into `out`: request line, `Host`, the headers,
/// and the body's length.
pub fn encode(call: &Outgoing<'_>, out: &mut Vec<u8>) -> Result<(), Http1Error> {
    if !is_origin_form(call.target) {
        return Err(Http1Error::Target);
    }
    out.extend_from_slice(call.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(call.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(call.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in call.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A body's length always goes; an empty one's only where a body is
    // expected, as user agents do (RFC 9110 section 8.6).
    let expects_body = matches!(*call.method, Method::POST | Method::PUT | Method::PATCH);
    if !call.body.is_empty() || expects_body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(call.body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// A request target in origin form that cannot break the request line:
/// a path, no space, no control byte, no fragment. The client's path and
/// query passed the server's parser already; this holds the line whatever
/// is appended to them.
fn is_origin_form(target: &str) -> bool {
    // Folded without stopping early, which the compiler turns into a few
    // wide compares: a target is some 200 bytes, and nearly always fine.
    target.starts_with('/')
        && target.bytes().fold(true, |fine, byte| {
            fine & (byte > b' ') & (byte != 0x7f) & (byte != b'#')
        })
}

/// How an answer's body ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks, ending with a zero-sized one and trailers.
    Chunked,
    /// Whatever comes until upstream closes the connection.
    Close,
}

/// An answer's head: what is relayed, how its body ends, and whether the
/// connection can carry another call after it.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    pub reusable: bool,
}

/// The answer head at the start of `buf`, taken out of it, when it has
/// arrived whole; interim (1xx) answers before it are skipped. `method`
/// is the call's: an answer to `HEAD` has no body, whatever it says.
pub fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Http1Error> {
    loop {
        let Some(parsed) = parse_one(buf)? else {
            return Ok(None);
        };
        let bytes = buf.split_to(parsed.len).freeze();
        if parsed.status.is_informational() {
            if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Http1Error::Invalid("a protocol switch nobody asked for"));
            }
            continue;
        }
        return head(parsed, &bytes, method).map(Some);
    }
}

/// Where each part of a parsed head lies in the bytes read.
struct Parsed {
    len: usize,
    status: StatusCode,
    version: Version,
    /// Each header's name and value.
    headers: Vec<(Range<usize>, Range<usize>)>,
}

fn parse_one(buf: &[u8]) -> Result<Option<Parsed>, Http1Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut response, buf, &mut slots)
        .map_err(|err| match err {
            httparse::Error::TooManyHeaders => Http1Error::Invalid("too many headers"),
            _ => Http1Error::Invalid("a malformed head"),
        })?;
    let httparse::Status::Complete(len) = status else {
        return Ok(if buf.len() > MAX_HEAD {
            return Err(Http1Error::HeadTooLarge);
        } else {
            None
        });
    };
    if len > MAX_HEAD {
        return Err(Http1Error::HeadTooLarge);
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(Http1Error::Invalid("a status out of range"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let start = buf.as_ptr() as usize;
    let offset = |part: &[u8]| {
        let from = part.as_ptr() as usize - start;
        from..from + part.len()
    };
    let headers = response
        .headers
        .iter()
        .map(|header| (offset(header.name.as_bytes()), offset(header.value)))
        .collect();
    Ok(Some(Parsed {
        len,
        status,
        version,
        headers,
    }))
}

fn head(parsed: Parsed, bytes: &Bytes, method: &Method) -> Result<Head, Http1Error> {
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for (name, value) in &parsed.headers {
        let name = HeaderName::from_bytes(&bytes[name.clone()])
            .map_err(|_| Http1Error::Invalid("a malformed header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(value.clone()))
            .map_err(|_| Http1Error::Invalid("a malformed header value"))?;
        headers.append(name, value);
    }
    let (framing, mut reusable) = framing(parsed.status, parsed.version, &headers, method)?;
    reusable &= keeps_alive(parsed.version, &headers);
    let mut response = Response::new(());
    *response.status_mut() = parsed.status;
    *response.version_mut() = parsed.version;
    *response.headers_mut() = headers;
    Ok(Head {
        response,
        framing,
        reusable,
    })
}

/// The body's framing, and whether it leaves the connection usable.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    method: &Method,
) -> Result<(Framing, bool), Http1Error> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), true));
    }
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if version == Version::HTTP_10 {
            return Err(Http1Error::Invalid("a transfer coding in HTTP/1.0"));
        }
        let last = codings.next_back().unwrap_or(first);
        let chunked = last
            .as_bytes()
            .rsplit(|&byte| byte == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        // A length beside a coding is how requests are smuggled: the
        // coding wins (RFC 9112 section 6.3), and the connection ends.
        let alone = !headers.contains_key(http::header::CONTENT_LENGTH);
        return Ok(if chunked {
            (Framing::Chunked, alone)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&byte| byte == b',') {
            let part = part.trim_ascii();
            let valid = !part.is_empty() && part.iter().all(u8::is_ascii_digit);
            let parsed = std::str::from_utf8(part)
                .ok()
                .filter(|_| valid)
                .and_then(|digits| digits.parse::<u64>().ok())
                .ok_or(Http1Error::Invalid("a malformed content-length"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(Http1Error::Invalid("content-lengths that disagree"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(length) => (Framing::Length(length), true),
        None => (Framing::Close, false),
    })
}

/// Whether the answer lets the connection carry another call: HTTP/1.1
/// unless it says `close`. An HTTP/1.0 upstream's are never kept.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && !headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(wire: &str, method: &Method) -> Result<Option<Head>, Http1Error> {
        parse(&mut BytesMut::from(wire), method)
    }

    fn whole(wire: &str) -> Head {
        parsed(wire, &Method::GET).unwrap().expect("a whole head")
    }

    #[test]
    fn a_call_is_written_with_its_host_headers_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("r1"));
        let host = HeaderValue::from_static("api.weixin.qq.com");
        let body = Bytes::from_static(b"{}");
        let call = Outgoing {
            method: &Method::POST,
            target: "/tcb/x?access_token=T",
            host: &host,
            headers: &headers,
            body: &body,
        };
        let mut out = Vec::new();
        encode(&call, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /tcb/x?access_token=T HTTP/1.1\r\nhost: api.weixin.qq.com\r\n\
             x-request-id: r1\r\ncontent-length: 2\r\n\r\n"
        );
        let empty = Bytes::new();
        for (method, length) in [(Method::GET, false), (Method::POST, true)] {
            let call = Outgoing {
                method: &method,
                body: &empty,
                ..call
            };
            let mut out = Vec::new();
            encode(&call, &mut out).unwrap();
            let head = String::from_utf8(out).unwrap();
            assert_eq!(head.contains("content-length: 0\r\n"), length, "{head}");
        }
    }

    #[test]
    fn a_target_that_could_break_the_request_line_is_refused() {
        let host = HeaderValue::from_static("h");
        let (headers, body) = (HeaderMap::new(), Bytes::new());
        for target in [
            "/a b",
            "/a\r\nx: y",
            "/a\n",
            "a",
            "",
            "/a#b",
            "/\u{7f}",
            "/\t",
        ] {
            let call = Outgoing {
                method: &Method::GET,
                target,
                host: &host,
                headers: &headers,
                body: &body,
            };
            assert!(
                matches!(encode(&call, &mut Vec::new()), Err(Http1Error::Target)),
                "{target:?}"
            );
        }
        let call = Outgoing {
            method: &Method::GET,
            target: "/cgi-bin/x?a=%20&b=\u{4e2d}",
            host: &host,
            headers: &headers,
            body: &body,
        };
        encode(&call, &mut Vec::new()).unwrap();
    }

    #[test]
    fn a_head_is_parsed_once_whole_and_leaves_the_body_behind() {
        let wire = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 13\r\n\r\n{\"errcode\":0}";
        for cut in 1..wire.find("\r\n\r\n").unwrap() + 4 {
            assert!(
                parsed(&wire[..cut], &Method::GET).unwrap().is_none(),
                "{cut}"
            );
        }
        let mut buf = BytesMut::from(wire);
        let head = parse(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(&buf[..], b"{\"errcode\":0}");
        assert_eq!(head.response.status(), 200);
        assert_eq!(head.response.headers()["content-type"], "application/json");
        assert_eq!(head.framing, Framing::Length(13));
        assert!(head.reusable);
    }

    #[test]
    fn interim_answers_are_skipped_and_a_switch_is_refused() {
        let head = whole("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nlink: x\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(head.response.status(), 201);
        assert!(head.response.headers().get("link").is_none());
        assert!(matches!(
            parsed("HTTP/1.1 101 Switching\r\nupgrade: x\r\n\r\n", &Method::GET),
            Err(Http1Error::Invalid(_))
        ));
    }

    #[test]
    fn each_framing_is_told_apart() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                Framing::Close,
                false,
            ),
            // A length beside a coding: the coding wins, and the
            // connection is not used again.
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: keep-alive, Close\r\n\r\n",
                Framing::Length(7),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 7\r\n\r\n",
                Framing::Length(7),
                false,
            ),
        ];
        for (wire, framing, reusable) in cases {
            let head = whole(wire);
            assert_eq!((head.framing, head.reusable), (framing, reusable), "{wire}");
        }
        let head = parsed(
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Length(0));
    }

    #[test]
    fn a_malformed_or_oversized_head_is_an_error() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}\r\n", "a".repeat(MAX_HEAD));
        for wire in [
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-length: 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +7\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 20 Short\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            &format!("HTTP/1.1 200 OK\r\n{many}\r\n"),
            &huge,
        ] {
            assert!(parsed(wire, &Method::GET).is_err(), "{:.60}", wire);
        }
    }
}
