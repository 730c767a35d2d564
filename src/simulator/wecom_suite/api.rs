//! The `/cgi-bin/service/*` endpoints over HTTP, with WeCom's errcodes:
//!
//! - `get_suite_token`: 40083 for an unknown suite_id, 40001 for a wrong
//!   secret, 40085 for a ticket of another suite or an unknown or expired
//!   one, 45009 past the daily limit; the same token while it is valid.
//! - `get_provider_token`: 40013 for an unknown corpid, 40001 for a wrong
//!   provider secret; the same token while it is valid.
//! - The calls that take `suite_access_token`: 41022 without one, 40082
//!   for one WeCom never issued (or another suite's), 42009 for an
//!   expired one.
//! - `v2/get_permanent_code`: 40078 for an unknown, used, expired or
//!   foreign `auth_code` (each is good once, for 10 minutes).
//! - `get_auth_info`, `get_corp_token`: 41025 without a permanent code,
//!   40084 for a wrong one (or a corp that cancelled, or a 代开发
//!   install, whose token comes from `gettoken`).
//!
//! Each endpoint first plays its next queued fault, if any.

use hyper::Response;
use serde_json::{json, Map, Value};
use tokio::time::sleep;
use tracing::debug;

use super::super::faults::FaultAction;
use super::super::params;
use super::super::push_crypto::random;
use super::super::reply::{self, Body};
use super::super::request::{DropConnection, SimRequest};
use super::super::tokens::{Family, Holder};
use super::super::wx_error::WxError;
use super::super::Simulator;
use super::{endpoint, ChainStatus, Install, Suites};

type Answer = Result<Value, WxError>;

/// Serves `/cgi-bin/service/*`.
pub(crate) async fn handle(
    sim: &Simulator,
    request: &SimRequest,
) -> Result<Response<Body>, DropConnection> {
    let name = request
        .path
        .strip_prefix("/cgi-bin/service/")
        .unwrap_or_default();
    let Some(endpoint) = endpoint(name) else {
        return Ok(reply::not_found());
    };
    let fault = {
        let mut suites = sim.suites();
        *suites.calls.entry(endpoint).or_default() += 1;
        suites.faults.get_mut(endpoint).and_then(|q| q.take())
    };
    if let Some(fault) = fault {
        debug!(endpoint, ?fault, "simulator applying suite fault");
        match fault {
            FaultAction::Errcode(code) => {
                return Ok(reply::wx_error(&WxError::wecom(code, message(code))))
            }
            FaultAction::Http500Html => return Ok(reply::html_500()),
            FaultAction::MalformedJson => return Ok(reply::malformed_json()),
            FaultAction::DropConnection => return Err(DropConnection),
            FaultAction::Delay(delay) => sleep(delay).await,
        }
    }
    let body: Map<String, Value> = serde_json::from_slice(&request.body).unwrap_or_default();
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let query = params::parse_query(&request.query);
    let suite_token = params::get(&query, "suite_access_token").map(str::to_owned);
    let answer = match endpoint {
        "get_suite_token" => suite_token_answer(
            sim,
            text("suite_id"),
            text("suite_secret"),
            text("suite_ticket"),
        ),
        "get_provider_token" => provider_token_answer(sim, text("corpid"), text("provider_secret")),
        _ => match check_suite_token(sim, suite_token.as_deref()) {
            Err(err) => Err(err),
            Ok(suite_id) => match endpoint {
                "get_pre_auth_code" => Ok(json!({
                    "errcode": 0,
                    "errmsg": "ok",
                    "pre_auth_code": random(64),
                    "expires_in": 1200,
                })),
                "v2/get_permanent_code" => permanent_code(sim, &suite_id, text("auth_code")),
                "get_auth_info" => {
                    with_install(sim, &suite_id, text("auth_corpid"), text("permanent_code"))
                        .map(|(corpid, install)| auth_answer(&corpid, &install, None))
                }
                _ => corp_token(sim, &suite_id, text("auth_corpid"), text("permanent_code")),
            },
        },
    };
    Ok(match answer {
        Ok(value) => reply::ok(&value),
        Err(err) => {
            debug!(
                endpoint,
                errcode = err.errcode,
                "simulator suite call refused"
            );
            reply::wx_error(&err)
        }
    })
}

/// WeCom's message for a code a fault injects.
fn message(code: i64) -> &'static str {
    match code {
        40082 => "invalid suite_access_token or provider_access_token",
        40083 => "invalid suite_id",
        40084 => "invalid permanent_code",
        40085 => "invalid suite ticket",
        42009 => "suite_access_token expired",
        45009 => "api freq out of limit",
        -1 => "system busy",
        _ => "simulated error",
    }
}

fn suite_token_answer(
    sim: &Simulator,
    suite_id: Option<String>,
    secret: Option<String>,
    ticket: Option<String>,
) -> Answer {
    let (now, _, day) = sim.sim_now();
    let mut suites = sim.suites();
    let Suites {
        suites: map,
        token_lifetime,
        daily_limit,
        ..
    } = &mut *suites;
    let suite = suite_id
        .and_then(|id| map.get_mut(&id))
        .ok_or_else(|| WxError::wecom(40083, "invalid suite_id"))?;
    if secret.as_deref() != Some(suite.spec.suite_secret.as_str()) {
        return Err(WxError::wecom(40001, "invalid suite_secret"));
    }
    let known = ticket.as_deref().is_some_and(|t| {
        suite
            .tickets
            .iter()
            .any(|k| k.value == t && now < k.expires)
    });
    if !known {
        return Err(WxError::wecom(40085, "invalid suite ticket"));
    }
    if suite.quota.0 != day {
        suite.quota = (day, 0);
    }
    if suite.quota.1 >= *daily_limit {
        return Err(WxError::wecom(45009, "api freq out of limit"));
    }
    suite.quota.1 += 1;
    let (token, expires_in) = suite.token.grant(now, *token_lifetime, "");
    Ok(json!({
        "errcode": 0,
        "errmsg": "ok",
        "suite_access_token": token,
        "expires_in": expires_in,
    }))
}

