//! A WeCom corp's routes of the token API (DESIGN.md section 19), below
//! `/v1/suites/{suite}/corps/{corpid}/`: the corp's token and its
//! invalidation, its JS-SDK tickets and `wx.config` signatures, and the
//! corp proxy. The caller's access to the suite is checked first, as on
//! every suite route.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::context::Ctx;
use super::route::Answer;
use super::suites::{corp_error, suite, ticket_not_configured};
use crate::audit::{Outcome, Target, Verdict};
use crate::children::ChildToken;
use crate::credential::TicketKind;
use crate::engine::{CredentialHandle, InvalidateOutcome, TokenRecord};
use crate::http_io::RequestBody;
use crate::identity::{Act, Resource};
use crate::jssdk;
use crate::server::api_error::ApiError;
use crate::server::proxy::{self as forwarding, ChildCallError, Forward, ProxyError};
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;
use crate::suite::{CorpError, SuiteHandle};
use crate::wechat_path::ForwardPath;

/// `GET .../corps/{corpid}/token`.
pub(super) async fn token(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let (suite, corp) = (suite(&ctx)?, ctx.param("corpid"));
    let corp = Corp::named(&ctx, &suite, corp)?;
    ctx.allow_get()?;
    let token = corp.token().await?;
    Ok(corp.token_answer(&token, ctx.query(), None))
}

/// `POST .../corps/{corpid}/token/invalidate`.
pub(super) async fn invalidate(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let (suite, corp) = (suite(&ctx)?, ctx.param("corpid"));
    let corp = Corp::named(&ctx, &suite, corp)?;
    ctx.allow_post()?;
    let body = ctx.body(body).await?;
    corp.invalidate(&body, ctx.query()).await
}

/// `GET .../corps/{corpid}/tickets/{kind}`.
pub(super) async fn ticket(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let (suite, corp) = (suite(&ctx)?, ctx.param("corpid"));
    let corp = Corp::named(&ctx, &suite, corp)?;
    ctx.allow_get()?;
    let (kind, handle) = corp.ticket(ctx.param("kind"))?;
    let ticket = corp.ticket_value(&handle).await?;
    Ok(corp.ticket_answer(kind, &handle, &ticket, ctx.query(), None))
}

/// `POST .../corps/{corpid}/tickets/{kind}/invalidate`.
pub(super) async fn invalidate_ticket(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let (suite, corp) = (suite(&ctx)?, ctx.param("corpid"));
    let corp = Corp::named(&ctx, &suite, corp)?;
    ctx.allow_post()?;
    let (kind, handle) = corp.ticket(ctx.param("kind"))?;
    let body = ctx.body(body).await?;
    corp.invalidate_ticket(kind, &handle, &body, ctx.query())
        .await
}

/// `POST .../corps/{corpid}/jssdk/config`.
pub(super) async fn jssdk_config(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let (suite, corp) = (suite(&ctx)?, ctx.param("corpid"));
    let corp = Corp::named(&ctx, &suite, corp)?;
    ctx.allow_post()?;
    let body = ctx.body(body).await?;
    corp.jssdk_config(&body).await
}

/// `ANY .../corps/{corpid}/proxy/{path}`.
pub(super) async fn proxy(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let (suite, corp) = (suite(&ctx)?, ctx.param("corpid"));
    let corp = Corp::named(&ctx, &suite, corp)?;
    let path = ctx.params.get_or_empty("path");
    let judged = ForwardPath::new(path);
    ctx.check(Resource::Suite(suite.name()), Act::Forward(&judged))?;
    corp.proxy(&ctx, ctx.forward(path), body).await
}

/// One installed corp of a suite, as a request names it.
struct Corp<'a> {
    state: &'a ApiState,
    suite: &'a SuiteHandle,
    corpid: &'a str,
}

impl<'a> Corp<'a> {
    /// The corp `corpid` of `suite`; an empty corp id is no route.
    fn named(ctx: &Ctx<'a>, suite: &'a SuiteHandle, corpid: &'a str) -> Result<Self, ApiError> {
        if corpid.is_empty() {
            return Err(ctx.not_found());
        }
        Ok(Corp {
            state: ctx.state,
            suite,
            corpid,
        })
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
    async fn proxy(&self, ctx: &Ctx<'_>, forward: Forward<'_>, body: RequestBody) -> Answer {
        let caller = ctx.caller();
        let target = Target::Corp {
            suite: self.suite.name().to_owned(),
            corpid: self.shown_id(),
        };
        let proxy = &self.state.proxy;
        let call = proxy.begin_call(&caller, target, forward.method, forward.path);
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
        let (suite, corpid, wait) = (self.suite, self.corpid, self.state.token_wait);
        let call = (forward.method, &url, &headers, &body);
        let sent = self
            .state
            .proxy
            .send_as_child(call, &token, |reported| async move {
                suite.invalidate_corp(corpid, &reported, wait).await
            })
            .await;
        match sent {
            Ok(response) => {
                let verdict = forwarding::verdict(Ok(&response));
                (Ok(response), verdict)
            }
            Err(ChildCallError::Proxy(err)) => proxy_error(err),
            Err(ChildCallError::Invalidate(err, rejecting)) => {
                (Err(self.error(err)), forwarding::verdict(Ok(&rejecting)))
            }
        }
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
