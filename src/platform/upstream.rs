//! The component endpoints of WeChat's Open Platform that take the
//! component token, as the broker calls them: the authorization code
//! exchange, an authorizer's token, the authorizer list and a pre-auth
//! code (the component token itself is the engine's pushed-ticket source,
//! [`super::component`]). Every call is one POST of JSON, never
//! follows a redirect (the client is the credential client), and its
//! failures are [`FetchError`]s, classified like every other credential's.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::PlatformConfig;
use crate::secret::AccessToken;
use crate::wechat::{FetchError, MAX_LIFETIME_SECS};

/// An authorizer's token answer (`api_query_auth`, `api_authorizer_token`).
#[derive(Clone)]
pub struct AuthorizerGrant {
    pub appid: String,
    pub access_token: AccessToken,
    pub expires_in: u64,
    /// Empty when the answer carried none: the caller keeps the old one.
    pub refresh_token: String,
}

/// One authorizer of `api_get_authorizer_list`.
#[derive(Clone, Deserialize)]
pub struct ListedAuthorizer {
    pub authorizer_appid: String,
    #[serde(default)]
    pub refresh_token: String,
    #[serde(default)]
    pub auth_time: u64,
}

#[derive(Deserialize)]
pub struct AuthorizerPage {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub list: Vec<ListedAuthorizer>,
}

/// The component API of one platform.
#[derive(Clone)]
pub struct ComponentApi {
    http: reqwest::Client,
    base: String,
    component_appid: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

impl ComponentApi {
    pub fn new(http: reqwest::Client, platform: &PlatformConfig) -> Self {
        ComponentApi {
            http,
            base: platform.api_base.clone(),
            component_appid: platform.component_appid.clone(),
            timeout: platform.fetch_timeout,
        }
    }

    /// POSTs `body` to `path` (with the component token in the query when
    /// given) and parses a success as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        component_token: Option<&str>,
        body: Value,
    ) -> Result<T, FetchError> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = component_token {
            request = request.query(&[("component_access_token", token)]);
        }
        let exchange = async {
            let bytes = crate::wechat::credential_body(request).await?;
            let errors: ErrorFields = serde_json::from_slice(&bytes)
                .map_err(|_| FetchError::Malformed("not a JSON object".into()))?;
            if let Some(errcode) = errors.errcode.filter(|code| *code != 0) {
                return Err(FetchError::Api {
                    errcode,
                    errmsg: errors.errmsg.unwrap_or_default(),
                });
            }
            serde_json::from_slice(&bytes)
                .map_err(|err| FetchError::Malformed(format!("unexpected answer: {err}")))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    /// `api_query_auth`: an authorization code for the authorizer's tokens.
    pub async fn query_auth(
        &self,
        component_token: &str,
        code: &str,
    ) -> Result<AuthorizerGrant, FetchError> {
        #[derive(Deserialize)]
        struct Info {
            authorizer_appid: String,
            #[serde(default)]
            authorizer_access_token: String,
            #[serde(default)]
            expires_in: u64,
            #[serde(default)]
            authorizer_refresh_token: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            authorization_info: Info,
        }
        let answer: Answer = self
            .call(
                "/cgi-bin/component/api_query_auth",
                Some(component_token),
                json!({
                    "component_appid": self.component_appid,
                    "authorization_code": code,
                }),
            )
            .await?;
        let info = answer.authorization_info;
        grant(
            info.authorizer_appid,
            info.authorizer_access_token,
            info.expires_in,
            info.authorizer_refresh_token,
        )
    }

    /// `api_authorizer_token`: a new token for one authorizer.
    pub async fn authorizer_token(
        &self,
        component_token: &str,
        appid: &str,
        refresh_token: &str,
    ) -> Result<AuthorizerGrant, FetchError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            authorizer_access_token: String,
            #[serde(default)]
            expires_in: u64,
            #[serde(default)]
            authorizer_refresh_token: String,
        }
        let answer: Answer = self
            .call(
                "/cgi-bin/component/api_authorizer_token",
                Some(component_token),
                json!({
                    "component_appid": self.component_appid,
                    "authorizer_appid": appid,
                    "authorizer_refresh_token": refresh_token,
                }),
            )
            .await?;
        grant(
            appid.to_owned(),
            answer.authorizer_access_token,
            answer.expires_in,
            answer.authorizer_refresh_token,
        )
    }

    /// One page of `api_get_authorizer_list` (`count` at most 500).
    pub async fn authorizer_list(
        &self,
        component_token: &str,
        offset: u64,
        count: u64,
    ) -> Result<AuthorizerPage, FetchError> {
        self.call(
            "/cgi-bin/component/api_get_authorizer_list",
            Some(component_token),
            json!({
                "component_appid": self.component_appid,
                "offset": offset,
                "count": count.min(500),
            }),
        )
        .await
    }

    /// `api_create_preauthcode`.
    pub async fn pre_auth_code(&self, component_token: &str) -> Result<(String, u64), FetchError> {
        #[derive(Deserialize)]
        struct Answer {
            pre_auth_code: String,
            #[serde(default)]
            expires_in: u64,
        }
        let answer: Answer = self
            .call(
                "/cgi-bin/component/api_create_preauthcode",
                Some(component_token),
                json!({ "component_appid": self.component_appid }),
            )
            .await?;
        Ok((answer.pre_auth_code, answer.expires_in))
    }
}

fn grant(
    appid: String,
    access_token: String,
    expires_in: u64,
    refresh_token: String,
) -> Result<AuthorizerGrant, FetchError> {
    if access_token.is_empty() || expires_in == 0 {
        return Err(FetchError::Malformed(
            "answer has no authorizer_access_token or expires_in".into(),
        ));
    }
    Ok(AuthorizerGrant {
        appid,
        access_token: AccessToken::new(access_token),
        expires_in: expires_in.min(MAX_LIFETIME_SECS),
        refresh_token,
    })
}
