//! What WeChat tells an operator about an app (DESIGN.md section 16): how
//! much of an API's daily quota is left (`openapi/quota/get`), a reset of
//! every daily quota of the account (`clear_quota`, or `clear_quota/v2`
//! with the secret when no token can be had), and what the call behind an
//! error's `rid` was (`openapi/rid/get`). The broker makes these calls with
//! its own credentials, so an operator never handles the secret or a token.
//!
//! The calls spend the app's token like any API call: a rejection of it is
//! reported to the broker, as the proxy does, and the call is made once
//! more with the fresh token. A token never reaches a log line or an
//! error, and what `rid/get` quotes of a past request has its credentials
//! masked (`redact.rs`).

pub mod cgi_path;
pub mod poll;
mod redact;
pub mod report;
mod resets;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::AppKind;
use crate::engine::{AppHandle, CredentialRecord, InvalidateOutcome, TokenError};
use crate::errors::Chain;
use crate::wechat::is_token_rejected;

pub use cgi_path::CgiPath;
pub use poll::PollSchedule;
pub use resets::{ResetLedger, RESETS_PER_MONTH};

/// WeChat's "forbid to clear quota because of reaching the limit": the
/// account has used its resets for the month.
pub const RESET_LIMIT_ERRCODE: i64 = 48006;
/// `rid/get`: no such rid (never given, older than 7 days).
pub const RID_NOT_FOUND_ERRCODE: i64 = 76001;
/// `rid/get`: the rid is empty or malformed.
pub const RID_MALFORMED_ERRCODE: i64 = 76002;
/// `rid/get`: the rid belongs to another account.
pub const RID_OTHER_ACCOUNT_ERRCODE: i64 = 76003;
/// `quota/get`: WeChat knows no API at this cgi_path.
pub const CGI_PATH_UNKNOWN_ERRCODES: [i64; 2] = [76021, 76022];

/// An API's daily quota, as WeChat counts it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Quota {
    pub daily_limit: u64,
    pub used: u64,
    pub remain: u64,
}

/// How a reset was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetVia {
    /// `clear_quota` with the app's token.
    Token,
    /// `clear_quota/v2` with appid and secret: no token could be had.
    Secret,
}

impl ResetVia {
    pub fn endpoint(self) -> &'static str {
        match self {
            ResetVia::Token => "clear_quota",
            ResetVia::Secret => "clear_quota/v2",
        }
    }
}

/// A reset WeChat accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    pub via: ResetVia,
    /// Resets this broker's store has counted for the appid this Beijing
    /// month, this one included; `None` when the store could not count it.
    /// WeChat's own count also includes resets made in the web console.
    pub resets_this_month: Option<u32>,
    /// The apps of this appid whose 45009 hold was lifted.
    pub lifted: Vec<String>,
}

/// What `rid/get` told of a call, credentials masked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RidDetails {
    #[serde(default)]
    pub invoke_time: u64,
    #[serde(default)]
    pub cost_in_ms: u64,
    #[serde(default)]
    pub request_url: String,
    #[serde(default)]
    pub request_body: String,
    #[serde(default)]
    pub response_body: String,
    #[serde(default)]
    pub client_ip: String,
}

/// Why a diagnostic call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiagnosticsError {
    /// WeCom offers none of these APIs.
    #[error("app '{0}' is a WeCom app; WeCom has no quota/get, clear_quota or rid/get")]
    Wecom(String),
    #[error("no valid token: {0}")]
    Token(TokenError),
    /// WeChat answered with an errcode.
    #[error("wechat errcode {errcode}: {errmsg}")]
    Wechat { errcode: i64, errmsg: String },
    /// WeChat rejected the broker's token, and again after a refresh (or
    /// no refresh was allowed yet).
    #[error("wechat rejected the broker's token (errcode {errcode}: {errmsg})")]
    TokenRejected { errcode: i64, errmsg: String },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream error: {0}")]
    Upstream(String),
}

impl DiagnosticsError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            DiagnosticsError::Wechat { errcode, .. }
            | DiagnosticsError::TokenRejected { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
}

