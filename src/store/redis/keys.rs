//! Where one credential lives in Redis. Every key of a credential shares
//! one hash tag, `{prefix:appid:grant}`, so Redis Cluster places them in
//! one slot and a script may touch several of them (DESIGN.md section
//! 14): `{…}:token`, `{…}:lock`, `{…}:fetches:DAY` and the `{…}:updated`
//! channel. The grant part is [`StoreKey::cluster_grant`], so each kind of
//! credential (a WeCom agent's token, a ticket) gets a tag of its own.
//!
//! Part I's layout (`prefix:appid:grant:token`, no tag) is only read, to
//! migrate what a fleet stored before.

use crate::store::StoreKey;

/// The names of one credential's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keys {
    /// `prefix:appid:grant`, without the braces.
    base: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, key: &StoreKey) -> Keys {
        Keys {
            base: format!("{prefix}:{}:{}", key.appid, key.cluster_grant()),
        }
    }

    fn tagged(&self, suffix: &str) -> String {
        format!("{{{}}}:{suffix}", self.base)
    }

    /// The current record, as JSON, expiring with the credential.
    pub(super) fn token(&self) -> String {
        self.tagged("token")
    }

    /// Who is fetching: an owner id with a short, renewed lease.
    pub(super) fn lock(&self) -> String {
        self.tagged("lock")
    }

    /// The Beijing day's upstream calls, shared by the fleet.
    pub(super) fn fetches(&self, day: u32) -> String {
        self.tagged(&format!("fetches:{day}"))
    }

    /// Published after every new record.
    pub(super) fn updated(&self) -> String {
        self.tagged("updated")
    }

    /// What tells this credential apart in logs and in-memory sets.
    pub(super) fn tag(&self) -> &str {
        &self.base
    }

    /// Part I's record key.
    pub(super) fn legacy_token(&self) -> String {
        format!("{}:token", self.base)
    }

    /// Part I's counter key.
    pub(super) fn legacy_fetches(&self, day: u32) -> String {
        format!("{}:fetches:{day}", self.base)
    }
}

/// The part of `key` Redis Cluster hashes: between the first `{` and the
/// next `}`, when that is not empty; the whole key otherwise.
#[cfg(test)]
fn hashed_part(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(close) = key[open + 1..].find('}') {
            if close > 0 {
                return &key[open + 1..open + 1 + close];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(appid: &str, cluster_grant: &str) -> StoreKey {
        StoreKey {
            name: "shop".to_owned(),
            appid: appid.to_owned(),
            grant: "classic",
            cluster_grant: cluster_grant.to_owned(),
        }
    }

    #[test]
    fn every_key_of_a_credential_hashes_alike() {
        let keys = Keys::new("wxbroker", &key("wx1234", "classic"));
        assert_eq!(keys.token(), "{wxbroker:wx1234:classic}:token");
        assert_eq!(keys.lock(), "{wxbroker:wx1234:classic}:lock");
        assert_eq!(
            keys.fetches(20261129),
            "{wxbroker:wx1234:classic}:fetches:20261129"
        );
        for name in [keys.lock(), keys.fetches(20261129), keys.updated()] {
            assert_eq!(hashed_part(&name), hashed_part(&keys.token()));
        }
        assert_eq!(keys.legacy_token(), "wxbroker:wx1234:classic:token");
    }

    #[test]
    fn other_credentials_get_tags_of_their_own() {
        let token = Keys::new("p", &key("wx1", "classic"));
        let ticket = Keys::new("p", &key("wx1", "jsapi_ticket"));
        let agent = Keys::new("p", &key("ww1", "wecom-a1b2c3"));
        assert_ne!(hashed_part(&token.token()), hashed_part(&ticket.token()));
        assert_eq!(hashed_part(&agent.lock()), "p:ww1:wecom-a1b2c3");
    }
}
