//! The WeChat-compatible listener (`[server] wechat_compat_listen`): WeChat's
//! own API shape, so an unchanged SDK works once its API base URL points
//! here. The token endpoints (`/cgi-bin/token`, `/cgi-bin/stable_token`,
//! WeCom's `/cgi-bin/gettoken`) answer from the broker's cache and never
//! call WeChat; any other path goes through the shared proxy with the
//! app's current token in place of the one the client holds.
//!
//! No client header is required (SDKs cannot send one), so this listener
//! belongs on loopback. With uid or gid clients configured, a caller is
//! the local user owning its socket (see `tcp_peer`) and gets what its
//! entries allow, as on the Unix socket: the apps, platforms and suites
//! they name and, through the forwarded calls, the paths their `apis`
//! list. Errors are WeChat-shaped, `{"errcode":..,"errmsg":..}` with HTTP
//! 200, as WeChat sends its own.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use serde::Deserialize;
use tracing::debug;

use super::api_error::ApiError;
use super::body_deadline::RequestBody;
use super::proxy::{query_param, Caller, Forward, ProxyError, PROXY_BODY_LIMIT};
use super::request::{check_not_relayed, read_body, TOKEN_BODY_LIMIT};
use super::respond::{self, Body};
use super::state::ApiState;
use super::wechat_path::{self, Carries, ForwardPath, PathFamily};
use crate::config::{AppKind, Grant};
use crate::credential::TicketKind;
use crate::engine::{AppHandle, LastError, TokenError};
use crate::identity::{Access, Act, Peer, Resource};
use crate::wechat::is_token_rejected;

/// Who calls on a compatible listener, for the call audit: the client
/// its peer was identified as, if any.
pub(super) fn caller(access: &Access) -> Caller<'_> {
    Caller {
        client: access.client(),
        listener: "compat",
    }
}

/// [`Access::check`], its refusal WeChat-shaped: errcode -1 (a code no
/// SDK retries at once), the reason as `/v1` gives it.
pub(super) fn check(
    access: &Access,
    resource: Resource<'_>,
    act: Act<'_>,
) -> Result<(), (i64, String)> {
    access.check(resource, act).map_err(|denied| {
        let refusal = ApiError::denied(resource, act, denied);
        let code = refusal.code();
        (-1, format!("system error (wxbroker: {code}: {refusal})"))
    })
}

/// The listener's state: the API's, and for a per-app listener
/// (`[[apps]] compat_listen`) the one app it serves.
pub struct CompatState {
    api: Arc<ApiState>,
    pinned: Option<String>,
}

/// A WeChat error answer.
struct WxError {
    errcode: i64,
    errmsg: String,
}

impl WxError {
    fn new(errcode: i64, errmsg: impl Into<String>) -> Self {
        WxError {
            errcode,
            errmsg: errmsg.into(),
        }
    }

