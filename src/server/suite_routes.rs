//! The WeCom service provider routes of the token API (DESIGN.md section
//! 19), below `/v1/suites/{suite}/`: the suite and provider tokens, the
//! installed corps (listed without tokens or permanent codes), a corp's
//! token and its invalidation, a corp's JS-SDK tickets and `wx.config`
//! signatures, pre-auth codes, and the corp proxy.
//!
//! Every route hands out or uses the suite's credentials, so the caller's
//! access to the suite is checked first, whether or not the suite exists.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::api_error::ApiError;
use super::body_deadline::RequestBody;
use super::proxy::{self as forwarding, Caller, Forward, ProxyError};
use super::respond::{self, Body};
use super::routes::{allow_get, allow_post, check, read_body, ApiState, TOKEN_BODY_LIMIT};
use super::wechat_path::ForwardPath;
use crate::audit::{Outcome, Target, Verdict};
use crate::children::ChildToken;
use crate::credential::{Credential, TicketKind};
use crate::engine::{CredentialHandle, InvalidateOutcome, TokenRecord};
use crate::identity::{Access, Act, Resource};
use crate::jssdk;
use crate::suite::{CorpError, SuiteHandle};
use crate::wechat::FetchError;

/// The largest page of `GET .../corps`.
pub(super) const MAX_PAGE: usize = 500;
/// The page size when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// `rest` is the path after `/v1/suites/`; `caller` asked for it.
pub(super) async fn dispatch(
    state: &ApiState,
    access: &Access,
    caller: &Caller<'_>,
    rest: &str,
    request: &http::request::Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let method = &request.method;
    let query = request.uri.query();
    let (name, below) = rest.split_once('/').unwrap_or((rest, ""));
    // A suite the caller may not read is 403 whether or not it exists.
    check(access, Resource::Suite(name), Act::Read)?;
    let suite = find(state, access, name)?;
    if let Some(rest) = below.strip_prefix("corps/") {
        let (corpid, action) = rest.split_once('/').unwrap_or((rest, ""));
        if corpid.is_empty() {
            return Err(not_found(request));
        }
        let corp = Corp {
            state,
            suite: &suite,
            corpid,
        };
        return corp.route(access, caller, action, request, body).await;
    }
    match below {
        "suite_token" => {
            allow_get(method)?;
            let handle = suite.suite_token();
            let token = credential(&suite, handle, state).await?;
            let answer = (&suite, handle, "suite_access_token");
            Ok(credential_answer(answer, &token, query))
        }
        "provider_token" => {
            allow_get(method)?;
            let handle = suite
                .provider_token()
                .ok_or_else(|| ApiError::ProviderNotConfigured {
                    suite: suite.name().to_owned(),
                })?;
            let token = credential(&suite, handle, state).await?;
            let answer = (&suite, handle, "provider_access_token");
            Ok(credential_answer(answer, &token, query))
        }
        "corps" => {
            allow_get(method)?;
            Ok(list(&suite, query))
        }
        "pre_auth_code" => {
            allow_post(method)?;
            let (code, expires_in) = suite
                .pre_auth_code(state.token_wait)
                .await
                .map_err(|err| pre_auth_error(&suite, err))?;
            Ok(respond::no_store(respond::json(
                StatusCode::OK,
                &json!({ "pre_auth_code": code, "expires_in": expires_in }),
            )))
        }
        _ => Err(not_found(request)),
    }
}

fn not_found(request: &http::request::Parts) -> ApiError {
    ApiError::RouteNotFound {
        method: request.method.to_string(),
        path: request.uri.path().chars().take(256).collect(),
    }
}

/// The suite named `name`; 404 naming the suites the caller may read.
fn find(state: &ApiState, access: &Access, name: &str) -> Result<SuiteHandle, ApiError> {
    state.broker.suite(name).ok_or_else(|| {
        let configured: Vec<String> = state
            .broker
            .suites()
            .iter()
            .map(|suite| suite.name().to_owned())
            .filter(|name| check(access, Resource::Suite(name), Act::Read).is_ok())
            .collect();
        ApiError::SuiteNotFound {
            name: name.chars().take(64).collect(),
            configured: configured.join(", "),
        }
    })
}

/// A valid value of one of the suite's own credentials, waiting up to
/// `token_wait_timeout` for one.
async fn credential(
    suite: &SuiteHandle,
    handle: &CredentialHandle,
    state: &ApiState,
) -> Result<Arc<TokenRecord>, ApiError> {
    handle
        .token(state.token_wait)
        .await
        .map_err(|err| ApiError::from_credential_error(suite.name(), handle.credential(), err))
}

