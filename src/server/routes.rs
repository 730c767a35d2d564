//! The token API (DESIGN.md section 5), the same on TCP and on the Unix
//! socket: routing, the TCP-only client header rule, and the handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::json;
use tracing::debug;

use super::api_error::ApiError;
use super::body_deadline::RequestBody;
use super::diagnostics;
use super::proxy::{Caller, Forward, Proxy};
use super::respond::{self, Body};
use super::ticket_routes;
use super::wechat_path::ForwardPath;
use crate::broker::Broker;
use crate::diagnostics::Diagnostics;
use crate::engine::{AppHandle, InvalidateOutcome, LastError};
use crate::identity::{Access, Act, Clients, Peer, Resource};
use crate::metrics::Metrics;
use crate::store::grant_label;
use prometheus::{Histogram, IntCounter};

/// Token routes take small JSON bodies only.
pub(super) const TOKEN_BODY_LIMIT: usize = 1024 * 1024;

/// What the API handlers share.
pub struct ApiState {
    pub broker: Broker,
    pub metrics: Metrics,
    pub token_wait: Duration,
    pub proxy: Proxy,
    /// Quota, quota resets and rid lookups (the operator's routes).
    pub diagnostics: std::sync::Arc<Diagnostics>,
    /// `[[clients]]`, replaced whole by a reload: which apps a remote
    /// client or a local peer may read.
    pub clients: Arc<ArcSwap<Clients>>,
    /// The remote clients' open watches: capped per client, ended by a
    /// reload that revokes the client.
    pub watches: Arc<super::Watches>,
    hot: HotMetrics,
}

impl ApiState {
    pub fn new(
        broker: Broker,
        metrics: Metrics,
        token_wait: Duration,
        proxy: Proxy,
        diagnostics: std::sync::Arc<Diagnostics>,
        watches_per_client: usize,
    ) -> Self {
        ApiState {
            hot: HotMetrics::new(&metrics),
            watches: Arc::new(super::Watches::new(&metrics, watches_per_client)),
            broker,
            metrics,
            token_wait,
            proxy,
            diagnostics,
            clients: Arc::default(),
        }
    }
}

const WXBROKER_CLIENT: HeaderName = HeaderName::from_static("wxbroker-client");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Every `route` label value, in [`Route::index`] order.
const ROUTE_TEMPLATES: [&str; 16] = [
    "/livez",
    "/readyz",
    "/v1/apps",
    "/v1/token",
    "/v1/apps/{app}/token",
    "/v1/apps/{app}/token/invalidate",
    "/v1/apps/{app}/proxy",
    "/v1/apps/{app}/tickets/{kind}",
    "/v1/apps/{app}/tickets/{kind}/invalidate",
    "/v1/apps/{app}/jssdk/config",
    diagnostics::TEMPLATES[0],
    diagnostics::TEMPLATES[1],
    diagnostics::TEMPLATES[2],
    "other",
    "/v1/platforms/{platform}",
    "/v1/suites/{suite}",
];
/// Where the operator's routes begin in [`ROUTE_TEMPLATES`].
const DIAGNOSTICS_INDEX: usize = 10;
const LISTENERS: [ListenerKind; 3] = [
    ListenerKind::Tcp {
        require_client_header: false,
    },
    ListenerKind::Unix,
    ListenerKind::Remote,
];

/// The metric children of the common case, resolved once: a 200 answer's
/// counter per listener and route, and each route's duration histogram.
/// The hot path then hashes no labels; other statuses take the general way.
struct HotMetrics {
    ok: Vec<IntCounter>,
    duration: Vec<Histogram>,
}

impl HotMetrics {
    fn new(metrics: &Metrics) -> Self {
        let ok = LISTENERS
            .iter()
            .flat_map(|listener| {
                ROUTE_TEMPLATES.iter().map(move |route| {
                    metrics
                        .requests
                        .with_label_values(&[listener.label(), route, "200"])
                })
            })
            .collect();
        let duration = ROUTE_TEMPLATES
            .iter()
            .map(|route| metrics.request_duration.with_label_values(&[route]))
            .collect();
        HotMetrics { ok, duration }
    }

