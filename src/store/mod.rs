//! Where each app's token and daily fetch count live between refreshes and
//! across restarts: `memory` (nothing survives), `file` (one JSON file per
//! app), `redis` (shared by a fleet: one Redis, Sentinel or Cluster). The
//! refresher is the only caller.

mod file;
mod memory;
mod memory_fleet;
mod redis;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{AppConfig, AppKind, Grant};
use crate::credential::{Credential, TicketKind};
use crate::secret::{fingerprint, AccessToken};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::config::{
    fleet_refresh_window, lock_hold, RedisNode, RedisTarget, Topology, LOCK_LEASE,
};
pub use crate::files::Doubt;
use crate::files::FileError;
pub use file::FileStore;
pub use memory::MemoryStore;
pub use memory_fleet::MemoryFleet;
pub use redis::{Access as RedisAccess, Neighbour, Neighbours, RedisStore};

/// Which app a stored record belongs to. Records carry the appid and grant
/// too, so a record written for another app is recognised and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreKey {
    pub name: String,
    pub appid: String,
    pub grant: &'static str,
    /// What tells this app's token apart in a shared store: the grant, and
    /// for WeCom a fingerprint of the secret, since each WeCom app (agent)
    /// of one corpid has its own secret and its own token.
    pub cluster_grant: String,
}

impl StoreKey {
    pub fn for_app(app: &AppConfig) -> Self {
        let grant = grant_label(app.kind, app.grant);
        let cluster_grant = match app.kind {
            AppKind::Wecom => format!("{grant}-{}", fingerprint(app.secret.expose())),
            AppKind::Wechat => grant.to_owned(),
        };
        StoreKey {
            name: app.name.clone(),
            appid: app.appid.clone(),
            grant,
            cluster_grant,
        }
    }

    /// The key of one of the app's tickets. A ticket's record is its own
    /// (`shop.jsapi_ticket.json`; app names cannot hold a dot), and in a
    /// shared store it is keyed by what owns it upstream: the appid (a
    /// WeChat app's tickets, a WeCom corp's jsapi ticket) or the agent (a
    /// WeCom agent_config ticket, told apart by the agent's secret).
    pub fn for_ticket(app: &AppConfig, kind: TicketKind) -> Self {
        let label = Credential::Ticket(kind).label();
        let cluster_grant = match (app.kind, kind) {
            (AppKind::Wecom, TicketKind::AgentConfig) => {
                format!("{label}-{}", fingerprint(app.secret.expose()))
            }
            (AppKind::Wecom, _) => format!("wecom-{label}"),
            (AppKind::Wechat, _) => label.to_owned(),
        };
        StoreKey {
            name: format!("{}.{label}", app.name),
            appid: app.appid.clone(),
            grant: label,
            cluster_grant,
        }
    }

    /// The key of a credential a platform owns: its own record
    /// (`saas.component_access_token.json`), keyed in a shared store by
    /// the component appid.
    pub fn of_platform(name: &str, component_appid: &str, credential: Credential) -> Self {
        let label = credential.label();
        StoreKey {
            name: format!("{name}.{label}"),
            appid: component_appid.to_owned(),
            grant: label,
            cluster_grant: label.to_owned(),
        }
    }

    pub fn cluster_grant(&self) -> &str {
        &self.cluster_grant
    }
}

/// The grant as stored and as shown: classic and stable tokens are
/// independent upstream, and WeCom has one kind of its own.
pub fn grant_label(kind: AppKind, grant: Grant) -> &'static str {
    match (kind, grant) {
        (AppKind::Wecom, _) => "wecom",
        (AppKind::Wechat, Grant::Classic) => "classic",
        (AppKind::Wechat, Grant::Stable) => "stable",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: AccessToken,
    /// Unix seconds.
    pub expires_at: u64,
    /// Unix seconds.
    pub fetched_at: u64,
    /// Unix milliseconds: orders two refreshes within one second.
    #[serde(default)]
    pub fetched_at_ms: u64,
}

impl StoredToken {
    /// When it was fetched, in milliseconds; records written before the
    /// millisecond field existed give whole seconds.
    pub fn fetched_ms(&self) -> u64 {
        if self.fetched_at_ms > 0 {
            self.fetched_at_ms
        } else {
            self.fetched_at.saturating_mul(1000)
        }
    }