/// `{"suite", field, "expires_in", "expires_at"}`, `field` naming the
/// credential (`suite_access_token`, `provider_access_token`), or the
/// bare value with `?format=text`.
fn credential_answer(
    (suite, handle, field): (&SuiteHandle, &CredentialHandle, &str),
    token: &TokenRecord,
    query: Option<&str>,
) -> Response<Body> {
    if respond::wants_text(query) {
        return respond::no_store(respond::text(
            StatusCode::OK,
            token.value.expose().to_owned(),
        ));
    }
    let now = handle.now_ms();
    let mut body = json!({
        "suite": suite.name(),
        "expires_in": token.expires_in(now),
        "expires_at": token.expires_at(),
    });
    body[field] = json!(token.value.expose());
    respond::no_store(respond::json(StatusCode::OK, &body))
}

/// The suite token could not be had for a pre-auth code, or WeCom
/// refused one.
fn pre_auth_error(suite: &SuiteHandle, err: FetchError) -> ApiError {
    match err {
        FetchError::Parent(_) => ApiError::TokenUnavailable {
            app: suite.name().to_owned(),
            credential: suite.suite_token().credential(),
            retry_after: 1,
            last_error: None,
        },
        FetchError::Timeout(_) => ApiError::UpstreamTimeout,
        err => ApiError::UpstreamError(err.to_string()),
    }
}

/// `offset` and `limit` of a page: `limit` defaults to 100 and is held
/// within 1..=500; anything unreadable is the default.
pub(super) fn page_bounds(query: Option<&str>) -> (usize, usize) {
    let (mut offset, mut limit) = (0usize, DEFAULT_PAGE);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "offset" => offset = value.parse().unwrap_or(0),
            "limit" => limit = value.parse().unwrap_or(DEFAULT_PAGE),
            _ => {}
        }
    }
    (offset, limit.clamp(1, MAX_PAGE))
}

/// One page of the installed corps, ordered by corpid: their state,
/// never a token or a permanent code.
fn list(suite: &SuiteHandle, query: Option<&str>) -> Response<Body> {
    let (offset, limit) = page_bounds(query);
    let now = suite.suite_token().now_ms();
    let all = suite.corps().sorted();
    let page: Vec<serde_json::Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|slot| {
            let token = slot.token().filter(|t| t.is_valid(now));
            json!({
                "corpid": &*slot.id,
                "corp_name": suite.corp_name(&slot.id),
                "valid": token.is_some(),
                "expires_in": token.map_or(0, |t| t.expires_in(now)),
                "installed_at": suite
                    .installed_at(&slot.id)
                    .unwrap_or_else(|| slot.authorized_at()),
            })
        })
        .collect();
    respond::json(
        StatusCode::OK,
        &json!({ "corps": page, "total": all.len() }),
    )
}

/// One installed corp of a suite, as a request names it.
struct Corp<'a> {
    state: &'a ApiState,
    suite: &'a SuiteHandle,
    corpid: &'a str,
}