    fn record(
        &self,
        metrics: &Metrics,
        listener: ListenerKind,
        route: usize,
        status: StatusCode,
        seconds: f64,
    ) {
        if status == StatusCode::OK {
            self.ok[listener.index() * ROUTE_TEMPLATES.len() + route].inc();
        } else {
            metrics
                .requests
                .with_label_values(&[
                    listener.label(),
                    ROUTE_TEMPLATES[route],
                    crate::metrics::status_label(status),
                ])
                .inc();
        }
        self.duration[route].observe(seconds);
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp {
        require_client_header: bool,
    },
    Unix,
    /// `remote_listen`: TLS, bearer-authenticated clients, token and
    /// ticket routes only (see `remote`).
    Remote,
}

impl ListenerKind {
    fn label(self) -> &'static str {
        match self {
            ListenerKind::Tcp { .. } => "tcp",
            ListenerKind::Unix => "unix",
            ListenerKind::Remote => "remote",
        }
    }

    fn index(self) -> usize {
        match self {
            ListenerKind::Tcp { .. } => 0,
            ListenerKind::Unix => 1,
            ListenerKind::Remote => 2,
        }
    }
}

/// A parsed path; the `&'static str` templates are the `route` label.
pub(super) enum Route<'a> {
    Livez,
    Readyz,
    Apps,
    DefaultToken,
    AppToken(&'a str),
    Invalidate(&'a str),
    /// The app, and the raw path below `/v1/apps/{app}/proxy/`.
    Proxy(&'a str, &'a str),
    /// The app and the ticket kind.
    Ticket(&'a str, &'a str),
    TicketInvalidate(&'a str, &'a str),
    JssdkConfig(&'a str),
    /// Quota, quota resets, rids: [`diagnostics`].
    Diagnostics(diagnostics::Route<'a>),
    NotFound,
    /// The path below `/v1/platforms/`.
    Platform(&'a str),
    /// The path below `/v1/suites/`.
    Suite(&'a str),
}

impl Route<'_> {
    pub(super) fn parse(path: &str) -> Route<'_> {
        if let Some(rest) = path.strip_prefix("/v1/platforms/") {
            return Route::Platform(rest);
        }
        if let Some(rest) = path.strip_prefix("/v1/suites/") {
            return Route::Suite(rest);
        }
        if let Some((app, rest)) = path
            .strip_prefix("/v1/apps/")
            .and_then(|rest| rest.split_once('/'))
        {
            if let Some(forwarded) = rest.strip_prefix("proxy") {
                if forwarded.is_empty() || forwarded.starts_with('/') {
                    return Route::Proxy(app, forwarded.strip_prefix('/').unwrap_or(""));
                }
            }
        }
        if let Some(route) = path
            .strip_prefix("/v1/apps/")
            .and_then(diagnostics::Route::parse)
        {
            return Route::Diagnostics(route);
        }
        let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("livez"), None, ..) => Route::Livez,
            (Some("readyz"), None, ..) => Route::Readyz,
            (Some("v1"), Some("apps"), None, ..) => Route::Apps,
            (Some("v1"), Some("token"), None, ..) => Route::DefaultToken,
            (Some("v1"), Some("apps"), Some(app), Some("token"), None, _) => Route::AppToken(app),
            (Some("v1"), Some("apps"), Some(app), Some("token"), Some("invalidate"), None) => {
                Route::Invalidate(app)
            }
            (Some("v1"), Some("apps"), Some(app), Some("tickets"), Some(kind), None) => {
                Route::Ticket(app, kind)
            }
            (
                Some("v1"),
                Some("apps"),
                Some(app),
                Some("tickets"),
                Some(kind),
                Some("invalidate"),
            ) if parts.next().is_none() => Route::TicketInvalidate(app, kind),
            (Some("v1"), Some("apps"), Some(app), Some("jssdk"), Some("config"), None) => {
                Route::JssdkConfig(app)
            }
            _ => Route::NotFound,
        }
    }

    /// The route's position in [`ROUTE_TEMPLATES`].
    fn index(&self) -> usize {
        match self {
            Route::Livez => 0,
            Route::Readyz => 1,
            Route::Apps => 2,
            Route::DefaultToken => 3,
            Route::AppToken(_) => 4,
            Route::Invalidate(_) => 5,
            Route::Proxy(..) => 6,
            Route::Ticket(..) => 7,
            Route::TicketInvalidate(..) => 8,
            Route::JssdkConfig(_) => 9,
            Route::Diagnostics(route) => DIAGNOSTICS_INDEX + route.offset(),
            Route::NotFound => 13,
            Route::Platform(_) => 14,
            Route::Suite(_) => 15,
        }
    }

    fn template(&self) -> &'static str {
        ROUTE_TEMPLATES[self.index()]
    }
}

