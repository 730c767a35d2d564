//! The app routes of the token API (DESIGN.md section 5): the apps and
//! their status, the token read answered at once from the cell (the
//! full read and the invalidation are `credentials`'), and the
//! token-injecting proxy.

use http::{Response, StatusCode};
use serde_json::json;

use super::context::Ctx;
use super::params::Params;
use super::route::Answer;
use crate::engine::{AppHandle, LastError};
use crate::http_io::RequestBody;
use crate::identity::{Act, Resource};
use crate::server::api_error::ApiError;
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;
use crate::store::grant_label;

/// `GET /v1/apps`: every app the caller may read, with its status.
pub(super) async fn list(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    let broker = &ctx.state.broker;
    let now = broker.now_ms();
    let apps: Vec<_> = broker
        .apps()
        .iter()
        .filter(|app| ctx.access.allows(app.name()))
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
    Ok(respond::json(StatusCode::OK, &json!({ "apps": apps })))
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

/// The token answer from the cell, while it holds a valid one.
fn answer_now(app: &AppHandle, as_text: bool) -> Option<Response<Body>> {
    let now = app.now_ms();
    app.with_valid_token(now, |token| {
        respond::token(app.name(), token, now, as_text, None)
    })
}

/// `GET /v1/apps/{app}/token` at once, when a valid token is held.
pub(super) fn token_now(
    state: &ApiState,
    params: &Params<'_>,
    as_text: bool,
) -> Option<Response<Body>> {
    state
        .broker
        .with_app(params.get("app"), |app| answer_now(app, as_text))?
}

/// `GET /v1/token` at once, when a valid token is held.
pub(super) fn default_token_now(
    state: &ApiState,
    _: &Params<'_>,
    as_text: bool,
) -> Option<Response<Body>> {
    state
        .broker
        .with_default_app(|app| answer_now(app, as_text))?
}

/// `ANY /v1/apps/{app}/proxy/{path}`: forwarded with the app's token.
pub(super) async fn proxy(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let name = ctx.param("app");
    let app = ctx.app(name)?;
    let forward = ctx.forward(ctx.params.get_or_empty("path"));
    ctx.check(Resource::App(name), Act::Forward(&forward.judged))?;
    ctx.state
        .proxy
        .forward(&app, &ctx.caller(), forward, body)
        .await
        .map_err(|err| ApiError::from_proxy_error(app.name(), err))
}

/// A path no route answers.
pub(super) async fn not_found(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    Err(ctx.not_found())
}