impl Corp<'_> {
    /// `action` is the path below `/v1/suites/{suite}/corps/{corpid}/`.
    async fn route(
        &self,
        access: &Access,
        caller: &Caller<'_>,
        action: &str,
        request: &http::request::Parts,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        let method = &request.method;
        let query = request.uri.query();
        if let Some(path) = action.strip_prefix("proxy") {
            if path.is_empty() || path.starts_with('/') {
                let path = path.strip_prefix('/').unwrap_or("");
                let judged = ForwardPath::new(path);
                check(
                    access,
                    Resource::Suite(self.suite.name()),
                    Act::Forward(&judged),
                )?;
                let forward = Forward {
                    method,
                    path,
                    query,
                    headers: &request.headers,
                };
                return self.proxy(caller, forward, body).await;
            }
        }
        let mut parts = action.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("token"), None, ..) => {
                allow_get(method)?;
                let token = self.token().await?;
                Ok(self.token_answer(&token, query, None))
            }
            (Some("token"), Some("invalidate"), None, _) => {
                allow_post(method)?;
                let body = read_body(body, TOKEN_BODY_LIMIT).await?;
                self.invalidate(&body, query).await
            }
            (Some("tickets"), Some(kind), None, _) => {
                allow_get(method)?;
                let (kind, handle) = self.ticket(kind)?;
                let ticket = self.ticket_value(&handle).await?;
                Ok(self.ticket_answer(kind, &handle, &ticket, query, None))
            }
            (Some("tickets"), Some(kind), Some("invalidate"), None) => {
                allow_post(method)?;
                let (kind, handle) = self.ticket(kind)?;
                let body = read_body(body, TOKEN_BODY_LIMIT).await?;
                self.invalidate_ticket(kind, &handle, &body, query).await
            }
            (Some("jssdk"), Some("config"), None, _) => {
                allow_post(method)?;
                let body = read_body(body, TOKEN_BODY_LIMIT).await?;
                self.jssdk_config(&body).await
            }
            _ => Err(not_found(request)),
        }
    }

    /// The corp id as messages and records show it: bounded.
    fn shown_id(&self) -> String {
        self.corpid.chars().take(64).collect()
    }

    /// `suite/corpid`, naming the corp in a `token_unavailable` answer.
    fn owner(&self) -> String {
        format!("{}/{}", self.suite.name(), self.shown_id())
    }

    fn error(&self, err: CorpError) -> ApiError {
        corp_error(self.suite, self.corpid, err)
    }

    async fn token(&self) -> Result<Arc<ChildToken>, ApiError> {
        self.suite
            .corp_token(self.corpid, self.state.token_wait)
            .await
            .map_err(|err| self.error(err))
    }

    /// Shaped like an app's token answer, with the suite and corp named.
    fn token_answer(
        &self,
        token: &ChildToken,
        query: Option<&str>,
        refreshed: Option<bool>,
    ) -> Response<Body> {
        if respond::wants_text(query) {
            return respond::no_store(respond::text(
                StatusCode::OK,
                token.value.expose().to_owned(),
            ));
        }
        let now = self.suite.suite_token().now_ms();
        let mut body = json!({
            "suite": self.suite.name(),
            "corpid": self.corpid,
            "access_token": token.value.expose(),
            "expires_in": token.expires_in(now),
            "expires_at": token.expires_at(),
        });
        if let Some(refreshed) = refreshed {
            body["refreshed"] = json!(refreshed);
        }
        respond::no_store(respond::json(StatusCode::OK, &body))
    }

    async fn invalidate(
        &self,
        body: &[u8],
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let request: InvalidateToken = serde_json::from_slice(body).map_err(|err| {
            ApiError::BadRequest(format!(
                "expected {{\"access_token\": \"<the token that failed>\"}}: {err}"
            ))
        })?;
        let (token, refreshed) = self
            .suite
            .invalidate_corp(self.corpid, &request.access_token, self.state.token_wait)
            .await
            .map_err(|err| self.error(err))?;
        Ok(self.token_answer(&token, query, Some(refreshed)))
    }

    /// The corp's `kind` ticket handle: 404 `ticket_not_configured` for a
    /// kind the suite's `corp_tickets` do not name, `corp_not_found` for
    /// a corp that has not installed the suite.
    fn ticket(&self, kind: &str) -> Result<(TicketKind, CredentialHandle), ApiError> {
        let not_configured = || ticket_not_configured(self.suite, kind);
        let kind = TicketKind::from_name(kind)
            .filter(|kind| self.suite.config().corp_tickets.contains(kind))
            .ok_or_else(not_configured)?;
        match self.suite.corp_ticket(self.corpid, kind) {
            Ok(handle) => Ok((kind, handle)),
            Err(CorpError::TicketNotConfigured) => Err(not_configured()),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn ticket_value(&self, handle: &CredentialHandle) -> Result<Arc<TokenRecord>, ApiError> {
        handle
            .token(self.state.token_wait)
            .await
            .map_err(|err| ApiError::from_credential_error(&self.owner(), handle.credential(), err))
    }

    fn ticket_answer(
        &self,
        kind: TicketKind,
        handle: &CredentialHandle,
        ticket: &TokenRecord,
        query: Option<&str>,
        refreshed: Option<bool>,
    ) -> Response<Body> {
        if respond::wants_text(query) {
            return respond::no_store(respond::text(
                StatusCode::OK,
                ticket.value.expose().to_owned(),
            ));
        }
        let now = handle.now_ms();
        let mut body = json!({
            "suite": self.suite.name(),
            "corpid": self.corpid,
            "kind": kind.name(),
            "ticket": ticket.value.expose(),
            "expires_in": ticket.expires_in(now),
            "expires_at": ticket.expires_at(),
        });
        if let Some(refreshed) = refreshed {
            body["refreshed"] = json!(refreshed);
        }
        respond::no_store(respond::json(StatusCode::OK, &body))
    }

    /// As an app's ticket invalidation: within `token_wait_timeout` in all.
    async fn invalidate_ticket(
        &self,
        kind: TicketKind,
        handle: &CredentialHandle,
        body: &[u8],
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let request: InvalidateTicket = serde_json::from_slice(body).map_err(|err| {
            ApiError::BadRequest(format!(
                "expected {{\"ticket\": \"<the ticket that failed>\"}}: {err}"
            ))
        })?;
        let unavailable =
            |err| ApiError::from_credential_error(&self.owner(), handle.credential(), err);
        let deadline = tokio::time::Instant::now() + self.state.token_wait;
        let outcome = handle
            .invalidate(&request.ticket, self.state.token_wait)
            .await
            .map_err(unavailable)?;
        let ticket = handle
            .token(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .map_err(unavailable)?;
        Ok(self.ticket_answer(
            kind,
            handle,
            &ticket,
            query,
            Some(outcome == InvalidateOutcome::Refreshed),
        ))
    }

    /// `wx.config`'s object for a page of the corp, signed with the
    /// corp's jsapi ticket and its corp id; with `"agent": true`,
    /// `wx.agentConfig`'s, signed with the agent_config ticket for the
    /// `agentid` the body names (the suite's app in that corp: the
    /// caller knows it from the page's context; a corp may hold several
    /// agents of one suite, so the broker does not guess).
    async fn jssdk_config(&self, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let request: ConfigRequest = serde_json::from_slice(body).map_err(|err| {
            ApiError::BadRequest(format!(
                "expected {{\"url\": \"https://…/page\"}} (and \"agent\": true with \"agentid\" for wx.agentConfig): {err}"
            ))
        })?;
        let page = jssdk::signed_part(&request.url)
            .map_err(|err| ApiError::BadRequest(err.to_string()))?;
        let agent = match (request.agent, request.agentid) {
            (false, _) => None,
            (true, Some(agentid)) => Some(agentid),
            (true, None) => {
                return Err(ApiError::BadRequest(
                    "\"agent\": true (wx.agentConfig) needs \"agentid\": the corp's agent id of the suite's app".into(),
                ))
            }
        };
        let kind = match agent {
            Some(_) => TicketKind::AgentConfig,
            None => TicketKind::Jsapi,
        };
        let (_, handle) = self.ticket(kind.name())?;
        let ticket = self.ticket_value(&handle).await?;
        let timestamp = handle.now_secs();
        let ticket = ticket.value.expose();
        let signed = match agent {
            Some(agentid) => serde_json::to_value(jssdk::agent_config(
                self.corpid,
                agentid,
                ticket,
                page,
                timestamp,
            )),
            None => serde_json::to_value(jssdk::wx_config(self.corpid, ticket, page, timestamp)),
        }
        .expect("a signed config always serializes");
        Ok(respond::no_store(respond::json(StatusCode::OK, &signed)))
    }

    /// As the app proxy, with the corp's token; a rejection of it is
    /// reported and the call made once more with the next token.
    /// Recorded in the call audit.
    async fn proxy(
        &self,
        caller: &Caller<'_>,
        forward: Forward<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        let target = Target::Corp {
            suite: self.suite.name().to_owned(),
            corpid: self.shown_id(),
        };
        let proxy = &self.state.proxy;
        let call = proxy.begin_call(caller, target, forward.method, forward.path);
        let (answer, verdict) = self.call(forward, body).await;
        proxy.finish_call(call, verdict);
        answer
    }

    /// [`Corp::proxy`]'s call, and how it ended for the audit.
    async fn call(
        &self,
        forward: Forward<'_>,
        body: RequestBody,
    ) -> (Result<Response<Body>, ApiError>, Verdict) {
        let proxy_error = |err: ProxyError| {
            let verdict = forwarding::verdict(Err(&err));
            (
                Err(ApiError::from_proxy_error(self.suite.name(), err)),
                verdict,
            )
        };
        let prepared = self
            .state
            .proxy
            .prepare_token_call(
                &self.suite.config().api_base,
                &forward,
                body,
                "access_token",
            )
            .await;
        let (url, headers, body) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => return proxy_error(err),
        };
        // The path was judged before the token is asked for: a refused
        // call makes no upstream call at all, not even a token fetch.
        let token = match self.token().await {
            Ok(token) => token,
            Err(err) => return (Err(err), Verdict::unanswered(Outcome::Refused)),
        };
        let sent = send_as_corp(
            self.state,
            self.suite,
            self.corpid,
            forward.method,
            (&url, &headers, &body),
            &token,
        )
        .await;
        match sent {
            Ok(response) => {
                let verdict = forwarding::verdict(Ok(&response));
                (Ok(response), verdict)
            }
            Err(CorpCallError::Proxy(err)) => proxy_error(err),
            Err(CorpCallError::Invalidate(err, rejecting)) => {
                (Err(self.error(err)), forwarding::verdict(Ok(&rejecting)))
            }
        }
    }
}

/// A corp's error as the API answers it.
pub(super) fn corp_error(suite: &SuiteHandle, corpid: &str, err: CorpError) -> ApiError {
    let corpid: String = corpid.chars().take(64).collect();
    match err {
        CorpError::NotFound => ApiError::CorpNotFound {
            suite: suite.name().to_owned(),
            corpid,
        },
        CorpError::Unavailable { .. } => ApiError::TokenUnavailable {
            app: format!("{}/{corpid}", suite.name()),
            credential: Credential::CorpAccessToken,
            retry_after: 1,
            last_error: None,
        },
        CorpError::TicketNotConfigured => ticket_not_configured(suite, "requested"),
    }
}

/// 404 `ticket_not_configured`, naming the suite's `corp_tickets`.
fn ticket_not_configured(suite: &SuiteHandle, kind: &str) -> ApiError {
    ApiError::CorpTicketNotConfigured {
        suite: suite.name().to_owned(),
        kind: kind.chars().take(32).collect(),
        configured: suite
            .config()
            .corp_tickets
            .iter()
            .map(|kind| format!("\"{kind}\""))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[derive(Deserialize)]
struct InvalidateToken {
    access_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateTicket {
    ticket: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigRequest {
    url: String,
    #[serde(default)]
    agent: bool,
    #[serde(default)]
    agentid: Option<u64>,
}

/// Why a corp's call has no answer to give as it stands.
pub(super) enum CorpCallError {
    Proxy(ProxyError),
    /// The rejected token could not be reported; the rejecting answer.
    Invalidate(CorpError, Response<Body>),
}

/// Sends a prepared call (`url`, headers, body) with the corp's `token`;
/// on a rejection of it (40001, 40014, 42001), reports the token and,
/// when that replaced it, sends once more with the next one: at most two
/// upstream calls. Otherwise the first answer stands.
pub(super) async fn send_as_corp(
    state: &ApiState,
    suite: &SuiteHandle,
    corpid: &str,
    method: &Method,
    (url, headers, body): (&reqwest::Url, &HeaderMap, &Bytes),
    token: &ChildToken,
) -> Result<Response<Body>, CorpCallError> {
    let proxy = &state.proxy;
    let (response, rejected) = proxy
        .send_with_token(
            method,
            url,
            headers,
            body,
            "access_token",
            token.value.expose(),
        )
        .await
        .map_err(CorpCallError::Proxy)?;
    if !rejected {
        return Ok(response);
    }
    let next = suite
        .invalidate_corp(corpid, token.value.expose(), state.token_wait)
        .await;
    match next {
        Err(err) => Err(CorpCallError::Invalidate(err, response)),
        // Nothing newer to send with (a refresh not allowed yet): the
        // rejection of the broker's own token is never handed back, since
        // SDKs answer it by retrying at once.
        Ok((next, _)) if next.value == token.value => {
            let errcode = response
                .extensions()
                .get::<crate::audit::Reply>()
                .and_then(|reply| reply.errcode)
                .unwrap_or(40001);
            Err(CorpCallError::Proxy(ProxyError::TokenRejected {
                errcode,
                errmsg: "the corp's token was rejected and no newer one can be had yet".into(),
                retry_after: 1,
            }))
        }
        Ok((next, _)) => proxy
            .send_with_token(
                method,
                url,
                headers,
                body,
                "access_token",
                next.value.expose(),
            )
            .await
            .map(|(response, _)| response)
            .map_err(CorpCallError::Proxy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_to_a_hundred_and_never_pass_five_hundred() {
        assert_eq!(page_bounds(None), (0, 100));
        assert_eq!(page_bounds(Some("offset=20&limit=7")), (20, 7));
        assert_eq!(page_bounds(Some("limit=1000")), (0, MAX_PAGE));
        assert_eq!(page_bounds(Some("limit=0")), (0, 1));
        assert_eq!(page_bounds(Some("limit=x&offset=-1")), (0, 100));
    }
}
