//! The API's errors, and the one place each maps to an HTTP status, a
//! stable `code` and a JSON body (DESIGN.md section 5).

use http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::Response;
use serde_json::json;

use super::credentials::CredentialError;
use super::proxy::{ProxyError, PROXY_BODY_LIMIT};
use super::respond::{self, Body};
use crate::credential::Credential;
use crate::engine::{LastError, TokenError};
use crate::identity::{Act, Denied, Resource};
use crate::platform::{AuthorizerError, PlatformHandle};
use crate::suite::{CorpError, SuiteHandle};
use crate::wechat_path::Withheld;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("no app named '{name}'; configured: {configured}")]
    AppNotFound { name: String, configured: String },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("several apps are configured ({configured}); use /v1/apps/{{app}}/token")]
    NoDefaultApp { configured: String },
    #[error("{method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("requests over TCP must carry a Wxbroker-Client header naming the calling service ([A-Za-z0-9._-]{{1,64}})")]
    MissingClientHeader,
    #[error("requests relayed by a proxy (X-Forwarded-For or Forwarded) are refused")]
    ProxiedRequestRefused,
    #[error("the proxy never forwards {endpoint}: it fetches a credential, which only the broker does; read the token from GET /v1/apps/{app}/token")]
    CredentialEndpointRefused { app: String, endpoint: &'static str },
    #[error("the proxy never forwards this path: {0}")]
    ForwardWithheld(Withheld),
    #[error("this client may not call {path} through the proxy: it is not in the client's apis")]
    ApiNotAllowed { path: String },
    #[error("{0}")]
    AdminOnly(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("app '{app}' has no valid {credential}; retry in {retry_after}s")]
    TokenUnavailable {
        app: String,
        credential: Credential,
        retry_after: u64,
        last_error: Option<LastError>,
    },
    #[error("app '{app}' has no {kind} ticket configured; its tickets: [{configured}]")]
    TicketNotConfigured {
        app: String,
        kind: String,
        configured: String,
    },
    #[error("no platform named '{name}'; configured: {configured}")]
    PlatformNotFound { name: String, configured: String },
    #[error("platform '{platform}' has no authorizer '{appid}'")]
    AuthorizerNotFound { platform: String, appid: String },
    #[error("no suite named '{name}'; configured: {configured}")]
    SuiteNotFound { name: String, configured: String },
    #[error("no corp '{corpid}' has installed suite '{suite}'")]
    CorpNotFound { suite: String, corpid: String },
    #[error(
        "suite '{suite}' keeps no {kind} ticket for its corps; its corp_tickets: [{configured}]"
    )]
    CorpTicketNotConfigured {
        suite: String,
        kind: String,
        configured: String,
    },
    #[error("suite '{suite}' has no provider token: set provider_secret_env (or provider_secret_file) in its [[suites]] entry")]
    ProviderNotConfigured { suite: String },
    #[error("upstream error: {0}")]
    UpstreamError(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error(
        "this listener serves authenticated clients only: send Authorization: Bearer <credential>"
    )]
    Unauthorized,
    #[error("this client may not read {what} '{name}'")]
    Forbidden { what: &'static str, name: String },
    #[error("client '{client}' already holds {limit} open watches (server.remote_max_watches_per_client); wait for one to end")]
    TooManyWatches { client: String, limit: usize },
    #[error("this request was already forwarded by a wxbroker (Wxbroker-Forwarded): forwarding it again would loop; point api_base (or [upstream] connect_to) at WeChat, not at a broker")]
    ForwardingLoop,
}

