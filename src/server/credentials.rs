//! One set of credential operations for every surface (DESIGN.md section
//! 18): a credential a request names, resolved to a [`CredentialRef`], is
//! read (waiting up to `token_wait_timeout` for a valid value),
//! invalidated (compare-and-refresh, within `token_wait_timeout` in all)
//! or watched for a change. The token API, the remote listener and the
//! compatible listener answer from these, each in its own shape, and say
//! each [`CredentialError`] their own way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::children::ChildToken;
use crate::credential::Credential;
use crate::engine::{CredentialHandle, CredentialRecord, InvalidateOutcome, TokenError};
use crate::platform::{AuthorizerError, PlatformHandle};
use crate::suite::{CorpError, SuiteHandle};

/// A credential a request names.
#[derive(Clone)]
pub enum CredentialRef {
    /// One of the engine's credentials: an app's token or ticket, a
    /// platform's component token, a suite's or its provider's token, a
    /// corp's ticket. `owner` names it in messages (`app`, `platform`,
    /// `suite`, `suite/corpid`).
    Engine {
        owner: String,
        handle: CredentialHandle,
    },
    /// An Open Platform authorizer's token.
    Authorizer {
        platform: PlatformHandle,
        appid: String,
    },
    /// A WeCom corp's token.
    Corp { suite: SuiteHandle, corpid: String },
}

/// Why a credential has no value to give.
pub enum CredentialError {
    Engine {
        owner: String,
        credential: Credential,
        err: TokenError,
    },
    Authorizer {
        platform: PlatformHandle,
        appid: String,
        err: AuthorizerError,
    },
    Corp {
        suite: SuiteHandle,
        corpid: String,
        err: CorpError,
    },
}

/// What an invalidation left.
pub struct Invalidated {
    /// The value to use now: a new one, or the one reported when none
    /// could replace it yet.
    pub record: Arc<CredentialRecord>,
    pub refreshed: bool,
    /// How the engine judged the report (the engine's credentials only).
    pub outcome: Option<InvalidateOutcome>,
}

impl CredentialRef {
    /// An engine credential of `owner`.
    pub fn engine(owner: impl Into<String>, handle: &CredentialHandle) -> Self {
        CredentialRef::Engine {
            owner: owner.into(),
            handle: handle.clone(),
        }
    }

    pub fn credential(&self) -> Credential {
        match self {
            CredentialRef::Engine { handle, .. } => handle.credential(),
            CredentialRef::Authorizer { .. } => Credential::AuthorizerToken,
            CredentialRef::Corp { .. } => Credential::CorpAccessToken,
        }
    }

    /// The broker's clock, as the credential's expiries are kept.
    pub fn now_ms(&self) -> u64 {
        match self {
            CredentialRef::Engine { handle, .. } => handle.now_ms(),
            CredentialRef::Authorizer { platform, .. } => platform.now_ms(),
            CredentialRef::Corp { suite, .. } => suite.now_ms(),
        }
    }

    /// A valid value, waiting up to `wait` for one.
    pub async fn get(&self, wait: Duration) -> Result<Arc<CredentialRecord>, CredentialError> {
        match self {
            CredentialRef::Engine { owner, handle } => handle
                .token(wait)
                .await
                .map_err(|err| engine_error(owner, handle, err)),
            CredentialRef::Authorizer { platform, appid } => platform
                .authorizer_token(appid, wait)
                .await
                .map(|token| record(&token))
                .map_err(|err| authorizer_error(platform, appid, err)),
            CredentialRef::Corp { suite, corpid } => suite
                .corp_token(corpid, wait)
                .await
                .map(|token| record(&token))
                .map_err(|err| corp_error(suite, corpid, err)),
        }
    }

    /// Waits until the valid value differs from the one whose version is
    /// `from`, or `wait` passes, or the credential stops (a reload, a
    /// shutdown), or `ended` completes (a revoked watcher). A child's
    /// token has no change feed: its wait ends at once.
    pub async fn changed_from(&self, from: &str, wait: Duration, ended: impl Future<Output = ()>) {
        let CredentialRef::Engine { handle, .. } = self else {
            return;
        };
        let mut changes = handle.subscribe();
        let changed = changes.wait_for(|view| {
            view.valid_token(handle.now_ms())
                .is_some_and(|token| token.version() != from)
        });
        tokio::select! {
            biased;
            () = ended => {}
            _ = tokio::time::timeout(wait, changed) => {}
            () = handle.stopped().cancelled() => {}
        }
    }

    /// Reports `reported` as rejected: refreshed when it is the current
    /// value and old enough to replace; the value to use next, within
    /// `wait` in all.
    pub async fn invalidate(
        &self,
        reported: &str,
        wait: Duration,
    ) -> Result<Invalidated, CredentialError> {
        let (token, refreshed) = match self {
            CredentialRef::Engine { owner, handle } => {
                let deadline = Instant::now() + wait;
                let outcome = handle
                    .invalidate(reported, wait)
                    .await
                    .map_err(|err| engine_error(owner, handle, err))?;
                let record = handle
                    .token(deadline.saturating_duration_since(Instant::now()))
                    .await
                    .map_err(|err| engine_error(owner, handle, err))?;
                return Ok(Invalidated {
                    record,
                    refreshed: outcome == InvalidateOutcome::Refreshed,
                    outcome: Some(outcome),
                });
            }
            CredentialRef::Authorizer { platform, appid } => platform
                .invalidate_authorizer(appid, reported, wait)
                .await
                .map_err(|err| authorizer_error(platform, appid, err))?,
            CredentialRef::Corp { suite, corpid } => suite
                .invalidate_corp(corpid, reported, wait)
                .await
                .map_err(|err| corp_error(suite, corpid, err))?,
        };
        Ok(Invalidated {
            record: record(&token),
            refreshed,
            outcome: None,
        })
    }
}

fn engine_error(owner: &str, handle: &CredentialHandle, err: TokenError) -> CredentialError {
    CredentialError::Engine {
        owner: owner.to_owned(),
        credential: handle.credential(),
        err,
    }
}

fn authorizer_error(
    platform: &PlatformHandle,
    appid: &str,
    err: AuthorizerError,
) -> CredentialError {
    CredentialError::Authorizer {
        platform: platform.clone(),
        appid: appid.to_owned(),
        err,
    }
}

fn corp_error(suite: &SuiteHandle, corpid: &str, err: CorpError) -> CredentialError {
    CredentialError::Corp {
        suite: suite.clone(),
        corpid: corpid.to_owned(),
        err,
    }
}

/// A child's token as the engine's credentials are read.
fn record(token: &ChildToken) -> Arc<CredentialRecord> {
    Arc::new(CredentialRecord {
        value: token.value.clone(),
        expires_at_ms: token.expires_at_ms,
        fetched_at_ms: token.fetched_at_ms,
    })
}
