//! A platform's durable state: the latest `component_verify_ticket` and
//! every authorizer's record, above all its refresh token, the one thing
//! whose loss makes a merchant authorize again by hand. (The component
//! token itself is an engine credential and lives in the app [`Store`].)
//!
//! This module holds what every backend shares: the stored records, the
//! [`PlatformStore`] trait, and the rules each backend keeps. Backends:
//! memory (nothing survives, [`memory`]), file (a journal per platform,
//! [`file`](mod@file)) and Redis ([`crate::platform::redis_store`]).
//!
//! A record with an empty refresh token is never written: an empty value
//! must never replace the last good one.
//!
//! [`Store`]: crate::store::Store

pub mod file;
pub mod memory;

use std::path::PathBuf;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::store::{implausible_times, Implausible, StoreError};

pub use file::FilePlatformStore;
pub use memory::MemoryPlatformStore;

/// One authorizer as stored: the family's record (see [`crate::children`]),
/// its `appid` the authorizer's and its `refresh_token` WeChat's.
pub use crate::children::ChildRecord as AuthorizerRecord;

/// The latest verify ticket WeChat pushed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTicket {
    pub component_appid: String,
    pub ticket: String,
    /// Unix seconds.
    pub received_at: u64,
}

impl StoredTicket {
    /// Why the ticket cannot have been received by a broker whose clock
    /// reads `now_secs` (pushed in the future), or `None`. A ticket dated
    /// ahead would never age out.
    pub fn implausible(&self, now_secs: u64) -> Option<Implausible> {
        let received_ms = self.received_at.saturating_mul(1000);
        implausible_times(received_ms, received_ms, now_secs)
    }
}

impl std::fmt::Debug for StoredTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTicket")
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

/// A platform's durable state. One instance per platform.
pub trait PlatformStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<StoredTicket>, StoreError>>;

    fn save_ticket<'a>(&'a self, ticket: &'a StoredTicket)
        -> BoxFuture<'a, Result<(), StoreError>>;

    fn load_authorizers(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>>;

    /// Inserts or replaces these authorizers' records, durably before it
    /// returns. Records with an empty refresh token are refused.
    fn save_authorizers<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn remove_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores records recovered from `api_get_authorizer_list`, keeping
    /// any record already there: in a fleet, another broker may have
    /// rotated a refresh token since the list was read, and the listed
    /// one is then dead.
    fn save_recovered<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.save_authorizers(records)
    }

    /// Whether [`PlatformStore::compact`] would pay off now, with `live`
    /// authorizers held.
    fn wants_compaction(&self, _live: usize) -> bool {
        false
    }

    /// Replaces everything with exactly `records`.
    fn compact<'a>(
        &'a self,
        _records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// One authorizer's record as the shared store holds it now, for a
    /// fleet whose members refresh the same authorizers; `None` outside a
    /// shared store.
    fn shared_authorizer<'a>(
        &'a self,
        _appid: &'a str,
    ) -> BoxFuture<'a, Result<Option<AuthorizerRecord>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// Whether several brokers share this store.
    fn is_shared(&self) -> bool {
        false
    }

    /// A fleet-wide permit for one authorizer fetch in the current second
    /// (at most `per_second` a second across the fleet); always granted
    /// outside a shared store, where the local limiter is the fleet's.
    fn fetch_permit(&self, _per_second: u32) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    /// Takes a short lock on refreshing `appid` across the fleet.
    fn lock_authorizer<'a>(&'a self, _appid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn unlock_authorizer<'a>(&'a self, _appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Counts one authorizer fetch on the Beijing day `day` (`YYYYMMDD`)
    /// against `authorizer_daily_budget`, durably before it returns;
    /// answers the day's count, the whole fleet's in a shared store.
    fn count_authorizer_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>>;

    /// The day's count of authorizer fetches as stored (0 for another
    /// day).
    fn authorizer_fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>>;
}

/// The next count of a per-day counter holding `(day, used)`.
fn next_count(count: &mut (u32, u32), day: u32) -> u32 {
    *count = if count.0 == day {
        (day, count.1.saturating_add(1))
    } else {
        (day, 1)
    };
    count.1
}

/// What a per-day counter holding `(day, used)` says of `day`.
fn count_on(count: (u32, u32), day: u32) -> u32 {
    if count.0 == day {
        count.1
    } else {
        0
    }
}

fn refuse_empty(records: &[AuthorizerRecord]) -> Result<(), StoreError> {
    match records.iter().find(|r| r.refresh_token.is_empty()) {
        Some(record) => Err(StoreError::Corrupt {
            path: PathBuf::from(&record.appid),
            reason: "refusing to store an empty refresh token".into(),
        }),
        None => Ok(()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn record(appid: &str, refresh: &str) -> AuthorizerRecord {
        AuthorizerRecord {
            appid: appid.into(),
            refresh_token: refresh.into(),
            access_token: format!("at-{appid}"),
            expires_at_ms: 10,
            fetched_at_ms: 5,
            authorized_at: 1,
            name: String::new(),
        }
    }

    #[test]
    fn implausible_times_distrust_the_token_only() {
        let now_ms = 1_800_000_000_000;
        let year_ms = 365 * 86_400_000;
        let planted = AuthorizerRecord {
            fetched_at_ms: now_ms + year_ms,
            expires_at_ms: now_ms + 10 * year_ms,
            ..record("a", "r1")
        };
        assert!(planted.token_implausible(now_ms).is_some());
        let kept = planted.without_token();
        assert_eq!(kept.refresh_token, "r1");
        assert!(kept.access_token.is_empty());
        assert_eq!(kept.token_implausible(now_ms), None);
        let fresh = AuthorizerRecord {
            fetched_at_ms: now_ms - 1_000,
            expires_at_ms: now_ms + 7_199_000,
            ..record("a", "r1")
        };
        assert_eq!(fresh.token_implausible(now_ms), None);
        let long = AuthorizerRecord {
            fetched_at_ms: now_ms,
            expires_at_ms: now_ms + 2 * 86_400_000,
            ..record("a", "r1")
        };
        assert!(long.token_implausible(now_ms).is_some());
        let ticket = |received_at| StoredTicket {
            component_appid: "wxc".into(),
            ticket: "t".into(),
            received_at,
        };
        assert_eq!(ticket(now_ms / 1000 - 600).implausible(now_ms / 1000), None);
        assert!(ticket(now_ms / 1000 + 3600)
            .implausible(now_ms / 1000)
            .is_some());
    }
}