/// The token read, answered at once when it can be: a GET of an app's
/// token while a valid one is held, from a client that passes the header
/// rules. Nothing is counted unless it answers; anything else (an error to
/// explain, a token to wait for) is left to [`handle`].
pub fn answer_now(
    state: &ApiState,
    listener: ListenerKind,
    request: &Request<RequestBody>,
) -> Option<Response<Body>> {
    if request.method() != Method::GET {
        return None;
    }
    let started = Instant::now();
    let route = Route::parse(request.uri().path());
    let headers = request.headers();
    check_not_relayed(headers).ok()?;
    let client = client_name(headers);
    if client.is_none()
        && listener
            == (ListenerKind::Tcp {
                require_client_header: true,
            })
    {
        return None;
    }
    // A remote request is authenticated, and a limited local peer's app
    // checked, on the full path only.
    let limited = match listener {
        ListenerKind::Remote => true,
        ListenerKind::Unix | ListenerKind::Tcp { .. } => state.clients.load().limits_local(),
    };
    if limited {
        return None;
    }
    let as_text = respond::wants_text(request.uri().query());
    let answer = |app: &AppHandle| {
        let now = app.now_ms();
        app.with_valid_token(now, |token| {
            respond::token(app.name(), token, now, as_text, None)
        })
    };
    let response = match route {
        Route::AppToken(name) => state.broker.with_app(name, answer)??,
        Route::DefaultToken => state.broker.with_default_app(answer)??,
        _ => return None,
    };
    if let Some(client) = client {
        state.metrics.count_client(client);
    }
    state.hot.record(
        &state.metrics,
        listener,
        route.index(),
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    debug!(
        listener = listener.label(),
        route = route.template(),
        status = response.status().as_u16(),
        "request"
    );
    Some(response)
}

pub async fn handle(
    state: &ApiState,
    listener: ListenerKind,
    request: Request<RequestBody>,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let route = Route::parse(parts.uri.path());
    let (index, template) = (route.index(), route.template());
    let response = match dispatch(state, listener, route, &parts, body).await {
        Ok(response) => response,
        Err(err) => err.response(),
    };
    let status = response.status();
    state.hot.record(
        &state.metrics,
        listener,
        index,
        status,
        started.elapsed().as_secs_f64(),
    );
    debug!(
        listener = listener.label(),
        route = template,
        status = status.as_u16(),
        "request"
    );
    response
}

async fn dispatch(
    state: &ApiState,
    listener: ListenerKind,
    route: Route<'_>,
    request: &http::request::Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    // Who may read what: a remote client by its credential, a local
    // peer by its uid and gid (SO_PEERCRED on the Unix socket, the
    // socket's owner on loopback TCP; see `tcp_peer`). The remote
    // listener is meant for other hosts, perhaps behind a load balancer
    // that adds X-Forwarded-For: there the credential is the guard.
    let access = match listener {
        ListenerKind::Remote => {
            let access = super::remote::authenticate(state, &request.headers)?;
            if let Some(client) = access.client() {
                state.metrics.count_client(client);
            }
            return super::remote::dispatch(state, &access, route, request, body).await;
        }
        ListenerKind::Unix | ListenerKind::Tcp { .. } => state
            .clients
            .load()
            .local(request.extensions.get::<Peer>().copied()),
    };
    check_not_relayed(&request.headers)?;
    let is_api = !matches!(route, Route::Livez | Route::Readyz);
    if is_api {
        let client = client_name(&request.headers);
        if let ListenerKind::Tcp {
            require_client_header: true,
        } = listener
        {
            client.ok_or(ApiError::MissingClientHeader)?;
        }
        if let Some(client) = client {
            state.metrics.count_client(client);
        }
    }
    let method = &request.method;
    let query = request.uri.query();
    match route {
        Route::Livez => {
            allow_get(method)?;
            Ok(live())
        }
        Route::Readyz => {
            allow_get(method)?;
            Ok(ready(&state.broker))
        }
        Route::Apps => {
            allow_get(method)?;
            Ok(apps(&state.broker, &access))
        }
        Route::DefaultToken => {
            allow_get(method)?;
            let app = state
                .broker
                .default_app()
                .ok_or_else(|| ApiError::NoDefaultApp {
                    configured: visible_names(&state.broker, &access),
                })?;
            allowed(&access, &app)?;
            token(state, &app, query).await
        }
        Route::AppToken(name) => {
            allow_get(method)?;
            token(state, &find_app(&state.broker, &access, name)?, query).await
        }
        Route::Invalidate(name) => {
            allow_post(method)?;
            let app = find_app(&state.broker, &access, name)?;
            let body = read_body(body, TOKEN_BODY_LIMIT).await?;
            invalidate(state, &app, &body, query).await
        }
        Route::Ticket(name, kind) => {
            allow_get(method)?;
            ticket_routes::ticket(state, &find_app(&state.broker, &access, name)?, kind, query)
                .await
        }
        Route::TicketInvalidate(name, kind) => {
            allow_post(method)?;
            let app = find_app(&state.broker, &access, name)?;
            let body = read_body(body, TOKEN_BODY_LIMIT).await?;
            ticket_routes::invalidate(state, &app, kind, &body, query).await
        }
        Route::JssdkConfig(name) => {
            allow_post(method)?;
            let app = find_app(&state.broker, &access, name)?;
            let body = read_body(body, TOKEN_BODY_LIMIT).await?;
            ticket_routes::jssdk_config(state, &app, &body).await
        }
        Route::Proxy(name, path) => {
            let app = find_app(&state.broker, &access, name)?;
            let judged = ForwardPath::new(path);
            check(&access, Resource::App(name), Act::Forward(&judged))?;
            let forward = Forward {
                method,
                path,
                query,
                headers: &request.headers,
            };
            let caller = Caller {
                client: access.client(),
                listener: listener.label(),
            };
            state
                .proxy
                .forward(&app, &caller, forward, body)
                .await
                .map_err(|err| ApiError::from_proxy_error(app.name(), err))
        }
        Route::Diagnostics(route) => {
            diagnostics::handle(state, listener, &access, route, request, body).await
        }
        Route::Platform(rest) => {
            let caller = Caller {
                client: access.client(),
                listener: listener.label(),
            };
            super::platform_routes::dispatch(state, &access, &caller, rest, request, body).await
        }
        Route::Suite(rest) => {
            let caller = Caller {
                client: access.client(),
                listener: listener.label(),
            };
            super::suite_routes::dispatch(state, &access, &caller, rest, request, body).await
        }
        Route::NotFound => Err(ApiError::RouteNotFound {
            method: method.to_string(),
            path: request.uri.path().chars().take(256).collect(),
        }),
    }
}

/// A request that came through a reverse proxy may come from anywhere;
/// the token API is for local callers only (DESIGN.md section 6). One a
/// broker forwarded is a loop (an `api_base` leading back to a broker):
/// refused before it can be forwarded again.
pub(super) fn check_not_relayed(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(super::proxy::FORWARDED_MARK) {
        return Err(ApiError::ForwardingLoop);
    }
    if headers.contains_key(&X_FORWARDED_FOR) || headers.contains_key(http::header::FORWARDED) {
        return Err(ApiError::ProxiedRequestRefused);
    }
    Ok(())
}

/// The `Wxbroker-Client` header, if present and well-formed.
fn client_name(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(&WXBROKER_CLIENT)?.to_str().ok()?;
    let well_formed = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    well_formed.then_some(value)
}

pub(super) fn allow_get(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allowed: "GET",
        })
    }
}