/// The upstream side of the diagnostics; one per daemon.
pub struct Diagnostics {
    http: reqwest::Client,
    resets: ResetLedger,
    /// How long a call waits for a token when the app has none.
    token_wait: Duration,
}

impl Diagnostics {
    /// `http` is the credential client (no redirects, no `Referer`): a
    /// reset may carry the secret.
    pub fn new(http: reqwest::Client, resets: ResetLedger, token_wait: Duration) -> Self {
        Diagnostics {
            http,
            resets,
            token_wait,
        }
    }

    /// WeChat's count for `cgi_path` today, waiting for a token if the app
    /// has none yet.
    pub async fn quota(
        &self,
        app: &AppHandle,
        cgi_path: &CgiPath,
    ) -> Result<Quota, DiagnosticsError> {
        refuse_wecom(app)?;
        let token = app
            .token(self.token_wait)
            .await
            .map_err(DiagnosticsError::Token)?;
        self.quota_with(app, token, cgi_path).await
    }

    /// [`Diagnostics::quota`] with a token already in hand (the poll uses
    /// the current token and never waits for one).
    pub async fn quota_with(
        &self,
        app: &AppHandle,
        token: Arc<CredentialRecord>,
        cgi_path: &CgiPath,
    ) -> Result<Quota, DiagnosticsError> {
        let body = json!({ "cgi_path": cgi_path.as_str() });
        let answer = self
            .call_with_token(app, token, "/cgi-bin/openapi/quota/get", &body)
            .await?;
        serde_json::from_value(answer["quota"].clone())
            .map_err(|err| DiagnosticsError::Upstream(format!("malformed quota/get answer: {err}")))
    }

    /// Resets every daily quota of the app's account: `clear_quota` with
    /// the token, or `clear_quota/v2` with the secret when no token can be
    /// had (the token itself hit 45009) or WeChat rejects it. Counted per
    /// month in the store, logged, and the 45009 hold of every app of this
    /// appid is lifted at once.
    pub async fn clear_quota(
        &self,
        broker: &Broker,
        app: &AppHandle,
    ) -> Result<Reset, DiagnosticsError> {
        refuse_wecom(app)?;
        let config = app.config();
        let via = match app.token(self.token_wait).await {
            Ok(token) => {
                let body = json!({ "appid": config.appid });
                match self
                    .call_with_token(app, token, "/cgi-bin/clear_quota", &body)
                    .await
                {
                    Ok(_) => ResetVia::Token,
                    Err(DiagnosticsError::TokenRejected { .. }) => {
                        self.clear_with_secret(app).await?
                    }
                    Err(err) => return Err(err),
                }
            }
            Err(TokenError::Unavailable { .. }) => self.clear_with_secret(app).await?,
            Err(err @ TokenError::ShuttingDown) => return Err(DiagnosticsError::Token(err)),
        };
        let month = resets::beijing_month(app.now_secs());
        let resets_this_month = match self.resets.count(&config.appid, month).await {
            Ok(count) => Some(count),
            Err(err) => {
                warn!(app = %config.name, error = %Chain(&err), "could not count the quota reset in the store");
                None
            }
        };
        let lifted: Vec<String> = broker
            .apps()
            .iter()
            .filter(|other| {
                other.config().appid == config.appid && other.config().kind == AppKind::Wechat
            })
            .map(|other| {
                other.lift_quota_hold();
                other.name().to_owned()
            })
            .collect();
        info!(
            app = %config.name,
            appid = %config.appid,
            via = via.endpoint(),
            resets_this_month,
            monthly_limit = RESETS_PER_MONTH,
            "wechat quota reset by an operator"
        );
        Ok(Reset {
            via,
            resets_this_month,
            lifted,
        })
    }

    /// Resets this broker's store has counted for the app's appid this
    /// Beijing month.
    pub async fn resets_this_month(&self, app: &AppHandle) -> Option<u32> {
        let month = resets::beijing_month(app.now_secs());
        self.resets.get(&app.config().appid, month).await.ok()
    }

