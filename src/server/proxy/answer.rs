//! An upstream answer, looked at before it is passed on: small answers are
//! read whole so that a rejection of the broker's token is seen whatever
//! the content type; larger ones stream through untouched. What WeChat
//! answered (status, errcode, rid) goes with the relayed response, in its
//! extensions, for the call audit.

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Either, StreamBody};
use hyper::body::Frame;
use serde::Deserialize;

use super::headers::{connection_listed, is_hop_by_hop};
use crate::audit::Reply;
use crate::server::respond::{self, Body};
use crate::wechat::is_token_rejected;

/// JSON answers up to this size are read whole to check for 40001, 40014
/// and 42001; WeChat's error answers are a few dozen bytes. Larger or
/// non-JSON answers are streamed through untouched.
const PEEK_LIMIT: usize = 64 * 1024;

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
        rest: reqwest::Response,
    },
}

pub(super) async fn peek(mut response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    // Any small answer is read whole, whatever its content type: WeChat
    // sends some errors (media/get's) as text/plain.
    let small_json = response
        .content_length()
        .is_none_or(|n| n <= PEEK_LIMIT as u64);
    let mut read = Vec::new();
    if small_json {
        let mut size = 0;
        loop {
            match response.chunk().await? {
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
                Some(chunk) => {
                    size += chunk.len();
                    read.push(chunk);
                    if size > PEEK_LIMIT {
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
        rest: response,
    })
}

impl Answer {
    /// A rejection of the token the call was made with, when the answer
    /// was small enough to be read whole.
    pub(super) fn token_rejection(&self) -> Option<(i64, String)> {
        match self {
            Answer::Whole { fields, .. } => fields.as_ref()?.token_rejection(),
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
                (status, headers, respond::full(body), reply)
            }
            Answer::Streaming {
                status,
                headers,
                read,
                rest,
            } => {
                let rest = rest
                    .bytes_stream()
                    .map_err(|err| std::io::Error::other(err.without_url()));
                let frames = stream::iter(read.into_iter().map(Ok))
                    .chain(rest)
                    .map_ok(Frame::data);
                (
                    status,
                    headers,
                    Either::Right(BodyExt::boxed_unsync(StreamBody::new(frames))),
                    Reply::new(status.as_u16(), None, None),
                )
            }
        };
        let connection = connection_listed(&headers);
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response.extensions_mut().insert(reply);
        let out = response.headers_mut();
        for (name, value) in &headers {
            if !is_hop_by_hop(name, &connection) {
                out.append(name.clone(), value.clone());
            }
        }
        response
    }
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
        let spelled: Spelled = serde_json::from_slice(body).ok()?;
        Some(WxFields {
            errcode: spelled.errcode.and_then(|code| code.as_i64()),
            errmsg: match spelled.errmsg {
                Some(serde_json::Value::String(errmsg)) => Some(errmsg),
                _ => None,
            },
        })
    }

    /// The errcode and errmsg when the answer says the token it was called
    /// with is dead (40001, 40014, 42001).
    fn token_rejection(&self) -> Option<(i64, String)> {
        let errcode = self.errcode.filter(|code| is_token_rejected(*code))?;
        Some((errcode, self.errmsg.clone().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_rejection(body: &[u8]) -> Option<(i64, String)> {
        WxFields::of(body)?.token_rejection()
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

    #[test]
    fn an_answer_s_errcode_and_errmsg_are_read_once() {
        let fields =
            WxFields::of(b" {\"errcode\":45047,\"errmsg\":\"x rid: 0a-1b\",\"n\":[1]}").unwrap();
        assert_eq!(fields.errcode, Some(45047));
        assert_eq!(fields.errmsg.as_deref(), Some("x rid: 0a-1b"));
        let plain = WxFields::of(br#"{"openid":"o1"}"#).unwrap();
        assert_eq!(plain.errcode, None);
    }
}
