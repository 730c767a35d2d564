//! What a parent's store keeps of each child, and the store interface the
//! scheduler writes through. The record's field names are the Open
//! Platform's (they are what file journals and Redis hashes hold), but
//! their meaning is the family's: `appid` is the child's id (an
//! authorizer's appid, a corp's corpid) and `refresh_token` the durable
//! grant its tokens are fetched with (a refresh token, a permanent code),
//! the one thing that cannot be had again without the child's owner.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::store::{implausible_times, Implausible, StoreError};

/// One child as stored. Tokens are plain strings here: the record never
/// reaches a log (`Debug` is masked by hand).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRecord {
    pub appid: String,
    pub refresh_token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_token: String,
    /// Unix milliseconds; 0 when no access token is held.
    #[serde(default)]
    pub expires_at_ms: u64,
    #[serde(default)]
    pub fetched_at_ms: u64,
    /// Unix seconds of the authorization (or of its recovery).
    #[serde(default)]
    pub authorized_at: u64,
    /// What upstream calls the child (a corp's name), for a kind that
    /// has names; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl ChildRecord {
    /// Why the access token's times cannot be ones a broker whose clock
    /// reads `now_ms` wrote (see [`implausible_times`]); `None` when they
    /// are plausible or no token is held. Only the token is then
    /// distrusted: the durable grant is the one thing that cannot be had
    /// again without the merchant, and a planted one fails upstream
    /// harmlessly.
    pub fn token_implausible(&self, now_ms: u64) -> Option<Implausible> {
        if self.access_token.is_empty() {
            return None;
        }
        implausible_times(self.fetched_at_ms, self.expires_at_ms, now_ms / 1000)
    }

    /// The record without its access token: refreshed at once with its
    /// durable grant.
    pub fn without_token(self) -> Self {
        ChildRecord {
            access_token: String::new(),
            expires_at_ms: 0,
            fetched_at_ms: 0,
            ..self
        }
    }
}

impl std::fmt::Debug for ChildRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildRecord")
            .field("appid", &self.appid)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// A parent's children, durably. One instance per parent.
pub trait ChildStore: Send + Sync + 'static {
    fn load_children(&self) -> BoxFuture<'_, Result<Vec<ChildRecord>, StoreError>>;

    /// Inserts or replaces these records, durably before it returns.
    /// Records with an empty durable grant are refused.
    fn save_children<'a>(
        &'a self,
        records: &'a [ChildRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores records listed by upstream, keeping any record already
    /// there: in a fleet, another broker may have rotated a grant since
    /// the list was read, and the listed one is then dead.
    fn save_recovered<'a>(
        &'a self,
        records: &'a [ChildRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn remove_child<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether [`ChildStore::compact`] would pay off now, with `live`
    /// children held.
    fn wants_compaction(&self, live: usize) -> bool;

    /// Replaces every record with exactly `records`.
    fn compact<'a>(&'a self, records: &'a [ChildRecord]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether several brokers share this store.
    fn is_shared(&self) -> bool;

    /// One child's record as the shared store holds it now; `None`
    /// outside a shared store.
    fn shared_child<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChildRecord>, StoreError>>;

    /// A fleet-wide permit for one fetch in the current second (at most
    /// `per_second` across the fleet); always granted outside a shared
    /// store, where the local limiter is the fleet's.
    fn fetch_permit(&self, per_second: u32) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Takes a short lock on refreshing `id` across the fleet.
    fn lock_child<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    fn unlock_child<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Counts one upstream fetch on the Beijing day `day` (`YYYYMMDD`),
    /// durably before it returns; answers the day's count, the whole
    /// fleet's in a shared store.
    fn count_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>>;

    /// The day's count as stored (0 for another day, or none).
    fn fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>>;
}
