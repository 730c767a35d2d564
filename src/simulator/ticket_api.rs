//! The JS-SDK ticket endpoints over HTTP: WeChat's `ticket/getticket`
//! (`jsapi`, `wx_card`) and WeCom's `get_jsapi_ticket` (per corp) and
//! `ticket/get?type=agent_config` (per agent). Each applies the next queued
//! ticket fault, checks the access_token the way its product does, then the
//! ticket type, then the limits (45009), and answers from the ticket book.

use hyper::Response;
use serde_json::json;
use tracing::{debug, info};

use super::app_token;
use super::params::{self, get};
use super::reply::{self, Body};
use super::request::{DropConnection, SimRequest};
use super::state::State;
use super::tickets::{Limit, TicketGrant, TicketKey, TicketKind};
use super::token_api;
use super::tokens::{Family, Holder, TokenStatus};
use super::wx_error::WxError;
use super::{Endpoint, Simulator};
use crate::secret::fingerprint;

type Query = [(String, String)];

pub(crate) async fn handle(
    sim: &Simulator,
    endpoint: Endpoint,
    request: &SimRequest,
) -> Result<Response<Body>, DropConnection> {
    let fault = sim.lock().ticket_faults.take();
    if let Some(fault) = fault {
        if let Some(answer) = token_api::play(endpoint, fault).await? {
            return Ok(answer);
        }
    }
    let query = params::parse_query(&request.query);
    let outcome = match endpoint {
        Endpoint::GetTicket => wechat(sim, &query),
        Endpoint::WecomGetJsapiTicket => wecom_corp(sim, &query),
        Endpoint::WecomTicketGet => wecom_agent(sim, &query),
        // Routing only sends ticket endpoints here.
        _ => return Ok(reply::not_found()),
    };
    Ok(match outcome {
        Ok(grant) => reply::ok(&json!({
            "errcode": 0,
            "errmsg": "ok",
            "ticket": grant.ticket,
            "expires_in": grant.expires_in,
        })),
        Err(error) => {
            debug!(
                endpoint = endpoint.name(),
                errcode = error.errcode,
                "simulator ticket call refused"
            );
            reply::wx_error(&error)
        }
    })
}

/// `GET /cgi-bin/ticket/getticket?access_token=T&type=jsapi|wx_card`: one
/// ticket per app and type, whichever of the app's valid tokens asks.
fn wechat(sim: &Simulator, query: &Query) -> Result<TicketGrant, WxError> {
    let token = app_token::check(sim, get(query, "access_token"))?;
    let kind = match get(query, "type").and_then(TicketKind::from_name) {
        Some(kind @ (TicketKind::Jsapi | TicketKind::WxCard)) => kind,
        _ => return Err(WxError::wechat(40097, "invalid args")),
    };
    let mut state = sim.lock();
    let appid = state
        .tokens
        .owner(token)
        .ok_or_else(|| WxError::from_code(40001))?
        .to_owned();
    let key = TicketKey::new(&appid, kind, None);
    let limits = [Limit::Daily {
        key: key.clone(),
        limit: state.config.ticket_daily_limit,
    }];
    grant(&mut state, &key, &limits, None, || {
        WxError::wechat(45009, "reach max api daily quota limit")
    })
}

/// WeCom `GET /cgi-bin/get_jsapi_ticket?access_token=T`: one ticket per
/// corp, whichever agent's token asks; at most 400 calls an hour per corp
/// and 100 per agent.
fn wecom_corp(sim: &Simulator, query: &Query) -> Result<TicketGrant, WxError> {
    let mut state = sim.lock();
    let holder = wecom_token(&state, get(query, "access_token"))?;
    let key = TicketKey::new(&holder.appid, TicketKind::Jsapi, None);
    let config = &state.config;
    let limits = [
        Limit::Daily {
            key: key.clone(),
            limit: config.ticket_daily_limit,
        },
        Limit::Hourly {
            key: key.clone(),
            limit: config.wecom_corp_ticket_hourly_limit,
        },
        Limit::Hourly {
            key: TicketKey::new(&holder.appid, TicketKind::Jsapi, holder.agent.as_deref()),
            limit: config.wecom_agent_ticket_hourly_limit,
        },
    ];
    grant(&mut state, &key, &limits, None, wecom_freq_limit)
}

/// WeCom `GET /cgi-bin/ticket/get?access_token=T&type=agent_config`: one
/// ticket per agent (the app whose secret fetched the token), never shared
/// with another agent of the corp; at most 100 calls an hour per agent.
fn wecom_agent(sim: &Simulator, query: &Query) -> Result<TicketGrant, WxError> {
    let mut state = sim.lock();
    let holder = wecom_token(&state, get(query, "access_token"))?;
    if get(query, "type") != Some(TicketKind::AgentConfig.name()) {
        return Err(WxError::wecom(40058, "invalid Parameter"));
    }
    let key = TicketKey::new(
        &holder.appid,
        TicketKind::AgentConfig,
        holder.agent.as_deref(),
    );
    let limits = [
        Limit::Daily {
            key: key.clone(),
            limit: state.config.ticket_daily_limit,
        },
        Limit::Hourly {
            key: key.clone(),
            limit: state.config.wecom_agent_ticket_hourly_limit,
        },
    ];
    let agentid = state.wecom_agentid(&holder);
    grant(&mut state, &key, &limits, agentid, wecom_freq_limit)
}

/// How WeCom judges the token of a ticket call: present (41001), a WeCom
/// token it issued and still valid (40014), not expired (42001).
fn wecom_token(state: &State, token: Option<&str>) -> Result<Holder, WxError> {
    let token = token.ok_or_else(|| WxError::wecom(41001, "access_token missing"))?;
    let invalid = || WxError::wecom(40014, "invalid access_token");
    match state.token_status(token) {
        TokenStatus::Valid(Family::Wecom) => {
            state.tokens.holder(token).cloned().ok_or_else(invalid)
        }
        TokenStatus::Expired => Err(WxError::wecom(42001, "access_token expired")),
        _ => Err(invalid()),
    }
}

fn wecom_freq_limit() -> WxError {
    WxError::wecom(45009, "api freq out of limit")
}

/// Counts the call against `limits` and answers the current ticket of
/// `key`, or a new one once it has expired.
fn grant(
    state: &mut State,
    key: &TicketKey,
    limits: &[Limit],
    agentid: Option<u64>,
    refused: impl FnOnce() -> WxError,
) -> Result<TicketGrant, WxError> {
    let now = state.clock.now();
    let day = state.clock.beijing_day();
    if let Err(limit) = state.tickets.admit(limits, day, now) {
        // The limit's key may name an agent by its secret: log its size only.
        let (window, max) = match limit {
            Limit::Daily { limit, .. } => ("day", limit),
            Limit::Hourly { limit, .. } => ("hour", limit),
        };
        info!(owner = %key.owner, kind = key.kind.name(), window, max, "simulator ticket limit reached");
        return Err(refused());
    }
    let lifetime = state.config.ticket_lifetime;
    let grant = state.tickets.grant(key, now, lifetime);
    if grant.fresh {
        info!(
            owner = %key.owner,
            kind = key.kind.name(),
            agentid,
            ticket_fp = %fingerprint(&grant.ticket),
            expires_in = grant.expires_in,
            "simulator issued ticket"
        );
    }
    Ok(grant)
}
