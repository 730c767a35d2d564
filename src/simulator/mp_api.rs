//! A few Official Account APIs real SDKs call on the app token:
//! `cgi-bin/user/info`, `cgi-bin/message/custom/send` and
//! `cgi-bin/getcallbackip`. Each checks the app token as `tcb/*` does, and
//! an openid against the users of the token's own app (40003). And
//! `cgi-bin/get_api_domain_ip`, which WeChat and WeCom both serve, so it
//! takes a valid token of either.

use hyper::{Method, Response};
use serde_json::{json, Map, Value};

use super::app_token;
use super::params::{self, get};
use super::reply::{self, Body};
use super::request::SimRequest;
use super::wx_error::WxError;
use super::{Endpoint, Simulator};

/// The message types `custom/send` accepts.
const MSG_TYPES: [&str; 10] = [
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "mpnews",
    "msgmenu",
    "wxcard",
    "miniprogrampage",
];

pub(crate) fn handle(sim: &Simulator, endpoint: Endpoint, request: &SimRequest) -> Response<Body> {
    reply::api_answer(endpoint, answer(sim, endpoint, request))
}

fn answer(sim: &Simulator, endpoint: Endpoint, request: &SimRequest) -> Result<Value, WxError> {
    let query = params::parse_query(&request.query);
    if endpoint == Endpoint::GetApiDomainIp {
        app_token::check_any_kind(sim, get(&query, "access_token"))?;
        return Ok(json!({ "ip_list": ["101.89.47.18", "101.91.34.103"] }));
    }
    let token = app_token::check(sim, get(&query, "access_token"))?;
    match endpoint {
        Endpoint::GetCallbackIp => Ok(json!({
            "ip_list": ["101.226.62.77", "101.226.62.78", "101.226.62.79", "101.226.62.80"],
        })),
        Endpoint::UserInfo => {
            let openid =
                get(&query, "openid").ok_or_else(|| WxError::wechat(41009, "missing openid"))?;
            check_openid(sim, token, openid)?;
            let lang = get(&query, "lang").unwrap_or("zh_CN");
            Ok(json!({
                "subscribe": 1,
                "openid": openid,
                "language": lang,
                "subscribe_time": 1_700_000_000,
                "remark": "",
                "groupid": 0,
                "tagid_list": [],
                "subscribe_scene": "ADD_SCENE_QR_CODE",
                "qr_scene": 0,
                "qr_scene_str": "",
            }))
        }
        Endpoint::CustomSend => {
            if request.method != Method::POST {
                return Err(WxError::wechat(43002, "require POST method"));
            }
            let body: Map<String, Value> = serde_json::from_slice(&request.body)
                .map_err(|_| WxError::wechat(47001, "data format error"))?;
            let touser = body
                .get("touser")
                .and_then(Value::as_str)
                .ok_or_else(|| WxError::wechat(40003, "invalid openid"))?;
            check_openid(sim, token, touser)?;
            let msgtype = body.get("msgtype").and_then(Value::as_str);
            if !msgtype.is_some_and(|t| MSG_TYPES.contains(&t)) {
                return Err(WxError::wechat(40008, "invalid message type"));
            }
            Ok(json!({ "errcode": 0, "errmsg": "ok" }))
        }
        // Routing only sends these here.
        _ => Err(WxError::from_code(-1)),
    }
}

/// 40003 unless `openid` is a user of the app that owns `token`.
fn check_openid(sim: &Simulator, token: &str, openid: &str) -> Result<(), WxError> {
    let state = sim.lock();
    match state.tokens.owner(token) {
        Some(appid) if state.users.knows(appid, openid) => Ok(()),
        _ => Err(WxError::wechat(40003, "invalid openid")),
    }
}