    fn from_proxy(app: &str, err: &ProxyError) -> Self {
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

    fn into_response(self) -> Response<Body> {
        respond::wechat_error(self.errcode, &self.errmsg)
    }
}

fn allowed(access: &Access, resource: Resource<'_>, act: Act<'_>) -> Result<(), WxError> {
    check(access, resource, act).map_err(|(errcode, errmsg)| WxError::new(errcode, errmsg))
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

impl CompatState {
    pub fn new(api: Arc<ApiState>, pinned: Option<String>) -> Self {
        CompatState { api, pinned }
    }

    pub(super) fn api(&self) -> &ApiState {
        &self.api
    }

    /// The pinned app of a per-app listener: `None` on the shared one;
    /// an error when a reload removed the app.
    fn pinned(&self) -> Option<Result<AppHandle, WxError>> {
        let name = self.pinned.as_deref()?;
        Some(
            self.api
                .broker
                .apps()
                .iter()
                .find(|app| app.name() == name)
                .cloned()
                .ok_or_else(|| {
                    WxError::new(
                        -1,
                        format!("system error (wxbroker: app '{name}' is no longer configured)"),
                    )
                }),
        )
    }
}

pub async fn handle(state: &CompatState, request: Request<RequestBody>) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (route, response) = dispatch(state, &parts, body).await;
    let metrics = &state.api.metrics;
    let status = response.status();
    metrics
        .requests
        .with_label_values(&["compat", route, crate::metrics::status_label(status)])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    debug!(
        listener = "compat",
        route,
        status = status.as_u16(),
        "request"
    );
    response
}

async fn dispatch(
    state: &CompatState,
    request: &http::request::Parts,
    body: RequestBody,
) -> (&'static str, Response<Body>) {
    // Judged as WeChat would judge the path, so no spelling of a token
    // endpoint slips through to the proxy (section 17).
    let family = wechat_path::classify(request.uri.path());
    let route = match family {
        PathFamily::ClassicToken => "/cgi-bin/token",
        PathFamily::StableToken => "/cgi-bin/stable_token",
        PathFamily::WecomToken => "/cgi-bin/gettoken",
        PathFamily::Ticket => "/cgi-bin/ticket",
        _ => "/{path}",
    };
    if let Err(err) = check_not_relayed(&request.headers) {
        let refused = match err {
            ApiError::ForwardingLoop => WxError::new(
                -1,
                "system error (wxbroker: forwarding loop: this request was already forwarded by a wxbroker; point the app's api_base or [upstream] connect_to at WeChat, not at a broker)",
            ),
            _ => WxError::new(
                40164,
                "invalid ip: requests relayed by a proxy (X-Forwarded-For or Forwarded) are refused",
            ),
        };
        return (route, refused.into_response());
    }
    // Who asks: with uid or gid clients, the local user owning the
    // connection's socket (nobody, when it could not be identified).
    let access = state
        .api
        .clients
        .load()
        .local(request.extensions.get::<Peer>().copied());
    let body = match super::compat_platform::handle(&state.api, &access, request, body).await {
        Ok(answered) => return answered,
        Err(body) => body,
    };
    let body = match super::compat_suite::handle(&state.api, &access, request, body).await {
        Ok(answered) => return answered,
        Err(body) => body,
    };
    let query = request.uri.query().unwrap_or("");
    let asked = Asked {
        state,
        access: &access,
    };
    let answer = match route {
        "/cgi-bin/token" => classic_token(asked, &request.method, query).await,
        "/cgi-bin/stable_token" => stable_token(asked, &request.method, body).await,
        "/cgi-bin/gettoken" => wecom_token(asked, &request.method, query).await,
        "/cgi-bin/ticket" => ticket(asked, request, body).await,
        _ => proxied(asked, request, body, family.carries()).await,
    };
    (route, answer.unwrap_or_else(WxError::into_response))
}

/// A request's listener and what its caller may do.
#[derive(Clone, Copy)]
struct Asked<'a> {
    state: &'a CompatState,
    access: &'a Access,
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
    check_grant_type(query_param(query, "grant_type").as_deref())?;
    let appid = query_param(query, "appid").filter(|appid| !appid.is_empty());
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
    let corpid = query_param(query, "corpid").filter(|corpid| !corpid.is_empty());
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
    let apps = state.api.broker.apps();
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
    allowed(asked.access, Resource::App(app.name()), Act::Read)?;
    let token = app
        .token(asked.state.api.token_wait)
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
        query_param(query, "type").as_deref(),
    );
    let Some(handle) = kind.and_then(|kind| app.ticket(kind)) else {
        return proxied(asked, request, body, Carries::AppToken).await;
    };
    if request.method != Method::GET {
        return Err(WxError::new(43001, "require GET method"));
    }
    allowed(asked.access, Resource::App(app.name()), Act::Read)?;
    let ticket = handle
        .token(state.api.token_wait)
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
    request: &http::request::Parts,
    body: RequestBody,
    carries: Carries,
) -> Result<Response<Body>, WxError> {
    let state = asked.state;
    let query = request.uri.query();
    let path = request.uri.path();
    let app = app_for_call(state, asked.access, query.unwrap_or(""), carries)?;
    let judged = ForwardPath::new(path);
    allowed(
        asked.access,
        Resource::App(app.name()),
        Act::Forward(&judged),
    )?;
    let forward = Forward {
        method: &request.method,
        path: path.strip_prefix('/').unwrap_or(path),
        query,
        headers: &request.headers,
    };
    state
        .api
        .proxy
        .forward(&app, &caller(asked.access), forward, body)
        .await
        .map_err(|err| WxError::from_proxy(app.name(), &err))
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
    let apps = state.api.broker.apps();
    let appid = query_param(query, "appid").filter(|appid| !appid.is_empty());
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
    let held = query_param(query, "access_token").filter(|token| !token.is_empty());
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
