//! WeChat's diagnostics for operators: `openapi/quota/get` (an API's daily
//! quota, from the simulator's real counters), `clear_quota` and
//! `clear_quota/v2` (reset every daily quota of the account, 10 times a
//! calendar month, 48006 past that) and `openapi/rid/get` (what the call
//! behind an error's `rid` was).

use hyper::{Method, Response};
use serde_json::{json, Map, Value};

use super::app_token;
use super::params::{self, get};
use super::reply::{self, Body};
use super::request::SimRequest;
use super::rids::RidMiss;
use super::wx_error::WxError;
use super::{Endpoint, Simulator};

pub(crate) fn handle(sim: &Simulator, endpoint: Endpoint, request: &SimRequest) -> Response<Body> {
    reply::api_answer(endpoint, answer(sim, endpoint, request))
}

fn answer(sim: &Simulator, endpoint: Endpoint, request: &SimRequest) -> Result<Value, WxError> {
    let query = params::parse_query(&request.query);
    // quota/get has long answered GET with a query too; the rest are POST.
    let get_allowed = endpoint == Endpoint::QuotaGet && request.method == Method::GET;
    if request.method != Method::POST && !get_allowed {
        return Err(WxError::wechat(43002, "require POST method"));
    }
    if endpoint == Endpoint::ClearQuotaV2 {
        return clear_quota_v2(sim, &query, request);
    }
    let token = app_token::check(sim, get(&query, "access_token"))?;
    let owner = sim
        .lock()
        .tokens
        .owner(token)
        .map(str::to_owned)
        .ok_or_else(|| WxError::from_code(40001))?;
    match endpoint {
        Endpoint::QuotaGet => {
            let cgi_path = if request.method == Method::GET {
                get(&query, "cgi_path").map(str::to_owned)
            } else {
                json_field(request, "cgi_path")?
            };
            let cgi_path = cgi_path.ok_or_else(|| WxError::wechat(40097, "invalid args"))?;
            quota_get(sim, &owner, &cgi_path)
        }
        Endpoint::ClearQuota => {
            let appid = json_field(request, "appid")?
                .ok_or_else(|| WxError::wechat(41002, "appid missing"))?;
            if appid != owner {
                return Err(WxError::wechat(40013, "invalid appid"));
            }
            clear(sim, &appid)
        }
        Endpoint::RidGet => {
            let rid = json_field(request, "rid")?
                .filter(|rid| is_rid_shaped(rid))
                .ok_or_else(|| WxError::wechat(76002, "rid is error"))?;
            let state = sim.lock();
            match state.rids.lookup(&rid, &owner, state.clock.unix_secs()) {
                Ok(record) => {
                    Ok(json!({ "errcode": 0, "errmsg": "ok", "request": record.to_json() }))
                }
                Err(RidMiss::NotFound) => Err(WxError::wechat(76001, "rid not found")),
                Err(RidMiss::OtherAccount) => Err(WxError::wechat(
                    76003,
                    "could not query this rid,no permission",
                )),
            }
        }
        // Routing only sends these four here.
        _ => Err(WxError::from_code(-1)),
    }
}

fn quota_get(sim: &Simulator, appid: &str, cgi_path: &str) -> Result<Value, WxError> {
    let (daily_limit, used) = sim
        .lock()
        .quota_of(appid, cgi_path)
        .ok_or_else(|| WxError::wechat(76021, "cgi_path not found, please check"))?;
    Ok(json!({
        "errcode": 0,
        "errmsg": "ok",
        "quota": { "daily_limit": daily_limit, "used": used, "remain": daily_limit.saturating_sub(used) },
    }))
}

/// `clear_quota/v2`: appid and appsecret in the query or a form body,
/// for when no token can be had.
fn clear_quota_v2(
    sim: &Simulator,
    query: &[(String, String)],
    request: &SimRequest,
) -> Result<Value, WxError> {
    let form = params::parse_query(&String::from_utf8_lossy(&request.body));
    let param = |key: &str| get(query, key).or_else(|| get(&form, key));
    let appid = param("appid").ok_or_else(|| WxError::wechat(41002, "appid missing"))?;
    let secret = param("appsecret").ok_or_else(|| WxError::wechat(41004, "appsecret missing"))?;
    sim.lock().check_wechat_account(appid, secret)?;
    clear(sim, appid)
}

fn clear(sim: &Simulator, appid: &str) -> Result<Value, WxError> {
    sim.lock().clear_quota(appid)?;
    Ok(json!({ "errcode": 0, "errmsg": "ok" }))
}

/// A string field of the JSON body; 47001 when the body is not JSON.
fn json_field(request: &SimRequest, key: &str) -> Result<Option<String>, WxError> {
    let body: Map<String, Value> = serde_json::from_slice(&request.body)
        .map_err(|_| WxError::wechat(47001, "data format error"))?;
    Ok(body.get(key).and_then(Value::as_str).map(str::to_owned))
}

/// WeChat's rids: hex groups joined by dashes.
fn is_rid_shaped(rid: &str) -> bool {
    !rid.is_empty() && rid.len() <= 64 && rid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}
