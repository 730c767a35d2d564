//! The `suite_ticket` a suite holds: the newest by `TimeStamp`
//! ([`super::ticket::judge`]), whatever order the pushes arrive in and
//! whichever broker of a fleet received them. A pushed ticket is judged
//! against the held one and the store's, stored (durably, through the
//! suite's store) before the suite token's source may use it, and never
//! replaced by an older one. A fleet member that receives no pushes reads
//! the fleet's ticket from the shared store: at start, whenever its
//! source has none, and every [`FLEET_LOOK_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::ticket::{self, PushedTicket, TicketDecision};
use crate::clock::Clock;
use crate::engine::TicketCell;
use crate::errors::Chain;
use crate::platform::store::{PlatformStore, StoredTicket};
use crate::secret::Secret;

/// How often a member of a fleet looks for a ticket another member kept:
/// WeCom pushes every ten minutes, a ticket lives thirty.
pub const FLEET_LOOK_EVERY: Duration = Duration::from_secs(30);

pub struct HeldTicket {
    suite_id: String,
    /// The ticket the suite token's source fetches with.
    cell: Arc<TicketCell>,
    held: Mutex<Option<PushedTicket>>,
    /// The newest `TimeStamp` of a ticket held or found in the store,
    /// expired ones too (0: none): what the age gauge reads.
    newest_seen: AtomicU64,
    store: Arc<dyn PlatformStore>,
    /// One judgement at a time: two pushes at once must not both win.
    judging: tokio::sync::Mutex<()>,
    clock: Clock,
}

impl HeldTicket {
    pub fn new(
        suite_id: &str,
        cell: Arc<TicketCell>,
        store: Arc<dyn PlatformStore>,
        clock: Clock,
    ) -> Self {
        HeldTicket {
            suite_id: suite_id.to_owned(),
            cell,
            held: Mutex::new(None),
            newest_seen: AtomicU64::new(0),
            store,
            judging: tokio::sync::Mutex::new(()),
            clock,
        }
    }

    /// The `TimeStamp` (Unix seconds) of the newest ticket this broker
    /// has known, held or stored, expired or not; `None` before the first.
    pub fn newest_timestamp(&self) -> Option<u64> {
        Some(self.newest_seen.load(Ordering::Relaxed)).filter(|&at| at > 0)
    }

    /// Judges a pushed ticket; keeps it (durably first) when it is the
    /// newest.
    pub async fn push(&self, pushed: PushedTicket) -> TicketDecision {
        let _one = self.judging.lock().await;
        let now = self.clock.now_secs();
        let newest = self.newest_known(now).await;
        let decision = ticket::judge(newest.as_ref(), &pushed, now);
        if decision.keeps_pushed() {
            let stored = StoredTicket {
                component_appid: self.suite_id.clone(),
                ticket: pushed.ticket.expose().to_owned(),
                received_at: pushed.timestamp,
            };
            if let Err(err) = self.store.save_ticket(&stored).await {
                warn!(error = %Chain(&err), "could not store the suite_ticket; keeping it in memory");
            }
            self.hold(pushed);
        }
        debug!(decision = decision.label(), "suite_ticket pushed");
        decision
    }

    /// Takes the store's ticket when it is newer than the held one (a
    /// restart, or another member of a fleet received the push).
    pub async fn look_in_store(&self) {
        let _one = self.judging.lock().await;
        let now = self.clock.now_secs();
        let held = self.held.lock().expect("poisoned").clone();
        if let Some(stored) = self.stored().await {
            self.seen(&stored, now);
            if ticket::judge(held.as_ref(), &stored, now).keeps_pushed() {
                info!(
                    age_secs = ticket::age_secs(&stored, now),
                    "took the suite_ticket from the store"
                );
                self.hold(stored);
            }
        }
    }

    /// The newest of the held and the stored ticket.
    async fn newest_known(&self, now: u64) -> Option<PushedTicket> {
        let held = self.held.lock().expect("poisoned").clone();
        let Some(stored) = self.stored().await else {
            return held;
        };
        if ticket::judge(held.as_ref(), &stored, now).keeps_pushed() {
            self.hold(stored.clone());
            return Some(stored);
        }
        held
    }

    async fn stored(&self) -> Option<PushedTicket> {
        match self.store.load_ticket().await {
            Ok(stored) => stored
                .filter(|stored| stored.component_appid == self.suite_id)
                .map(|stored| PushedTicket {
                    ticket: Secret::new(stored.ticket),
                    timestamp: stored.received_at,
                }),
            Err(err) => {
                debug!(error = %Chain(&err), "cannot read the stored suite_ticket");
                None
            }
        }
    }

