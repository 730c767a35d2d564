//! The tickets of the token API's apps (DESIGN.md section 11): which
//! ticket a route names, and `wx.config`'s signed object for a page,
//! where the ticket itself never leaves the broker. A ticket's read and
//! invalidation are `credentials`'.

use http::StatusCode;
use serde::Deserialize;

use super::context::Ctx;
use super::route::Answer;
use crate::config::AppKind;
use crate::credential::TicketKind;
use crate::engine::{AppHandle, CredentialHandle};
use crate::http_io::RequestBody;
use crate::jssdk;
use crate::server::api_error::ApiError;
use crate::server::credentials::CredentialRef;
use crate::server::respond;

/// The app's `kind` ticket handle, or 404 `ticket_not_configured`.
pub(super) fn ticket_of<'a>(
    app: &'a AppHandle,
    kind: &str,
) -> Result<&'a CredentialHandle, ApiError> {
    configured(app, kind).map(|(_, handle)| handle)
}

/// The app's `kind` ticket and its handle, or 404 `ticket_not_configured`.
pub(super) fn configured<'a>(
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
    let ticket = CredentialRef::engine(app.name(), handle)
        .get(ctx.state.token_wait)
        .await?;
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
