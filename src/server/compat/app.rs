//! An app's calls on the compatible listener (DESIGN.md section 12): its
//! token endpoints and JS-SDK tickets answered from the caches, and every
//! other call forwarded with its current token (or, for the `/sns/*`
//! calls that carry them, its secret or the user's token).

use http::{Method, Response};
use serde::Deserialize;

use super::answer::WxError;
use super::context::{Asked, CompatState};
use crate::config::{AppKind, Grant};
use crate::credential::TicketKind;
use crate::engine::{AppHandle, LastError, TokenError};
use crate::http_io::query;
use crate::http_io::RequestBody;
use crate::identity::{Access, Act, Resource};
use crate::server::proxy::{ProxyError, PROXY_BODY_LIMIT};
use crate::server::request::{read_body, TOKEN_BODY_LIMIT};
use crate::server::respond::{self, Body};
use crate::wechat::is_token_rejected;
use crate::wechat_path::{self, Carries, PathFamily};

/// The route label of an app's call: its token endpoint or ticket
/// family, else `/{path}`. Judged as WeChat would judge the path, so no
/// spelling of a token endpoint slips through to the proxy (section 17).
pub(super) fn route(request: &http::request::Parts) -> &'static str {
    route_of(wechat_path::classify(request.uri.path()))
}

fn route_of(family: PathFamily) -> &'static str {
    match family {
        PathFamily::ClassicToken => "/cgi-bin/token",
        PathFamily::StableToken => "/cgi-bin/stable_token",
        PathFamily::WecomToken => "/cgi-bin/gettoken",
        PathFamily::Ticket => "/cgi-bin/ticket",
        _ => "/{path}",
    }
}

/// The answer to an app's call, and its route label.
pub(super) async fn handle(asked: Asked<'_>, body: RequestBody) -> (&'static str, Response<Body>) {
    let request = asked.request;
    let family = wechat_path::classify(request.uri.path());
    let route = route_of(family);
    let query = asked.query();
    let answer = match family {
        PathFamily::ClassicToken => classic_token(asked, &request.method, query).await,
        PathFamily::StableToken => stable_token(asked, &request.method, body).await,
        PathFamily::WecomToken => wecom_token(asked, &request.method, query).await,
        PathFamily::Ticket => ticket(asked, request, body).await,
        _ => proxied(asked, body, family.carries()).await,
    };
    (route, answer.unwrap_or_else(WxError::into_response))
}

/// [`WxError`] of a forwarded call for `app` that failed.
fn from_proxy(app: &str, err: &ProxyError) -> WxError {
    match err {
        ProxyError::BadPath(why) => WxError::new(40066, format!("invalid url: {why}")),
        ProxyError::CredentialEndpoint(endpoint) => WxError::new(
            48001,
            format!("api unauthorized: wxbroker never forwards {endpoint}"),
        ),
        ProxyError::Withheld(withheld) => {
            WxError::new(-1, format!("system error (wxbroker: refused: {withheld})"))
        }
        ProxyError::TooLarge => WxError::new(
            45002,
            format!("content size out of limit: the body exceeds {PROXY_BODY_LIMIT} bytes"),
        ),
        ProxyError::BadBody(message) => WxError::new(-1, format!("system error: {message}")),
        ProxyError::BodyTimeout => {
            WxError::new(-1, "system error: the request body did not arrive in time")
        }
        ProxyError::Token(err) => no_token(app, err),
        ProxyError::Timeout(_) => WxError::new(-1, "system error: upstream timeout"),
        ProxyError::Upstream(message) => {
            WxError::new(-1, format!("system error: upstream unreachable: {message}"))
        }
        ProxyError::TokenRejected {
            errcode,
            errmsg,
            retry_after,
        } => WxError::new(
            -1,
            format!(
                "system error (wxbroker: WeChat rejected the broker's token for app '{app}' with errcode {errcode}: {errmsg}; a new token can be fetched in {retry_after}s, retry then)"
            ),
        ),
    }
}

/// Why the broker has no token for `app`, WeChat-shaped. An app held by
/// an upstream error answers with WeChat's own errcode and errmsg, so the
/// SDK raises the real cause; but 40001, 40014 and 42001 (WeChat answers
/// a wrong secret with 40001) become -1 quoting them, since SDKs answer
/// those by refetching and retrying at once.
fn no_token(app: &str, err: &TokenError) -> WxError {
    no_credential(app, "token", err)
}

