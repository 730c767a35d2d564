//! WeCom's service-provider endpoints as the broker calls them, besides
//! the suite token itself (the engine's pushed-ticket source): the
//! install exchange (`v2/get_permanent_code`), a corp's description
//! (`get_auth_info`), a corp's token (`get_corp_token`, or for a 代开发
//! install `gettoken` with the permanent code as the secret), a pre-auth
//! code, the provider token, and a corp's JS-SDK tickets. Every call is
//! bounded by the suite's `fetch_timeout`, never follows a redirect (the
//! client is the credential client), and fails as a [`FetchError`],
//! classified like every other credential's.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::config::SuiteConfig;
use crate::credential::TicketKind;
use crate::secret::{AccessToken, Secret};
use crate::wechat::{self, AnswerField, FetchError, TokenGrant, MAX_LIFETIME_SECS};

/// 42009: the suite token expired; 40082: WeCom never issued it (or it
/// is another suite's). Either way the suite's refresher must replace it.
pub const SUITE_TOKEN_REJECTED: [i64; 2] = [42009, 40082];

/// Whether an answer to a call made with the suite token rejects it.
pub fn rejects_suite_token(err: &FetchError) -> bool {
    err.errcode()
        .is_some_and(|code| SUITE_TOKEN_REJECTED.contains(&code) || wechat::is_token_rejected(code))
}