    /// What WeChat recorded of the call that got `rid` (credentials
    /// masked).
    pub async fn rid(&self, app: &AppHandle, rid: &str) -> Result<RidDetails, DiagnosticsError> {
        refuse_wecom(app)?;
        let token = app
            .token(self.token_wait)
            .await
            .map_err(DiagnosticsError::Token)?;
        let answer = self
            .call_with_token(
                app,
                token,
                "/cgi-bin/openapi/rid/get",
                &json!({ "rid": rid }),
            )
            .await?;
        let details: RidDetails =
            serde_json::from_value(answer["request"].clone()).map_err(|err| {
                DiagnosticsError::Upstream(format!("malformed rid/get answer: {err}"))
            })?;
        Ok(redact::rid_details(details))
    }

    async fn clear_with_secret(&self, app: &AppHandle) -> Result<ResetVia, DiagnosticsError> {
        let config = app.config();
        info!(app = %config.name, "no usable token for clear_quota; resetting with clear_quota/v2 and the app secret");
        // The secret goes in the body, never in a URL that a proxy or an
        // access log on the way might record.
        let request = self
            .http
            .post(format!("{}/cgi-bin/clear_quota/v2", config.api_base))
            .form(&[
                ("appid", config.appid.as_str()),
                ("appsecret", config.secret.expose()),
            ]);
        self.send(request, config.fetch_timeout).await?;
        Ok(ResetVia::Secret)
    }

    /// One app-token call, and on a rejection of the token one report to
    /// the broker and one more call with the token it then holds.
    async fn call_with_token(
        &self,
        app: &AppHandle,
        mut token: Arc<CredentialRecord>,
        path: &str,
        body: &Value,
    ) -> Result<Value, DiagnosticsError> {
        let config = app.config();
        let mut retried = false;
        loop {
            let request = self
                .http
                .post(format!("{}{path}", config.api_base))
                .query(&[("access_token", token.value.expose())])
                .json(body);
            let (errcode, errmsg) = match self.send(request, config.fetch_timeout).await {
                Err(DiagnosticsError::Wechat { errcode, errmsg }) if is_token_rejected(errcode) => {
                    (errcode, errmsg)
                }
                answer => return answer,
            };
            let reported = token.value.expose().to_owned();
            let outcome = app
                .report_rejected(&reported, self.token_wait)
                .await
                .map_err(DiagnosticsError::Token)?;
            let may_retry = matches!(
                outcome,
                InvalidateOutcome::Refreshed | InvalidateOutcome::AlreadyRotated
            );
            if retried || !may_retry {
                return Err(DiagnosticsError::TokenRejected { errcode, errmsg });
            }
            let fresh = app
                .token(self.token_wait)
                .await
                .map_err(DiagnosticsError::Token)?;
            if fresh.value.expose() == reported {
                return Err(DiagnosticsError::TokenRejected { errcode, errmsg });
            }
            token = fresh;
            retried = true;
        }
    }

    /// Sends one call within `timeout` and reads WeChat's answer: the JSON
    /// object, or its errcode as an error.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, DiagnosticsError> {
        let exchange = async {
            let response = request.send().await.map_err(upstream_error)?;
            let status = response.status();
            let body = response.bytes().await.map_err(upstream_error)?;
            if !status.is_success() {
                return Err(DiagnosticsError::Upstream(format!(
                    "upstream answered http status {}",
                    status.as_u16()
                )));
            }
            let answer: Value = serde_json::from_slice(&body).map_err(|err| {
                DiagnosticsError::Upstream(format!("malformed upstream answer: {err}"))
            })?;
            match answer["errcode"].as_i64() {
                Some(errcode) if errcode != 0 => Err(DiagnosticsError::Wechat {
                    errcode,
                    errmsg: answer["errmsg"].as_str().unwrap_or_default().to_owned(),
                }),
                _ => Ok(answer),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(DiagnosticsError::Timeout(timeout)))
    }
}

fn refuse_wecom(app: &AppHandle) -> Result<(), DiagnosticsError> {
    match app.config().kind {
        AppKind::Wecom => Err(DiagnosticsError::Wecom(app.name().to_owned())),
        AppKind::Wechat => Ok(()),
    }
}

/// reqwest errors quote the URL, which carries the token: it is stripped
/// before the error goes anywhere.
fn upstream_error(err: reqwest::Error) -> DiagnosticsError {
    DiagnosticsError::Upstream(crate::wechat::describe_without_url(err))
}
