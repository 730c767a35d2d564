//! The long-poll watches of the remote listener's clients: at most
//! `remote_max_watches_per_client` open per client at once (more are
//! refused with 429 `too_many_watches`), and ended when a reload removes
//! the client or changes its credential or apps, so a revoked client's
//! open watch never delivers another credential. The number open is
//! `wxbroker_remote_watches_open`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus::IntGauge;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::api_error::ApiError;
use crate::metrics::Metrics;

/// Every client's open watches.
pub struct Watches {
    per_client: usize,
    clients: Mutex<HashMap<String, ClientWatches>>,
    generations: AtomicU64,
    open: IntGauge,
}

/// One client's open watches, and what ends them all.
struct ClientWatches {
    count: usize,
    /// Tells a slot whether this entry is still the one it counted in
    /// (a revocation replaces it).
    generation: u64,
    revoked: CancellationToken,
}

impl Watches {
    pub fn new(metrics: &Metrics, per_client: usize) -> Self {
        let open = IntGauge::new(
            "wxbroker_remote_watches_open",
            "Watches (long polls) open on the remote listener.",
        )
        .expect("valid metric");
        metrics.register(Box::new(open.clone()));
        Watches {
            per_client,
            clients: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            open,
        }
    }

    /// A place for one more watch of `client`, or 429 when it holds the
    /// most it may already.
    pub(super) fn enter(&self, client: &str) -> Result<WatchSlot<'_>, ApiError> {
        let mut clients = self.clients.lock().expect("watch table poisoned");
        let entry = clients
            .entry(client.to_owned())
            .or_insert_with(|| ClientWatches {
                count: 0,
                generation: self.generations.fetch_add(1, Ordering::Relaxed),
                revoked: CancellationToken::new(),
            });
        if entry.count >= self.per_client {
            return Err(ApiError::TooManyWatches {
                client: client.to_owned(),
                limit: self.per_client,
            });
        }
        entry.count += 1;
        self.open.inc();
        Ok(WatchSlot {
            watches: self,
            client: client.to_owned(),
            generation: entry.generation,
            revoked: entry.revoked.clone(),
        })
    }

    /// Ends every open watch of these clients (removed by a reload, or
    /// changed): each answers at once, as the clients now in force allow.
    pub fn revoke<'a>(&self, clients: impl IntoIterator<Item = &'a str>) {
        let mut table = self.clients.lock().expect("watch table poisoned");
        for client in clients {
            if let Some(entry) = table.remove(client) {
                self.open
                    .sub(i64::try_from(entry.count).unwrap_or(i64::MAX));
                entry.revoked.cancel();
            }
        }
    }
}

/// One open watch, counted until dropped.
pub(super) struct WatchSlot<'a> {
    watches: &'a Watches,
    client: String,
    generation: u64,
    revoked: CancellationToken,
}

impl WatchSlot<'_> {
    /// Completes once a reload revokes the watch's client.
    pub(super) fn revoked(&self) -> WaitForCancellationFuture<'_> {
        self.revoked.cancelled()
    }

    #[cfg(test)]
    fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }
}

impl Drop for WatchSlot<'_> {
    fn drop(&mut self) {
        let mut clients = self.watches.clients.lock().expect("watch table poisoned");
        // A revoked entry is gone (and was uncounted) already.
        if let Some(entry) = clients.get_mut(&self.client) {
            if entry.generation == self.generation {
                entry.count -= 1;
                self.watches.open.dec();
                if entry.count == 0 {
                    clients.remove(&self.client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share_and_a_revocation_ends_them() {
        let watches = Watches::new(&Metrics::new(), 2);
        let first = watches.enter("staging").unwrap();
        let second = watches.enter("staging").unwrap();
        let refused = watches.enter("staging").err().expect("a third is refused");
        assert_eq!(refused.code(), "too_many_watches");
        assert_eq!(refused.status(), 429);
        let other = watches
            .enter("ci")
            .expect("another client has its own share");
        drop(second);
        let third = watches
            .enter("staging")
            .expect("a freed place is taken again");
        assert_eq!(watches.open.get(), 3);

        watches.revoke(["staging"]);
        assert!(first.is_revoked() && third.is_revoked() && !other.is_revoked());
        assert_eq!(watches.open.get(), 1);
        // The client, configured anew, starts from an empty count.
        let fresh = [
            watches.enter("staging").unwrap(),
            watches.enter("staging").unwrap(),
        ];
        assert!(!fresh[0].is_revoked());
        drop((first, third));
        assert!(
            watches.enter("staging").is_err(),
            "the revoked slots were not counted back"
        );
        assert_eq!(watches.open.get(), 3);
    }
}
