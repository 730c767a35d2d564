//! How a WeChat API judges the app `access_token` a call carries, in
//! WeChat's order: present (41001), known and latest (40001), not expired
//! (42001), of the right product (40014). Every app-token API uses it; user
//! OAuth tokens are judged by the user book instead.

use super::tokens::{Family, TokenStatus};
use super::wx_error::WxError;
use super::Simulator;

/// The token, when it may call an Official Account / Mini Program API now.
pub(crate) fn check<'a>(sim: &Simulator, token: Option<&'a str>) -> Result<&'a str, WxError> {
    let token = token.ok_or_else(|| WxError::wechat(41001, "access_token missing"))?;
    match sim.lock().token_status(token) {
        TokenStatus::Valid(Family::Classic | Family::Stable) => Ok(token),
        // A WeCom token means nothing to WeChat's APIs.
        TokenStatus::Valid(Family::Wecom) => Err(WxError::wechat(40014, "invalid access_token")),
        TokenStatus::Expired => Err(WxError::wechat(42001, "access_token expired")),
        // A user OAuth token is as unknown here as garbage.
        TokenStatus::NotLatest | TokenStatus::Unknown => Err(WxError::from_code(40001)),
    }
}

/// The token, when it is a valid app token of WeChat or of WeCom: for the
/// few APIs both serve (`get_api_domain_ip`). Judged in the same order.
pub(crate) fn check_any_kind<'a>(
    sim: &Simulator,
    token: Option<&'a str>,
) -> Result<&'a str, WxError> {
    let token = token.ok_or_else(|| WxError::wechat(41001, "access_token missing"))?;
    match sim.lock().token_status(token) {
        TokenStatus::Valid(_) => Ok(token),
        TokenStatus::Expired => Err(WxError::wechat(42001, "access_token expired")),
        TokenStatus::NotLatest | TokenStatus::Unknown => Err(WxError::from_code(40001)),
    }
}
