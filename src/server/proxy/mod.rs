//! The token-injecting proxy, shared by both front-ends that forward to
//! WeChat: `ANY /v1/apps/{app}/proxy/{path}` on the token API and every
//! non-token path of the WeChat-compatible listener. It owns the path rules
//! (nothing may leave the app's `api_base`), the replayable request body,
//! the forwarding itself with the app's current token put in the query, and
//! the single retry after WeChat rejects that token. Its parts: `target`
//! (where a call may go), `headers` (what travels with it), `answer`
//! (what comes back, and whether it rejects the broker's token) and
//! `audit` (what the call audit is told of each forwarded call). Every
//! call it makes is marked as forwarded (`Wxbroker-Forwarded`), and a
//! marked request is never forwarded again.
//!
//! The token goes upstream in the URL, so it must never reach a log line or
//! an error body: reqwest errors are stripped of their URL, and the query is
//! never logged.

mod answer;
mod audit;
mod child;
mod headers;
mod send;
mod target;

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Response};
use tokio::time::timeout;
use tracing::debug;

use crate::audit::{Auditor, Call, Target, Verdict};
use crate::engine::{AppHandle, CredentialHandle, InvalidateOutcome, TokenError};
use crate::errors::Chain;
use crate::http_io::body::{BodyError, ReadError};
use crate::http_io::{query, Body, RequestBody};
use crate::metrics::Metrics;
use crate::wechat_path::{self, Carries, ForwardPath, Withheld};
use answer::{Answer, PEEK_LIMIT, SCRUB_LIMIT};
pub use audit::{audited_path, verdict, Caller};
pub use child::{ChildCallError, Prepared};
use headers::forwarded_headers;
pub use headers::FORWARDED_MARK;
pub use send::Upstream;
pub use target::check_path;
use target::forward_target;
pub use target::Destination;

