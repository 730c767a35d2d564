//! A platform's authorizers: the Open Platform's instance of the family
//! of credentials under one parent ([`crate::children`]). The family's
//! table and scheduler do the work; this module says how an authorizer's
//! token is had (`api_authorizer_token` with the component token, pushed
//! codes exchanged with `api_query_auth`, recovery from
//! `api_get_authorizer_list`), which of WeChat's answers need the
//! merchant rather than retries, and where the records live (the
//! platform's store).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::store::{AuthorizerRecord, PlatformStore};
use super::upstream::{AuthorizerGrant, ComponentApi};
use crate::children::{ChildGrant, ChildPage, ChildSource, ChildStore, ChildToken, ListedChild};
use crate::engine::CredentialHandle;
use crate::secret::AccessToken;
use crate::store::StoreError;
use crate::wechat::FetchError;

pub use crate::children::{Command, SchedulerTuning, Slot, Table};

/// An authorizer's access token as readers see it.
pub type AuthorizerToken = ChildToken;

/// What a child of a platform is called in log lines.
pub const KIND: &str = "authorizer";

/// `api_get_authorizer_list`'s largest page.
const LIST_PAGE: u64 = 500;

/// Answers of `api_authorizer_token` that need the merchant or the
/// platform's operator, not retries, with what to do. (The engine's own
/// configuration errcodes, an address not whitelisted among them, hold
/// an authorizer too.)
const AUTHORIZER_FIXES: &[(i64, &str)] = &[
    (
        61003,
        "the merchant has not authorized this platform, or revoked the authorization: the merchant must authorize again",
    ),
    (
        61023,
        "the authorizer's refresh token is invalid (spent, or the authorization is gone): the merchant must authorize again",
    ),
    (
        40013,
        "invalid appid: check component_appid, and whether the authorizer's account still exists",
    ),
];

/// How an authorizer's token is fetched: with the platform's component
/// token and the authorizer's refresh token.
pub struct AuthorizerSource {
    api: ComponentApi,
    component: CredentialHandle,
    /// How long a fetch waits for a valid component token.
    wait: Duration,
}

impl AuthorizerSource {
    pub fn new(api: ComponentApi, component: CredentialHandle, wait: Duration) -> Self {
        AuthorizerSource {
            api,
            component,
            wait,
        }
    }
}

fn child_grant(grant: AuthorizerGrant) -> ChildGrant {
    ChildGrant {
        id: grant.appid,
        access_token: grant.access_token,
        expires_in: grant.expires_in,
        refresh_token: grant.refresh_token,
        name: String::new(),
    }
}

impl ChildSource for AuthorizerSource {
    fn parent_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
        Box::pin(async move {
            self.component
                .token(self.wait)
                .await
                .map(|record| record.value.clone())
                .map_err(|err| FetchError::Parent(format!("component token: {err}")))
        })
    }

    fn parent_rejected<'a>(&'a self, parent: &'a AccessToken) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self
                .component
                .report_rejected(parent.expose(), Duration::from_secs(1))
                .await;
        })
    }

    fn fetch<'a>(
        &'a self,
        parent: &'a AccessToken,
        id: &'a str,
        refresh_token: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
        Box::pin(async move {
            self.api
                .authorizer_token(parent.expose(), id, refresh_token)
                .await
                .map(child_grant)
        })
    }

    fn exchange<'a>(
        &'a self,
        parent: &'a AccessToken,
        code: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
        Box::pin(async move {
            self.api
                .query_auth(parent.expose(), code)
                .await
                .map(child_grant)
        })
    }

    fn list<'a>(
        &'a self,
        parent: &'a AccessToken,
        offset: u64,
    ) -> BoxFuture<'a, Result<ChildPage, FetchError>> {
        Box::pin(async move {
            let page = self
                .api
                .authorizer_list(parent.expose(), offset, LIST_PAGE)
                .await?;
            Ok(ChildPage {
                total: page.total_count,
                children: page
                    .list
                    .into_iter()
                    .map(|listed| ListedChild {
                        id: listed.authorizer_appid,
                        refresh_token: listed.refresh_token,
                        authorized_at: listed.auth_time,
                    })
                    .collect(),
            })
        })
    }

    fn config_fix(&self, errcode: i64) -> Option<&'static str> {
        AUTHORIZER_FIXES
            .iter()
            .find(|(code, _)| *code == errcode)
            .map(|(_, fix)| *fix)
    }
}

/// The platform's store seen as the family's: the authorizer records,
/// the fleet's lock and rate, and the day's count of fetches.
pub struct AuthorizerStore(pub Arc<dyn PlatformStore>);

impl ChildStore for AuthorizerStore {
    fn load_children(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        self.0.load_authorizers()
    }

    fn save_children<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.save_authorizers(records)
    }

    fn save_recovered<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.save_recovered(records)
    }

    fn remove_child<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.remove_authorizer(id)
    }

    fn wants_compaction(&self, live: usize) -> bool {
        self.0.wants_compaction(live)
    }

    fn compact<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.compact(records)
    }

    fn is_shared(&self) -> bool {
        self.0.is_shared()
    }

    fn shared_child<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AuthorizerRecord>, StoreError>> {
        self.0.shared_authorizer(id)
    }

    fn fetch_permit(&self, per_second: u32) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.0.fetch_permit(per_second)
    }

    fn lock_child<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.0.lock_authorizer(id)
    }

    fn unlock_child<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.unlock_authorizer(id)
    }

    fn count_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        self.0.count_authorizer_fetch(day)
    }

    fn fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        self.0.authorizer_fetches(day)
    }
}