/// Whether `corpid` looks like WeCom's (`ww…`, up to 64 letters, digits,
/// `_` or `-`): it names files and keys, so an answer that says otherwise
/// is refused.
pub fn is_corpid(corpid: &str) -> bool {
    (1..=64).contains(&corpid.len())
        && corpid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A corp's install, as `v2/get_permanent_code` answers it.
pub struct Install {
    pub corpid: String,
    pub corp_name: String,
    pub permanent_code: String,
}

/// The endpoints of one suite.
#[derive(Clone)]
pub struct SuiteApi {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

#[derive(Deserialize)]
struct CorpInfo {
    corpid: String,
    #[serde(default)]
    corp_name: String,
}

impl SuiteApi {
    pub fn new(http: reqwest::Client, suite: &SuiteConfig) -> Self {
        SuiteApi {
            http,
            base: suite.api_base.clone(),
            timeout: suite.fetch_timeout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` and parses a success as `T`; an errcode other than
    /// 0 is [`FetchError::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, FetchError> {
        let exchange = async {
            let bytes = wechat::credential_body(request).await?;
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

    /// A POST of `body` to `path?suite_access_token=`.
    fn with_suite_token(
        &self,
        path: &str,
        suite_token: &AccessToken,
        body: serde_json::Value,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .query(&[("suite_access_token", suite_token.expose())])
            .json(&body)
    }

    /// `v2/get_permanent_code`: an install's `AuthCode` (one use) for the
    /// corp's permanent code and name.
    pub async fn permanent_code(
        &self,
        suite_token: &AccessToken,
        auth_code: &str,
    ) -> Result<Install, FetchError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            permanent_code: String,
            auth_corp_info: CorpInfo,
        }
        let answer: Answer = self
            .call(self.with_suite_token(
                "/cgi-bin/service/v2/get_permanent_code",
                suite_token,
                json!({ "auth_code": auth_code }),
            ))
            .await?;
        if answer.permanent_code.is_empty() || !is_corpid(&answer.auth_corp_info.corpid) {
            return Err(FetchError::Malformed(
                "the answer has no permanent_code or no plausible corpid".into(),
            ));
        }
        Ok(Install {
            corpid: answer.auth_corp_info.corpid,
            corp_name: answer.auth_corp_info.corp_name,
            permanent_code: answer.permanent_code,
        })
    }

    /// `get_auth_info`: the corp's name now.
    pub async fn corp_name(
        &self,
        suite_token: &AccessToken,
        corpid: &str,
        permanent_code: &str,
    ) -> Result<String, FetchError> {
        #[derive(Deserialize)]
        struct Answer {
            auth_corp_info: CorpInfo,
        }
        let answer: Answer = self
            .call(self.with_suite_token(
                "/cgi-bin/service/get_auth_info",
                suite_token,
                json!({ "auth_corpid": corpid, "permanent_code": permanent_code }),
            ))
            .await?;
        Ok(answer.auth_corp_info.corp_name)
    }

    /// `get_corp_token`: the corp's token with the suite token.
    pub async fn corp_token(
        &self,
        suite_token: &AccessToken,
        corpid: &str,
        permanent_code: &str,
    ) -> Result<TokenGrant, FetchError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: u64,
        }
        let answer: Answer = self
            .call(self.with_suite_token(
                "/cgi-bin/service/get_corp_token",
                suite_token,
                json!({ "auth_corpid": corpid, "permanent_code": permanent_code }),
            ))
            .await?;
        grant(answer.access_token, answer.expires_in, "access_token")
    }

    /// `gettoken`: a 代开发 corp's token, its permanent code the secret.
    pub async fn customized_token(
        &self,
        corpid: &str,
        permanent_code: &str,
    ) -> Result<TokenGrant, FetchError> {
        let request = self
            .http
            .get(self.url("/cgi-bin/gettoken"))
            .query(&[("corpid", corpid), ("corpsecret", permanent_code)]);
        wechat::exchange(request, AnswerField::AccessToken, self.timeout).await
    }

    /// `get_pre_auth_code`: a fresh code and its lifetime, never cached.
    pub async fn pre_auth_code(
        &self,
        suite_token: &AccessToken,
    ) -> Result<(String, u64), FetchError> {
        #[derive(Deserialize)]
        struct Answer {
            pre_auth_code: String,
            #[serde(default)]
            expires_in: u64,
        }
        let request = self
            .http
            .get(self.url("/cgi-bin/service/get_pre_auth_code"))
            .query(&[("suite_access_token", suite_token.expose())]);
        let answer: Answer = self.call(request).await?;
        Ok((answer.pre_auth_code, answer.expires_in))
    }

    /// `get_provider_token`: the service provider's own token.
    pub async fn provider_token(
        &self,
        provider_corpid: &str,
        provider_secret: &Secret,
    ) -> Result<TokenGrant, FetchError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            provider_access_token: String,
            #[serde(default)]
            expires_in: u64,
        }
        let request = self
            .http
            .post(self.url("/cgi-bin/service/get_provider_token"))
            .json(&json!({
                "corpid": provider_corpid,
                "provider_secret": provider_secret.expose(),
            }));
        let answer: Answer = self.call(request).await?;
        grant(
            answer.provider_access_token,
            answer.expires_in,
            "provider_access_token",
        )
    }

    /// A corp's JS-SDK ticket with its token: `get_jsapi_ticket` (the
    /// corp's) or `ticket/get?type=agent_config` (the suite's app's).
    pub async fn corp_ticket(
        &self,
        corp_token: &AccessToken,
        kind: TicketKind,
    ) -> Result<TokenGrant, FetchError> {
        let token = ("access_token", corp_token.expose());
        let request = match kind {
            TicketKind::Jsapi => self
                .http
                .get(self.url("/cgi-bin/get_jsapi_ticket"))
                .query(&[token]),
            TicketKind::AgentConfig | TicketKind::WxCard => self
                .http
                .get(self.url("/cgi-bin/ticket/get"))
                .query(&[token, ("type", kind.name())]),
        };
        wechat::exchange(request, AnswerField::Ticket, self.timeout).await
    }
}

fn grant(value: String, expires_in: u64, field: &str) -> Result<TokenGrant, FetchError> {
    if value.is_empty() || expires_in == 0 {
        return Err(FetchError::Malformed(format!(
            "answer has no {field} or expires_in"
        )));
    }
    Ok(TokenGrant {
        token: AccessToken::new(value),
        expires_in: expires_in.min(MAX_LIFETIME_SECS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_corpids_are_taken() {
        for good in ["wwcorp000000000001", "ww-a_b", "dk1"] {
            assert!(is_corpid(good), "{good}");
        }
        for bad in ["", "../../etc", "ww corp", "ww/corp", &"w".repeat(65)] {
            assert!(!is_corpid(bad), "{bad}");
        }
    }

    #[test]
    fn a_rejected_suite_token_is_recognised() {
        let api = |errcode| FetchError::Api {
            errcode,
            errmsg: String::new(),
        };
        for code in [42009, 40082, 40001, 40014, 42001] {
            assert!(rejects_suite_token(&api(code)), "{code}");
        }
        for code in [40084, 40085, 45009] {
            assert!(!rejects_suite_token(&api(code)), "{code}");
        }
        assert!(!rejects_suite_token(&FetchError::Http(502)));
    }
}
