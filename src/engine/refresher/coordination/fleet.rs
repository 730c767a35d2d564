//! A broker of a fleet sharing one store (DESIGN.md section 9): before
//! an upstream call it takes the fleet's lock and re-reads the shared
//! record, since another broker may have refreshed already; after it, the
//! new record is stored and published. Brokers that did not fetch adopt
//! the published token at once (or at the next poll). Every fetch is
//! counted on the fleet's counter. With the store away, each broker keeps
//! serving its valid token and refreshes alone only when that token is
//! about to run out (or it has none), and says so.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Coordination, Pass, Refresher, Turn};
use crate::engine::CredentialRecord;
use crate::errors::Chain;
use crate::secret::AccessToken;
use crate::store::{lock_hold, Cluster, LockToken, Store, StoreError, LOCK_LEASE};

/// How often a broker re-reads the shared record in case it missed a
/// published update.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How often a broker waiting on another's lock looks again.
const LOCK_RECHECK: Duration = Duration::from_millis(250);
/// How soon to try the store again while it is away and the token is fine.
const STORE_RETRY: Duration = Duration::from_secs(2);
/// A classic-grant token this close to expiry is refreshed even without
/// the fleet's lock: a token of one's own beats none.
const ALONE_LEAD_MAX: Duration = Duration::from_secs(60);

/// The coordination of a broker whose store others share.
pub(in crate::engine) struct Fleet {
    /// A store whose [`Store::cluster`] is the fleet's.
    store: Arc<dyn Store>,
    /// Wake-ups when another broker stored a new token; from the start.
    updates: Option<mpsc::Receiver<()>>,
    /// When to re-read the shared record anyway.
    next_poll: Instant,
    /// Refreshing without the shared store.
    degraded: bool,
    /// The current token was fetched without the fleet's lock, so it may
    /// already be dead upstream (another broker fetching alone
    /// invalidates it); it is never offered to the fleet.
    fetched_alone: bool,
}

impl Fleet {
    /// The coordination over `store`, which must be shared
    /// ([`Store::cluster`] is `Some`).
    pub(in crate::engine) fn new(store: Arc<dyn Store>) -> Fleet {
        Fleet {
            store,
            updates: None,
            next_poll: Instant::now() + POLL_INTERVAL,
            degraded: false,
            fetched_alone: false,
        }
    }

    fn cluster(&self) -> &dyn Cluster {
        self.store
            .cluster()
            .expect("a fleet's coordination runs on a shared store")
    }

    async fn take_turn(&mut self, r: &mut Refresher, reported: Option<&AccessToken>) -> Turn {
        let hold = lock_hold(r.spec.fetch_timeout);
        // Another broker may hold the lock for up to its hold; one that
        // died holding it loses it within a lease.
        let give_up = Instant::now() + hold + LOCK_LEASE;
        loop {
            match self.cluster().try_lock(&r.key, hold).await {
                Ok(Some(lock)) => {
                    self.set_degraded(r, false);
                    // Someone may have refreshed while we waited for the lock.
                    if self.adopt_stored(r, reported).await {
                        self.unlock(r, lock).await;
                        return Turn::Settled;
                    }
                    return Turn::Mine(Pass { lock: Some(lock) });
                }
                Ok(None) => {
                    self.set_degraded(r, false);
                    if Instant::now() >= give_up || r.cancel.is_cancelled() {
                        r.next_attempt = Instant::now() + LOCK_RECHECK;
                        return Turn::Later;
                    }
                    // Another broker is fetching: take its token as soon as
                    // it is published, or the lock once it is released (its
                    // fetch may have failed). Nothing of ours is in flight,
                    // so a stop ends the wait.
                    let cancel = r.cancel.clone();
                    let waited = async {
                        if let Some(updates) = self.updates.as_mut() {
                            let _ = tokio::time::timeout(LOCK_RECHECK, updates.recv()).await;
                        } else {
                            tokio::time::sleep(LOCK_RECHECK).await;
                        }
                    };
                    tokio::select! {
                        () = cancel.cancelled() => {
                            r.next_attempt = Instant::now() + LOCK_RECHECK;
                            return Turn::Later;
                        }
                        () = waited => {}
                    }
                    if self.adopt_stored(r, reported).await {
                        return Turn::Settled;
                    }
                }
                Err(err) => return self.without_store(r, err),
            }
        }
    }

