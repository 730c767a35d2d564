//! The servers' answers: token answers, in the API's shape and in
//! WeChat's, and WeChat-shaped errors, on the plain responses of
//! [`crate::http_io::response`]. Every response
//! that carries a token says `Cache-Control: no-store`.

use std::fmt::Write;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::engine::CredentialRecord;
use crate::http_io::query;
pub use crate::http_io::response::{full, json, no_store, text, Body};
use crate::http_io::response::{JSON, NO_STORE};

/// A ticket in the shape of WeChat's ticket endpoints:
/// `{"errcode":0,"errmsg":"ok","ticket":..,"expires_in":..}`.
pub fn wechat_ticket(ticket: &CredentialRecord, now_ms: u64) -> Response<Body> {
    let body = serde_json::json!({
        "errcode": 0,
        "errmsg": "ok",
        "ticket": ticket.value.expose(),
        "expires_in": ticket.expires_in(now_ms),
    });
    no_store(json(StatusCode::OK, &body))
}

/// Whether the token is wanted as `text/plain` (`?format=text`).
pub fn wants_text(query: Option<&str>) -> bool {
    query.is_some_and(|query| query::has(query, "format", "text"))
}

/// The token answer. Written by hand rather than through `serde_json::Value`:
/// this is the hot path, and app names and tokens need no escaping (names
/// are `[a-z0-9_-]`, tokens come from WeChat as `[A-Za-z0-9_-]`; anything
/// else is escaped by serde_json below).
pub fn token(
    app: &str,
    token: &CredentialRecord,
    now_ms: u64,
    as_text: bool,
    refreshed: Option<bool>,
) -> Response<Body> {
    let mut response = if as_text {
        text(StatusCode::OK, Bytes::from(token.value.expose().to_owned()))
    } else {
        let value = token.value.expose();
        let mut body = String::with_capacity(96 + value.len());
        let mut digits = itoa::Buffer::new();
        body.push_str("{\"app\":");
        push_json_str(&mut body, app);
        body.push_str(",\"access_token\":");
        if token.value.is_json_plain() {
            body.push('"');
            body.push_str(value);
            body.push('"');
        } else {
            push_json_str(&mut body, value);
        }
        body.push_str(",\"expires_in\":");
        body.push_str(digits.format(token.expires_in(now_ms)));
        body.push_str(",\"expires_at\":");
        body.push_str(digits.format(token.expires_at()));
        if let Some(refreshed) = refreshed {
            body.push_str(",\"refreshed\":");
            body.push_str(if refreshed { "true" } else { "false" });
        }
        body.push('}');
        let mut response = Response::new(full(body));
        response.headers_mut().insert(CONTENT_TYPE, JSON);
        response
    };
    response.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    response
}

/// A token in the shape of WeChat's own token endpoints, for the
/// WeChat-compatible listener: `{"access_token":..,"expires_in":..}`, with
/// WeCom's `"errcode":0,"errmsg":"ok"` in front when `wecom`.
pub fn wechat_token(token: &CredentialRecord, now_ms: u64, wecom: bool) -> Response<Body> {
    let value = token.value.expose();
    let mut body = String::with_capacity(64 + value.len());
    body.push('{');
    if wecom {
        body.push_str("\"errcode\":0,\"errmsg\":\"ok\",");
    }
    body.push_str("\"access_token\":");
    push_json_str(&mut body, value);
    let _ = write!(body, ",\"expires_in\":{}}}", token.expires_in(now_ms));
    let mut response = Response::new(full(body));
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    response
}

/// A WeChat-shaped error, `{"errcode":..,"errmsg":..}`, sent with HTTP 200
/// as WeChat sends its own: SDKs decide on the errcode, not the status.
pub fn wechat_error(errcode: i64, errmsg: &str) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({ "errcode": errcode, "errmsg": errmsg }),
    )
}

fn push_json_str(out: &mut String, value: &str) {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).expect("a string always serializes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::AccessToken;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn token_body_is_valid_json_with_no_store() {
        let record = CredentialRecord {
            value: AccessToken::new("87_ab\"c"),
            expires_at_ms: 1_000_500,
            fetched_at_ms: 0,
        };
        let response = token("shop", &record, 400_000, false, Some(true));
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"app":"shop","access_token":"87_ab\"c","expires_in":600,"expires_at":1000,"refreshed":true})
        );
    }

    #[tokio::test]
    async fn wechat_shaped_token_answers() {
        let record = CredentialRecord {
            value: AccessToken::new("87_abc"),
            expires_at_ms: 1_000_500,
            fetched_at_ms: 0,
        };
        for (wecom, expected) in [
            (
                false,
                serde_json::json!({"access_token":"87_abc","expires_in":600}),
            ),
            (
                true,
                serde_json::json!({"errcode":0,"errmsg":"ok","access_token":"87_abc","expires_in":600}),
            ),
        ] {
            let response = wechat_token(&record, 400_000, wecom);
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value, expected);
        }
    }

    #[test]
    fn format_text_is_recognised() {
        assert!(wants_text(Some("format=text")));
        assert!(wants_text(Some("a=b&format=text")));
        assert!(!wants_text(Some("format=json")));
        assert!(!wants_text(None));
        assert!(
            wants_text(Some("format=%74ext")),
            "decoded, as every query is"
        );
    }
}
