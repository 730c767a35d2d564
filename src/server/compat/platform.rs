//! The compatible listener's Open Platform calls (DESIGN.md sections 12
//! and 13), for SDKs that speak WeChat's component API unchanged:
//!
//! - `api_component_token` is answered from the cache (never one upstream
//!   call per request; the secret and ticket a client sends are ignored);
//! - `api_authorizer_token` is answered from the authorizer cache, so an
//!   SDK's own refresh never rotates a refresh token behind the broker;
//! - `api_query_auth` is refused: the broker exchanges authorization codes
//!   itself when WeChat pushes them, and a code works once;
//! - every other `/cgi-bin/component/*` call is forwarded with the
//!   broker's component token as `component_access_token`;
//! - a call holding an authorizer token the broker served (its current
//!   one, or one of the last two it replaced) is forwarded with that
//!   authorizer's current token; the token index finds whose it is in
//!   O(1).
//!
//! With uid or gid clients, each needs the caller's access to the
//! platform, and a forwarded call a path its `apis` list. Each forwarded
//! call (not the ones answered from the caches) is recorded in the call
//! audit.

use bytes::Bytes;
use http::{HeaderMap, Response};
use serde_json::{json, Value};

use super::answer::{audited, audited_failure, Answer, Audited, WxError};
use super::child::child_call;
use super::context::Asked;
use crate::audit::Target;
use crate::http_io::query;
use crate::http_io::RequestBody;
use crate::identity::{Act, Resource};
use crate::platform::{AuthorizerError, PlatformHandle};
use crate::server::proxy::{Destination, ProxyError};
use crate::server::request::{read_body, TOKEN_BODY_LIMIT};
use crate::server::respond::{self, Body};
use crate::wechat::is_token_rejected;
use crate::wechat_path::{self, ForwardPath};

const COMPONENT_ROUTE: &str = "/cgi-bin/component";
const AUTHORIZER_ROUTE: &str = "/{path}";

/// The answer to a platform call, with its route label; the body back
/// when the call is not a platform's.
pub(super) async fn handle(
    asked: Asked<'_>,
    body: RequestBody,
) -> Result<(&'static str, Response<Body>), RequestBody> {
    let api = asked.api();
    let request = asked.request;
    let platforms = api.broker.platforms();
    if platforms.is_empty() {
        return Err(body);
    }
    let path = wechat_path::normalise(request.uri.path());
    if let Some(endpoint) = path.strip_prefix("cgi-bin/component/") {
        let answer = component_call(asked, &platforms, endpoint, body).await;
        return Ok((
            COMPONENT_ROUTE,
            answer.unwrap_or_else(WxError::into_response),
        ));
    }
    let Some(held) = query::param(asked.query(), "access_token").filter(|t| !t.is_empty()) else {
        return Err(body);
    };
    // One index lookup per platform, whatever the number of authorizers:
    // the token held now, or one of the last two it replaced.
    let owner = platforms.iter().find_map(|platform| {
        let slot = platform.authorizers().owner_of(&held)?;
        Some((platform.clone(), slot.id.to_string()))
    });
    let Some((platform, appid)) = owner else {
        return Err(body);
    };
    let judged = ForwardPath::new(request.uri.path());
    if let Err(refused) = allowed(asked, &platform, Act::Forward(&judged)) {
        return Ok((AUTHORIZER_ROUTE, refused.into_response()));
    }
    let target = Target::Authorizer {
        platform: platform.name().to_owned(),
        appid: appid.clone(),
    };
    let call = api
        .proxy
        .begin_call(&asked.caller(), target, &request.method, &judged);
    let (answer, verdict) = authorizer_call(asked, &platform, &appid, body).await;
    api.proxy.finish_call(call, verdict);
    Ok((
        AUTHORIZER_ROUTE,
        answer.unwrap_or_else(WxError::into_response),
    ))
}

/// Whether the caller may `act` on `platform`, refused WeChat-shaped.
fn allowed(asked: Asked<'_>, platform: &PlatformHandle, act: Act<'_>) -> Result<(), WxError> {
    asked.allow(Resource::Platform(platform.name()), act)
}

