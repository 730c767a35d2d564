//! What the engine sees of upstream: a [`TokenSource`] hands out one
//! credential, a [`TokenCheck`] tells whether a held token is still good.
//! The refresher only sees these, so its unit tests can drive it with a
//! scripted fake.

use futures_util::future::BoxFuture;

use super::answer::TokenGrant;
use super::fetch_error::FetchError;
use crate::secret::AccessToken;

/// Anything that can hand out one credential.
pub trait TokenSource: Send + Sync + 'static {
    /// One upstream call. `force_refresh` matters to the stable grant only.
    fn fetch(&self, force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>>;

    /// Waits until a fetch can be made: a credential fetched with another
    /// needs that one first. An error here means no upstream call was
    /// made, so none is counted against the budget.
    fn ready(&self) -> BoxFuture<'_, Result<(), FetchError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// How a held credential of this source is checked upstream, for the
    /// sources that have a cheap way (DESIGN.md section 21); `None` for
    /// the others.
    fn token_check(&self) -> Option<&dyn TokenCheck> {
        None
    }
}

/// A cheap upstream call that tells whether a token is still good: it
/// costs no credential quota (it has a quota of its own) and rotates
/// nothing.
pub trait TokenCheck: Send + Sync {
    /// `Ok` when upstream accepts `token`; an `Api` error with a token
    /// rejection ([`is_token_rejected`](super::is_token_rejected)) when
    /// it is dead; any other error when nothing can be told.
    fn check<'a>(&'a self, token: &'a AccessToken) -> BoxFuture<'a, Result<(), FetchError>>;
}