pub(super) fn allow_post(method: &Method) -> Result<(), ApiError> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allowed: "POST",
        })
    }
}

/// The app named `name`, if it exists and `access` allows it. An app the
/// caller may not read is 403 whether or not it exists, so the answer
/// does not say which apps a broker has.
pub(super) fn find_app(
    broker: &Broker,
    access: &Access,
    name: &str,
) -> Result<AppHandle, ApiError> {
    check(access, Resource::App(name), Act::Read)?;
    broker.app(name).ok_or_else(|| ApiError::AppNotFound {
        name: name.chars().take(64).collect(),
        configured: visible_names(broker, access),
    })
}

/// [`Access::check`], its refusal as the API answers it.
pub(super) fn check(access: &Access, resource: Resource<'_>, act: Act<'_>) -> Result<(), ApiError> {
    access
        .check(resource, act)
        .map_err(|denied| ApiError::denied(resource, act, denied))
}

fn allowed(access: &Access, app: &AppHandle) -> Result<(), ApiError> {
    check(access, Resource::App(app.name()), Act::Read)
}

/// The names of the apps `access` may read, for messages.
fn visible_names(broker: &Broker, access: &Access) -> String {
    broker
        .names()
        .into_iter()
        .filter(|name| access.allows(name))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn read_body(body: RequestBody, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(err) if RequestBody::is_timeout(&*err) => Err(ApiError::RequestTimeout),
        Err(err) => Err(ApiError::BadRequest(format!(
            "could not read the body: {err}"
        ))),
    }
}

