//! An upstream answer, looked at before it is passed on: small answers are
//! read whole so that a rejection of the broker's token is seen whatever
//! the content type; larger ones stream through untouched. An answer that
//! may carry refresh tokens is read whole (up to a larger bound) and
//! relayed without them. What WeChat answered (status, errcode, rid) goes
//! with the relayed response, in its extensions, for the call audit.

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Either, StreamBody};
use hyper::body::{Body as HttpBody, Frame};
use serde::Deserialize;

use super::headers::{connection_listed, is_hop_by_hop};
use crate::audit::Reply;
use crate::http_io::response::{self, Body};

/// JSON answers up to this size are read whole to check for 40001, 40014
/// and 42001; WeChat's error answers are a few dozen bytes. Larger or
/// non-JSON answers are streamed through untouched.
pub(super) const PEEK_LIMIT: usize = 64 * 1024;

/// How much of an answer to scrub of refresh tokens is read at most; an
/// authorizer's profile is a few KiB.
pub(super) const SCRUB_LIMIT: usize = 1024 * 1024;

/// The fields taken out of a scrubbed answer, at any depth.
const REFRESH_TOKEN_FIELDS: [&str; 2] = ["authorizer_refresh_token", "refresh_token"];

/// An upstream answer, read whole when it is small JSON, else with its
/// first chunks in hand and the rest still streaming.
pub(super) enum Answer {
    Whole {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        /// Its `errcode` and `errmsg`, when it is a JSON object.
        fields: Option<WxFields>,
    },
    Streaming {
        status: StatusCode,
        headers: HeaderMap,
        read: Vec<Bytes>,
        rest: UnsyncBoxBody<Bytes, std::io::Error>,
    },
}

/// The answer, read whole when it is at most `whole` bytes
/// ([`PEEK_LIMIT`], or [`SCRUB_LIMIT`] for one to scrub).
pub(super) async fn peek<B>(response: Response<B>, whole: usize) -> Result<Answer, B::Error>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, mut body) = response.into_parts();
    let (status, headers) = (parts.status, parts.headers);
    // Any small answer is read whole, whatever its content type: WeChat
    // sends some errors (media/get's) as text/plain.
    let small = body.size_hint().exact().is_none_or(|n| n <= whole as u64);
    let mut read = Vec::new();
    if small {
        let mut size = 0;
        loop {
            match body.frame().await.transpose()? {
                None => {
                    let body = match read.len() {
                        0 => Bytes::new(),
                        1 => read.pop().unwrap_or_default(),
                        _ => read.concat().into(),
                    };
                    let fields = WxFields::of(&body);
                    return Ok(Answer::Whole {
                        status,
                        headers,
                        body,
                        fields,
                    });
                }
                Some(frame) => {
                    // Trailers carry nothing the proxy relays.
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    size += chunk.len();
                    read.push(chunk);
                    if size > whole {
                        break;
                    }
                }
            }
        }
    }
    Ok(Answer::Streaming {
        status,
        headers,
        read,
        rest: body.map_err(std::io::Error::other).boxed_unsync(),
    })
}