impl ApiError {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ApiError::AppNotFound { .. }
            | ApiError::RouteNotFound { .. }
            | ApiError::NoDefaultApp { .. }
            | ApiError::TicketNotConfigured { .. }
            | ApiError::PlatformNotFound { .. }
            | ApiError::AuthorizerNotFound { .. }
            | ApiError::SuiteNotFound { .. }
            | ApiError::CorpNotFound { .. }
            | ApiError::ProviderNotConfigured { .. }
            | ApiError::CorpTicketNotConfigured { .. } => S::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => S::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => S::BAD_REQUEST,
            ApiError::MissingClientHeader => S::PRECONDITION_FAILED,
            ApiError::ProxiedRequestRefused
            | ApiError::CredentialEndpointRefused { .. }
            | ApiError::ForwardWithheld(_)
            | ApiError::ApiNotAllowed { .. }
            | ApiError::AdminOnly(_) => S::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => S::REQUEST_TIMEOUT,
            ApiError::TokenUnavailable { .. } => S::SERVICE_UNAVAILABLE,
            ApiError::UpstreamError(_) => S::BAD_GATEWAY,
            ApiError::UpstreamTimeout => S::GATEWAY_TIMEOUT,
            ApiError::Unauthorized => S::UNAUTHORIZED,
            ApiError::Forbidden { .. } => S::FORBIDDEN,
            ApiError::TooManyWatches { .. } => S::TOO_MANY_REQUESTS,
            ApiError::ForwardingLoop => S::LOOP_DETECTED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::AppNotFound { .. } => "app_not_found",
            ApiError::RouteNotFound { .. } => "route_not_found",
            ApiError::NoDefaultApp { .. } => "no_default_app",
            ApiError::TicketNotConfigured { .. } | ApiError::CorpTicketNotConfigured { .. } => {
                "ticket_not_configured"
            }
            ApiError::PlatformNotFound { .. } => "platform_not_found",
            ApiError::AuthorizerNotFound { .. } => "authorizer_not_found",
            ApiError::SuiteNotFound { .. } => "suite_not_found",
            ApiError::CorpNotFound { .. } => "corp_not_found",
            ApiError::ProviderNotConfigured { .. } => "provider_not_configured",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::MissingClientHeader => "missing_client_header",
            ApiError::ProxiedRequestRefused
            | ApiError::CredentialEndpointRefused { .. }
            | ApiError::ForwardWithheld(_) => "proxied_request_refused",
            ApiError::ApiNotAllowed { .. } => "api_not_allowed",
            ApiError::AdminOnly(_) => "admin_only",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::TokenUnavailable { .. } => "token_unavailable",
            ApiError::UpstreamError(_) => "upstream_error",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::TooManyWatches { .. } => "too_many_watches",
            ApiError::ForwardingLoop => "forwarding_loop",
        }
    }

    /// Seconds for a `Retry-After` header, where one applies.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TokenUnavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// `{"error":{"code":..,"message":..}}`, plus `retry_after` and the last
    /// upstream `errcode`/`errmsg` for `token_unavailable`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::TokenUnavailable {
            retry_after,
            last_error,
            ..
        } = self
        {
            error["retry_after"] = json!(retry_after);
            if let Some(last) = last_error {
                error["errcode"] = json!(last.errcode);
                error["errmsg"] = json!(last.errmsg);
                if let Some(ip) = last.blocked_ip() {
                    error["blocked_ip"] = json!(ip.to_string());
                }
            }
        }
        json!({ "error": error })
    }

    /// The error as the API answers it: its status, its JSON body, and
    /// `Retry-After` or `WWW-Authenticate` where they apply.
    pub fn response(&self) -> Response<Body> {
        let mut response = respond::json(self.status(), &self.to_json());
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let ApiError::Unauthorized = self {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wxbroker\""),
            );
        }
        response
    }

    /// A refusal of [`crate::identity::Access::check`].
    pub fn denied(resource: Resource<'_>, act: Act<'_>, denied: Denied) -> Self {
        match (denied, act) {
            (Denied::ApiNotAllowed, Act::Forward(path)) => ApiError::ApiNotAllowed {
                path: path.shown(),
            },
            (Denied::AdminOnly, _) => ApiError::AdminOnly(format!(
                "this client may not take operator actions on {} '{}': that needs a [[clients]] entry with admin = true naming it, or root",
                resource.kind(),
                resource.name().chars().take(64).collect::<String>()
            )),
            _ => ApiError::Forbidden {
                what: resource.kind(),
                name: resource.name().chars().take(64).collect(),
            },
        }
    }

    pub fn from_proxy_error(app: &str, err: ProxyError) -> Self {
        match err {
            ProxyError::BadPath(why) => ApiError::BadRequest(format!(
                "{why}: the proxy forwards only to paths under the app's api_base"
            )),
            ProxyError::CredentialEndpoint(endpoint) => ApiError::CredentialEndpointRefused {
                app: app.to_owned(),
                endpoint,
            },
            ProxyError::Withheld(withheld) => ApiError::ForwardWithheld(withheld),
            ProxyError::TooLarge => ApiError::PayloadTooLarge {
                limit: PROXY_BODY_LIMIT,
            },
            ProxyError::BadBody(message) => ApiError::BadRequest(message),
            ProxyError::BodyTimeout => ApiError::RequestTimeout,
            ProxyError::Token(err) => ApiError::from_token_error(app, err),
            ProxyError::Timeout(_) => ApiError::UpstreamTimeout,
            ProxyError::Upstream(message) => ApiError::UpstreamError(message),
            ProxyError::TokenRejected {
                errcode,
                errmsg,
                retry_after,
            } => ApiError::TokenUnavailable {
                app: app.to_owned(),
                credential: Credential::AccessToken,
                retry_after,
                last_error: Some(LastError {
                    errcode: Some(errcode),
                    errmsg,
                    at: crate::clock::Clock::new().now_secs(),
                }),
            },
        }
    }

    /// An authorizer's error.
    pub fn from_authorizer_error(
        platform: &PlatformHandle,
        appid: &str,
        err: AuthorizerError,
    ) -> Self {
        let appid: String = appid.chars().take(64).collect();
        match err {
            AuthorizerError::NotFound => ApiError::AuthorizerNotFound {
                platform: platform.name().to_owned(),
                appid,
            },
            AuthorizerError::Unavailable => ApiError::TokenUnavailable {
                app: format!("{}/{appid}", platform.name()),
                credential: Credential::AuthorizerToken,
                retry_after: 1,
                last_error: None,
            },
        }
    }

    /// A corp's error.
    pub fn from_corp_error(suite: &SuiteHandle, corpid: &str, err: CorpError) -> Self {
        let corpid: String = corpid.chars().take(64).collect();
        match err {
            CorpError::NotFound => ApiError::CorpNotFound {
                suite: suite.name().to_owned(),
                corpid,
            },
            CorpError::Unavailable { .. } => ApiError::TokenUnavailable {
                app: format!("{}/{corpid}", suite.name()),
                credential: Credential::CorpAccessToken,
                retry_after: 1,
                last_error: None,
            },
            CorpError::TicketNotConfigured => {
                ApiError::corp_ticket_not_configured(suite, "requested")
            }
        }
    }

    /// 404 `ticket_not_configured` for a corp's ticket of `kind`, naming
    /// the suite's `corp_tickets`.
    pub fn corp_ticket_not_configured(suite: &SuiteHandle, kind: &str) -> Self {
        ApiError::CorpTicketNotConfigured {
            suite: suite.name().to_owned(),
            kind: kind.chars().take(32).collect(),
            configured: suite
                .config()
                .corp_tickets
                .iter()
                .map(|kind| format!("\"{kind}\""))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    pub fn from_token_error(app: &str, err: TokenError) -> Self {
        ApiError::from_credential_error(app, Credential::AccessToken, err)
    }

    pub fn from_credential_error(app: &str, credential: Credential, err: TokenError) -> Self {
        let (retry_after, last_error) = match err {
            TokenError::Unavailable {
                retry_after,
                last_error,
            } => (retry_after, last_error),
            TokenError::ShuttingDown => (1, None),
        };
        ApiError::TokenUnavailable {
            app: app.to_owned(),
            credential,
            retry_after,
            last_error,
        }
    }
}

impl From<CredentialError> for ApiError {
    fn from(err: CredentialError) -> Self {
        match err {
            CredentialError::Engine {
                owner,
                credential,
                err,
            } => ApiError::from_credential_error(&owner, credential, err),
            CredentialError::Authorizer {
                platform,
                appid,
                err,
            } => ApiError::from_authorizer_error(&platform, &appid, err),
            CredentialError::Corp { suite, corpid, err } => {
                ApiError::from_corp_error(&suite, &corpid, err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_unavailable_carries_retry_and_upstream_error() {
        let err = ApiError::TokenUnavailable {
            app: "shop".into(),
            credential: Credential::AccessToken,
            retry_after: 7,
            last_error: Some(LastError {
                errcode: Some(40164),
                errmsg: "invalid ip".into(),
                at: 1,
            }),
        };
        assert_eq!(err.status(), 503);
        let body = err.to_json();
        assert_eq!(body["error"]["code"], "token_unavailable");
        assert_eq!(body["error"]["retry_after"], 7);
        assert_eq!(body["error"]["errcode"], 40164);
        assert_eq!(err.retry_after(), Some(7));
    }
}
