//! The servers' answers: token answers, in the API's shape and in
//! WeChat's, and WeChat-shaped errors, on the plain responses of
//! [`crate::http_io::response`]. Every response
//! that carries a token says `Cache-Control: no-store`.

use std::cell::RefCell;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};

use crate::engine::CredentialRecord;
use crate::http_io::query;
use crate::http_io::response::JSON;
pub use crate::http_io::response::{full, json, no_store, text, Body};
use crate::secret::{is_json_plain, AccessToken};

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
    if as_text {
        return no_store(text(
            StatusCode::OK,
            Bytes::from(token.value.expose().to_owned()),
        ));
    }
    let expires_in = token.expires_in(now_ms);
    if refreshed.is_none() {
        if let Some(body) = LastAnswer::body_for(app, token, expires_in) {
            return token_response(body);
        }
    }
    let app_json = JsonStr::new(app);
    let value = JsonStr::of_token(token);
    let (mut expires_in_digits, mut expires_at) = (itoa::Buffer::new(), itoa::Buffer::new());
    let [app_open, app_text, app_close] = app_json.parts();
    let [value_open, value, value_close] = value.parts();
    let body = concat(&[
        "{\"app\":",
        app_open,
        app_text,
        app_close,
        ",\"access_token\":",
        value_open,
        value,
        value_close,
        ",\"expires_in\":",
        expires_in_digits.format(expires_in),
        ",\"expires_at\":",
        expires_at.format(token.expires_at()),
        match refreshed {
            Some(true) => ",\"refreshed\":true}",
            Some(false) => ",\"refreshed\":false}",
            None => "}",
        },
    ]);
    if refreshed.is_none() {
        LastAnswer::keep(app, token, expires_in, &body);
    }
    token_response(body)
}

/// A JSON answer that carries a token.
fn token_response(body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    no_store(response)
}

thread_local! {
    static LAST_ANSWER: RefCell<Option<LastAnswer>> = const { RefCell::new(None) };
}

/// The last token answer a thread wrote, kept for the next read of the
/// same token within the same second: a busy app's readers are answered
/// with the same bytes up to a hundred thousand times a second. Keyed by
/// the token value itself (the same shared value, not an equal one: held
/// here, it cannot be freed and its address reused), so a new or
/// invalidated token is never answered from here.
struct LastAnswer {
    app: Box<str>,
    token: AccessToken,
    expires_at_ms: u64,
    expires_in: u64,
    body: Bytes,
}

impl LastAnswer {
    fn body_for(app: &str, token: &CredentialRecord, expires_in: u64) -> Option<Bytes> {
        LAST_ANSWER.with(|last| {
            let last = last.borrow();
            let last = last.as_ref()?;
            let same = last.token.is(&token.value)
                && last.expires_at_ms == token.expires_at_ms
                && last.expires_in == expires_in
                && *last.app == *app;
            same.then(|| last.body.clone())
        })
    }

    fn keep(app: &str, token: &CredentialRecord, expires_in: u64, body: &Bytes) {
        LAST_ANSWER.with(|last| {
            *last.borrow_mut() = Some(LastAnswer {
                app: app.into(),
                token: token.value.clone(),
                expires_at_ms: token.expires_at_ms,
                expires_in,
                body: body.clone(),
            });
        });
    }
}

/// `parts` joined, in a buffer of exactly their length: a `Bytes` made
/// from a fuller buffer allocates again to share it.
fn concat(parts: &[&str]) -> Bytes {
    let mut joined = Vec::with_capacity(parts.iter().map(|part| part.len()).sum());
    for part in parts {
        joined.extend_from_slice(part.as_bytes());
    }
    Bytes::from(joined)
}

