//! The refresher in cluster mode (DESIGN.md section 9): before an upstream
//! call it takes the fleet's lock and re-reads the shared record, since
//! another broker may have refreshed already; after it, the new record is
//! stored and published. Brokers that did not fetch adopt the published
//! token at once (or at the next poll). With Redis away, each broker keeps
//! serving its valid token and refreshes alone only when that token is
//! about to run out (or it has none), and says so.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::Refresher;
use crate::broker::TokenRecord;
use crate::secret::AccessToken;
use crate::store::{lock_hold, LockToken, LOCK_LEASE};

/// How often a broker re-reads the shared record in case it missed a
/// published update.
pub(super) const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How often a broker waiting on another's lock looks again.
const LOCK_RECHECK: Duration = Duration::from_millis(250);
/// How soon to try Redis again while it is away and the token is fine.
const STORE_RETRY: Duration = Duration::from_secs(2);
/// A classic-grant token this close to expiry is refreshed even without
/// the fleet's lock: a token of one's own beats none.
const ALONE_LEAD_MAX: Duration = Duration::from_secs(60);

/// Whose turn it is to call upstream.
pub(super) enum Turn {
    /// Ours: call upstream (holding the lock, if the store gave one).
    Mine(Option<LockToken>),
    /// Another broker's fetch made ours unnecessary; its token is adopted.
    Settled,
    /// Not now: try again at `next_attempt`.
    Later,
}

impl Refresher {
    /// Decides whether this broker should call upstream now. `reported` is
    /// the token an invalidation names; `None` for a scheduled refresh.
    pub(super) async fn take_turn(&mut self, reported: Option<&AccessToken>) -> Turn {
        let store = self.store.clone();
        let Some(cluster) = store.cluster() else {
            return Turn::Mine(None);
        };
        let hold = lock_hold(self.spec.fetch_timeout);
        // Another broker may hold the lock for up to its hold; one that
        // died holding it loses it within a lease.
        let give_up = Instant::now() + hold + LOCK_LEASE;
        loop {
            match cluster.try_lock(&self.key, hold).await {
                Ok(Some(lock)) => {
                    self.set_degraded(false);
                    // Someone may have refreshed while we waited for the lock.
                    if self.adopt_stored(reported).await {
                        self.end_turn(Some(lock)).await;
                        return Turn::Settled;
                    }
                    return Turn::Mine(Some(lock));
                }
                Ok(None) => {
                    self.set_degraded(false);
                    if Instant::now() >= give_up || self.cancel.is_cancelled() {
                        self.next_attempt = Instant::now() + LOCK_RECHECK;
                        return Turn::Later;
                    }
                    // Another broker is fetching: take its token as soon as
                    // it is published, or the lock once it is released (its
                    // fetch may have failed). Nothing of ours is in flight,
                    // so a stop ends the wait.
                    let cancel = self.cancel.clone();
                    let waited = async {
                        if let Some(updates) = self.updates.as_mut() {
                            let _ = tokio::time::timeout(LOCK_RECHECK, updates.recv()).await;
                        } else {
                            tokio::time::sleep(LOCK_RECHECK).await;
                        }
                    };
                    tokio::select! {
                        () = cancel.cancelled() => {
                            self.next_attempt = Instant::now() + LOCK_RECHECK;
                            return Turn::Later;
                        }
                        () = waited => {}
                    }
                    if self.adopt_stored(reported).await {
                        return Turn::Settled;
                    }
                }
                Err(err) => return self.without_store(err),
            }
        }
    }

    /// Redis is away: refresh alone if that is safe enough, else wait.
    fn without_store(&mut self, err: crate::store::StoreError) -> Turn {
        self.count_store_error(err.op_label());
        if self.may_fetch_alone() {
            error!(
                app = %self.spec.name, credential = %self.credential,
                error = %err,
                "cluster store unreachable: refreshing without the fleet's lock"
            );
            self.set_degraded(true);
            return Turn::Mine(None);
        }
        warn!(
            app = %self.spec.name, credential = %self.credential,
            error = %err,
            "cluster store unreachable: keeping the current token and waiting for it"
        );
        let retry = Instant::now() + STORE_RETRY;
        self.next_attempt = match self.alone_deadline() {
            Some(deadline) => retry.min(deadline),
            None => retry,
        };
        Turn::Later
    }

