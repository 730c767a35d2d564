//! A WeCom corp's routes of the token API (DESIGN.md section 19), below
//! `/v1/suites/{suite}/corps/{corpid}/`: which corp and ticket a path
//! names, `wx.config` signatures, and the corp proxy (its token's and
//! tickets' reads and invalidations are `credentials`'). The caller's
//! access to the suite is checked first, as on every suite route.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Deserialize;

use super::context::Ctx;
use super::route::Answer;
use super::suites::suite;
use crate::audit::{Outcome, Target, Verdict};
use crate::children::ChildToken;
use crate::credential::TicketKind;
use crate::engine::CredentialHandle;
use crate::http_io::RequestBody;
use crate::identity::{Act, Resource};
use crate::jssdk;
use crate::server::api_error::ApiError;
use crate::server::credentials::CredentialRef;
use crate::server::proxy::{self as forwarding, ChildCallError, Forward, ProxyError};
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;
use crate::suite::{CorpError, SuiteHandle};

/// `POST .../corps/{corpid}/jssdk/config`.
pub(super) async fn jssdk_config(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let suite = suite(&ctx)?;
    let corp = Corp::named(&ctx, &suite)?;
    ctx.allow_post()?;
    let body = ctx.body(body).await?;
    corp.jssdk_config(&body).await
}

/// `ANY .../corps/{corpid}/proxy/{path}`.
pub(super) async fn proxy(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let suite = suite(&ctx)?;
    let corp = Corp::named(&ctx, &suite)?;
    let forward = ctx.forward(ctx.params.get_or_empty("path"));
    ctx.check(Resource::Suite(suite.name()), Act::Forward(&forward.judged))?;
    corp.proxy(&ctx, forward, body).await
}

/// The corp id the path names; an empty one is no route.
pub(super) fn corpid<'a>(ctx: &Ctx<'a>) -> Result<&'a str, ApiError> {
    let corpid = ctx.param("corpid");
    if corpid.is_empty() {
        return Err(ctx.not_found());
    }
    Ok(corpid)
}

/// `suite/corpid`, naming a corp in a `token_unavailable` answer.
pub(super) fn owner(suite: &SuiteHandle, corpid: &str) -> String {
    let shown: String = corpid.chars().take(64).collect();
    format!("{}/{shown}", suite.name())
}

/// The corp's `kind` ticket handle: 404 `ticket_not_configured` for a
/// kind the suite's `corp_tickets` do not name, `corp_not_found` for a
/// corp that has not installed the suite.
pub(super) fn ticket(
    suite: &SuiteHandle,
    corpid: &str,
    kind: &str,
) -> Result<(TicketKind, CredentialHandle), ApiError> {
    let not_configured = || ApiError::corp_ticket_not_configured(suite, kind);
    let kind = TicketKind::from_name(kind)
        .filter(|kind| suite.config().corp_tickets.contains(kind))
        .ok_or_else(not_configured)?;
    match suite.corp_ticket(corpid, kind) {
        Ok(handle) => Ok((kind, handle)),
        Err(CorpError::TicketNotConfigured) => Err(not_configured()),
        Err(err) => Err(ApiError::from_corp_error(suite, corpid, err)),
    }
}

/// One installed corp of a suite, as a request names it.
struct Corp<'a> {
    state: &'a ApiState,
    suite: &'a SuiteHandle,
    corpid: &'a str,
}

impl<'a> Corp<'a> {
    fn named(ctx: &Ctx<'a>, suite: &'a SuiteHandle) -> Result<Self, ApiError> {
        let corpid = corpid(ctx)?;
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

    fn error(&self, err: CorpError) -> ApiError {
        ApiError::from_corp_error(self.suite, self.corpid, err)
    }

    async fn token(&self) -> Result<Arc<ChildToken>, ApiError> {
        self.suite
            .corp_token(self.corpid, self.state.token_wait)
            .await
            .map_err(|err| self.error(err))
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
        let (_, handle) = ticket(self.suite, self.corpid, kind.name())?;
        let ticket = CredentialRef::engine(owner(self.suite, self.corpid), &handle)
            .get(self.state.token_wait)
            .await?;
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
        let call = proxy.begin_call(&caller, target, forward.method, &forward.judged);
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
        let (destination, headers, body) = match prepared {
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
        let call = (forward.method, &destination, &headers, &body);
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
#[serde(deny_unknown_fields)]
struct ConfigRequest {
    url: String,
    #[serde(default)]
    agent: bool,
    #[serde(default)]
    agentid: Option<u64>,
}
