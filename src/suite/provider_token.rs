//! The `provider_access_token` as a credential kind (when the suite sets
//! `provider_secret`): an engine credential fetched with the provider's
//! corpid and secret from `get_provider_token`. Like the suite token,
//! WeCom answers with the held token until it expires.

use futures_util::future::BoxFuture;

use super::upstream::SuiteApi;
use crate::config::SuiteConfig;
use crate::credential::Credential;
use crate::engine::{CredentialSpec, Reissue};
use crate::secret::Secret;
use crate::store::StoreKey;
use crate::wechat::{FetchError, TokenGrant, TokenSource};

/// The provider token's spec; `None` without a provider secret.
pub fn spec(config: &SuiteConfig) -> Option<CredentialSpec> {
    config.provider_secret.as_ref()?;
    let credential = Credential::ProviderAccessToken;
    Some(CredentialSpec {
        name: config.name.clone(),
        credential,
        grant: credential.label(),
        key: StoreKey::of_platform(&config.name, &config.provider_corpid, credential),
        refresh_before: config.refresh_before,
        min_forced_interval: super::suite_token::MIN_FORCED_INTERVAL,
        fetch_timeout: config.fetch_timeout,
        daily_budget: config.daily_budget,
        budget_key: "daily_budget".to_owned(),
        reissue: Reissue::UntilExpiry,
        fight_window: None,
    })
}

/// Fetches the provider token with the provider's corpid and secret.
pub struct ProviderTokenSource {
    api: SuiteApi,
    corpid: String,
    secret: Secret,
}

impl ProviderTokenSource {
    /// `None` without a provider secret.
    pub fn new(api: SuiteApi, config: &SuiteConfig) -> Option<Self> {
        let (secret, _) = config.provider_secret.as_ref()?;
        Some(ProviderTokenSource {
            api,
            corpid: config.provider_corpid.clone(),
            secret: secret.clone(),
        })
    }
}

impl TokenSource for ProviderTokenSource {
    fn fetch(&self, _force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(self.api.provider_token(&self.corpid, &self.secret))
    }
}
