//! How a family's upstream is asked: the one seam between the scheduler
//! and a parent kind's endpoints. The Open Platform's implementation is
//! `platform::authorizers::AuthorizerSource` (`api_authorizer_token` with
//! the component token); a WeCom suite's, `suite::corps::CorpSource`,
//! fetches `get_corp_token` with the suite token and a corp's permanent
//! code.

use futures_util::future::BoxFuture;

use crate::secret::AccessToken;
use crate::wechat::FetchError;

/// A child's token as upstream handed it out.
#[derive(Clone)]
pub struct ChildGrant {
    /// The child's id as upstream answered it.
    pub id: String,
    pub access_token: AccessToken,
    pub expires_in: u64,
    /// A new durable grant, or empty when the answer carried none: the
    /// held one is then kept (an empty value never replaces a good one).
    pub refresh_token: String,
    /// What upstream calls the child, or empty when the answer does not
    /// say: the held name is then kept.
    pub name: String,
}

/// One child of upstream's list.
#[derive(Clone)]
pub struct ListedChild {
    pub id: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub authorized_at: u64,
}

/// One page of upstream's list of children.
pub struct ChildPage {
    /// How many children upstream holds in all.
    pub total: u64,
    pub children: Vec<ListedChild>,
}

pub trait ChildSource: Send + Sync + 'static {
    /// The parent's valid token, waiting a bounded while for one. An
    /// error here means no upstream call was made: nothing is counted
    /// against the budget.
    fn parent_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>>;

    /// Upstream refused `parent` (40001, 40014, 42001): tells the
    /// parent's own refresher.
    fn parent_rejected<'a>(&'a self, parent: &'a AccessToken) -> BoxFuture<'a, ()>;

    /// One fetch of child `id`'s token with its durable grant.
    fn fetch<'a>(
        &'a self,
        parent: &'a AccessToken,
        id: &'a str,
        refresh_token: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>>;

    /// Exchanges an authorization code pushed for a new child.
    fn exchange<'a>(
        &'a self,
        parent: &'a AccessToken,
        code: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>>;

    /// The page of every child upstream knows starting at `offset`, for
    /// recovery when the store holds none. A kind upstream cannot list
    /// answers an empty page.
    fn list<'a>(
        &'a self,
        parent: &'a AccessToken,
        offset: u64,
    ) -> BoxFuture<'a, Result<ChildPage, FetchError>>;

    /// Whether upstream can list the children at all. A kind that cannot
    /// skips recovery: its table is complete as soon as the store is read.
    fn can_list(&self) -> bool {
        true
    }

    /// Whether [`ChildSource::fetch`] needs the parent's token. A kind
    /// whose children's tokens come from their own durable grant alone
    /// (a 代开发 corp's permanent code is its app's secret) refreshes
    /// them even while the parent has no token; `fetch` then gets an
    /// empty one.
    fn fetch_needs_parent(&self) -> bool {
        true
    }

    /// What upstream calls child `id` now, re-read after upstream said it
    /// changed; an empty name for a kind without names.
    fn describe<'a>(
        &'a self,
        _parent: &'a AccessToken,
        _id: &'a str,
        _refresh_token: &'a str,
    ) -> BoxFuture<'a, Result<String, FetchError>> {
        Box::pin(std::future::ready(Ok(String::new())))
    }

    /// What to do about `errcode` when it means this child needs its
    /// owner rather than retries (a dead refresh token: the merchant must
    /// authorize again), beyond the engine's configuration errcodes; or
    /// a kind's own wording of one of those. `None` leaves the engine's
    /// classification.
    fn config_fix(&self, errcode: i64) -> Option<&'static str>;
}
