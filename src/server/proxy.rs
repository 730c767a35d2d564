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
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Either, Limited, StreamBody};
use hyper::body::Frame;
use serde::Deserialize;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::body_deadline::RequestBody;
use super::respond::{self, Body};
use crate::broker::{AppHandle, TokenError};
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
}

impl ProxyError {
    fn outcome(&self) -> &'static str {
        match self {
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Upstream(_) => "upstream_error",
            ProxyError::BadPath(_)
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
    pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(PROXY_TIMEOUT)
            .read_timeout(PROXY_TIMEOUT)
            .build()
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
        let url = target_url(&app.config().api_base, request.path, request.query)?;
        let body = read_body(request.headers, body).await?;
        let headers = forwarded_headers(request.headers);
        let mut retried = false;
        loop {
            let token = app
                .token(self.token_wait)
                .await
                .map_err(ProxyError::Token)?;
            let mut url = url.clone();
            url.query_pairs_mut()
                .append_pair("access_token", token.value.expose());
            let deadline = Instant::now() + self.timeout;
            let sent = self
                .http
                .request(request.method.clone(), url)
                .headers(headers.clone())
                .body(body.clone())
                .send();
            let upstream = timeout_at(deadline, sent)
                .await
                .map_err(|_| ProxyError::Timeout(self.timeout))?
                .map_err(|err| self.upstream_error(err))?;
            let answer = timeout_at(deadline, peek(upstream))
                .await
                .map_err(|_| ProxyError::Timeout(self.timeout))?
                .map_err(|err| self.upstream_error(err))?;
            if let Answer::Whole { body, .. } = &answer {
                if !retried && rejected_token(body) {
                    let reported = token.value.expose();
                    app.invalidate(reported).await.map_err(ProxyError::Token)?;
                    let fresh = app
                        .token(self.token_wait)
                        .await
                        .map_err(ProxyError::Token)?;
                    if fresh.value.expose() != reported {
                        retried = true;
                        continue;
                    }
                    // The broker could not get a newer token (rate limited
                    // or failing): WeChat's answer is the truthful one.
                }
            }
            return Ok((answer.into_response(), retried));
        }
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

/// `{api_base}/{path}?{query}` with any `access_token` the client sent
/// removed, checked to be still under `api_base` after URL parsing.
fn target_url(api_base: &str, path: &str, query: Option<&str>) -> Result<reqwest::Url, ProxyError> {
    check_path(path)?;
    let base = reqwest::Url::parse(api_base)
        .map_err(|_| ProxyError::Upstream("the app's api_base is not a URL".into()))?;
    let mut target = format!("{}/{path}", api_base.trim_end_matches('/'));
    let kept = query.map(without_access_token).unwrap_or_default();
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
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_access_token_pair(pair))
        .collect::<Vec<_>>()
        .join("&")
}

fn is_access_token_pair(pair: &str) -> bool {
    let key = pair.split('=').next().unwrap_or(pair);
    percent_decode(key) == b"access_token"
}

/// The decoded value of the first `key` pair in a raw query.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key.as_bytes())
            .then(|| String::from_utf8_lossy(&percent_decode(&v.replace('+', " "))).into_owned())
    })
}

fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                let value = hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
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
    let small_json = is_json(&headers)
        && response
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

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value: &HeaderValue| value.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime == "text/json" || mime.ends_with("+json")
}

#[derive(Deserialize)]
struct Errcode {
    #[serde(default)]
    errcode: Option<i64>,
}

fn rejected_token(body: &[u8]) -> bool {
    serde_json::from_slice::<Errcode>(body)
        .ok()
        .and_then(|answer| answer.errcode)
        .is_some_and(is_token_rejected)
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
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/base/tcb/invokecloudfunction?env=e%20&name=f"
        );
        assert!(target_url("http://127.0.0.1:9", "@evil/x", None)
            .is_ok_and(|url| url.host_str() == Some("127.0.0.1")));
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
        assert!(rejected_token(br#"{"errcode":40001,"errmsg":"x"}"#));
        assert!(rejected_token(br#"{"errcode":42001}"#));
        assert!(rejected_token(br#"{"errcode":40014}"#));
        assert!(!rejected_token(br#"{"errcode":0}"#));
        assert!(!rejected_token(b"not json"));
    }
}