    /// Unix milliseconds; saturating, since a record is read from outside
    /// and its numbers are whatever the file says.
    pub fn expires_ms(&self) -> u64 {
        self.expires_at.saturating_mul(1000)
    }

    /// Why this token cannot have been written by a broker at `now_secs`,
    /// or `None` if its times are plausible. A record is a token read from
    /// a file: one that claims a lifetime longer than upstream ever grants,
    /// or a fetch in the future, is not served whatever wrote it.
    pub fn implausible(&self, now_secs: u64) -> Option<Implausible> {
        if self.fetched_at_ms > 0 && self.fetched_at_ms / 1000 != self.fetched_at {
            return Some(Implausible::Inconsistent);
        }
        implausible_times(self.fetched_ms(), self.expires_ms(), now_secs)
    }

    /// Whether a broker holding `held` should take this (shared) token
    /// instead: it is another token, fetched no earlier. A shared store
    /// only ever replaces its record with a strictly later fetch, so of
    /// tokens fetched at once while the store was away, the first stored
    /// wins and everyone adopts it.
    pub fn supersedes(&self, held: &StoredToken) -> bool {
        self.access_token != held.access_token && self.fetched_ms() >= held.fetched_ms()
    }
}

/// The longest lifetime a stored token may claim: the clamp applied to
/// every lifetime from upstream (DESIGN.md section 17).
pub const MAX_RECORD_LIFETIME_SECS: u64 = crate::wechat::MAX_LIFETIME_SECS;

/// How far in the future a record's fetch time may lie: the wall clock
/// can step back a little (NTP) between a write and the next start.
const CLOCK_SLACK_SECS: u64 = 60;

/// Why a token said to be fetched at `fetched_ms` and to die at
/// `expires_ms` (unix milliseconds) cannot have been written by a broker
/// whose clock reads `now_secs`, or `None` if these times are plausible:
/// fetched no later than now (give or take the clock's slack), living no
/// longer than upstream ever grants, and dying within a day of now. Every
/// stored credential is judged by it (DESIGN.md section 17).
pub fn implausible_times(fetched_ms: u64, expires_ms: u64, now_secs: u64) -> Option<Implausible> {
    let (fetched_at, expires_at) = (fetched_ms / 1000, expires_ms / 1000);
    if fetched_at > now_secs.saturating_add(CLOCK_SLACK_SECS) {
        return Some(Implausible::FetchedLater { fetched_at });
    }
    if expires_at > fetched_at.saturating_add(MAX_RECORD_LIFETIME_SECS) {
        return Some(Implausible::Lifetime {
            lifetime: expires_at.saturating_sub(fetched_at),
        });
    }
    if expires_at > now_secs.saturating_add(MAX_RECORD_LIFETIME_SECS) {
        return Some(Implausible::ExpiresLater { expires_at });
    }
    None
}

/// Why a stored token's times are not ones a broker could have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Implausible {
    #[error("fetched at {fetched_at}, which is in the future")]
    FetchedLater { fetched_at: u64 },
    #[error("a lifetime of {lifetime}s, longer than upstream ever grants")]
    Lifetime { lifetime: u64 },
    #[error("expires at {expires_at}, more than a day from now")]
    ExpiresLater { expires_at: u64 },
    #[error("fetch times in seconds and milliseconds disagree")]
    Inconsistent,
}

/// One app's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCredential {
    pub appid: String,
    pub grant: String,
    pub token: Option<StoredToken>,
    /// The Beijing day `fetches` counts, as `YYYYMMDD`.
    pub day: u32,
    pub fetches: u32,
}

impl StoredCredential {
    /// Whether the record was written for this app (not a foreign file).
    pub fn belongs_to(&self, key: &StoreKey) -> bool {
        self.appid == key.appid && self.grant == key.grant
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("redis {op}: {message}")]
    Redis { op: &'static str, message: String },
    /// State this broker could not have written alone (DESIGN.md section
    /// 17): never loaded as is.
    #[error("untrusted state {path}: {doubt}")]
    Untrusted { path: PathBuf, doubt: Doubt },
}

impl From<FileError> for StoreError {
    fn from(err: FileError) -> Self {
        match err {
            FileError::Io { op, path, source } => StoreError::Io { op, path, source },
            FileError::Untrusted { path, doubt } => StoreError::Untrusted { path, doubt },
        }
    }
}

impl StoreError {
    /// The `op` label for `wxbroker_store_errors_total`.
    pub fn op_label(&self) -> &'static str {
        match self {
            StoreError::Io { op, .. } => op,
            StoreError::Corrupt { .. } => "decode",
            StoreError::Redis { op, .. } => op,
            StoreError::Untrusted { .. } => UNTRUSTED_LABEL,
        }
    }