async fn token(
    state: &ApiState,
    app: &AppHandle,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    // One clock read serves the validity check and `expires_in`.
    let now = app.now_ms();
    let (token, now) = match app.valid_token_at(now) {
        Some(token) => (token, now),
        None => {
            let token = app
                .token(state.token_wait)
                .await
                .map_err(|err| ApiError::from_token_error(app.name(), err))?;
            (token, app.now_ms())
        }
    };
    Ok(respond::token(
        app.name(),
        &token,
        now,
        respond::wants_text(query),
        None,
    ))
}

#[derive(Deserialize)]
struct InvalidateRequest {
    access_token: String,
}

async fn invalidate(
    state: &ApiState,
    app: &AppHandle,
    body: &[u8],
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let request: InvalidateRequest = serde_json::from_slice(body).map_err(|err| {
        ApiError::BadRequest(format!(
            "expected {{\"access_token\": \"<the token that failed>\"}}: {err}"
        ))
    })?;
    // The whole answer within token_wait_timeout: a slow refresh goes on
    // behind a caller whose token is still valid.
    let deadline = tokio::time::Instant::now() + state.token_wait;
    let outcome = app
        .invalidate(&request.access_token, state.token_wait)
        .await
        .map_err(|err| ApiError::from_token_error(app.name(), err))?;
    let token = app
        .token(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
        .map_err(|err| ApiError::from_token_error(app.name(), err))?;
    Ok(respond::token(
        app.name(),
        &token,
        app.now_ms(),
        respond::wants_text(query),
        Some(outcome == InvalidateOutcome::Refreshed),
    ))
}

pub fn live() -> Response<Body> {
    respond::json(StatusCode::OK, &json!({ "live": true }))
}

/// Ready while every app holds a valid token; otherwise says which and
/// why, and the broker's address when WeChat refuses it.
pub fn ready(broker: &Broker) -> Response<Body> {
    let now = broker.now_ms();
    let not_ready: Vec<_> = broker
        .apps()
        .iter()
        .filter_map(|app| {
            let view = app.view();
            let reason = view.unready_reason(now)?;
            let mut entry = json!({ "app": app.name(), "reason": reason });
            if let Some(ip) = view.last_error.as_ref().and_then(LastError::blocked_ip) {
                entry["blocked_ip"] = json!(ip.to_string());
            }
            Some(entry)
        })
        .collect();
    if not_ready.is_empty() {
        respond::json(StatusCode::OK, &json!({ "ready": true }))
    } else {
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "apps": not_ready }),
        )
    }
}