    /// Counts a ticket found in the store towards the age gauge, unless
    /// it is stamped in the future (a wrong clock; never believed).
    fn seen(&self, ticket: &PushedTicket, now: u64) {
        if ticket.timestamp <= now.saturating_add(ticket::FUTURE_SLACK_SECS) {
            self.newest_seen
                .fetch_max(ticket.timestamp, Ordering::Relaxed);
        }
    }

    fn hold(&self, ticket: PushedTicket) {
        self.newest_seen
            .fetch_max(ticket.timestamp, Ordering::Relaxed);
        self.cell
            .send_replace(Some(Arc::from(ticket.ticket.expose())));
        *self.held.lock().expect("poisoned") = Some(ticket);
    }

    /// At start, then in a shared store every [`FLEET_LOOK_EVERY`] and
    /// whenever the suite token's source took a ticket from it, the
    /// store's ticket, until `cancel`.
    pub async fn follow_store(
        self: Arc<Self>,
        shared: bool,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut changes = self.cell.subscribe();
        loop {
            self.look_in_store().await;
            if !shared {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(FLEET_LOOK_EVERY) => {}
                Ok(()) = changes.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::store::MemoryPlatformStore;

    const NOW: u64 = 1_800_000_000;

    fn held(store: Arc<dyn PlatformStore>) -> HeldTicket {
        let cell = Arc::new(tokio::sync::watch::channel(None).0);
        let clock = Clock::starting_at(Duration::from_secs(NOW));
        HeldTicket::new("wwsuite", cell, store, clock)
    }

    fn pushed(text: &str, timestamp: u64) -> PushedTicket {
        PushedTicket {
            ticket: Secret::new(text),
            timestamp,
        }
    }

    async fn stored(store: &dyn PlatformStore) -> (String, u64) {
        let kept = store.load_ticket().await.unwrap().unwrap();
        (kept.ticket, kept.received_at)
    }

    #[tokio::test]
    async fn the_newest_is_kept_durably_and_an_older_push_changes_nothing() {
        let store: Arc<dyn PlatformStore> = Arc::new(MemoryPlatformStore::default());
        let ticket = held(store.clone());
        assert_eq!(ticket.newest_timestamp(), None);
        assert_eq!(
            ticket.push(pushed("b", NOW - 10)).await,
            TicketDecision::Replace
        );
        assert_eq!(
            ticket.push(pushed("a", NOW - 600)).await,
            TicketDecision::Older
        );
        assert_eq!(
            ticket.push(pushed("b", NOW - 10)).await,
            TicketDecision::Same
        );
        assert_eq!(stored(store.as_ref()).await, ("b".into(), NOW - 10));
        assert_eq!(ticket.newest_timestamp(), Some(NOW - 10));
        assert_eq!(ticket.cell.borrow().as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_push_is_judged_against_the_fleets_ticket_too() {
        let store: Arc<dyn PlatformStore> = Arc::new(MemoryPlatformStore::default());
        let ticket = held(store.clone());
        ticket.push(pushed("old", NOW - 900)).await;
        // Another broker of the fleet kept a newer one.
        let fleets = StoredTicket {
            component_appid: "wwsuite".into(),
            ticket: "fleet".into(),
            received_at: NOW - 30,
        };
        store.save_ticket(&fleets).await.unwrap();
        assert_eq!(
            ticket.push(pushed("mid", NOW - 300)).await,
            TicketDecision::Older
        );
        assert_eq!(stored(store.as_ref()).await, ("fleet".into(), NOW - 30));
        assert_eq!(ticket.cell.borrow().as_deref(), Some("fleet"));
        assert_eq!(ticket.newest_timestamp(), Some(NOW - 30));
    }

    #[tokio::test]
    async fn an_expired_stored_ticket_is_not_held_but_dates_the_gauge() {
        let store: Arc<dyn PlatformStore> = Arc::new(MemoryPlatformStore::default());
        let expired = StoredTicket {
            component_appid: "wwsuite".into(),
            ticket: "dead".into(),
            received_at: NOW - 3600,
        };
        store.save_ticket(&expired).await.unwrap();
        let ticket = held(store);
        ticket.look_in_store().await;
        assert!(
            ticket.cell.borrow().is_none(),
            "a dead ticket is not fetched with"
        );
        assert_eq!(ticket.newest_timestamp(), Some(NOW - 3600));
    }
}