/// [`no_token`] for any credential, `what` naming it.
fn no_credential(app: &str, what: &str, err: &TokenError) -> WxError {
    let TokenError::Unavailable {
        retry_after,
        last_error,
    } = err
    else {
        return WxError::new(-1, "system error (wxbroker: shutting down; retry later)");
    };
    match last_error {
        Some(LastError {
            errcode: Some(errcode),
            errmsg,
            ..
        }) if is_token_rejected(*errcode) => WxError::new(
            -1,
            format!(
                "system error (wxbroker: app '{app}' has no {what}: WeChat answered errcode {errcode}: {errmsg}; next attempt in {retry_after}s)"
            ),
        ),
        Some(LastError {
            errcode: Some(errcode),
            errmsg,
            ..
        }) => WxError::new(
            *errcode,
            format!("{errmsg} (wxbroker: app '{app}' has no {what}; next attempt in {retry_after}s)"),
        ),
        Some(LastError { errmsg, .. }) => WxError::new(
            -1,
            format!("system error (wxbroker: app '{app}' has no {what}: {errmsg}; next attempt in {retry_after}s)"),
        ),
        None => WxError::new(
            -1,
            format!("system error (wxbroker: app '{app}' has no valid {what} yet; retry in {retry_after}s)"),
        ),
    }
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=A[&secret=..]`;
/// the secret is ignored.
async fn classic_token(
    asked: Asked<'_>,
    method: &Method,
    query: &str,
) -> Result<Response<Body>, WxError> {
    let state = asked.state;
    if method != Method::GET {
        return Err(WxError::new(43001, "require GET method"));
    }
    if let Some(app) = state.pinned() {
        return serve_token(asked, &app?, false).await;
    }
    check_grant_type(query::param(query, "grant_type").as_deref())?;
    let appid = query::param(query, "appid").filter(|appid| !appid.is_empty());
    let appid = appid.ok_or_else(|| WxError::new(41002, "appid missing"))?;
    let app = find_by_appid(state, &appid, AppKind::Wechat, Some(Grant::Classic))
        .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
    serve_token(asked, &app, false).await
}

#[derive(Deserialize)]
struct StableRequest {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    appid: Option<String>,
}

/// `POST /cgi-bin/stable_token` with `{"grant_type":..,"appid":..}`. The
/// secret is ignored, and so is `force_refresh`: the broker alone decides
/// when to spend one of the day's forced refreshes.
async fn stable_token(
    asked: Asked<'_>,
    method: &Method,
    body: RequestBody,
) -> Result<Response<Body>, WxError> {
    let state = asked.state;
    if method != Method::POST {
        return Err(WxError::new(43002, "require POST method"));
    }
    if let Some(app) = state.pinned() {
        return serve_token(asked, &app?, false).await;
    }
    let body = read_body(body, TOKEN_BODY_LIMIT)
        .await
        .map_err(|err| WxError::new(47001, format!("data format error: {err}")))?;
    let request: StableRequest =
        serde_json::from_slice(&body).map_err(|_| WxError::new(47001, "data format error"))?;
    check_grant_type(request.grant_type.as_deref())?;
    let appid = request.appid.filter(|appid| !appid.is_empty());
    let appid = appid.ok_or_else(|| WxError::new(41002, "appid missing"))?;
    let app = find_by_appid(state, &appid, AppKind::Wechat, Some(Grant::Stable))
        .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
    serve_token(asked, &app, false).await
}

/// WeCom's `GET /cgi-bin/gettoken?corpid=C[&corpsecret=..]`.
async fn wecom_token(
    asked: Asked<'_>,
    method: &Method,
    query: &str,
) -> Result<Response<Body>, WxError> {
    let state = asked.state;
    if method != Method::GET {
        return Err(WxError::new(43001, "require GET method"));
    }
    if let Some(app) = state.pinned() {
        return serve_token(asked, &app?, true).await;
    }
    let corpid = query::param(query, "corpid").filter(|corpid| !corpid.is_empty());
    let corpid = corpid.ok_or_else(|| WxError::new(41002, "corpid missing"))?;
    let app = find_by_appid(state, &corpid, AppKind::Wecom, None)
        .ok_or_else(|| WxError::new(40013, "invalid corpid"))?;
    serve_token(asked, &app, true).await
}

fn check_grant_type(grant_type: Option<&str>) -> Result<(), WxError> {
    match grant_type {
        Some("client_credential") => Ok(()),
        _ => Err(WxError::new(40002, "invalid grant_type")),
    }
}

/// The app with this appid (or corpid) and kind, preferring the grant the
/// endpoint implies when both grants of one appid are configured.
fn find_by_appid(
    state: &CompatState,
    appid: &str,
    kind: AppKind,
    grant: Option<Grant>,
) -> Option<AppHandle> {
    let apps = state.api().broker.apps();
    let matching = |app: &&AppHandle| app.config().appid == appid && app.config().kind == kind;
    let preferred = apps
        .iter()
        .find(|app| matching(app) && grant.is_none_or(|grant| grant == app.config().grant));
    preferred.or_else(|| apps.iter().find(matching)).cloned()
}

async fn serve_token(
    asked: Asked<'_>,
    app: &AppHandle,
    wecom: bool,
) -> Result<Response<Body>, WxError> {
    asked.allow(Resource::App(app.name()), Act::Read)?;
    let token = app
        .token(asked.api().token_wait)
        .await
        .map_err(|err| no_token(app.name(), &err))?;
    Ok(respond::wechat_token(&token, app.now_ms(), wecom))
}

/// A ticket endpoint: answered from the ticket cache when the app owns
/// that kind, else forwarded as any app-token call (section 12).
async fn ticket(
    asked: Asked<'_>,
    request: &http::request::Parts,
    body: RequestBody,
) -> Result<Response<Body>, WxError> {
    let state = asked.state;
    let query = request.uri.query().unwrap_or("");
    let app = app_for_call(state, asked.access, query, Carries::AppToken)?;
    let kind = ticket_kind(
        app.config().kind,
        &wechat_path::normalise(request.uri.path()),
        query::param(query, "type").as_deref(),
    );
    let Some(handle) = kind.and_then(|kind| app.ticket(kind)) else {
        return proxied(asked, body, Carries::AppToken).await;
    };
    if request.method != Method::GET {
        return Err(WxError::new(43001, "require GET method"));
    }
    asked.allow(Resource::App(app.name()), Act::Read)?;
    let ticket = handle
        .token(state.api().token_wait)
        .await
        .map_err(|err| no_credential(app.name(), "ticket", &err))?;
    Ok(respond::wechat_ticket(&ticket, app.now_ms()))
}

/// The ticket kind a (normalised) ticket path asks for, on an app of
/// `kind`: WeChat's `getticket?type=jsapi|wx_card`, WeCom's
/// `get_jsapi_ticket` (the corp's) and `ticket/get?type=agent_config`.
fn ticket_kind(kind: AppKind, path: &str, type_: Option<&str>) -> Option<TicketKind> {
    match (kind, path, type_) {
        (AppKind::Wechat, "cgi-bin/ticket/getticket", Some("jsapi")) => Some(TicketKind::Jsapi),
        (AppKind::Wechat, "cgi-bin/ticket/getticket", Some("wx_card")) => Some(TicketKind::WxCard),
        (AppKind::Wecom, "cgi-bin/get_jsapi_ticket", _) => Some(TicketKind::Jsapi),
        (AppKind::Wecom, "cgi-bin/ticket/get", Some("agent_config")) => {
            Some(TicketKind::AgentConfig)
        }
        _ => None,
    }
}

/// Any other path: forwarded to the app's `api_base` with its token,
/// when the caller may call that path of that app.
async fn proxied(
    asked: Asked<'_>,
    body: RequestBody,
    carries: Carries,
) -> Result<Response<Body>, WxError> {
    let app = app_for_call(asked.state, asked.access, asked.query(), carries)?;
    let forward = asked.forward();
    asked.allow(Resource::App(app.name()), Act::Forward(&forward.judged))?;
    asked
        .api()
        .proxy
        .forward(&app, &asked.caller(), forward, body)
        .await
        .map_err(|err| from_proxy(app.name(), &err))
}

/// Which app a forwarded call is for: the one named by an `appid` query
/// parameter, else the one whose token (current or lately served) the
/// client holds, else the only app. A secret-bearing call goes out with
/// that app's secret, so it must name a configured app (or there must be
/// only one); a user-token call only needs an `api_base`, any app's the
/// caller may read.
fn app_for_call(
    state: &CompatState,
    access: &Access,
    query: &str,
    carries: Carries,
) -> Result<AppHandle, WxError> {
    if let Some(app) = state.pinned() {
        return app;
    }
    let apps = state.api().broker.apps();
    let appid = query::param(query, "appid").filter(|appid| !appid.is_empty());
    if let Some(appid) = &appid {
        if let Some(app) = apps.iter().find(|app| app.config().appid == *appid) {
            return Ok(app.clone());
        }
    }
    match carries {
        Carries::AppSecret => {
            return match (apps.as_slice(), appid) {
                ([only], None) => Ok(only.clone()),
                (_, Some(_)) => Err(WxError::new(
                    40013,
                    "invalid appid (wxbroker: no configured app has this appid, so its secret cannot be put in)",
                )),
                (_, None) => Err(WxError::new(41002, "appid missing")),
            };
        }
        Carries::UserToken => {
            let readable = |app: &&AppHandle| access.allows(app.name());
            let wechat = |app: &&AppHandle| app.config().kind == AppKind::Wechat;
            return (apps.iter())
                .find(|app| readable(app) && wechat(app))
                .or_else(|| apps.iter().find(readable))
                .or_else(|| apps.iter().find(wechat))
                .or(apps.first())
                .cloned()
                .ok_or_else(|| WxError::new(-1, "system error (wxbroker: no app configured)"));
        }
        Carries::AppToken => {}
    }
    let held = query::param(query, "access_token").filter(|token| !token.is_empty());
    if let Some(held) = &held {
        if let Some(app) = apps.iter().find(|app| app.knows(held)) {
            return Ok(app.clone());
        }
    }
    match (apps.as_slice(), held) {
        ([only], _) => Ok(only.clone()),
        (_, Some(_)) => Err(WxError::new(
            40001,
            "invalid credential, access_token is invalid or not latest: no configured app holds this token",
        )),
        (_, None) => Err(WxError::new(41001, "access_token missing")),
    }
}
