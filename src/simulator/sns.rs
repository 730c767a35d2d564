//! The user-facing `/sns/*` APIs: web OAuth (网页授权: code for a user
//! token, refresh, `userinfo`, `auth`) and the Mini Program login
//! (`jscode2session`). The exchanges check the app's secret like the
//! app-token endpoints do (40013, 40125) and then the single-use code
//! (40029, 40163); `userinfo` and `auth` take a USER token only, so an app
//! token there is 40001 like any token WeChat never issued to a user.

use hyper::Response;
use serde_json::{json, Value};

use super::params::{self, get};
use super::reply::{self, Body};
use super::request::SimRequest;
use super::users::{Scope, TokenOwner, UserGrant};
use super::wx_error::WxError;
use super::{Endpoint, Simulator};

pub(crate) fn handle(sim: &Simulator, endpoint: Endpoint, request: &SimRequest) -> Response<Body> {
    let query = params::parse_query(&request.query);
    let answer = match endpoint {
        Endpoint::OAuthAccessToken => oauth_access_token(sim, &query),
        Endpoint::OAuthRefreshToken => oauth_refresh_token(sim, &query),
        Endpoint::SnsUserInfo => userinfo(sim, &query),
        Endpoint::SnsAuth => auth(sim, &query),
        Endpoint::JsCode2Session => jscode2session(sim, &query),
        // Routing only sends `/sns/*` endpoints here.
        _ => Err(WxError::from_code(-1)),
    };
    reply::api_answer(endpoint, answer)
}

type Query = [(String, String)];

fn required<'a>(query: &'a Query, key: &str, errcode: i64) -> Result<&'a str, WxError> {
    get(query, key).ok_or_else(|| WxError::wechat(errcode, &format!("{key} missing")))
}

fn grant_type(query: &Query, expected: &str) -> Result<(), WxError> {
    if get(query, "grant_type") == Some(expected) {
        Ok(())
    } else {
        Err(WxError::wechat(40002, "invalid grant_type"))
    }
}

/// `GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code`
fn oauth_access_token(sim: &Simulator, query: &Query) -> Result<Value, WxError> {
    let appid = required(query, "appid", 41002)?;
    let secret = required(query, "secret", 41004)?;
    let code = required(query, "code", 41008)?;
    grant_type(query, "authorization_code")?;
    let mut state = sim.lock();
    state.check_wechat_account(appid, secret)?;
    let now = state.clock.now();
    let grant = state.users.exchange_oauth_code(appid, code, now)?;
    Ok(user_grant_body(&grant))
}

/// `GET /sns/oauth2/refresh_token?appid&grant_type=refresh_token&refresh_token`:
/// no secret, the refresh token is the credential.
fn oauth_refresh_token(sim: &Simulator, query: &Query) -> Result<Value, WxError> {
    let appid = required(query, "appid", 41002)?;
    let refresh_token = required(query, "refresh_token", 41003)?;
    grant_type(query, "refresh_token")?;
    let mut state = sim.lock();
    let now = state.clock.now();
    let grant = state.users.refresh(appid, refresh_token, now)?;
    Ok(user_grant_body(&grant))
}

/// `GET /sns/userinfo?access_token=USER_TOKEN&openid&lang`
fn userinfo(sim: &Simulator, query: &Query) -> Result<Value, WxError> {
    let owner = check_user_token(sim, query)?;
    if owner.scope != Scope::UserInfo {
        return Err(WxError::wechat(48001, "api unauthorized"));
    }
    let lang = get(query, "lang").unwrap_or("zh_CN");
    Ok(json!({
        "openid": owner.openid,
        "nickname": format!("user-{}", &owner.openid[owner.openid.len() - 6..]),
        "sex": 0,
        "language": lang,
        "city": "",
        "province": "",
        "country": "",
        "headimgurl": "https://thirdwx.qlogo.cn/mmopen/vi_32/simulated/132",
        "privilege": [],
    }))
}

/// `GET /sns/auth?access_token=USER_TOKEN&openid`: is this user token good?
fn auth(sim: &Simulator, query: &Query) -> Result<Value, WxError> {
    check_user_token(sim, query)?;
    Ok(json!({ "errcode": 0, "errmsg": "ok" }))
}

/// `GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code`
fn jscode2session(sim: &Simulator, query: &Query) -> Result<Value, WxError> {
    let appid = required(query, "appid", 41002)?;
    let secret = required(query, "secret", 41004)?;
    let js_code = required(query, "js_code", 41008)?;
    grant_type(query, "authorization_code")?;
    let mut state = sim.lock();
    state.check_wechat_account(appid, secret)?;
    let now = state.clock.now();
    let session = state.users.exchange_js_code(appid, js_code, now)?;
    Ok(json!({ "session_key": session.session_key, "openid": session.openid }))
}

/// The user token's owner, when the token is valid and the `openid` sent is
/// that user's (40003 otherwise).
fn check_user_token(sim: &Simulator, query: &Query) -> Result<TokenOwner, WxError> {
    let token = required(query, "access_token", 41001)?;
    let openid = required(query, "openid", 41009)?;
    let state = sim.lock();
    let owner = state.users.check_token(token, state.clock.now())?;
    if owner.openid != openid {
        return Err(WxError::wechat(40003, "invalid openid"));
    }
    Ok(owner)
}

fn user_grant_body(grant: &UserGrant) -> Value {
    json!({
        "access_token": grant.access_token,
        "expires_in": grant.expires_in,
        "refresh_token": grant.refresh_token,
        "openid": grant.openid,
        "scope": grant.scope.as_str(),
    })
}
