//! The token-injecting proxy, shared by both front-ends that forward to
//! WeChat: `ANY /v1/apps/{app}/proxy/{path}` on the token API and every
//! non-token path of the WeChat-compatible listener. It owns the path rules
//! (nothing may leave the app's `api_base`), the replayable request body,
//! the forwarding itself with the app's current token put in the query, and
//! the single retry after WeChat rejects that token.
//!
//! The token goes upstream in the URL, so it must never reach a log line or
//! an error body: reqwest errors are stripped of their URL, and the query is
//! never logged.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Either, Limited, StreamBody};
use hyper::body::Frame;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::body_deadline::RequestBody;
use super::respond::{self, Body};
use super::wechat_path::{self, percent_decode, Carries, PathFamily};
use crate::broker::{AppHandle, InvalidateOutcome, TokenError};
use crate::metrics::Metrics;
use crate::wechat::is_token_rejected;

/// How long one upstream attempt may take to answer (its head, plus the
/// body when the proxy reads it whole to look for a rejected token), and
/// the longest pause while a streamed body is relayed. Not configurable:
/// WeChat answers in well under a second, and 30 s is what its own SDKs
/// allow before giving up.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request body the proxy forwards. The body is buffered (within
/// this bound) so it can be sent again after a token refresh.
pub const PROXY_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// JSON answers up to this size are read whole to check for 40001, 40014
/// and 42001; WeChat's error answers are a few dozen bytes. Larger or
/// non-JSON answers are streamed through untouched.
const PEEK_LIMIT: usize = 64 * 1024;

/// Why a request was not forwarded, or forwarding failed. Each front-end
/// renders these in its own shape.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("refused proxy path: {0}")]
    BadPath(&'static str),
    /// The path fetches a credential the broker owns: forwarding it would
    /// supersede the token every other client is using.
    #[error("{0} fetches a credential, which only the broker's refresher does")]
    CredentialEndpoint(&'static str),
    #[error("request body larger than {PROXY_BODY_LIMIT} bytes")]
    TooLarge,
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("no valid token: {0}")]
    Token(TokenError),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream error: {0}")]
    Upstream(String),
    /// WeChat rejected the broker's own token and no newer one can be had
    /// yet. Never handed back as WeChat's answer: SDKs answer 40001 by
    /// refetching and retrying at once, without limit.
    #[error("wechat rejected the broker's token (errcode {errcode}: {errmsg}); a new one can be fetched in {retry_after}s")]
    TokenRejected {
        errcode: i64,
        errmsg: String,
        retry_after: u64,
    },
}

impl ProxyError {
    fn outcome(&self) -> &'static str {
        match self {
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Upstream(_) => "upstream_error",
            ProxyError::TokenRejected { .. } => "token_rejected",
            ProxyError::BadPath(_)
            | ProxyError::CredentialEndpoint(_)
            | ProxyError::TooLarge
            | ProxyError::BadBody(_)
            | ProxyError::BodyTimeout
            | ProxyError::Token(_) => "refused",
        }
    }
}

/// What the client asked to forward, relative to the app's `api_base`.
pub struct Forward<'a> {
    pub method: &'a Method,
    /// The path below `api_base`, without its leading slash.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// The proxy's shared state: one HTTP client (one connection pool) for
/// every app and both front-ends.
pub struct Proxy {
    http: reqwest::Client,
    timeout: Duration,
    token_wait: Duration,
    metrics: Metrics,
}

impl Proxy {
    /// `timeout` is [`PROXY_TIMEOUT`] outside tests.
    pub fn new(
        http: reqwest::Client,
        timeout: Duration,
        token_wait: Duration,
        metrics: Metrics,
    ) -> Self {
        Proxy {
            http,
            timeout,
            token_wait,
            metrics,
        }
    }

    /// The client the proxy needs: redirects are passed back to the caller,
    /// never followed (a redirect would carry the token to another host).
    pub fn http_client(
        upstream: &crate::config::UpstreamConfig,
    ) -> Result<reqwest::Client, crate::upstream::ClientError> {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(PROXY_TIMEOUT)
            .read_timeout(PROXY_TIMEOUT);
        crate::upstream::build(builder, upstream)
    }

