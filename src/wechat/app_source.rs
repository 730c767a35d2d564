//! The real upstream of one configured app: its token asked of WeChat
//! (classic `/cgi-bin/token`, `/cgi-bin/stable_token`) or WeCom
//! (`gettoken`), and its held token checked with `get_api_domain_ip`.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::answer::{check_answer, AnswerField, TokenGrant};
use super::fetch_error::FetchError;
use super::http::{credential_body, exchange};
use super::source::{TokenCheck, TokenSource};
use crate::config::{AppConfig, AppKind, Grant};
use crate::secret::{AccessToken, Secret};

/// The real upstream for one configured app.
pub struct WechatSource {
    http: reqwest::Client,
    kind: AppKind,
    grant: Grant,
    appid: String,
    secret: Secret,
    api_base: String,
    timeout: Duration,
}

impl WechatSource {
    pub fn new(http: reqwest::Client, app: &AppConfig) -> Self {
        WechatSource {
            http,
            kind: app.kind,
            grant: app.grant,
            appid: app.appid.clone(),
            secret: app.secret.clone(),
            api_base: app.api_base.clone(),
            timeout: app.fetch_timeout,
        }
    }

    fn request(&self, force_refresh: bool) -> reqwest::RequestBuilder {
        match (self.kind, self.grant) {
            (AppKind::Wecom, _) => self
                .http
                .get(format!("{}/cgi-bin/gettoken", self.api_base))
                .query(&[
                    ("corpid", &*self.appid),
                    ("corpsecret", self.secret.expose()),
                ]),
            (AppKind::Wechat, Grant::Classic) => self
                .http
                .get(format!("{}/cgi-bin/token", self.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", &*self.appid),
                    ("secret", self.secret.expose()),
                ]),
            (AppKind::Wechat, Grant::Stable) => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.api_base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret.expose(),
                    "force_refresh": force_refresh,
                })),
        }
    }

    async fn call(&self, force_refresh: bool) -> Result<TokenGrant, FetchError> {
        exchange(
            self.request(force_refresh),
            AnswerField::AccessToken,
            self.timeout,
        )
        .await
    }
}

impl TokenSource for WechatSource {
    fn fetch(&self, force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(self.call(force_refresh))
    }

    fn token_check(&self) -> Option<&dyn TokenCheck> {
        Some(self)
    }
}

/// `GET /cgi-bin/get_api_domain_ip?access_token=T`: WeChat and WeCom both
/// answer it for a valid app token, on a quota of its own, and answer
/// 40001, 40014 or 42001 for a dead one.
impl TokenCheck for WechatSource {
    fn check<'a>(&'a self, token: &'a AccessToken) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let request = self
                .http
                .get(format!("{}/cgi-bin/get_api_domain_ip", self.api_base))
                .query(&[("access_token", token.expose())]);
            let exchange = async { check_answer(&credential_body(request).await?) };
            tokio::time::timeout(self.timeout, exchange)
                .await
                .unwrap_or(Err(FetchError::Timeout(self.timeout)))
        })
    }
}
