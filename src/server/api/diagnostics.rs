//! The operator's routes (DESIGN.md section 16): `GET
//! /v1/apps/{app}/quota?cgi_path=…`, `POST /v1/apps/{app}/clear_quota`
//! (body `{"confirm":true}`, Unix socket only, and with `[[clients]]`
//! limiting local peers, an `admin` client's or root's) and `GET
//! /v1/apps/{app}/rids/{rid}`. The broker makes the upstream call with its
//! own credentials ([`crate::diagnostics`]); these handlers parse, refuse
//! and explain.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::context::{Ctx, ListenerKind};
use super::route::Answer;
use crate::diagnostics::{
    CgiPath, DiagnosticsError, CGI_PATH_UNKNOWN_ERRCODES, RESETS_PER_MONTH, RESET_LIMIT_ERRCODE,
    RID_MALFORMED_ERRCODE, RID_NOT_FOUND_ERRCODE, RID_OTHER_ACCOUNT_ERRCODE,
};
use crate::engine::{AppHandle, LastError};
use crate::http_io::RequestBody;
use crate::identity::{Act, Resource};
use crate::server::api_error::ApiError;
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;

/// `GET /v1/apps/{app}/quota?cgi_path=…`.
pub(super) async fn quota(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    let app = ctx.app(ctx.param("app"))?;
    quota_of(ctx.state, &app, ctx.query_value("cgi_path")).await
}

/// `POST /v1/apps/{app}/clear_quota`.
pub(super) async fn clear_quota(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    ctx.allow_post()?;
    let name = ctx.param("app");
    let app = ctx.app(name)?;
    if ctx.listener != ListenerKind::Unix {
        return Ok(refusal(
            StatusCode::FORBIDDEN,
            "admin_only",
            "clear_quota is an operator action, served on the broker's Unix socket only: run `wxbroker clear-quota --socket PATH`".to_owned(),
            None,
        ));
    }
    // With uid/gid clients, reading the app is not enough: a reset
    // spends one of the account's ten a month.
    ctx.check(Resource::App(name), Act::Operate)?;
    if app.config().follow.is_some() {
        // Its secret and its quota are the leader's.
        return Err(ApiError::BadRequest(format!(
            "app '{}' follows a leader, which owns its quota: run clear-quota against the leader",
            app.name()
        )));
    }
    let body = ctx.body(body).await?;
    confirmed(&body)?;
    reset_quota(ctx.state, &app).await
}

/// `GET /v1/apps/{app}/rids/{rid}`.
pub(super) async fn rid(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    let app = ctx.app(ctx.param("app"))?;
    rid_details(ctx.state, &app, ctx.param("rid")).await
}

async fn quota_of(state: &ApiState, app: &AppHandle, cgi_path: Option<String>) -> Answer {
    let cgi_path = match cgi_path {
        Some(path) => CgiPath::parse(&path).map_err(|err| ApiError::BadRequest(err.to_string()))?,
        None => CgiPath::default(),
    };
    match state.diagnostics.quota(app, &cgi_path).await {
        Ok(quota) => Ok(respond::json(
            StatusCode::OK,
            &json!({
                "app": app.name(),
                "appid": app.config().appid,
                "cgi_path": cgi_path.as_str(),
                "daily_limit": quota.daily_limit,
                "used": quota.used,
                "remain": quota.remain,
            }),
        )),
        Err(DiagnosticsError::Wechat { errcode, errmsg })
            if CGI_PATH_UNKNOWN_ERRCODES.contains(&errcode) =>
        {
            Ok(refusal(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("WeChat knows no API at cgi_path {cgi_path} (errcode {errcode}); check the path against WeChat's documentation"),
                Some((errcode, errmsg)),
            ))
        }
        Err(err) => failed(app, err),
    }
}

#[derive(Deserialize)]
struct ClearQuotaRequest {
    #[serde(default)]
    confirm: bool,
}

/// A reset spends one of the account's 10 a month: the body must say
/// `{"confirm":true}`.
fn confirmed(body: &[u8]) -> Result<(), ApiError> {
    let request: Option<ClearQuotaRequest> = serde_json::from_slice(body).ok();
    if request.is_some_and(|request| request.confirm) {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "clear_quota spends one of the account's {RESETS_PER_MONTH} resets a month: send {{\"confirm\":true}} to go ahead"
    )))
}

