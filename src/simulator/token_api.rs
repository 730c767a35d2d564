//! The token-issuing endpoints over HTTP: applies latency and the next
//! queued fault, validates parameters the way WeChat does (grant_type, then
//! appid, then secret), and answers from the rules in `state.rs`.

use hyper::{Method, Response};
use serde_json::{json, Map, Value};
use tokio::time::sleep;
use tracing::debug;

use super::faults::FaultAction;
use super::params::{self, get};
use super::reply::{self, Body};
use super::request::{DropConnection, SimRequest};
use super::state::Grant;
use super::wx_error::WxError;
use super::{Endpoint, Simulator};

/// Answers a token call. WeChat issues the token whether or not the
/// caller stays to read the answer, so a call runs to its end even when
/// its connection is dropped meanwhile (a client stopped mid-fetch).
pub(crate) async fn handle(
    sim: &Simulator,
    endpoint: Endpoint,
    request: SimRequest,
) -> Result<Response<Body>, DropConnection> {
    let sim = sim.clone();
    let call = tokio::spawn(async move { answer(&sim, endpoint, &request).await });
    match call.await {
        Ok(answered) => answered,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_cancelled) => Err(DropConnection),
    }
}

async fn answer(
    sim: &Simulator,
    endpoint: Endpoint,
    request: &SimRequest,
) -> Result<Response<Body>, DropConnection> {
    let (fault, latency) = {
        let mut state = sim.lock();
        state.token_calls_in_flight += 1;
        state.max_token_calls_in_flight = state
            .max_token_calls_in_flight
            .max(state.token_calls_in_flight);
        (state.faults.take(), state.latency)
    };
    let _in_flight = InFlight(sim);
    if !latency.is_zero() {
        sleep(latency).await;
    }
    if let Some(fault) = fault {
        if let Some(answer) = play(endpoint, fault).await? {
            return Ok(answer);
        }
    }
    let outcome = match endpoint {
        Endpoint::Token => classic(sim, request),
        Endpoint::StableToken => stable(sim, request),
        Endpoint::WecomGetToken => wecom(sim, request),
        // Routing only sends token endpoints here.
        _ => return Ok(reply::not_found()),
    };
    Ok(match outcome {
        Ok(body) => reply::ok(&body),
        Err(error) => {
            debug!(
                endpoint = endpoint.name(),
                errcode = error.errcode,
                "simulator token call refused"
            );
            reply::wx_error(&error)
        }
    })
}

/// Plays one queued fault: the answer that replaces the real one, or
/// `None` once a delay has passed and the call goes on normally.
pub(crate) async fn play(
    endpoint: Endpoint,
    fault: FaultAction,
) -> Result<Option<Response<Body>>, DropConnection> {
    debug!(
        endpoint = endpoint.name(),
        ?fault,
        "simulator applying fault"
    );
    match fault {
        FaultAction::Errcode(errcode) => Ok(Some(reply::wx_error(&WxError::from_code(errcode)))),
        FaultAction::Http500Html => Ok(Some(reply::html_500())),
        FaultAction::MalformedJson => Ok(Some(reply::malformed_json())),
        FaultAction::DropConnection => Err(DropConnection),
        FaultAction::Delay(delay) => {
            sleep(delay).await;
            Ok(None)
        }
    }
}

fn classic(sim: &Simulator, request: &SimRequest) -> Result<Value, WxError> {
    let query = params::parse_query(&request.query);
    if get(&query, "grant_type") != Some("client_credential") {
        return Err(WxError::wechat(40002, "invalid grant_type"));
    }
    let appid = get(&query, "appid").ok_or_else(|| WxError::wechat(41002, "appid missing"))?;
    let secret =
        get(&query, "secret").ok_or_else(|| WxError::wechat(41004, "appsecret missing"))?;
    let grant = sim
        .lock()
        .grant_classic(appid, secret, Some(request.peer))?;
    Ok(wechat_body(grant))
}

fn stable(sim: &Simulator, request: &SimRequest) -> Result<Value, WxError> {
    if request.method != Method::POST {
        return Err(WxError::wechat(43002, "require POST method"));
    }
    let body: Map<String, Value> = serde_json::from_slice(&request.body)
        .map_err(|_| WxError::wechat(47001, "data format error"))?;
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
    };
    if text("grant_type") != Some("client_credential") {
        return Err(WxError::wechat(40002, "invalid grant_type"));
    }
    let appid = text("appid").ok_or_else(|| WxError::wechat(41002, "appid missing"))?;
    let secret = text("secret").ok_or_else(|| WxError::wechat(41004, "appsecret missing"))?;
    // WeChat wants a real boolean here; anything else is a format error.
    let force_refresh = match body.get("force_refresh") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(force)) => *force,
        Some(_) => return Err(WxError::wechat(47001, "data format error")),
    };
    let grant = sim
        .lock()
        .grant_stable(appid, secret, force_refresh, Some(request.peer))?;
    Ok(wechat_body(grant))
}

fn wecom(sim: &Simulator, request: &SimRequest) -> Result<Value, WxError> {
    let query = params::parse_query(&request.query);
    let corpid = get(&query, "corpid").ok_or_else(|| WxError::wecom(41002, "corpid missing"))?;
    let corpsecret =
        get(&query, "corpsecret").ok_or_else(|| WxError::wecom(41004, "corpsecret missing"))?;
    let grant = sim
        .lock()
        .grant_wecom(corpid, corpsecret, Some(request.peer))?;
    Ok(json!({
        "errcode": 0,
        "errmsg": "ok",
        "access_token": grant.token,
        "expires_in": grant.expires_in,
    }))
}

/// Counts a token call out of flight when its answer is ready, or when
/// it is dropped with its connection.
struct InFlight<'a>(&'a Simulator);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().token_calls_in_flight -= 1;
    }
}

/// WeChat's success body has no errcode at all.
fn wechat_body(grant: Grant) -> Value {
    json!({ "access_token": grant.token, "expires_in": grant.expires_in })
}
