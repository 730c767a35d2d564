//! A suite's installed corps: WeCom's instance of the family of
//! credentials under one parent ([`crate::children`]). The family's table
//! and scheduler do the work (spread refresh moments, the fleet's rate,
//! error classes, holds, the daily budget, no fetch on a warm start);
//! this module says how a corp's token is had: `get_corp_token` with the
//! suite token and the corp's permanent code, or for a 代开发 template
//! plain `gettoken` with the permanent code as the secret. An install's
//! `AuthCode` is exchanged with `v2/get_permanent_code`, whose answer
//! carries no token: the corp is stored with its permanent code first,
//! and its token fetched next. WeCom cannot list a suite's corps, so the
//! store is the only record of them.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::upstream::{rejects_suite_token, SuiteApi};
use crate::children::{ChildGrant, ChildPage, ChildSource};
use crate::engine::CredentialHandle;
use crate::secret::AccessToken;
use crate::wechat::FetchError;

/// What a child of a suite is called in log lines.
pub const KIND: &str = "corp";

/// Answers that need the corp (it must install the app again), not
/// retries.
const CORP_FIXES: &[(i64, &str)] = &[
    (
        40084,
        "the corp's permanent code is invalid (the corp removed the app, or reset its secret): the corp must install the app again",
    ),
    (
        41025,
        "no permanent code was sent for the corp: its stored install is broken; the corp must install the app again",
    ),
    (
        40078,
        "the install's auth code is invalid, spent or expired: the corp must install the app again",
    ),
];

/// A 代开发 corp's `gettoken` answering 40001 or 40014: its permanent
/// code, the app's secret, is dead.
const CUSTOMIZED_SECRET_FIX: &str = "the 代开发 app's secret (its permanent code) is invalid: the corp reset it without a reset_permanent_code push reaching the broker, or removed the app; the corp must reset it or install the app again";

/// How a corp's token is fetched: with the suite token and the corp's
/// permanent code.
pub struct CorpSource {
    api: SuiteApi,
    suite_token: CredentialHandle,
    /// How long a fetch waits for a valid suite token.
    wait: Duration,
    customized: bool,
}

impl CorpSource {
    pub fn new(
        api: SuiteApi,
        suite_token: CredentialHandle,
        wait: Duration,
        customized: bool,
    ) -> Self {
        CorpSource {
            api,
            suite_token,
            wait,
            customized,
        }
    }

    /// Tells the suite's refresher when WeCom rejected its token; the
    /// answer is then a transient failure of the corp's.
    async fn noting_rejection<T>(
        &self,
        parent: &AccessToken,
        result: Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        if let Err(err) = &result {
            if rejects_suite_token(err) && !parent.expose().is_empty() {
                let _ = self
                    .suite_token
                    .report_rejected(parent.expose(), Duration::from_secs(1))
                    .await;
            }
        }
        result
    }
}

