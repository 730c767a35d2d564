//! The WeCom service provider routes of the token API (DESIGN.md section
//! 19), below `/v1/suites/{suite}/`: the installed corps (listed without
//! tokens or permanent codes) and pre-auth codes; a corp's own routes are
//! `corps`, and the suite's and its provider's token `credentials`'.
//!
//! Every route hands out or uses the suite's credentials, so the caller's
//! access to the suite is checked first, whether or not the suite exists.

use http::{Response, StatusCode};
use serde_json::json;

use super::context::{page, Ctx};
use super::route::Answer;
use crate::http_io::RequestBody;
use crate::identity::{Access, Act, Resource};
use crate::server::api_error::ApiError;
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;
use crate::suite::SuiteHandle;
use crate::wechat::FetchError;

/// The suite the path names, once the caller may read it: a suite the
/// caller may not read is 403 whether or not it exists.
pub(super) fn suite(ctx: &Ctx<'_>) -> Result<SuiteHandle, ApiError> {
    let name = ctx.param("suite");
    ctx.check(Resource::Suite(name), Act::Read)?;
    find(ctx.state, ctx.access, name)
}

/// `GET /v1/suites/{suite}/corps?offset=&limit=`.
pub(super) async fn corps(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let suite = suite(&ctx)?;
    ctx.allow_get()?;
    Ok(list(&suite, ctx.query()))
}

/// `POST /v1/suites/{suite}/pre_auth_code`.
pub(super) async fn pre_auth_code(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let suite = suite(&ctx)?;
    ctx.allow_post()?;
    let (code, expires_in) = suite
        .pre_auth_code(ctx.state.token_wait)
        .await
        .map_err(|err| pre_auth_error(&suite, err))?;
    Ok(respond::no_store(respond::json(
        StatusCode::OK,
        &json!({ "pre_auth_code": code, "expires_in": expires_in }),
    )))
}

/// Any other path below `/v1/suites/{suite}`: 404, once the caller may
/// read the suite and it exists.
pub(super) async fn unknown(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    suite(&ctx)?;
    Err(ctx.not_found())
}

/// The suite named `name`; 404 naming the suites the caller may read.
fn find(state: &ApiState, access: &Access, name: &str) -> Result<SuiteHandle, ApiError> {
    state.broker.suite(name).ok_or_else(|| {
        let configured: Vec<String> = state
            .broker
            .suites()
            .iter()
            .map(|suite| suite.name().to_owned())
            .filter(|name| access.check(Resource::Suite(name), Act::Read).is_ok())
            .collect();
        ApiError::SuiteNotFound {
            name: name.chars().take(64).collect(),
            configured: configured.join(", "),
        }
    })
}

/// The suite token could not be had for a pre-auth code, or WeCom
/// refused one.
fn pre_auth_error(suite: &SuiteHandle, err: FetchError) -> ApiError {
    match err {
        FetchError::Parent(_) => ApiError::TokenUnavailable {
            app: suite.name().to_owned(),
            credential: suite.suite_token().credential(),
            retry_after: 1,
            last_error: None,
        },
        FetchError::Timeout(_) => ApiError::UpstreamTimeout,
        err => ApiError::UpstreamError(err.to_string()),
    }
}

/// One page of the installed corps, ordered by corpid: their state,
/// never a token or a permanent code.
fn list(suite: &SuiteHandle, query: Option<&str>) -> Response<Body> {
    let (offset, limit) = page(query);
    let now = suite.suite_token().now_ms();
    let all = suite.corps().sorted();
    let page: Vec<serde_json::Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|slot| {
            let token = slot.token().filter(|t| t.is_valid(now));
            json!({
                "corpid": &*slot.id,
                "corp_name": suite.corp_name(&slot.id),
                "valid": token.is_some(),
                "expires_in": token.map_or(0, |t| t.expires_in(now)),
                "installed_at": suite
                    .installed_at(&slot.id)
                    .unwrap_or_else(|| slot.authorized_at()),
            })
        })
        .collect();
    respond::json(
        StatusCode::OK,
        &json!({ "corps": page, "total": all.len() }),
    )
}