    /// The store is away: refresh alone if that is safe enough, else wait.
    fn without_store(&mut self, r: &mut Refresher, err: StoreError) -> Turn {
        r.count_store_error(err.op_label());
        if may_fetch_alone(r) {
            error!(
                error = %Chain(&err),
                "cluster store unreachable: refreshing without the fleet's lock"
            );
            self.set_degraded(r, true);
            return Turn::Mine(Pass::unlocked());
        }
        warn!(
            error = %Chain(&err),
            "cluster store unreachable: keeping the current token and waiting for it"
        );
        let retry = Instant::now() + STORE_RETRY;
        r.next_attempt = match alone_deadline(r) {
            Some(deadline) => retry.min(deadline),
            None => retry,
        };
        Turn::Later
    }

    async fn end_turn(&mut self, r: &mut Refresher, pass: Pass, fetched: bool) {
        if fetched {
            self.fetched_alone = pass.lock.is_none();
        }
        self.offer(r).await;
        if let Some(lock) = pass.lock {
            self.unlock(r, lock).await;
        }
    }

    async fn unlock(&self, r: &Refresher, lock: LockToken) {
        if let Err(err) = self.cluster().unlock(&r.key, lock).await {
            // Its lease ends it; others wait at most that long.
            warn!(error = %Chain(&err), "could not release the refresh lock");
            r.count_store_error(err.op_label());
        }
    }

    /// Stores the refresher's state for the fleet, unless its token was
    /// fetched alone. Not retried: the shared record is the fleet's, and
    /// its count lives on the fleet's counter.
    async fn offer(&self, r: &mut Refresher) {
        if self.fetched_alone {
            return;
        }
        if let Err(err) = r.save().await {
            warn!(error = %Chain(&err), "could not persist token state");
        }
    }

    /// Counts one upstream call on the fleet's shared counter (this
    /// broker's own count while the store is away).
    async fn count_fetch(&mut self, r: &mut Refresher, now_secs: u64) -> bool {
        if !self.degraded {
            r.budget.roll(now_secs);
            let day = r.budget.day();
            match self.cluster().count_fetch(&r.key, day).await {
                Ok(count) => {
                    r.budget.restore(day, count);
                    return count <= r.budget.limit();
                }
                Err(err) => {
                    warn!(error = %Chain(&err), "cannot count on the fleet's budget; counting locally");
                    r.count_store_error(err.op_label());
                }
            }
        }
        r.budget.try_spend(now_secs)
    }

    /// The fleet's count, never lower than what the record carried: the
    /// counter only grows within a day, and reads 0 for a moment while
    /// another broker moves an old layout's counter (a take, then an add:
    /// the two keys may live on different cluster slots).
    async fn restore_count(&self, r: &mut Refresher) {
        let day = r.budget.day();
        match self.cluster().fetches(&r.key, day).await {
            Ok(count) => r.budget.at_least(day, count),
            Err(err) => r.count_store_error(err.op_label()),
        }
    }

