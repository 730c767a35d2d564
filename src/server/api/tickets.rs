//! The ticket routes of the token API (DESIGN.md section 11): a ticket,
//! its invalidation, and `wx.config`'s signed object for a page, where
//! the ticket itself never leaves the broker.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::context::Ctx;
use super::route::Answer;
use crate::config::AppKind;
use crate::credential::TicketKind;
use crate::engine::{AppHandle, CredentialHandle, InvalidateOutcome, TokenRecord};
use crate::http_io::RequestBody;
use crate::jssdk;
use crate::server::api_error::ApiError;
use crate::server::respond::{self, Body};

/// The app's `kind` ticket handle, or 404 `ticket_not_configured`.
pub(super) fn ticket_of<'a>(
    app: &'a AppHandle,
    kind: &str,
) -> Result<&'a CredentialHandle, ApiError> {
    configured(app, kind).map(|(_, handle)| handle)
}

/// The app's `kind` ticket and its handle, or 404 `ticket_not_configured`.
fn configured<'a>(
    app: &'a AppHandle,
    kind: &str,
) -> Result<(TicketKind, &'a CredentialHandle), ApiError> {
    TicketKind::from_name(kind)
        .and_then(|kind| Some((kind, app.ticket(kind)?)))
        .ok_or_else(|| ApiError::TicketNotConfigured {
            app: app.name().to_owned(),
            kind: kind.chars().take(32).collect(),
            configured: app
                .tickets()
                .map(|(kind, _)| format!("\"{kind}\""))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A valid ticket, waiting up to `token_wait_timeout` for one.
async fn valid(
    ctx: Ctx<'_>,
    app: &AppHandle,
    ticket: &CredentialHandle,
) -> Result<std::sync::Arc<TokenRecord>, ApiError> {
    ticket
        .token(ctx.state.token_wait)
        .await
        .map_err(|err| ApiError::from_credential_error(app.name(), ticket.credential(), err))
}

/// The answer of the app's `kind` ticket `ticket`, now.
fn answer(
    app: &AppHandle,
    kind: TicketKind,
    ticket: &TokenRecord,
    as_text: bool,
    refreshed: Option<bool>,
) -> Response<Body> {
    let now_ms = app.now_ms();
    let kind = kind.name();
    if as_text {
        return respond::no_store(respond::text(
            StatusCode::OK,
            ticket.value.expose().to_owned(),
        ));
    }
    let mut body = json!({
        "app": app.name(),
        "kind": kind,
        "ticket": ticket.value.expose(),
        "expires_in": ticket.expires_in(now_ms),
        "expires_at": ticket.expires_at(),
    });
    if let Some(refreshed) = refreshed {
        body["refreshed"] = json!(refreshed);
    }
    respond::no_store(respond::json(StatusCode::OK, &body))
}

/// `GET /v1/apps/{app}/tickets/{kind}`.
pub(super) async fn ticket(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    let app = ctx.app(ctx.param("app"))?;
    let (kind, handle) = configured(&app, ctx.param("kind"))?;
    let record = valid(ctx, &app, handle).await?;
    Ok(answer(&app, kind, &record, ctx.wants_text(), None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateRequest {
    ticket: String,
}

/// `POST /v1/apps/{app}/tickets/{kind}/invalidate`: like a token's, within
/// `token_wait_timeout` in all.
pub(super) async fn invalidate(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    ctx.allow_post()?;
    let app = ctx.app(ctx.param("app"))?;
    let body = ctx.body(body).await?;
    let (kind, handle) = configured(&app, ctx.param("kind"))?;
    let request: InvalidateRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadRequest(format!(
            "expected {{\"ticket\": \"<the ticket that failed>\"}}: {err}"
        ))
    })?;
    let token_wait = ctx.state.token_wait;
    let deadline = tokio::time::Instant::now() + token_wait;
    let outcome = handle
        .invalidate(&request.ticket, token_wait)
        .await
        .map_err(|err| ApiError::from_credential_error(app.name(), handle.credential(), err))?;
    let record = handle
        .token(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
        .map_err(|err| ApiError::from_credential_error(app.name(), handle.credential(), err))?;
    Ok(answer(
        &app,
        kind,
        &record,
        ctx.wants_text(),
        Some(outcome == InvalidateOutcome::Refreshed),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigRequest {
    url: String,
    #[serde(default)]
    agent: bool,
}

/// `POST /v1/apps/{app}/jssdk/config`: `wx.config`'s object for a page
/// (`wx.agentConfig`'s with `"agent": true`, WeCom only).
pub(super) async fn jssdk_config(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    ctx.allow_post()?;
    let app = ctx.app(ctx.param("app"))?;
    let body = ctx.body(body).await?;
    let request: ConfigRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadRequest(format!(
            "expected {{\"url\": \"https://…/page\"}} (and \"agent\": true for wx.agentConfig): {err}"
        ))
    })?;
    let page =
        jssdk::signed_part(&request.url).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let config = app.config();
    let kind = match (request.agent, config.kind) {
        (false, _) => TicketKind::Jsapi,
        (true, AppKind::Wecom) => TicketKind::AgentConfig,
        (true, AppKind::Wechat) => {
            return Err(ApiError::BadRequest(
                "\"agent\": true (wx.agentConfig) applies to wecom apps only".into(),
            ))
        }
    };
    let handle = ticket_of(&app, kind.name())?;
    let ticket = valid(ctx, &app, handle).await?;
    let timestamp = app.now_secs();
    let signed = match (kind, config.agentid) {
        (TicketKind::AgentConfig, Some(agentid)) => serde_json::to_value(jssdk::agent_config(
            &config.appid,
            agentid,
            ticket.value.expose(),
            page,
            timestamp,
        )),
        _ => serde_json::to_value(jssdk::wx_config(
            &config.appid,
            ticket.value.expose(),
            page,
            timestamp,
        )),
    }
    .expect("a signed config always serializes");
    Ok(respond::no_store(respond::json(StatusCode::OK, &signed)))
}
