//! Other fleets on the same Redis (DESIGN.md section 21): two fleets whose
//! `key_prefix` differs (a typo apart) share nothing, so each refreshes
//! the same appid on its own and every classic fetch kills the other's
//! token. At start the broker looks, with a bounded `SCAN`, for token
//! records of its appids under any other prefix, so the operator hears of
//! it before the first dead token does.

use std::collections::BTreeSet;

use tracing::{debug, warn};

use super::{Core, RedisStore, StoreError};

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1000;
/// At most this many steps (about `SCAN_STEPS * SCAN_COUNT` keys looked
/// at): a huge shared Redis is looked at in part rather than for long.
const SCAN_STEPS: usize = 100;
/// At most this many findings are reported.
const MAX_FOUND: usize = 32;
/// A prefix is shown at most this long (it comes from the shared store).
const MAX_SHOWN: usize = 64;

/// An appid of this broker's, held in the store under another prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    pub appid: String,
    /// The other fleet's `key_prefix`, made printable and cut short.
    pub prefix: String,
}

/// What the look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Neighbours {
    Found(Vec<Neighbour>),
    /// Not looked for: a Redis Cluster's keys are spread over its nodes,
    /// and one `SCAN` sees one node's.
    NotChecked,
}

impl RedisStore {
    /// The token records of `appids` stored under a prefix other than
    /// this store's, in either key layout (`{prefix:appid:grant}:token`,
    /// and Part I's `prefix:appid:grant:token`). Bounded in steps.
    pub async fn other_prefixes(&self, appids: &[&str]) -> Result<Neighbours, StoreError> {
        if self.core.topology == "cluster" {
            return Ok(Neighbours::NotChecked);
        }
        let mut found = BTreeSet::new();
        let mut cursor: u64 = 0;
        for _ in 0..SCAN_STEPS {
            let (next, keys) = scan_step(&self.core, cursor).await?;
            for key in &keys {
                if let Some(neighbour) = neighbour_in(key, &self.core.prefix, appids) {
                    found.insert(neighbour);
                }
            }
            cursor = next;
            if cursor == 0 || found.len() >= MAX_FOUND {
                break;
            }
        }
        Ok(Neighbours::Found(
            found.into_iter().take(MAX_FOUND).collect(),
        ))
    }
}

impl RedisStore {
    /// Logs, at warn level, each of `appids` that the store also holds
    /// under another prefix. A failure to look is logged and is all it
    /// costs: the broker works on.
    pub async fn warn_of_other_prefixes(&self, appids: &[&str]) {
        match self.other_prefixes(appids).await {
            Ok(Neighbours::Found(found)) => {
                for neighbour in found {
                    warn!(
                        appid = %neighbour.appid,
                        other_prefix = %neighbour.prefix,
                        key_prefix = %self.core.prefix,
                        "the shared store already holds appid {} under another key_prefix ({:?}): another fleet refreshes this appid on its own, and its fetches invalidate this fleet's tokens (and ours its). Give both fleets one key_prefix, or make one follow the other",
                        neighbour.appid,
                        neighbour.prefix
                    );
                }
            }
            Ok(Neighbours::NotChecked) => {
                debug!("other key prefixes are not looked for on a Redis Cluster");
            }
            Err(err) => debug!(error = %err, "could not look for other key prefixes"),
        }
    }
}

/// One `SCAN` step over the keys that end in `:token`.
async fn scan_step(core: &Core, cursor: u64) -> Result<(u64, Vec<String>), StoreError> {
    let mut command = redis::cmd("SCAN");
    command
        .arg(cursor)
        .arg("MATCH")
        .arg("*:token")
        .arg("COUNT")
        .arg(SCAN_COUNT);
    core.query("scan", &command).await
}

/// The appid and prefix of a token record's key, when the appid is one of
/// `appids` and the prefix is not `ours`.
fn neighbour_in(key: &str, ours: &str, appids: &[&str]) -> Option<Neighbour> {
    let base = key.strip_suffix(":token")?;
    // `{prefix:appid:grant}` or Part I's `prefix:appid:grant`.
    let base = match base.strip_prefix('{') {
        Some(tagged) => tagged.strip_suffix('}')?,
        None => base,
    };
    let (rest, _grant) = base.rsplit_once(':')?;
    let (prefix, appid) = rest.rsplit_once(':')?;
    if prefix == ours || !appids.contains(&appid) {
        return None;
    }
    Some(Neighbour {
        appid: appid.to_owned(),
        prefix: prefix
            .chars()
            .take(MAX_SHOWN)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_appid_under_another_prefix_in_either_layout() {
        let appids = ["wx1", "ww2"];
        let found = |key| neighbour_in(key, "prod", &appids).map(|n| (n.appid, n.prefix));
        assert_eq!(
            found("{prdo:wx1:classic}:token"),
            Some(("wx1".into(), "prdo".into()))
        );
        assert_eq!(
            found("team:a:wx1:stable:token"),
            Some(("wx1".into(), "team:a".into()))
        );
        assert_eq!(
            found("{x:ww2:wecom-a1b2c3}:token"),
            Some(("ww2".into(), "x".into()))
        );
        // Ours, another appid, or not a token record: nothing.
        assert_eq!(found("{prod:wx1:classic}:token"), None);
        assert_eq!(found("{prdo:wx9:classic}:token"), None);
        assert_eq!(found("{prdo:wx1:classic}:lock"), None);
        assert_eq!(found("token"), None);
    }
}