    /// Whether the error is about who wrote the state rather than about
    /// reading it: someone may be planting tokens, which deserves more
    /// than a warning.
    pub fn is_untrusted(&self) -> bool {
        matches!(self, StoreError::Untrusted { .. })
    }
}

/// The `op` label of state refused as untrusted or implausible.
pub const UNTRUSTED_LABEL: &str = "untrusted";

/// Durable per-app state.
pub trait Store: Send + Sync + 'static {
    /// The `backend` metric label.
    fn backend(&self) -> &'static str;

    /// The app's record, `None` if there is none.
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>>;

    /// Replaces the app's record, atomically where the backend can.
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        state: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The coordination a store shared by several brokers offers.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }

    /// On shutdown, after the refreshers ended: lets go of whatever the
    /// fleet would otherwise wait for (refresh locks still held).
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Proof of holding an app's refresh lock: the owner id stored in it.
#[derive(Debug)]
pub struct LockToken(pub String);

/// What brokers sharing a store use to act as one (DESIGN.md section 9).
pub trait Cluster: Send + Sync {
    /// Takes the app's refresh lock, unless another broker holds it. The
    /// lock lives while its token does, at most for `hold`; a holder that
    /// dies loses it within [`LOCK_LEASE`].
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        hold: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>>;

    /// Releases the lock if it is still ours.
    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        lock: LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Counts one upstream call on the fleet's counter for `day`; returns
    /// the new count.
    fn count_fetch<'a>(
        &'a self,
        key: &'a StoreKey,
        day: u32,
    ) -> BoxFuture<'a, Result<u32, StoreError>>;

    /// The fleet's count for `day`.
    fn fetches<'a>(&'a self, key: &'a StoreKey, day: u32)
        -> BoxFuture<'a, Result<u32, StoreError>>;

    /// Wake-ups whenever another broker stores a new token (and whenever
    /// the subscription is re-established), until `cancel`.
    fn watch(&self, key: &StoreKey, cancel: CancellationToken) -> mpsc::Receiver<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_975_200;

    fn token(fetched_at: u64, expires_at: u64) -> StoredToken {
        StoredToken {
            access_token: AccessToken::new("tok"),
            expires_at,
            fetched_at,
            fetched_at_ms: fetched_at * 1000 + 250,
        }
    }

    #[test]
    fn a_token_a_broker_could_have_written_is_plausible() {
        assert_eq!(token(NOW - 100, NOW + 7100).implausible(NOW), None);
        assert_eq!(token(NOW - 9000, NOW - 1800).implausible(NOW), None);
        assert_eq!(
            token(NOW + 30, NOW + 7230).implausible(NOW),
            None,
            "a small clock step back is tolerated"
        );
        let old_format = StoredToken {
            fetched_at_ms: 0,
            ..token(NOW, NOW + 7200)
        };
        assert_eq!(old_format.implausible(NOW), None);
    }

    #[test]
    fn absurd_times_are_implausible() {
        assert_eq!(
            token(NOW + 3600, NOW + 7200).implausible(NOW),
            Some(Implausible::FetchedLater {
                fetched_at: NOW + 3600
            })
        );
        assert_eq!(
            token(NOW, NOW + 2 * 86_400).implausible(NOW),
            Some(Implausible::Lifetime {
                lifetime: 2 * 86_400
            })
        );
        let planted = StoredToken {
            access_token: AccessToken::new("planted"),
            expires_at: u64::MAX,
            fetched_at: NOW,
            fetched_at_ms: 0,
        };
        assert!(planted.implausible(NOW).is_some());
        assert_eq!(planted.expires_ms(), u64::MAX, "saturates, never wraps");
        let huge_fetch = StoredToken {
            fetched_at: u64::MAX,
            fetched_at_ms: 0,
            ..planted
        };
        assert_eq!(huge_fetch.fetched_ms(), u64::MAX);
        assert!(huge_fetch.implausible(NOW).is_some());
        let skewed = StoredToken {
            fetched_at_ms: (NOW - 5000) * 1000,
            ..token(NOW, NOW + 7200)
        };
        assert_eq!(skewed.implausible(NOW), Some(Implausible::Inconsistent));
    }
}