impl Answer {
    /// The answer with every refresh token field taken out of its JSON, at
    /// any depth; an answer that cannot be checked (not JSON, or too large
    /// to read whole) is refused rather than relayed.
    pub(super) fn without_refresh_tokens(self) -> Result<Answer, &'static str> {
        let Answer::Whole {
            status,
            headers,
            body,
            fields,
        } = self
        else {
            return Err("the answer is too large to check for refresh tokens");
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer::Whole {
                status,
                headers,
                body,
                fields,
            });
        }
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| "the answer is not JSON, so its refresh tokens cannot be taken out")?;
        remove_fields(&mut value, &REFRESH_TOKEN_FIELDS);
        let body = serde_json::to_vec(&value)
            .map_err(|_| "the answer could not be written again")?
            .into();
        Ok(Answer::Whole {
            status,
            headers,
            body,
            fields,
        })
    }

    /// A rejection of the token the call was made with, as `rejects`
    /// recognises it (a WeCom suite token has errcodes of its own), when
    /// the answer was small enough to be read whole.
    pub(super) fn rejection_by(&self, rejects: fn(i64) -> bool) -> Option<(i64, String)> {
        match self {
            Answer::Whole { fields, .. } => fields.as_ref()?.rejection_by(rejects),
            Answer::Streaming { .. } => None,
        }
    }

    /// The answer as relayed to the client, with a [`Reply`] in its
    /// extensions.
    pub(super) fn into_response(self) -> Response<Body> {
        let (status, headers, body, reply) = match self {
            Answer::Whole {
                status,
                mut headers,
                body,
                fields,
            } => {
                // Set again by hyper from the body itself.
                headers.remove(header::CONTENT_LENGTH);
                let reply = match fields {
                    Some(fields) => {
                        Reply::new(status.as_u16(), fields.errcode, fields.errmsg.as_deref())
                    }
                    None => Reply::new(status.as_u16(), None, None),
                };
                (status, headers, response::full(body), reply)
            }
            Answer::Streaming {
                status,
                headers,
                read,
                rest,
            } => {
                let frames = stream::iter(read.into_iter().map(|chunk| Ok(Frame::data(chunk))))
                    .chain(BodyStream::new(rest));
                (
                    status,
                    headers,
                    Either::Right(BodyExt::boxed_unsync(StreamBody::new(frames))),
                    Reply::new(status.as_u16(), None, None),
                )
            }
        };
        let mut headers = headers;
        let connection = connection_listed(&headers);
        // An answer has a handful of headers, rarely a hop-by-hop one:
        // those found are taken out, nothing else is touched.
        let hop_by_hop: Vec<_> = headers
            .keys()
            .filter(|name| is_hop_by_hop(name, &connection))
            .cloned()
            .collect();
        for name in hop_by_hop {
            headers.remove(name);
        }
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response.extensions_mut().insert(reply);
        *response.headers_mut() = headers;
        response
    }
}

/// Removes every object field named in `names` from `value`, at any depth.
fn remove_fields(value: &mut serde_json::Value, names: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|key, _| !names.contains(&key.as_str()));
            for nested in map.values_mut() {
                remove_fields(nested, names);
            }
        }
        serde_json::Value::Array(items) => {
            for nested in items {
                remove_fields(nested, names);
            }
        }
        _ => {}
    }
}

/// Whether `body` may name `errcode` or `errmsg`: a key starting `"err`,
/// or any escape (a key could hide behind one). One pass, no parsing.
fn names_an_err_field(body: &[u8]) -> bool {
    memchr::memchr2_iter(b'"', b'\\', body)
        .any(|at| body[at] == b'\\' || body[at + 1..].starts_with(b"err"))
}

/// The fields of a WeChat answer the broker looks at, read once.
#[derive(Debug)]
pub(super) struct WxFields {
    errcode: Option<i64>,
    errmsg: Option<String>,
}

/// As an answer spells them: a field of an unexpected type is as good as
/// absent, and leaves the other one readable.
#[derive(Deserialize)]
struct Spelled {
    #[serde(default)]
    errcode: Option<serde_json::Value>,
    #[serde(default)]
    errmsg: Option<serde_json::Value>,
}