    pub(super) async fn end_turn(&mut self, lock: Option<LockToken>) {
        let store = self.store.clone();
        if let (Some(cluster), Some(lock)) = (store.cluster(), lock) {
            if let Err(err) = cluster.unlock(&self.key, lock).await {
                // Its lease ends it; others wait at most that long.
                warn!(app = %self.spec.name, credential = %self.credential, error = %err, "could not release the refresh lock");
                self.count_store_error(err.op_label());
            }
        }
    }

    /// Alone only without a valid token or close to expiry: a classic
    /// fetch invalidates the fleet's token, and even a stable one (every
    /// broker gets the same token) costs each broker a call, while a
    /// Redis failover is over in seconds (DESIGN.md section 14: at most
    /// one extra fetch per credential).
    fn may_fetch_alone(&self) -> bool {
        match self.alone_deadline() {
            Some(deadline) => Instant::now() >= deadline,
            None => true,
        }
    }

    /// When the current token counts as about to run out.
    fn alone_deadline(&self) -> Option<Instant> {
        let token = self
            .current()
            .filter(|token| token.is_valid(self.now_ms()))?;
        let lead = ALONE_LEAD_MAX.min(self.spec.refresh_before / 2);
        let lead_ms = lead.as_millis() as u64;
        Some(
            self.clock
                .instant_at_ms(token.expires_at_ms.saturating_sub(lead_ms)),
        )
    }

    fn set_degraded(&mut self, degraded: bool) {
        if self.degraded != degraded {
            self.degraded = degraded;
            if !degraded {
                info!(app = %self.spec.name, credential = %self.credential, "cluster store reachable again");
            }
        }
        self.metrics
            .cluster_degraded
            .with_label_values(&[&self.spec.name])
            .set(i64::from(degraded));
    }

    /// Takes over the shared record's token if it is newer than ours (and,
    /// for an invalidation, not the reported one). If the shared record is
    /// older or gone (Redis restarted empty) while ours is valid, offers
    /// ours, so the fleet converges on the newest token. Returns whether a
    /// token was adopted.
    pub(super) async fn adopt_stored(&mut self, reported: Option<&AccessToken>) -> bool {
        let record = match self.store.load(&self.key).await {
            Ok(record) => {
                self.set_degraded(false);
                record.filter(|record| record.belongs_to(&self.key))
            }
            Err(err) => {
                self.count_store_error(err.op_label());
                return false;
            }
        };
        let now = self.now_ms();
        let current = self.current().filter(|token| token.is_valid(now));
        let stored = record.and_then(|record| record.token);
        let newer = match (&stored, &current) {
            (Some(stored), Some(current)) => stored.supersedes(&current.to_stored()),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let stored = stored.map(TokenRecord::from_stored);
        if self.fetched_alone {
            // Tokens fetched alone by several brokers may have invalidated
            // each other. A shared token fetched later than ours is at
            // least as good; otherwise the fleet needs one fetch under the
            // lock to agree on a token known to be good.
            return match stored {
                Some(stored) if newer && stored.is_valid(now) => {
                    self.fetched_alone = false;
                    self.take_stored(stored);
                    true
                }
                _ => {
                    self.next_attempt = Instant::now();
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
                self.take_stored(stored);
                true
            }
            _ => {
                if current.is_some() && !newer {
                    // Ours is at least as new as the fleet's: make sure the
                    // fleet has it (a no-op when the record is already ours).
                    self.persist().await;
                }
                false
            }
        }
    }

    fn take_stored(&mut self, stored: TokenRecord) {
        info!(
            app = %self.spec.name, credential = %self.credential,
            token = %stored.value.fingerprint(),
            expires_in = stored.expires_in(self.now_ms()),
            "adopted the fleet's token"
        );
        self.next_attempt = self.refresh_due(&stored);
        self.backoff.reset();
        self.hold_until = None;
        self.publish(|view| {
            view.install(Arc::new(stored));
            view.clear_failure();
        });
    }
}