/// How long one upstream attempt may take to answer (its head, plus the
/// body when the proxy reads it whole to look for a rejected token), and
/// the longest pause while a streamed body is relayed. Not configurable:
/// WeChat answers in well under a second, and 30 s is what its own SDKs
/// allow before giving up.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request body the proxy forwards. The body is buffered (within
/// this bound) so it can be sent again after a token refresh.
pub const PROXY_BODY_LIMIT: usize = 10 * 1024 * 1024;

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
    /// An operator action, or an answer carrying refresh tokens or
    /// permanent codes: no client gets it through a forwarding route.
    #[error("{0}")]
    Withheld(Withheld),
    #[error("request body larger than {PROXY_BODY_LIMIT} bytes")]
    TooLarge,
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("no valid token")]
    Token(#[source] TokenError),
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
            | ProxyError::Withheld(_)
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
    /// The path judged in every spelling, once: what it is, whether it may
    /// be forwarded, and whether the caller may call it.
    pub judged: ForwardPath,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl<'a> Forward<'a> {
    pub fn new(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> Self {
        Forward {
            method,
            path,
            judged: ForwardPath::new(path),
            query,
            headers,
        }
    }
}

/// The proxy's shared state: one way upstream (one connection pool) for
/// every app and both front-ends, and the call audit every forwarded call
/// is recorded in.
pub struct Proxy {
    upstream: Upstream,
    timeout: Duration,
    token_wait: Duration,
    metrics: Metrics,
    auditor: Auditor,
}

impl Proxy {
    /// `timeout` is [`PROXY_TIMEOUT`] outside tests.
    pub fn new(
        upstream: Upstream,
        timeout: Duration,
        token_wait: Duration,
        metrics: Metrics,
        auditor: Auditor,
    ) -> Self {
        Proxy {
            upstream,
            timeout,
            token_wait,
            metrics,
            auditor,
        }
    }

    /// Starts the audit record of a call `caller` asked for, to the
    /// `judged` path below `target`'s `api_base`.
    pub fn begin_call(
        &self,
        caller: &Caller<'_>,
        target: Target,
        method: &Method,
        judged: &ForwardPath,
    ) -> Call {
        Call::begin(
            caller.client_name(),
            caller.listener,
            target,
            method,
            audited_path(judged),
        )
    }

    /// Ends the audit record of `call`: counted now, written by the
    /// audit's writer (never waited for).
    pub fn finish_call(&self, call: Call, verdict: Verdict) {
        self.auditor.finish(call, verdict);
    }

    /// Forwards `request` with `app`'s token, counts the outcome in
    /// `wxbroker_proxy_requests_total` and records the call in the audit.
    pub async fn forward(
        &self,
        app: &AppHandle,
        caller: &Caller<'_>,
        request: Forward<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ProxyError> {
        let call = self.begin_call(
            caller,
            Target::App(app.name().to_owned()),
            request.method,
            &request.judged,
        );
        let result = self.try_forward(app, &request, body).await;
        self.finish_call(call, verdict(result.as_ref().map(|(response, _)| response)));
        let outcome = match &result {
            Ok((_, false)) => "ok",
            Ok((_, true)) => "retried",
            Err(err) => err.outcome(),
        };
        self.metrics.proxy_requests.inc(&[app.name(), outcome]);
        match &result {
            Ok((response, retried)) => debug!(
                app = app.name(),
                path = request.path,
                status = response.status().as_u16(),
                retried,
                "proxied"
            ),
            Err(err) => {
                debug!(app = app.name(), path = request.path, error = %Chain(err), "proxy failed")
            }
        }
        result.map(|(response, _)| response)
    }

    async fn try_forward(
        &self,
        app: &AppHandle,
        request: &Forward<'_>,
        body: RequestBody,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let carries = request.judged.family().carries();
        let destination = forward_target(&app.config().api_base, request, request.query, carries)?;
        let body = read_body(body).await?;
        let headers = forwarded_headers(request.headers);
        match carries {
            Carries::AppToken => {
                self.forward_with_token(app, request.method, &destination, &headers, body)
                    .await
            }
            Carries::UserToken => {
                // The user's OAuth token goes as the client sent it, and a
                // 40001 is about that token: nothing for the broker to do.
                let answer = self
                    .send(request.method, &destination, None, &headers, &body)
                    .await?;
                Ok((answer.into_response(), false))
            }
            Carries::AppSecret => {
                let config = app.config();
                let mut destination = destination;
                destination.append_pair("appid", &config.appid);
                destination.append_pair("secret", config.secret.expose());
                let answer = self
                    .send(request.method, &destination, None, &headers, &body)
                    .await?;
                Ok((answer.into_response(), false))
            }
        }
    }

    /// An app-token call: the broker's token put in; on a rejection of it,
    /// one refresh and one retry ([`Proxy::send_with_credential`]).
    async fn forward_with_token(
        &self,
        app: &AppHandle,
        method: &Method,
        destination: &Destination,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let call = (method, destination, headers, &body);
        self.send_with_credential(app, call, "access_token", crate::wechat::is_token_rejected)
            .await
    }

    /// A call carrying `credential` (an app's token, a platform's component
    /// token, a suite's or provider's token) in `token_param`: on a
    /// rejection of it (as `rejects` judges), one refresh and one retry,
    /// so at most two upstream calls. A rejection that cannot be fixed
    /// now is never handed back: the caller is told when to retry, and the
    /// refresh is deferred to then. The flag says whether it was retried.
    pub async fn send_with_credential(
        &self,
        credential: &CredentialHandle,
        call: Prepared<'_>,
        token_param: &str,
        rejects: fn(i64) -> bool,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let mut retried = false;
        loop {
            let token = credential
                .token(self.token_wait)
                .await
                .map_err(ProxyError::Token)?;
            let reported = token.value.expose();
            let (response, rejection) = self
                .send_judged(call, token_param, reported, rejects)
                .await?;
            let Some((errcode, errmsg)) = rejection else {
                return Ok((response, retried));
            };
            let outcome = credential
                .report_rejected(reported, self.token_wait)
                .await
                .map_err(ProxyError::Token)?;
            if !retried
                && matches!(
                    outcome,
                    InvalidateOutcome::Refreshed | InvalidateOutcome::AlreadyRotated
                )
            {
                let fresh = credential
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
                retry_after: credential.retry_after(),
            });
        }
    }

    /// Checks a call to forward with a token held elsewhere (an
    /// authorizer's, a platform's component token): the URL below
    /// `api_base` and the headers to pass on. Only token-carrying paths
    /// qualify; credential endpoints are refused as always. `token_param`
    /// names the query parameter the token goes in (`access_token`, or
    /// `component_access_token`); the client's value of it is dropped.
    pub fn token_call_target(
        &self,
        api_base: &str,
        request: &Forward<'_>,
        token_param: &str,
    ) -> Result<(Destination, HeaderMap), ProxyError> {
        let query = request
            .query
            .map(|query| query::without(query, &["access_token", token_param]));
        let destination = forward_target(api_base, request, query.as_deref(), Carries::AppToken)?;
        if request.judged.family().carries() != Carries::AppToken {
            return Err(ProxyError::BadPath(
                "this path does not carry an access token",
            ));
        }
        Ok((destination, forwarded_headers(request.headers)))
    }

    /// [`Proxy::token_call_target`], and the whole body, so the call can
    /// be sent twice.
    pub async fn prepare_token_call(
        &self,
        api_base: &str,
        request: &Forward<'_>,
        body: RequestBody,
        token_param: &str,
    ) -> Result<(Destination, HeaderMap, Bytes), ProxyError> {
        let (destination, headers) = self.token_call_target(api_base, request, token_param)?;
        let body = read_body(body).await?;
        Ok((destination, headers, body))
    }

    /// One call with `token` put in; the answer, and whether it rejected
    /// that token (40001, 40014, 42001).
    pub async fn send_with_token(
        &self,
        method: &Method,
        destination: &Destination,
        headers: &HeaderMap,
        body: &Bytes,
        token_param: &str,
        token: &str,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let call = (method, destination, headers, body);
        self.send_with_token_judged(call, token_param, token, crate::wechat::is_token_rejected)
            .await
    }

    /// [`Proxy::send_with_token`] for a token whose rejections `rejects`
    /// recognises.
    pub async fn send_with_token_judged(
        &self,
        call: Prepared<'_>,
        token_param: &str,
        token: &str,
        rejects: fn(i64) -> bool,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let (response, rejection) = self.send_judged(call, token_param, token, rejects).await?;
        Ok((response, rejection.is_some()))
    }

    /// [`Proxy::send_with_token_judged`], with WeChat's errcode and
    /// errmsg when the answer rejects the token.
    async fn send_judged(
        &self,
        (method, destination, headers, body): Prepared<'_>,
        token_param: &str,
        token: &str,
        rejects: fn(i64) -> bool,
    ) -> Result<(Response<Body>, Option<(i64, String)>), ProxyError> {
        let credential = Some((token_param, token));
        let answer = self
            .send(method, destination, credential, headers, body)
            .await?;
        let rejection = answer.rejection_by(rejects);
        Ok((answer.into_response(), rejection))
    }

    /// One upstream call, its answer peeked at within [`PROXY_TIMEOUT`].
    /// Every forwarded call comes through here, so an answer that may
    /// carry refresh tokens (an authorizer's profile) is scrubbed here,
    /// judged by the path the call actually went to.
    async fn send(
        &self,
        method: &Method,
        destination: &Destination,
        credential: Option<(&str, &str)>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Answer, ProxyError> {
        let scrub = wechat_path::scrubs_refresh_tokens(destination.path());
        let whole = if scrub { SCRUB_LIMIT } else { PEEK_LIMIT };
        // Boxed: the call's state is large, and a box is moved in one
        // word where the state would be copied whole at every await.
        let call =
            Box::pin(
                self.upstream
                    .call(method, destination, credential, headers, body, whole),
            );
        let answer = timeout(self.timeout, call)
            .await
            .map_err(|_| ProxyError::Timeout(self.timeout))??;
        if !scrub {
            return Ok(answer);
        }
        answer
            .without_refresh_tokens()
            .map_err(|why| ProxyError::Upstream(why.to_owned()))
    }
}

/// Reads the whole request body, refusing past [`PROXY_BODY_LIMIT`] (early
/// when its declared length already says so).
async fn read_body(body: RequestBody) -> Result<Bytes, ProxyError> {
    body.read(PROXY_BODY_LIMIT).await.map_err(|err| match err {
        ReadError::TooLarge { .. } => ProxyError::TooLarge,
        ReadError::Body(BodyError::TimedOut(_)) => ProxyError::BodyTimeout,
        ReadError::Body(err) => ProxyError::BadBody(Chain(&err).to_string()),
    })
}