/// A token in the shape of WeChat's own token endpoints, for the
/// WeChat-compatible listener: `{"access_token":..,"expires_in":..}`, with
/// WeCom's `"errcode":0,"errmsg":"ok"` in front when `wecom`.
pub fn wechat_token(token: &CredentialRecord, now_ms: u64, wecom: bool) -> Response<Body> {
    let value = JsonStr::of_token(token);
    let [open, value, close] = value.parts();
    let mut expires_in = itoa::Buffer::new();
    let body = concat(&[
        if wecom {
            "{\"errcode\":0,\"errmsg\":\"ok\",\"access_token\":"
        } else {
            "{\"access_token\":"
        },
        open,
        value,
        close,
        ",\"expires_in\":",
        expires_in.format(token.expires_in(now_ms)),
        "}",
    ]);
    token_response(body)
}

/// A WeChat-shaped error, `{"errcode":..,"errmsg":..}`, sent with HTTP 200
/// as WeChat sends its own: SDKs decide on the errcode, not the status.
pub fn wechat_error(errcode: i64, errmsg: &str) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({ "errcode": errcode, "errmsg": errmsg }),
    )
}

/// A string as JSON writes it: most need no escaping, and are written
/// as they are between quotes.
enum JsonStr<'a> {
    Plain(&'a str),
    Escaped(String),
}

impl<'a> JsonStr<'a> {
    fn new(value: &'a str) -> Self {
        if is_json_plain(value) {
            JsonStr::Plain(value)
        } else {
            JsonStr::Escaped(serde_json::to_string(value).expect("a string always serializes"))
        }
    }

    /// A credential's value, whose plainness was judged once, when it
    /// was stored.
    fn of_token(token: &'a CredentialRecord) -> Self {
        let value = token.value.expose();
        if token.value.is_json_plain() {
            JsonStr::Plain(value)
        } else {
            JsonStr::new(value)
        }
    }

    /// The opening quote, the text, the closing quote.
    fn parts(&self) -> [&str; 3] {
        match self {
            JsonStr::Plain(value) => ["\"", value, "\""],
            JsonStr::Escaped(quoted) => ["", quoted, ""],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;
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
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"app":"shop","access_token":"87_ab\"c","expires_in":600,"expires_at":1000,"refreshed":true})
        );
    }

    #[tokio::test]
    async fn plain_names_and_tokens_are_written_as_they_are() {
        let record = CredentialRecord {
            value: AccessToken::new("87_abc"),
            expires_at_ms: 1_000_500,
            fetched_at_ms: 0,
        };
        for (app, refreshed, expected) in [
            (
                "shop",
                None,
                r#"{"app":"shop","access_token":"87_abc","expires_in":600,"expires_at":1000}"#,
            ),
            (
                "a\"b",
                Some(false),
                r#"{"app":"a\"b","access_token":"87_abc","expires_in":600,"expires_at":1000,"refreshed":false}"#,
            ),
        ] {
            let response = token(app, &record, 400_000, false, refreshed);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, expected);
        }
    }

    /// The answer kept for the next read is never one of another token,
    /// app or second.
    #[tokio::test]
    async fn a_kept_answer_is_only_for_the_same_token_app_and_second() {
        let record = |value: &str| CredentialRecord {
            value: AccessToken::new(value),
            expires_at_ms: 1_000_500,
            fetched_at_ms: 0,
        };
        async fn body(app: &str, record: &CredentialRecord, now_ms: u64) -> serde_json::Value {
            let response = token(app, record, now_ms, false, None);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice(&body).unwrap()
        }
        let (old, new) = (record("old-token"), record("new-token"));
        assert_eq!(
            body("shop", &old, 400_000).await["access_token"],
            "old-token"
        );
        assert_eq!(body("shop", &old, 400_100).await["expires_in"], 600);
        assert_eq!(
            body("shop", &new, 400_100).await["access_token"],
            "new-token"
        );
        assert_eq!(body("mall", &new, 400_100).await["app"], "mall");
        assert_eq!(body("mall", &new, 401_000).await["expires_in"], 599);
        let later = CredentialRecord {
            expires_at_ms: 2_000_500,
            ..new.clone()
        };
        assert_eq!(body("mall", &later, 401_000).await["expires_at"], 2000);
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