/// Every app `access` may read, with its status.
pub(super) fn apps(broker: &Broker, access: &Access) -> Response<Body> {
    let now = broker.now_ms();
    let apps: Vec<_> = broker
        .apps()
        .iter()
        .filter(|app| access.allows(app.name()))
        .map(|app| {
            let config = app.config();
            let view = app.view();
            let valid = view.valid_token(now);
            let mut status = json!({
                "name": config.name,
                "kind": match config.kind {
                    crate::config::AppKind::Wechat => "wechat",
                    crate::config::AppKind::Wecom => "wecom",
                },
                "grant": grant_label(config.kind, config.grant),
                "appid": config.appid,
                "valid": valid.is_some(),
                "expires_in": valid.map_or(0, |token| token.expires_in(now)),
                "fetched_at": view.token.as_ref().map(|token| token.fetched_at()),
                "fetches_today": view.fetches_on(now / 1000),
                "daily_budget": config.daily_budget,
                "last_error": view.last_error,
                "tickets": tickets(app, now),
                "follows": config.follow.as_ref().map(|follow| &follow.url),
                "leader_reachable": view.leader.as_ref().map(|leader| leader.reachable),
            });
            if let Some(ip) = view.last_error.as_ref().and_then(LastError::blocked_ip) {
                status["blocked_ip"] = json!(ip.to_string());
            }
            status
        })
        .collect();
    respond::json(StatusCode::OK, &json!({ "apps": apps }))
}

/// Each ticket's status, as an app's: never the ticket itself.
fn tickets(app: &AppHandle, now: u64) -> Vec<serde_json::Value> {
    app.tickets()
        .zip(&app.config().tickets)
        .map(|((kind, ticket), config)| {
            let view = ticket.view();
            let valid = view.valid_token(now);
            json!({
                "kind": kind.name(),
                "valid": valid.is_some(),
                "expires_in": valid.map_or(0, |ticket| ticket.expires_in(now)),
                "fetched_at": view.token.as_ref().map(|ticket| ticket.fetched_at()),
                "fetches_today": view.fetches_on(now / 1000),
                "daily_budget": config.daily_budget,
                "last_error": view.last_error,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_to_templates() {
        let cases = [
            ("/livez", "/livez"),
            ("/v1/apps", "/v1/apps"),
            ("/v1/token", "/v1/token"),
            ("/v1/apps/shop/token", "/v1/apps/{app}/token"),
            (
                "/v1/apps/shop/token/invalidate",
                "/v1/apps/{app}/token/invalidate",
            ),
            ("/v1/apps/shop/token/invalidate/x", "other"),
            (
                "/v1/apps/shop/proxy/tcb/databasequery",
                "/v1/apps/{app}/proxy",
            ),
            ("/v1/apps/shop/proxy", "/v1/apps/{app}/proxy"),
            ("/v1/apps/shop/proxyx", "other"),
            (
                "/v1/apps/shop/tickets/jsapi",
                "/v1/apps/{app}/tickets/{kind}",
            ),
            (
                "/v1/apps/shop/tickets/jsapi/invalidate",
                "/v1/apps/{app}/tickets/{kind}/invalidate",
            ),
            ("/v1/apps/shop/tickets/jsapi/invalidate/x", "other"),
            ("/v1/apps/shop/tickets", "other"),
            ("/v1/apps/shop/jssdk/config", "/v1/apps/{app}/jssdk/config"),
            ("/v1/apps/shop/jssdk/config/x", "other"),
            ("/v1/apps/shop/quota", "/v1/apps/{app}/quota"),
            ("/v1/apps/shop/clear_quota", "/v1/apps/{app}/clear_quota"),
            ("/v1/apps/shop/rids/1-2-3", "/v1/apps/{app}/rids/{rid}"),
            ("/v1/apps/shop", "other"),
            (
                "/v1/platforms/saas/component_token",
                "/v1/platforms/{platform}",
            ),
            ("/v1/suites/crm/suite_token", "/v1/suites/{suite}"),
            (
                "/v1/suites/crm/corps/ww1/proxy/cgi-bin/user/get",
                "/v1/suites/{suite}",
            ),
            ("/v1/suites", "other"),
            ("/", "other"),
        ];
        for (path, template) in cases {
            assert_eq!(Route::parse(path).template(), template, "{path}");
        }
    }

    #[test]
    fn client_names_are_validated() {
        let mut headers = HeaderMap::new();
        assert_eq!(client_name(&headers), None);
        headers.insert("wxbroker-client", "orders-api.v2".parse().unwrap());
        assert_eq!(client_name(&headers), Some("orders-api.v2"));
        headers.insert("wxbroker-client", "bad name".parse().unwrap());
        assert_eq!(client_name(&headers), None);
        headers.insert("wxbroker-client", "x".repeat(65).parse().unwrap());
        assert_eq!(client_name(&headers), None);
    }
}