fn provider_token_answer(
    sim: &Simulator,
    corpid: Option<String>,
    secret: Option<String>,
) -> Answer {
    let (now, _, _) = sim.sim_now();
    let mut suites = sim.suites();
    let lifetime = suites.token_lifetime;
    let provider = corpid
        .and_then(|id| suites.providers.get_mut(&id))
        .ok_or_else(|| WxError::wecom(40013, "invalid corpid"))?;
    if secret.as_deref() != Some(provider.secret.as_str()) {
        return Err(WxError::wecom(40001, "invalid provider_secret"));
    }
    let (token, expires_in) = provider.token.grant(now, lifetime, "");
    Ok(json!({
        "errcode": 0,
        "errmsg": "ok",
        "provider_access_token": token,
        "expires_in": expires_in,
    }))
}

/// The suite a `suite_access_token` belongs to.
fn check_suite_token(sim: &Simulator, token: Option<&str>) -> Result<String, WxError> {
    let token = token.ok_or_else(|| WxError::wecom(41022, "suite_access_token missing"))?;
    let (now, _, _) = sim.sim_now();
    let suites = sim.suites();
    let mut expired = false;
    for (suite_id, suite) in &suites.suites {
        match suite.token.status(token, now) {
            ChainStatus::Valid => return Ok(suite_id.clone()),
            ChainStatus::Expired => expired = true,
            ChainStatus::Unknown => {}
        }
    }
    Err(if expired {
        WxError::wecom(42009, "suite_access_token expired")
    } else {
        WxError::wecom(40082, "invalid suite_access_token or provider_access_token")
    })
}

fn permanent_code(sim: &Simulator, suite_id: &str, auth_code: Option<String>) -> Answer {
    let auth_code = auth_code.ok_or_else(|| WxError::wecom(41008, "auth_code missing"))?;
    let (now, _, _) = sim.sim_now();
    let mut suites = sim.suites();
    let invalid = || WxError::wecom(40078, "invalid auth_code");
    let code = suites.auth_codes.get(&auth_code).ok_or_else(invalid)?;
    if code.suite_id != suite_id {
        // Another suite's code stays good for its own suite.
        return Err(invalid());
    }
    let code = suites.auth_codes.remove(&auth_code).ok_or_else(invalid)?;
    if now >= code.expires {
        return Err(invalid());
    }
    let install = suites
        .installs
        .get(&(suite_id.to_owned(), code.corpid.clone()))
        .ok_or_else(invalid)?;
    Ok(auth_answer(
        &code.corpid,
        install,
        Some(&install.permanent_code),
    ))
}

/// The corp and its install, when `permanent_code` is the install's.
fn with_install(
    sim: &Simulator,
    suite_id: &str,
    corpid: Option<String>,
    permanent_code: Option<String>,
) -> Result<(String, Install), WxError> {
    let corpid = corpid.ok_or_else(|| WxError::wecom(41002, "auth_corpid missing"))?;
    let code = permanent_code.ok_or_else(|| WxError::wecom(41025, "permanent code missing"))?;
    let suites = sim.suites();
    let install = suites
        .installs
        .get(&(suite_id.to_owned(), corpid.clone()))
        .filter(|install| install.permanent_code == code)
        .ok_or_else(|| WxError::wecom(40084, "invalid permanent_code"))?;
    Ok((corpid, install.clone()))
}

/// `v2/get_permanent_code` (with the code) and `get_auth_info` (without).
fn auth_answer(corpid: &str, install: &Install, permanent_code: Option<&str>) -> Value {
    let mut answer = json!({
        "errcode": 0,
        "errmsg": "ok",
        "auth_corp_info": {
            "corpid": corpid,
            "corp_name": install.corp_name,
            "corp_type": "verified",
            "corp_full_name": install.corp_name,
            "subject_type": 1,
        },
        "auth_info": { "agent": [{
            "agentid": install.agentid,
            "name": "Simulated app",
            "auth_mode": 0,
            "privilege": { "level": 1, "allow_party": [1], "allow_user": [], "allow_tag": [] },
        }]},
        "auth_user_info": { "userid": "admin", "name": "admin" },
        "auth_time": install.installed_at,
    });
    if let Some(code) = permanent_code {
        answer["permanent_code"] = json!(code);
    }
    answer
}

/// `get_corp_token`: the corp's token (the same while it is valid), in
/// the token book WeCom's token-taking APIs judge. The success answer
/// carries no errcode, as WeCom's does not.
fn corp_token(
    sim: &Simulator,
    suite_id: &str,
    corpid: Option<String>,
    permanent_code: Option<String>,
) -> Answer {
    let (corpid, install) = with_install(sim, suite_id, corpid, permanent_code)?;
    if install.customized {
        return Err(WxError::wecom(
            40084,
            "invalid permanent_code, a customized app gets its token from gettoken",
        ));
    }
    let holder: Holder = install.holder(suite_id, &corpid);
    let mut state = sim.lock();
    let now = state.clock.now();
    let lifetime = state.config.token_lifetime;
    let (token, expires_in) = match state.tokens.current(&holder, Family::Wecom, now) {
        Some((token, left)) => (token, left.as_secs()),
        None => (
            state.tokens.issue(&holder, Family::Wecom, now, lifetime),
            lifetime.as_secs(),
        ),
    };
    Ok(json!({ "access_token": token, "expires_in": expires_in }))
}
