//! How a JS-SDK ticket is fetched (DESIGN.md section 11): with the app's
//! current access token, from `getticket` (WeChat), `get_jsapi_ticket`
//! (a WeCom corp) or `ticket/get?type=agent_config` (a WeCom agent). A
//! ticket answered with a token rejection (40001, 40014, 42001) reports
//! that token to its refresher (compare-and-refresh) and is asked once
//! more with the next one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tracing::warn;

use super::{CredentialHandle, InvalidateOutcome};
use crate::config::{AppConfig, AppKind};
use crate::credential::TicketKind;
use crate::secret::AccessToken;
use crate::wechat::{self, AnswerField, FetchError, TokenGrant, TokenSource};

/// Makes the source of an app's ticket, given the handle of the access
/// token it is fetched with. Injected, so the engine's tests can script
/// ticket answers as they script token answers.
pub trait TicketSources: Send + Sync + 'static {
    fn source(
        &self,
        app: &AppConfig,
        kind: TicketKind,
        token: CredentialHandle,
    ) -> Arc<dyn TokenSource>;
}

/// Tickets from WeChat (or whatever `api_base` names).
pub struct WechatTickets {
    http: reqwest::Client,
}

impl WechatTickets {
    pub fn new(http: reqwest::Client) -> Self {
        WechatTickets { http }
    }
}

impl TicketSources for WechatTickets {
    fn source(
        &self,
        app: &AppConfig,
        kind: TicketKind,
        token: CredentialHandle,
    ) -> Arc<dyn TokenSource> {
        Arc::new(WechatTicketSource {
            http: self.http.clone(),
            endpoint: TicketEndpoint::of(app, kind),
            token,
            timeout: app.fetch_timeout,
        })
    }
}

/// Where a ticket kind is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TicketEndpoint {
    url: String,
    kind: Option<&'static str>,
}

impl TicketEndpoint {
    fn of(app: &AppConfig, kind: TicketKind) -> Self {
        let base = &app.api_base;
        match (app.kind, kind) {
            (AppKind::Wecom, TicketKind::Jsapi) => TicketEndpoint {
                url: format!("{base}/cgi-bin/get_jsapi_ticket"),
                kind: None,
            },
            (AppKind::Wecom, _) => TicketEndpoint {
                url: format!("{base}/cgi-bin/ticket/get"),
                kind: Some(kind.name()),
            },
            (AppKind::Wechat, _) => TicketEndpoint {
                url: format!("{base}/cgi-bin/ticket/getticket"),
                kind: Some(kind.name()),
            },
        }
    }
}

struct WechatTicketSource {
    http: reqwest::Client,
    endpoint: TicketEndpoint,
    token: CredentialHandle,
    timeout: Duration,
}

impl WechatTicketSource {
    /// The app's valid token, waiting for one within the fetch timeout.
    async fn token(&self) -> Result<AccessToken, FetchError> {
        self.token
            .token(self.timeout)
            .await
            .map(|record| record.value.clone())
            .map_err(|err| FetchError::Parent(err.to_string()))
    }

    async fn ask(&self, token: &AccessToken) -> Result<TokenGrant, FetchError> {
        let mut query = vec![("access_token", token.expose())];
        if let Some(kind) = self.endpoint.kind {
            query.push(("type", kind));
        }
        let request = self.http.get(&self.endpoint.url).query(&query);
        wechat::exchange(request, AnswerField::Ticket, self.timeout).await
    }

    async fn fetch_with_retry(&self) -> Result<TokenGrant, FetchError> {
        let token = self.token().await?;
        match self.ask(&token).await {
            Err(FetchError::Api { errcode, .. }) if wechat::is_token_rejected(errcode) => {
                warn!(
                    errcode,
                    token = %token.fingerprint(),
                    "ticket fetch rejected the app's access token; reporting it and asking once more"
                );
                let outcome = self
                    .token
                    .invalidate(token.expose(), self.timeout)
                    .await
                    .map_err(|err| FetchError::Parent(err.to_string()))?;
                if matches!(
                    outcome,
                    InvalidateOutcome::RateLimited | InvalidateOutcome::Failed
                ) {
                    return Err(FetchError::Parent(format!(
                        "the token was rejected (errcode {errcode}) and could not be replaced yet"
                    )));
                }
                let next = self.token().await?;
                match self.ask(&next).await {
                    Err(FetchError::Api { errcode, .. }) if wechat::is_token_rejected(errcode) => {
                        Err(FetchError::Parent(format!(
                            "a fresh token was rejected too (errcode {errcode})"
                        )))
                    }
                    other => other,
                }
            }
            other => other,
        }
    }
}

impl TokenSource for WechatTicketSource {
    fn fetch(&self, _force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(self.fetch_with_retry())
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), FetchError>> {
        Box::pin(async { self.token().await.map(drop) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_endpoint() {
        let config = |kind: AppKind| {
            let mut app = crate::engine::tests::app(crate::config::Grant::Classic);
            app.kind = kind;
            app.api_base = "https://x".into();
            app
        };
        let cases = [
            (
                AppKind::Wechat,
                TicketKind::Jsapi,
                "https://x/cgi-bin/ticket/getticket",
                Some("jsapi"),
            ),
            (
                AppKind::Wechat,
                TicketKind::WxCard,
                "https://x/cgi-bin/ticket/getticket",
                Some("wx_card"),
            ),
            (
                AppKind::Wecom,
                TicketKind::Jsapi,
                "https://x/cgi-bin/get_jsapi_ticket",
                None,
            ),
            (
                AppKind::Wecom,
                TicketKind::AgentConfig,
                "https://x/cgi-bin/ticket/get",
                Some("agent_config"),
            ),
        ];
        for (app_kind, kind, url, type_) in cases {
            let endpoint = TicketEndpoint::of(&config(app_kind), kind);
            assert_eq!((endpoint.url.as_str(), endpoint.kind), (url, type_));
        }
    }
}
