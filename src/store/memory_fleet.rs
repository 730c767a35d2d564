//! A store shared by several brokers in one process, with the shared
//! store's semantics (DESIGN.md section 9): a record is replaced only by a
//! strictly later fetch and each replacement wakes the other brokers, the
//! refresh lock expires after its ttl, the daily counters are the fleet's.
//! It lets the fleet's behaviour be tested on tokio's paused clock, and
//! can be told to become unreachable, as Redis can.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cluster, LockToken, Store, StoreError, StoreKey, StoredCredential};

#[derive(Default)]
pub struct MemoryFleet {
    state: Mutex<FleetState>,
    unreachable: AtomicBool,
    next_owner: AtomicU64,
}

#[derive(Default)]
struct FleetState {
    records: HashMap<String, StoredCredential>,
    locks: HashMap<String, (String, Instant)>,
    counters: HashMap<(String, u32), u32>,
    watchers: HashMap<String, Vec<mpsc::Sender<()>>>,
}

impl MemoryFleet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation fail, as a Redis that went away, or work again.
    pub fn set_reachable(&self, reachable: bool) {
        self.unreachable.store(!reachable, Ordering::SeqCst);
    }

    /// The fleet's count for `key` on `day`, as the tests read it.
    pub fn count(&self, key: &StoreKey, day: u32) -> u32 {
        let state = self.state.lock().expect("fleet poisoned");
        state
            .counters
            .get(&(shared_key(key), day))
            .copied()
            .unwrap_or(0)
    }

    /// Runs `op` on the state, or fails as an unreachable store does.
    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut FleetState) -> T,
    ) -> Result<T, StoreError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(StoreError::Redis {
                op,
                message: "the fleet's store is unreachable".into(),
            });
        }
        Ok(f(&mut self.state.lock().expect("fleet poisoned")))
    }
}

/// What tells one credential apart in the fleet, as the Redis keys do.
fn shared_key(key: &StoreKey) -> String {
    format!("{}:{}", key.appid, key.cluster_grant())
}

impl Store for MemoryFleet {
    fn backend(&self) -> &'static str {
        "memory_fleet"
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>> {
        let record = self.with("get", |state| state.records.get(&shared_key(key)).cloned());
        Box::pin(async move { record })
    }

    /// Like the Redis store: only a strictly later fetch replaces the
    /// record, and only a replacement wakes the fleet.
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let saved = self.with("save", |state| {
            let Some(token) = &record.token else { return };
            let shared = shared_key(key);
            let newer = state
                .records
                .get(&shared)
                .and_then(|held| held.token.as_ref())
                .is_none_or(|held| held.fetched_ms() < token.fetched_ms());
            if newer {
                state.records.insert(shared.clone(), record.clone());
                if let Some(watchers) = state.watchers.get_mut(&shared) {
                    watchers.retain(|watcher| !watcher.is_closed());
                    for watcher in watchers {
                        let _ = watcher.try_send(());
                    }
                }
            }
        });
        Box::pin(async move { saved })
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }
}

impl Cluster for MemoryFleet {
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
        let owner = format!("owner-{}", self.next_owner.fetch_add(1, Ordering::SeqCst));
        let taken = self.with("lock", |state| {
            let now = Instant::now();
            let shared = shared_key(key);
            match state.locks.get(&shared) {
                Some((_, until)) if *until > now => None,
                _ => {
                    state.locks.insert(shared, (owner.clone(), now + ttl));
                    Some(LockToken(owner))
                }
            }
        });
        Box::pin(async move { taken })
    }

    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        lock: LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let released = self.with("unlock", |state| {
            let shared = shared_key(key);
            if state
                .locks
                .get(&shared)
                .is_some_and(|(owner, _)| *owner == lock.0)
            {
                state.locks.remove(&shared);
            }
        });
        Box::pin(async move { released })
    }

    fn count_fetch<'a>(
        &'a self,
        key: &'a StoreKey,
        day: u32,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        let count = self.with("count", |state| {
            let count = state.counters.entry((shared_key(key), day)).or_insert(0);
            *count += 1;
            *count
        });
        Box::pin(async move { count })
    }

    fn fetches<'a>(
        &'a self,
        key: &'a StoreKey,
        day: u32,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        let count = self.with("count", |state| {
            state
                .counters
                .get(&(shared_key(key), day))
                .copied()
                .unwrap_or(0)
        });
        Box::pin(async move { count })
    }

    fn watch(&self, key: &StoreKey, _cancel: CancellationToken) -> mpsc::Receiver<()> {
        let (notify, updates) = mpsc::channel(1);
        // A new subscription is a wake-up, as with Redis: updates may have
        // been missed before it.
        let _ = notify.try_send(());
        self.state
            .lock()
            .expect("fleet poisoned")
            .watchers
            .entry(shared_key(key))
            .or_default()
            .push(notify);
        updates
    }
}