/// The platform a component call is for: the one holding the component
/// token the client sent, the one whose component appid it names, or the
/// only one.
fn platform_for(
    platforms: &[PlatformHandle],
    query: &str,
    body: &Value,
) -> Result<PlatformHandle, WxError> {
    if let Some(held) = query::param(query, "component_access_token") {
        if let Some(platform) = platforms.iter().find(|p| p.component().knows(&held)) {
            return Ok(platform.clone());
        }
    }
    let named = body
        .get("component_appid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| query::param(query, "component_appid"));
    if let Some(appid) = named {
        return platforms
            .iter()
            .find(|p| p.config().component_appid == appid)
            .cloned()
            .ok_or_else(|| {
                WxError::new(
                    40013,
                    "invalid appid (wxbroker: no platform has this component appid)",
                )
            });
    }
    match platforms {
        [only] => Ok(only.clone()),
        _ => Err(WxError::new(
            41002,
            "appid missing (wxbroker: name the component_appid)",
        )),
    }
}

async fn component_call(
    asked: Asked<'_>,
    platforms: &[PlatformHandle],
    endpoint: &str,
    body: RequestBody,
) -> Answer {
    let (api, request) = (asked.api(), asked.request);
    let query = asked.query();
    let bytes = read_body(body, TOKEN_BODY_LIMIT)
        .await
        .map_err(|err| WxError::new(47001, format!("data format error: {err}")))?;
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let platform = platform_for(platforms, query, &json)?;
    allowed(asked, &platform, Act::Read)?;
    match endpoint {
        "api_component_token" => {
            let token = platform
                .component()
                .token(api.token_wait)
                .await
                .map_err(|err| WxError::new(-1, format!("system error (wxbroker: {err})")))?;
            Ok(respond::no_store(respond::json(
                http::StatusCode::OK,
                &json!({
                    "component_access_token": token.value.expose(),
                    "expires_in": token.expires_in(platform.now_ms()),
                }),
            )))
        }
        "api_authorizer_token" => {
            let appid = json
                .get("authorizer_appid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let token = platform
                .authorizer_token(appid, api.token_wait)
                .await
                .map_err(authorizer_failure)?;
            // The client's own refresh token goes back as it came: the
            // broker's never leaves it.
            let refresh = json
                .get("authorizer_refresh_token")
                .cloned()
                .unwrap_or(Value::Null);
            Ok(respond::no_store(respond::json(
                http::StatusCode::OK,
                &json!({
                    "authorizer_access_token": token.value.expose(),
                    "expires_in": token.expires_in(platform.now_ms()),
                    "authorizer_refresh_token": refresh,
                }),
            )))
        }
        "api_query_auth" => Err(WxError::new(
            -1,
            "system error (wxbroker: authorization codes are exchanged by the broker when wechat pushes them; read the authorizer's token from the broker)",
        )),
        _ => {
            let judged = ForwardPath::new(request.uri.path());
            allowed(asked, &platform, Act::Forward(&judged))?;
            let target = Target::Component {
                platform: platform.name().to_owned(),
            };
            let call = api.proxy.begin_call(
                &asked.caller(),
                target,
                &request.method,
                &judged,
            );
            let (answer, verdict) = forward_component(asked, &platform, bytes).await;
            api.proxy.finish_call(call, verdict);
            answer
        }
    }
}

/// A component call forwarded with the component token; a rejection of
/// it is reported and the call made once more with a newer token, or
/// answered as an error, never handed back.
async fn forward_component(asked: Asked<'_>, platform: &PlatformHandle, body: Bytes) -> Audited {
    let (api, request) = (asked.api(), asked.request);
    // The path is judged before the token is asked for: a refused call
    // makes no upstream call at all.
    let (destination, headers) = match prepare(asked, platform) {
        Ok(prepared) => prepared,
        Err(err) => return audited_failure(&err),
    };
    let component = platform.component();
    if let Err(err) = component.token(api.token_wait).await {
        return audited(Err(WxError::new(
            -1,
            format!("system error (wxbroker: {err})"),
        )));
    }
    let call = (&request.method, &destination, &headers, &body);
    let sent = api
        .proxy
        .send_with_credential(component, call, "component_access_token", is_token_rejected)
        .await;
    match sent {
        Ok((response, _)) => audited(Ok(response)),
        Err(err) => audited_failure(&err),
    }
}

/// Why an authorizer has no token, WeChat-shaped.
fn authorizer_failure(err: AuthorizerError) -> WxError {
    match err {
        AuthorizerError::NotFound => {
            WxError::new(61003, "component is not authorized by this account")
        }
        AuthorizerError::Unavailable => WxError::new(
            -1,
            "system error (wxbroker: the authorizer has no valid token yet)",
        ),
    }
}

/// The URL and headers of a forwarded call (its body is read already).
fn prepare(
    asked: Asked<'_>,
    platform: &PlatformHandle,
) -> Result<(Destination, HeaderMap), ProxyError> {
    asked.api().proxy.token_call_target(
        &platform.config().api_base,
        &asked.forward(),
        "component_access_token",
    )
}

/// An authorizer's call ([`child_call`]).
async fn authorizer_call(
    asked: Asked<'_>,
    platform: &PlatformHandle,
    appid: &str,
    body: RequestBody,
) -> Audited {
    let wait = asked.api().token_wait;
    child_call(
        asked,
        &platform.config().api_base,
        body,
        platform.authorizer_token(appid, wait),
        |reported| async move { platform.invalidate_authorizer(appid, &reported, wait).await },
        authorizer_failure,
    )
    .await
}
