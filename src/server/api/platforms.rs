//! The Open Platform routes of the token API (DESIGN.md section 13), below
//! `/v1/platforms/{platform}/`: the authorizer list, an authorizer's
//! proxy and pre-auth codes (the component token's and an authorizer's
//! token's read and invalidation are `credentials`').

use http::{Response, StatusCode};
use serde_json::json;

use super::context::{page, Ctx};
use super::route::Answer;
use crate::audit::{Outcome, Target, Verdict};
use crate::http_io::RequestBody;
use crate::identity::{Act, Resource};
use crate::platform::authorizers::AuthorizerToken;
use crate::platform::PlatformHandle;
use crate::server::api_error::ApiError;
use crate::server::proxy::{self as forwarding, Caller, ChildCallError, Forward, ProxyError};
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;

/// The platform the path names. The caller's access to it is checked
/// first, before any route below it: every one of them hands out or uses
/// the platform's credentials, so a platform the caller may not read is
/// 403 whether or not it exists.
pub(super) fn platform(ctx: &Ctx<'_>) -> Result<PlatformHandle, ApiError> {
    let name = ctx.param("platform");
    ctx.check(Resource::Platform(name), Act::Read)?;
    find(ctx.state, name)
}

/// `GET /v1/platforms/{platform}/authorizers?offset=&limit=`.
pub(super) async fn authorizers(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let platform = platform(&ctx)?;
    ctx.allow_get()?;
    Ok(list(&platform, ctx.query()))
}

/// `POST /v1/platforms/{platform}/pre_auth_code`.
pub(super) async fn pre_auth_code(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let platform = platform(&ctx)?;
    ctx.allow_post()?;
    let (code, expires_in) = platform
        .pre_auth_code(ctx.state.token_wait)
        .await
        .map_err(|err| ApiError::UpstreamError(err.to_string()))?;
    Ok(respond::no_store(respond::json(
        StatusCode::OK,
        &json!({ "pre_auth_code": code, "expires_in": expires_in }),
    )))
}

/// `ANY /v1/platforms/{platform}/authorizers/{appid}/proxy/{path}`.
pub(super) async fn proxy(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let platform = platform(&ctx)?;
    let asked = ctx.forward(ctx.params.get_or_empty("path"));
    ctx.check(
        Resource::Platform(platform.name()),
        Act::Forward(&asked.judged),
    )?;
    let caller = ctx.caller();
    forward(
        ctx.state,
        &caller,
        &platform,
        ctx.param("appid"),
        asked,
        body,
    )
    .await
}

/// Any other path below `/v1/platforms/{platform}`: 404, once the caller
/// may read the platform and it exists.
pub(super) async fn unknown(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    platform(&ctx)?;
    Err(ctx.not_found())
}

fn find(state: &ApiState, name: &str) -> Result<PlatformHandle, ApiError> {
    state.broker.platform(name).ok_or_else(|| {
        let configured: Vec<String> = state
            .broker
            .platforms()
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        ApiError::PlatformNotFound {
            name: name.chars().take(64).collect(),
            configured: configured.join(", "),
        }
    })
}

async fn authorizer_token(
    state: &ApiState,
    platform: &PlatformHandle,
    appid: &str,
) -> Result<std::sync::Arc<AuthorizerToken>, ApiError> {
    platform
        .authorizer_token(appid, state.token_wait)
        .await
        .map_err(|err| ApiError::from_authorizer_error(platform, appid, err))
}

/// `?offset=&limit=` (see [`page`]); never a token.
fn list(platform: &PlatformHandle, query: Option<&str>) -> Response<Body> {
    let (offset, limit) = page(query);
    let now = platform.now_ms();
    let all = platform.authorizers().sorted();
    let page: Vec<serde_json::Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|slot| {
            let token = slot.token().filter(|t| t.is_valid(now));
            json!({
                "appid": &*slot.id,
                "valid": token.is_some(),
                "expires_in": token.map_or(0, |t| t.expires_in(now)),
                "authorized_at": slot.authorized_at(),
            })
        })
        .collect();
    respond::json(
        StatusCode::OK,
        &json!({ "authorizers": page, "total": all.len() }),
    )
}

/// As the app proxy, with the authorizer's token; a rejection of it is
/// reported and the call made once more with the next token. Recorded in
/// the call audit.
async fn forward(
    state: &ApiState,
    caller: &Caller<'_>,
    platform: &PlatformHandle,
    appid: &str,
    forward: Forward<'_>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let target = Target::Authorizer {
        platform: platform.name().to_owned(),
        appid: appid.chars().take(64).collect(),
    };
    let call = state
        .proxy
        .begin_call(caller, target, forward.method, &forward.judged);
    let (answer, verdict) = authorizer_call(state, platform, appid, forward, body).await;
    state.proxy.finish_call(call, verdict);
    answer
}

/// [`forward`]'s call, and how it ended for the audit.
async fn authorizer_call(
    state: &ApiState,
    platform: &PlatformHandle,
    appid: &str,
    forward: Forward<'_>,
    body: RequestBody,
) -> (Result<Response<Body>, ApiError>, Verdict) {
    let proxy_error = |err: ProxyError| {
        let verdict = forwarding::verdict(Err(&err));
        (
            Err(ApiError::from_proxy_error(platform.name(), err)),
            verdict,
        )
    };
    let prepared = state
        .proxy
        .prepare_token_call(&platform.config().api_base, &forward, body, "access_token")
        .await;
    let (destination, headers, body) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return proxy_error(err),
    };
    // The path was judged before the token is asked for: a refused call
    // makes no upstream call at all, not even a token fetch.
    let token = match authorizer_token(state, platform, appid).await {
        Ok(token) => token,
        Err(err) => return (Err(err), Verdict::unanswered(Outcome::Refused)),
    };
    let wait = state.token_wait;
    let call = (forward.method, &destination, &headers, &body);
    let answer = state
        .proxy
        .send_as_child(call, &token, |reported| async move {
            platform.invalidate_authorizer(appid, &reported, wait).await
        })
        .await;
    match answer {
        Ok(response) => {
            let verdict = forwarding::verdict(Ok(&response));
            (Ok(response), verdict)
        }
        Err(ChildCallError::Proxy(err)) => proxy_error(err),
        Err(ChildCallError::Invalidate(err, rejecting)) => (
            Err(ApiError::from_authorizer_error(platform, appid, err)),
            forwarding::verdict(Ok(&rejecting)),
        ),
    }
}
