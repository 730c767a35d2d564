//! What a compatible listener's handler answers: a response, or its one
//! error, WeChat-shaped (`{"errcode":..,"errmsg":..}` with HTTP 200, as
//! WeChat sends its own: SDKs decide on the errcode, not the status);
//! and for a forwarded call, how it ended for the call audit.

use http::Response;

use crate::audit::{Outcome, Verdict};
use crate::errors::Chain;
use crate::identity::{Act, Denied, Resource};
use crate::server::api_error::ApiError;
use crate::server::proxy::{self as forwarding, ProxyError};
use crate::server::respond::{self, Body};

/// A handler's answer.
pub(super) type Answer = Result<Response<Body>, WxError>;

/// A forwarded call's answer, and how it ended for the audit.
pub(super) type Audited = (Answer, Verdict);

/// `answer` with its verdict: what WeChat answered, or refused.
pub(super) fn audited(answer: Answer) -> Audited {
    let verdict = match &answer {
        Ok(response) => forwarding::verdict(Ok(response)),
        Err(_) => Verdict::unanswered(Outcome::Refused),
    };
    (answer, verdict)
}

/// A forwarded call that failed, as answered and as audited.
pub(super) fn audited_failure(err: &ProxyError) -> Audited {
    (Err(WxError::forwarding(err)), forwarding::verdict(Err(err)))
}

/// A WeChat-shaped error answer, made into a response at the end.
#[derive(Debug)]
pub(super) struct WxError {
    pub errcode: i64,
    pub errmsg: String,
}

impl WxError {
    pub fn new(errcode: i64, errmsg: impl Into<String>) -> Self {
        WxError {
            errcode,
            errmsg: errmsg.into(),
        }
    }

    /// A refusal of [`crate::identity::Access::check`]: errcode -1 (a
    /// code no SDK retries at once), the reason as `/v1` gives it.
    pub fn denied(resource: Resource<'_>, act: Act<'_>, denied: Denied) -> Self {
        let refusal = ApiError::denied(resource, act, denied);
        let code = refusal.code();
        WxError::new(-1, format!("system error (wxbroker: {code}: {refusal})"))
    }

    /// A forwarded call that failed on the broker's side of WeChat, the
    /// cause quoted.
    pub fn forwarding(err: &ProxyError) -> Self {
        WxError::new(-1, format!("system error (wxbroker: {})", Chain(err)))
    }

    pub fn into_response(self) -> Response<Body> {
        respond::wechat_error(self.errcode, &self.errmsg)
    }
}