impl WxFields {
    /// The fields of `body` when it is a JSON object (an array would
    /// deserialize into the struct too, so only an object is read).
    fn of(body: &[u8]) -> Option<WxFields> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        // Most answers name neither field (and escape nothing a key could
        // hide one in): nothing to parse for.
        if !names_an_err_field(body) {
            return Some(WxFields {
                errcode: None,
                errmsg: None,
            });
        }
        let spelled: Spelled = serde_json::from_slice(body).ok()?;
        Some(WxFields {
            errcode: spelled.errcode.and_then(|code| code.as_i64()),
            errmsg: match spelled.errmsg {
                Some(serde_json::Value::String(errmsg)) => Some(errmsg),
                _ => None,
            },
        })
    }

    /// The errcode and errmsg when `rejects` says the answer rejects the
    /// token it was called with.
    fn rejection_by(&self, rejects: fn(i64) -> bool) -> Option<(i64, String)> {
        let errcode = self.errcode.filter(|code| rejects(*code))?;
        Some((errcode, self.errmsg.clone().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::is_token_rejected;

    fn token_rejection(body: &[u8]) -> Option<(i64, String)> {
        WxFields::of(body)?.rejection_by(is_token_rejected)
    }

    #[test]
    fn only_token_errcodes_count_as_rejected() {
        assert_eq!(
            token_rejection(br#"{"errcode":40001,"errmsg":"x"}"#),
            Some((40001, "x".to_owned()))
        );
        assert!(token_rejection(br#"{"errcode":42001}"#).is_some());
        assert!(token_rejection(br#"{"errcode":40014}"#).is_some());
        assert!(token_rejection(br#"{"errcode":0}"#).is_none());
        assert!(token_rejection(br#"[40001]"#).is_none());
        assert!(token_rejection(b"not json").is_none());
    }

    fn whole(body: &str) -> Answer {
        Answer::Whole {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            fields: WxFields::of(body.as_bytes()),
        }
    }

    fn body_of(answer: Answer) -> serde_json::Value {
        match answer {
            Answer::Whole { body, .. } => serde_json::from_slice(&body).unwrap(),
            Answer::Streaming { .. } => panic!("streaming"),
        }
    }

    #[test]
    fn refresh_tokens_are_taken_out_at_any_depth() {
        let scrubbed = whole(
            r#"{"authorizer_info":{"nick_name":"shop","refresh_token":"r0"},
                "authorization_info":{"authorizer_appid":"wx1","authorizer_refresh_token":"r1",
                "func_info":[{"refresh_token":"r2","id":1}]},"refresh_token":"r3",
                "authorizer_refresh_token":"r4","authorizer_refresh_token":"r5"}"#,
        )
        .without_refresh_tokens()
        .unwrap();
        let body = body_of(scrubbed);
        let text = body.to_string();
        for token in ["r0", "r1", "r2", "r3", "r4", "r5", "refresh_token"] {
            assert!(!text.contains(token), "{token} in {text}");
        }
        assert_eq!(body["authorizer_info"]["nick_name"], "shop");
        assert_eq!(body["authorization_info"]["authorizer_appid"], "wx1");
        assert_eq!(body["authorization_info"]["func_info"][0]["id"], 1);
        // An error answer passes, and an empty one; what is not JSON does not.
        let error = whole(r#"{"errcode":61003,"errmsg":"not authorized"}"#);
        assert_eq!(
            body_of(error.without_refresh_tokens().unwrap())["errcode"],
            61003
        );
        assert!(whole("").without_refresh_tokens().is_ok());
        assert!(whole("refresh_token=r1").without_refresh_tokens().is_err());
    }

    #[test]
    fn an_answer_s_errcode_and_errmsg_are_read_once() {
        let fields =
            WxFields::of(b" {\"errcode\":45047,\"errmsg\":\"x rid: 0a-1b\",\"n\":[1]}").unwrap();
        assert_eq!(fields.errcode, Some(45047));
        assert_eq!(fields.errmsg.as_deref(), Some("x rid: 0a-1b"));
        let plain = WxFields::of(br#"{"openid":"o1"}"#).unwrap();
        assert_eq!(plain.errcode, None);
        // A key spelled with an escape is still the key.
        let escaped = WxFields::of(br#"{"errcod\u0065":40001,"n":1}"#).unwrap();
        assert_eq!(escaped.errcode, Some(40001));
    }
}