async fn reset_quota(state: &ApiState, app: &AppHandle) -> Answer {
    match state.diagnostics.clear_quota(&state.broker, app).await {
        Ok(reset) => Ok(respond::json(
            StatusCode::OK,
            &json!({
                "app": app.name(),
                "appid": app.config().appid,
                "cleared": true,
                "via": reset.via.endpoint(),
                "resets_this_month": reset.resets_this_month,
                "monthly_limit": RESETS_PER_MONTH,
                "holds_lifted": reset.lifted,
            }),
        )),
        Err(DiagnosticsError::Wechat { errcode, errmsg }) if errcode == RESET_LIMIT_ERRCODE => {
            let counted = state.diagnostics.resets_this_month(app).await;
            let counted = counted.map_or(String::new(), |n| {
                format!(" (this broker made {n} of them)")
            });
            Ok(refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_reset_limit",
                format!(
                    "WeChat refused the reset (48006): appid {} has used its {RESETS_PER_MONTH} quota resets for this month{counted}. The limit is per account and shared with the web console (mp.weixin.qq.com), so resets made there count too. The next reset is possible from the 1st of next month, Beijing time; until then the daily quota comes back at Beijing midnight (16:00 UTC)",
                    app.config().appid
                ),
                Some((errcode, errmsg)),
            ))
        }
        Err(err) => failed(app, err),
    }
}

async fn rid_details(
    state: &ApiState,
    app: &AppHandle,
    rid: &str,
) -> Result<http::Response<Body>, ApiError> {
    let well_formed = !rid.is_empty()
        && rid.len() <= 64
        && rid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !well_formed {
        return Err(ApiError::BadRequest(format!(
            "malformed rid {:?}: a rid is the hex groups after \"rid: \" in an errmsg, such as 61725984-6126f6f9-040f19c4",
            rid.chars().take(64).collect::<String>()
        )));
    }
    match state.diagnostics.rid(app, rid).await {
        Ok(details) => Ok(respond::json(
            StatusCode::OK,
            &json!({ "app": app.name(), "rid": rid, "request": details }),
        )),
        Err(DiagnosticsError::Wechat { errcode, errmsg })
            if errcode == RID_NOT_FOUND_ERRCODE || errcode == RID_OTHER_ACCOUNT_ERRCODE =>
        {
            let why = if errcode == RID_NOT_FOUND_ERRCODE {
                "WeChat keeps a rid for 7 days, and only for the account whose call got it: check the rid, its age, and that it came from this app"
            } else {
                "the rid belongs to another account: ask with the app whose call got it"
            };
            Ok(refusal(
                StatusCode::NOT_FOUND,
                "rid_not_found",
                format!(
                    "WeChat does not know rid {rid} for app '{}' (errcode {errcode}): {why}",
                    app.name()
                ),
                Some((errcode, errmsg)),
            ))
        }
        Err(DiagnosticsError::Wechat { errcode, errmsg }) if errcode == RID_MALFORMED_ERRCODE => {
            Ok(refusal(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("WeChat says rid {rid} is malformed (errcode {errcode})"),
                Some((errcode, errmsg)),
            ))
        }
        Err(err) => failed(app, err),
    }
}

/// The answer to a failure every route shares.
fn failed(app: &AppHandle, err: DiagnosticsError) -> Result<http::Response<Body>, ApiError> {
    match err {
        DiagnosticsError::Token(err) => Err(ApiError::from_token_error(app.name(), err)),
        DiagnosticsError::Wecom(_) => Err(ApiError::BadRequest(err.to_string())),
        DiagnosticsError::Timeout(_) => Err(ApiError::UpstreamTimeout),
        DiagnosticsError::Upstream(message) => Err(ApiError::UpstreamError(message)),
        // As the proxy answers: no usable token until the refresh the
        // rejection scheduled.
        DiagnosticsError::TokenRejected { errcode, errmsg } => Err(ApiError::TokenUnavailable {
            app: app.name().to_owned(),
            credential: crate::credential::Credential::AccessToken,
            retry_after: app.retry_after(),
            last_error: Some(LastError {
                errcode: Some(errcode),
                errmsg,
                at: app.now_secs(),
            }),
        }),
        DiagnosticsError::Wechat {
            errcode,
            ref errmsg,
        } => Ok(refusal(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            err.to_string(),
            Some((errcode, errmsg.clone())),
        )),
    }
}

/// An error answer in the API's shape, with WeChat's errcode and errmsg
/// when WeChat gave them.
fn refusal(
    status: StatusCode,
    code: &str,
    message: String,
    wechat: Option<(i64, String)>,
) -> http::Response<Body> {
    let mut error = json!({ "code": code, "message": message });
    if let Some((errcode, errmsg)) = wechat {
        error["errcode"] = json!(errcode);
        error["errmsg"] = json!(errmsg);
    }
    respond::json(status, &json!({ "error": error }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_needs_confirm_true() {
        assert!(confirmed(br#"{"confirm":true}"#).is_ok());
        for body in [&br#"{"confirm":false}"#[..], b"{}", b"", b"yes"] {
            let err = confirmed(body).unwrap_err();
            assert_eq!(err.code(), "bad_request");
            assert!(err.to_string().contains("confirm"), "{err}");
        }
    }
}
