//! What readers see of a credential: the record the broker holds, the
//! view its writer publishes, and the answers a reader or an
//! invalidation can get.

use std::sync::Arc;

use serde::Serialize;

use crate::secret::AccessToken;
use crate::store::StoredToken;

/// A credential value the broker holds (a token or a ticket). Times are
/// kept in milliseconds so refresh deadlines do not drift by rounding;
/// the API shows seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub value: AccessToken,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    /// Unix milliseconds.
    pub fetched_at_ms: u64,
}

impl CredentialRecord {
    /// Unix seconds, rounded down.
    pub fn expires_at(&self) -> u64 {
        self.expires_at_ms / 1000
    }

    /// Unix seconds, rounded down.
    pub fn fetched_at(&self) -> u64 {
        self.fetched_at_ms / 1000
    }

    /// Whole seconds left, rounded down: a client that trusts it never
    /// uses the token past its expiry.
    pub fn expires_in(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms) / 1000
    }

    /// A short digest of the value (16 hex digits of its SHA-256): tells
    /// values apart, as a follower's watch does, and reveals nothing
    /// usable.
    pub fn version(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.value.expose().as_bytes());
        digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    pub fn is_valid(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }

    /// As stored: whole seconds, rounded down.
    pub fn to_stored(&self) -> StoredToken {
        StoredToken {
            access_token: self.value.clone(),
            expires_at: self.expires_at(),
            fetched_at: self.fetched_at(),
            fetched_at_ms: self.fetched_at_ms,
        }
    }

    pub fn from_stored(stored: StoredToken) -> Self {
        CredentialRecord {
            fetched_at_ms: stored.fetched_ms(),
            expires_at_ms: stored.expires_ms(),
            value: stored.access_token,
        }
    }
}

/// The last upstream failure, as shown in `/v1/apps`, `/readyz` and 503s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub errcode: Option<i64>,
    pub errmsg: String,
    /// Unix seconds.
    pub at: u64,
}

impl LastError {
    /// The broker's address as WeChat named it when it refused it (an IP
    /// whitelist errcode): what the operator must add to the whitelist.
    /// Gone with the failure, so a fetch that succeeds clears it.
    pub fn blocked_ip(&self) -> Option<std::net::IpAddr> {
        crate::errmsg::blocked_ip(self.errcode?, &self.errmsg)
    }
}

/// What readers see of a credential; replaced whole by its writer.
#[derive(Debug, Clone, Default)]
pub struct CredentialView {
    pub token: Option<Arc<CredentialRecord>>,
    pub last_error: Option<LastError>,
    pub fetches_today: u32,
    /// The Beijing day (`YYYYMMDD`) `fetches_today` counts.
    pub fetches_day: u32,
    /// While failing: the unix second of the next upstream attempt.
    pub retry_at: Option<u64>,
    /// The tokens held before the current one, newest first (a few): a
    /// client may still hold one, and it still tells whose it is.
    pub previous: Arc<[AccessToken]>,
    /// Set while the credential is held after a failure that waiting cannot fix
    /// soon (a configuration error, 45009, the daily budget spent), so
    /// readers are answered at once instead of waiting for a token.
    pub held: bool,
    /// When a refresh deferred by `min_forced_interval` is due: the unix
    /// second a caller told "retry later" may retry.
    pub deferred_refresh_at: Option<u64>,
    /// For a credential that follows a leader: whether the leader
    /// answered lately. `None` for one this broker owns.
    pub leader: Option<LeaderState>,
}

/// What a follower knows of its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderState {
    /// The last exchange with the leader succeeded.
    pub reachable: bool,
}

/// How many replaced tokens an [`CredentialView`] remembers.
const REMEMBERED_TOKENS: usize = 4;

impl CredentialView {
    /// Makes `token` the current one, remembering the one it replaces.
    pub fn install(&mut self, token: Arc<CredentialRecord>) {
        if let Some(old) = self.token.take().filter(|old| old.value != token.value) {
            self.previous = std::iter::once(old.value.clone())
                .chain(self.previous.iter().cloned())
                .take(REMEMBERED_TOKENS)
                .collect();
        }
        self.token = Some(token);
    }