    /// A published update, or the poll interval.
    async fn next_result(&mut self) {
        let update = async {
            match self.updates.as_mut() {
                Some(updates) => updates.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = update => {}
            () = tokio::time::sleep_until(self.next_poll) => {
                self.next_poll = Instant::now() + POLL_INTERVAL;
            }
        }
    }

    fn set_degraded(&mut self, r: &Refresher, degraded: bool) {
        if self.degraded != degraded {
            self.degraded = degraded;
            if !degraded {
                info!("cluster store reachable again");
            }
        }
        r.series.set_cluster_degraded(degraded);
    }

    /// Takes over the shared record's token if it is newer than ours (and,
    /// for an invalidation, not the reported one). If the shared record is
    /// older or gone (Redis restarted empty) while ours is valid, offers
    /// ours, so the fleet converges on the newest token. Returns whether a
    /// token was adopted.
    async fn adopt_stored(&mut self, r: &mut Refresher, reported: Option<&AccessToken>) -> bool {
        let record = match r.writer.read().await {
            Ok(record) => {
                self.set_degraded(r, false);
                record
            }
            // Counted by the read.
            Err(_) => return false,
        };
        let now = r.now_ms();
        let current = r.current().filter(|token| token.is_valid(now));
        let stored = record.and_then(|record| record.token);
        let newer = match (&stored, &current) {
            (Some(stored), Some(current)) => stored.supersedes(&current.to_stored()),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let stored = stored.map(CredentialRecord::from_stored);
        if self.fetched_alone {
            // Tokens fetched alone by several brokers may have invalidated
            // each other. A shared token fetched later than ours is at
            // least as good; otherwise the fleet needs one fetch under the
            // lock to agree on a token known to be good.
            return match stored {
                Some(stored) if newer && stored.is_valid(now) => {
                    self.fetched_alone = false;
                    r.take_stored(stored);
                    true
                }
                _ => {
                    r.next_attempt = Instant::now();
                    false
                }
            };
        }
        match stored {
            Some(stored)
                if newer
                    && stored.is_valid(now)
                    && reported.is_none_or(|reported| stored.value != *reported) =>
            {
                r.take_stored(stored);
                true
            }
            _ => {
                if current.is_some() && !newer {
                    // Ours is at least as new as the fleet's: make sure the
                    // fleet has it (a no-op when the record is already ours).
                    self.offer(r).await;
                }
                false
            }
        }
    }
}

/// Alone only without a valid token or close to expiry: a classic
/// fetch invalidates the fleet's token, and even a stable one (every
/// broker gets the same token) costs each broker a call, while a
/// Redis failover is over in seconds (DESIGN.md section 14: at most
/// one extra fetch per credential).
fn may_fetch_alone(r: &Refresher) -> bool {
    match alone_deadline(r) {
        Some(deadline) => Instant::now() >= deadline,
        None => true,
    }
}

/// When the current token counts as about to run out.
fn alone_deadline(r: &Refresher) -> Option<Instant> {
    let token = r.current().filter(|token| token.is_valid(r.now_ms()))?;
    let lead = ALONE_LEAD_MAX.min(r.spec.refresh_before / 2);
    let lead_ms = lead.as_millis() as u64;
    Some(
        r.clock
            .instant_at_ms(token.expires_at_ms.saturating_sub(lead_ms)),
    )
}

impl Coordination for Fleet {
    fn start<'a>(&'a mut self, refresher: &'a mut Refresher) -> BoxFuture<'a, ()> {
        let cancel = refresher.cancel.child_token();
        self.updates = Some(self.cluster().watch(&refresher.key, cancel));
        Box::pin(async {})
    }

    fn restore_count<'a>(&'a mut self, refresher: &'a mut Refresher) -> BoxFuture<'a, ()> {
        Box::pin(Fleet::restore_count(self, refresher))
    }

    fn take_turn<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        reported: Option<&'a AccessToken>,
    ) -> BoxFuture<'a, Turn> {
        Box::pin(Fleet::take_turn(self, refresher, reported))
    }

    fn end_turn<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        pass: Pass,
        fetched: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(Fleet::end_turn(self, refresher, pass, fetched))
    }

    fn count_fetch<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        now_secs: u64,
    ) -> BoxFuture<'a, bool> {
        Box::pin(Fleet::count_fetch(self, refresher, now_secs))
    }

    fn next_result(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(Fleet::next_result(self))
    }

    fn adopt_result<'a>(&'a mut self, refresher: &'a mut Refresher) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.adopt_stored(refresher, None).await;
        })
    }
}