    /// Forwards `request` with `app`'s token and counts the outcome in
    /// `wxbroker_proxy_requests_total`.
    pub async fn forward(
        &self,
        app: &AppHandle,
        request: Forward<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ProxyError> {
        let result = self.try_forward(app, &request, body).await;
        let outcome = match &result {
            Ok((_, false)) => "ok",
            Ok((_, true)) => "retried",
            Err(err) => err.outcome(),
        };
        self.metrics
            .proxy_requests
            .with_label_values(&[app.name(), outcome])
            .inc();
        match &result {
            Ok((response, retried)) => debug!(
                app = app.name(),
                path = request.path,
                status = response.status().as_u16(),
                retried,
                "proxied"
            ),
            Err(err) => debug!(app = app.name(), path = request.path, error = %err, "proxy failed"),
        }
        result.map(|(response, _)| response)
    }

    async fn try_forward(
        &self,
        app: &AppHandle,
        request: &Forward<'_>,
        body: RequestBody,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let carries = wechat_path::classify(request.path).carries();
        let url = target_url(&app.config().api_base, request.path, request.query, carries)?;
        refuse_credential_fetch(request.path)?;
        let body = read_body(request.headers, body).await?;
        let headers = forwarded_headers(request.headers);
        match carries {
            Carries::AppToken => {
                self.forward_with_token(app, request.method, url, &headers, body)
                    .await
            }
            Carries::UserToken => {
                // The user's OAuth token goes as the client sent it, and a
                // 40001 is about that token: nothing for the broker to do.
                let answer = self.send(request.method, url, &headers, &body).await?;
                Ok((answer.into_response(), false))
            }
            Carries::AppSecret => {
                let config = app.config();
                let mut url = url;
                url.query_pairs_mut()
                    .append_pair("appid", &config.appid)
                    .append_pair("secret", config.secret.expose());
                let answer = self.send(request.method, url, &headers, &body).await?;
                Ok((answer.into_response(), false))
            }
        }
    }

    /// An app-token call: the broker's token put in; on a rejection of it,
    /// one refresh and one retry, so at most two upstream calls. A
    /// rejection that cannot be fixed now is never handed back: the
    /// caller is told when to retry, and the refresh is deferred to then.
    async fn forward_with_token(
        &self,
        app: &AppHandle,
        method: &Method,
        url: reqwest::Url,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let mut retried = false;
        loop {
            let token = app
                .token(self.token_wait)
                .await
                .map_err(ProxyError::Token)?;
            let mut url = url.clone();
            url.query_pairs_mut()
                .append_pair("access_token", token.value.expose());
            let answer = self.send(method, url, headers, &body).await?;
            let Some((errcode, errmsg)) = answer.token_rejection() else {
                return Ok((answer.into_response(), retried));
            };
            let reported = token.value.expose();
            let outcome = app
                .report_rejected(reported, self.token_wait)
                .await
                .map_err(ProxyError::Token)?;
            if !retried
                && matches!(
                    outcome,
                    InvalidateOutcome::Refreshed | InvalidateOutcome::AlreadyRotated
                )
            {
                let fresh = app
                    .token(self.token_wait)
                    .await
                    .map_err(ProxyError::Token)?;
                if fresh.value.expose() != reported {
                    retried = true;
                    continue;
                }
            }
            return Err(ProxyError::TokenRejected {
                errcode,
                errmsg,
                retry_after: app.retry_after(),
            });
        }
    }

    /// One upstream call, its answer peeked at within [`PROXY_TIMEOUT`].
    async fn send(
        &self,
        method: &Method,
        url: reqwest::Url,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Answer, ProxyError> {
        let deadline = Instant::now() + self.timeout;
        let sent = self
            .http
            .request(method.clone(), url)
            .headers(headers.clone())
            .body(body.clone())
            .send();
        let upstream = timeout_at(deadline, sent)
            .await
            .map_err(|_| ProxyError::Timeout(self.timeout))?
            .map_err(|err| self.upstream_error(err))?;
        timeout_at(deadline, peek(upstream))
            .await
            .map_err(|_| ProxyError::Timeout(self.timeout))?
            .map_err(|err| self.upstream_error(err))
    }

    fn upstream_error(&self, err: reqwest::Error) -> ProxyError {
        // The URL holds the token: never let it into a message.
        let err = err.without_url();
        if err.is_timeout() {
            ProxyError::Timeout(self.timeout)
        } else {
            ProxyError::Upstream(error_chain(&err))
        }
    }
}

/// `err` and its sources, `: `-separated (reqwest's own message alone says
/// little more than "error sending request").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Refuses a path that would fetch a credential upstream, however it is
/// spelled (section 17: only the refresher fetches).
fn refuse_credential_fetch(path: &str) -> Result<(), ProxyError> {
    let family = wechat_path::classify(path);
    if !family.fetches_credential() {
        return Ok(());
    }
    Err(ProxyError::CredentialEndpoint(match family {
        PathFamily::ClassicToken => "/cgi-bin/token",
        PathFamily::StableToken => "/cgi-bin/stable_token",
        PathFamily::WecomToken => "/cgi-bin/gettoken",
        _ => "an Open Platform credential endpoint",
    }))
}

/// Refuses any path that could leave `api_base` once a URL parser or the
/// upstream normalises it: empty segments (`//`, a leading `/`), `.` and
/// `..` segments (also percent-encoded), backslashes, and encoded
/// separators, colons (`http:`), `?`, `#` or control characters.
pub fn check_path(path: &str) -> Result<(), ProxyError> {
    if path.is_empty() {
        return Err(ProxyError::BadPath("empty path"));
    }
    if path.starts_with('/') || path.contains("//") {
        return Err(ProxyError::BadPath("empty path segment"));
    }
    if path.contains('\\') {
        return Err(ProxyError::BadPath("backslash in path"));
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment);
        if decoded == b"." || decoded == b".." {
            return Err(ProxyError::BadPath("dot segment in path"));
        }
        if decoded
            .iter()
            .any(|&b| matches!(b, b'/' | b'\\' | b':' | b'?' | b'#') || b < 0x20 || b == 0x7f)
        {
            return Err(ProxyError::BadPath(
                "separator, colon or control character in a path segment",
            ));
        }
    }
    Ok(())
}

/// `{api_base}/{path}?{query}` without the pairs the broker puts in for
/// what the call `carries` (the client's `access_token` for an app-token
/// call; `appid` and `secret` for a secret-bearing one; nothing for a
/// user-token call), checked to be still under `api_base` after parsing.
fn target_url(
    api_base: &str,
    path: &str,
    query: Option<&str>,
    carries: Carries,
) -> Result<reqwest::Url, ProxyError> {
    check_path(path)?;
    let base = reqwest::Url::parse(api_base)
        .map_err(|_| ProxyError::Upstream("the app's api_base is not a URL".into()))?;
    let mut target = format!("{}/{path}", api_base.trim_end_matches('/'));
    let replaced: &[&str] = match carries {
        Carries::AppToken => &["access_token"],
        Carries::UserToken => &[],
        Carries::AppSecret => &["appid", "secret"],
    };
    let kept = query
        .map(|query| without_keys(query, replaced))
        .unwrap_or_default();
    if !kept.is_empty() {
        target.push('?');
        target.push_str(&kept);
    }
    let url =
        reqwest::Url::parse(&target).map_err(|_| ProxyError::BadPath("not a valid URL path"))?;
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    if url.origin() != base.origin() || !url.path().starts_with(&prefix) {
        return Err(ProxyError::BadPath("path leaves api_base"));
    }
    Ok(url)
}

/// The raw query minus every `access_token` pair; other pairs byte for byte.
pub fn without_access_token(query: &str) -> String {
    without_keys(query, &["access_token"])
}

/// The raw query minus every pair whose (decoded) key is in `keys`.
fn without_keys(query: &str, keys: &[&str]) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !keys.iter().any(|key| pair_key_is(pair, key)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pair_key_is(pair: &str, name: &str) -> bool {
    let key = pair.split('=').next().unwrap_or(pair);
    percent_decode(key) == name.as_bytes()
}

/// The decoded value of the first `key` pair in a raw query.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key.as_bytes())
            .then(|| String::from_utf8_lossy(&percent_decode(&v.replace('+', " "))).into_owned())
    })
}