    /// A token arrived: the last failure, its retry time and any hold are
    /// over.
    pub fn clear_failure(&mut self) {
        self.last_error = None;
        self.retry_at = None;
        self.held = false;
    }

    /// Whether `token` is the current token or one of the last few.
    pub fn knows(&self, token: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|current| current.value.expose() == token)
            || self.previous.iter().any(|old| old.expose() == token)
    }

    /// Upstream calls made this Beijing day.
    pub fn fetches_on(&self, now_secs: u64) -> u32 {
        if self.fetches_day == crate::clock::beijing_day(now_secs) {
            self.fetches_today
        } else {
            0
        }
    }

    pub fn valid_token(&self, now_ms: u64) -> Option<&Arc<CredentialRecord>> {
        self.token.as_ref().filter(|token| token.is_valid(now_ms))
    }

    /// Whether the credential is past its first upstream attempt: it holds a
    /// valid token, or the attempt failed (with the failure recorded).
    pub fn settled(&self, now_ms: u64) -> bool {
        self.valid_token(now_ms).is_some() || self.last_error.is_some()
    }

    /// Why the credential has no valid token, or `None` when it has one.
    pub fn unready_reason(&self, now_ms: u64) -> Option<String> {
        if self.valid_token(now_ms).is_some() {
            return None;
        }
        Some(match &self.last_error {
            Some(
                error @ LastError {
                    errcode: Some(code),
                    errmsg,
                    ..
                },
            ) => match error.blocked_ip() {
                Some(ip) => format!(
                    "wechat refuses the broker's address {ip}: add {ip} to the IP whitelist (errcode {code}: {errmsg})"
                ),
                None => format!("errcode {code}: {errmsg}"),
            },
            Some(error) => error.errmsg.clone(),
            None if self.token.is_some() => "token expired; refreshing".to_owned(),
            None => "no token fetched yet".to_owned(),
        })
    }
}

/// Why a reader got no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no valid token yet; next attempt in {retry_after}s")]
    Unavailable {
        retry_after: u64,
        last_error: Option<LastError>,
    },
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidateOutcome {
    /// The reported token was current; a new one was fetched.
    Refreshed,
    /// The reported token is no longer the current one; nothing to do.
    AlreadyRotated,
    /// The reported token was current but the last refresh is too recent
    /// (`min_forced_interval`), or the credential is held off after failures.
    RateLimited,
    /// The refresh was attempted and failed.
    Failed,
    /// The reported token was current but could not be replaced yet; one
    /// refresh is scheduled at the earliest allowed moment (merged with
    /// any other), for a caller that reported a rejection it saw itself.
    Deferred,
    /// Upstream answered with the reported credential again: it is still
    /// valid there (a ticket endpoint does this), and is kept.
    Unchanged,
    /// The writer did not answer within the caller's wait (a slow
    /// upstream) or stopped first (a reload, a shutdown), and the reported
    /// token is still the current, valid one. The caller keeps it; a refresh
    /// already begun goes on and is stored.
    Pending,
}

impl InvalidateOutcome {
    /// The outcomes a refresher reports and counts; [`Self::Pending`] is
    /// the caller's own answer, and the refresh it left behind is counted
    /// when it ends.
    pub const ALL: [InvalidateOutcome; 6] = [
        InvalidateOutcome::Refreshed,
        InvalidateOutcome::AlreadyRotated,
        InvalidateOutcome::RateLimited,
        InvalidateOutcome::Failed,
        InvalidateOutcome::Deferred,
        InvalidateOutcome::Unchanged,
    ];

    pub fn metric_label(self) -> &'static str {
        match self {
            InvalidateOutcome::Refreshed => "refreshed",
            InvalidateOutcome::AlreadyRotated => "already_rotated",
            InvalidateOutcome::RateLimited => "rate_limited",
            InvalidateOutcome::Failed => "failed",
            InvalidateOutcome::Deferred => "deferred",
            InvalidateOutcome::Unchanged => "unchanged",
            InvalidateOutcome::Pending => "pending",
        }
    }
}