impl ChildSource for CorpSource {
    fn parent_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
        Box::pin(async move {
            self.suite_token
                .token(self.wait)
                .await
                .map(|record| record.value.clone())
                .map_err(|err| FetchError::Parent(format!("suite token: {err}")))
        })
    }

    fn parent_rejected<'a>(&'a self, parent: &'a AccessToken) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self
                .suite_token
                .report_rejected(parent.expose(), Duration::from_secs(1))
                .await;
        })
    }

    fn fetch<'a>(
        &'a self,
        parent: &'a AccessToken,
        corpid: &'a str,
        permanent_code: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
        Box::pin(async move {
            let grant = if self.customized {
                self.api.customized_token(corpid, permanent_code).await
            } else {
                let answer = self.api.corp_token(parent, corpid, permanent_code).await;
                self.noting_rejection(parent, answer).await
            }?;
            Ok(ChildGrant {
                id: corpid.to_owned(),
                access_token: grant.token,
                expires_in: grant.expires_in,
                refresh_token: String::new(),
                name: String::new(),
            })
        })
    }

    fn exchange<'a>(
        &'a self,
        parent: &'a AccessToken,
        auth_code: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
        Box::pin(async move {
            let answer = self.api.permanent_code(parent, auth_code).await;
            let install = self.noting_rejection(parent, answer).await?;
            // No token in the answer: the scheduler fetches it at once,
            // once the permanent code is stored.
            Ok(ChildGrant {
                id: install.corpid,
                access_token: AccessToken::new(""),
                expires_in: 0,
                refresh_token: install.permanent_code,
                name: install.corp_name,
            })
        })
    }

    fn list<'a>(
        &'a self,
        _parent: &'a AccessToken,
        _offset: u64,
    ) -> BoxFuture<'a, Result<ChildPage, FetchError>> {
        Box::pin(std::future::ready(Ok(ChildPage {
            total: 0,
            children: Vec::new(),
        })))
    }

    fn can_list(&self) -> bool {
        false
    }

    fn fetch_needs_parent(&self) -> bool {
        !self.customized
    }

    fn describe<'a>(
        &'a self,
        parent: &'a AccessToken,
        corpid: &'a str,
        permanent_code: &'a str,
    ) -> BoxFuture<'a, Result<String, FetchError>> {
        Box::pin(async move {
            let answer = self.api.corp_name(parent, corpid, permanent_code).await;
            self.noting_rejection(parent, answer).await
        })
    }

    fn config_fix(&self, errcode: i64) -> Option<&'static str> {
        if self.customized && matches!(errcode, 40001 | 40014) {
            return Some(CUSTOMIZED_SECRET_FIX);
        }
        CORP_FIXES
            .iter()
            .find(|(code, _)| *code == errcode)
            .map(|(_, fix)| *fix)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::children::policy::class_of;
    use crate::wechat::ErrorClass;

    fn source(customized: bool) -> CorpSource {
        let config = crate::config::Config::from_toml_str(
            "t.toml",
            "[server]\nlisten = \"127.0.0.1:0\"\ncallback_listen = \"127.0.0.1:0\"\n[[suites]]\nname = \"crm\"\nsuite_id = \"ww1\"\nprovider_corpid = \"ww2\"\nsecret = \"s\"\ntoken = \"t\"\naes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n",
        )
        .unwrap();
        let suite = &config.suites[0];
        let context = crate::engine::EngineContext {
            store: Arc::new(crate::store::MemoryStore::new()),
            tickets: Arc::new(crate::engine::WechatTickets::new(reqwest::Client::new())),
            metrics: crate::metrics::Metrics::new(),
            clock: crate::clock::Clock::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
            token_checks: crate::engine::TokenChecks::default(),
        };
        // Never asked in these tests: no ticket ever arrives.
        let cell = Arc::new(tokio::sync::watch::channel(None).0);
        let store = Arc::new(crate::platform::store::MemoryPlatformStore::default());
        let never = super::super::suite_token::source(
            reqwest::Client::new(),
            suite,
            cell,
            store,
            context.clock,
        );
        let token = CredentialHandle::spawn(
            Arc::new(super::super::suite_token::spec(suite)),
            Arc::new(never),
            &context,
            crate::engine::CredentialView::default(),
        );
        context.cancel.cancel();
        CorpSource::new(
            SuiteApi::new(reqwest::Client::new(), suite),
            token,
            Duration::from_secs(1),
            customized,
        )
    }

    fn api(errcode: i64) -> FetchError {
        FetchError::Api {
            errcode,
            errmsg: String::new(),
        }
    }

    #[tokio::test]
    async fn a_dead_permanent_code_needs_the_corp_and_a_dead_suite_token_its_refresher() {
        let plain = source(false);
        for code in [40084, 41025, 40078] {
            assert_eq!(class_of(&api(code), &plain), ErrorClass::Config, "{code}");
        }
        for code in [42009, 40082, 40001, -1] {
            assert_eq!(class_of(&api(code), &plain), ErrorClass::Retry, "{code}");
        }
        assert!(plain.fetch_needs_parent() && !plain.can_list());
        // 代开发: gettoken's 40001 is the corp app's dead secret.
        let customized = source(true);
        assert_eq!(class_of(&api(40001), &customized), ErrorClass::Config);
        assert!(!customized.fetch_needs_parent());
    }
}
