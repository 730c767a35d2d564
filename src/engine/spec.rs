//! What the engine knows of one credential: its [`CredentialSpec`]. A
//! kind (an app's access token or ticket, a platform's component token)
//! builds the spec of each credential from its own configuration; the
//! engine (handle, refresher, follower) reads the spec and the
//! credential's source, never a kind's configuration.

use std::time::Duration;

use super::schedule::Reissue;
use crate::credential::Credential;
use crate::store::StoreKey;

/// One credential as the engine runs it: its names, its lifetimes and
/// limits, the rule for a repeated answer, and its store record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSpec {
    /// The owner's name (an app, a platform): the `app` label of the
    /// credential's metrics and the `app` field of its log lines.
    pub name: String,
    /// Which credential it is: its `credential` label, and the per-kind
    /// facts [`Credential`] answers.
    pub credential: Credential,
    /// The owner's grant as logged, shown and checked by a follower
    /// (`classic`, `stable`, `wecom`; a platform's credential label).
    pub grant: &'static str,
    /// Where its record lives, and whose it is (appid and grant).
    pub key: StoreKey,
    /// Replace it this long before it expires (never before half its life).
    pub refresh_before: Duration,
    /// The shortest time between two refreshes a rejection forces.
    pub min_forced_interval: Duration,
    /// The bound on one upstream call; a fleet's refresh lock is held
    /// for at most two of them.
    pub fetch_timeout: Duration,
    /// Upstream calls allowed a Beijing day.
    pub daily_budget: u32,
    /// The configuration key of `daily_budget`, named when it is spent.
    pub budget_key: String,
    /// What upstream answers when asked while the held value is valid.
    pub reissue: Reissue,
    /// How long upstream keeps a replaced value valid, for a credential
    /// whose rejection within that time means that something else
    /// fetches it (a token fight, counted and logged); `None` when a
    /// rejection says nothing of the kind.
    pub fight_window: Option<Duration>,
}

impl CredentialSpec {
    /// Whether `other` names the same credential upstream (the same
    /// appid, grant, and for a WeCom agent the same secret), so what is
    /// held for one is good for the other.
    pub fn same_upstream(&self, other: &CredentialSpec) -> bool {
        let (mine, theirs) = (&self.key, &other.key);
        self.credential == other.credential
            && (&mine.appid, mine.grant, &mine.cluster_grant)
                == (&theirs.appid, theirs.grant, &theirs.cluster_grant)
    }
}