/// Reads the whole request body, refusing past [`PROXY_BODY_LIMIT`] (early
/// when `Content-Length` already says so).
async fn read_body(headers: &HeaderMap, body: RequestBody) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > PROXY_BODY_LIMIT as u64) {
        return Err(ProxyError::TooLarge);
    }
    match Limited::new(body, PROXY_BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ProxyError::TooLarge),
        Err(err) if RequestBody::is_timeout(&*err) => Err(ProxyError::BodyTimeout),
        Err(err) => Err(ProxyError::BadBody(err.to_string())),
    }
}

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.iter().any(|listed| listed == name.as_str())
}

/// Header names the `Connection` header lists: hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The client's headers minus hop-by-hop ones, `Host` (the upstream's is
/// set from the URL), `Wxbroker-Client`, the length (the buffered body's
/// is set again), `Expect` (answered here), and `Accept-Encoding`: the
/// proxy must be able to read a JSON answer for a rejected token, so it
/// asks for it uncompressed.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let connection = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let dropped = is_hop_by_hop(name, &connection)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || name == header::ACCEPT_ENCODING
            || name.as_str() == "wxbroker-client";
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// An upstream answer, read whole when it is small JSON, else with its
/// first chunks in hand and the rest still streaming.
enum Answer {
    Whole {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Streaming {
        status: StatusCode,
        headers: HeaderMap,
        read: Vec<Bytes>,
        rest: reqwest::Response,
    },
}

async fn peek(mut response: reqwest::Response) -> Result<Answer, reqwest::Error> {
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
                    return Ok(Answer::Whole {
                        status,
                        headers,
                        body,
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
    fn token_rejection(&self) -> Option<(i64, String)> {
        match self {
            Answer::Whole { body, .. } => token_rejection(body),
            Answer::Streaming { .. } => None,
        }
    }

    fn into_response(self) -> Response<Body> {
        let (status, headers, body) = match self {
            Answer::Whole {
                status,
                mut headers,
                body,
            } => {
                // Set again by hyper from the body itself.
                headers.remove(header::CONTENT_LENGTH);
                (status, headers, respond::full(body))
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
                )
            }
        };
        let connection = connection_listed(&headers);
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let out = response.headers_mut();
        for (name, value) in &headers {
            if !is_hop_by_hop(name, &connection) {
                out.append(name.clone(), value.clone());
            }
        }
        response
    }
}

/// The errcode and errmsg when `body` is a JSON object that says the token
/// it was called with is dead (40001, 40014, 42001).
fn token_rejection(body: &[u8]) -> Option<(i64, String)> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let answer = answer.as_object()?;
    let errcode = answer
        .get("errcode")?
        .as_i64()
        .filter(|code| is_token_rejected(*code))?;
    let errmsg = answer.get("errmsg").and_then(|m| m.as_str()).unwrap_or("");
    Some((errcode, errmsg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_api_base_are_refused() {
        for path in [
            "",
            "/etc/passwd",
            "tcb//x",
            "../x",
            "tcb/../../x",
            "tcb/%2e%2e/x",
            "tcb/.%2E/x",
            "tcb/%2E/x",
            "./x",
            "tcb\\..\\x",
            "tcb/%5c..",
            "tcb/a%2fb",
            "http://evil.example/x",
            "http:/evil.example",
            "tcb/%3a",
            "tcb/a%00",
        ] {
            assert!(check_path(path).is_err(), "{path:?} must be refused");
        }
        for path in [
            "tcb/invokecloudfunction",
            "cgi-bin/openapi/quota/get",
            "wxa/getwxacodeunlimit",
            "cgi-bin/message/custom/send",
            "a.b/c..d/...",
            "tcb/x/",
        ] {
            assert!(check_path(path).is_ok(), "{path:?} must be allowed");
        }
    }

    #[test]
    fn target_stays_under_api_base() {
        let url = target_url(
            "http://127.0.0.1:9/base",
            "tcb/invokecloudfunction",
            Some("env=e%20&access_token=CLIENT&name=f&%61ccess_token=X"),
            Carries::AppToken,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/base/tcb/invokecloudfunction?env=e%20&name=f"
        );
        let sns = target_url(
            "http://127.0.0.1:9",
            "sns/jscode2session",
            Some("appid=A&secret=placeholder&js_code=c&access_token=U"),
            Carries::AppSecret,
        )
        .unwrap();
        assert_eq!(sns.query(), Some("js_code=c&access_token=U"));
        let user = target_url(
            "http://127.0.0.1:9",
            "sns/userinfo",
            Some("access_token=USER&openid=o"),
            Carries::UserToken,
        )
        .unwrap();
        assert_eq!(user.query(), Some("access_token=USER&openid=o"));
        assert!(
            target_url("http://127.0.0.1:9", "@evil/x", None, Carries::AppToken)
                .is_ok_and(|url| url.host_str() == Some("127.0.0.1"))
        );
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(
            query_param("a=1&appid=wx%31+2", "appid").as_deref(),
            Some("wx1 2")
        );
        assert_eq!(query_param("a=1", "appid"), None);
    }

    #[test]
    fn hop_by_hop_and_private_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("host", "localhost".parse().unwrap());
        headers.insert("wxbroker-client", "svc".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-request-id", "abc".parse().unwrap());
        let out = forwarded_headers(&headers);
        let names: Vec<_> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-request-id"]);
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
}
