//! Each listener's own connection budget. A budget is a semaphore: a
//! connection holds a permit from before its accept until it closes, so
//! peers of one listener (stalled TLS handshakes on the remote listener,
//! long-poll watchers, a forwarding loop on a compatible listener) can
//! fill that listener's budget and no other. The local API's TCP
//! listener and Unix socket each have their own, so a local read always
//! finds a slot. Open connections and budgets are exported per listener:
//! `wxbroker_connections_open{listener}` and
//! `wxbroker_connections_max{listener}`.

use std::sync::Arc;

use prometheus::{IntGauge, IntGaugeVec, Opts};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// The gauges of every listener's budget.
#[derive(Clone)]
pub struct BudgetMetrics {
    open: IntGaugeVec,
    max: IntGaugeVec,
}

impl BudgetMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let open = IntGaugeVec::new(
            Opts::new(
                "wxbroker_connections_open",
                "Connections a listener holds open (TLS handshakes included).",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let max = IntGaugeVec::new(
            Opts::new(
                "wxbroker_connections_max",
                "A listener's connection budget: more wait in the listen backlog.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        metrics.register(Box::new(open.clone()));
        metrics.register(Box::new(max.clone()));
        BudgetMetrics { open, max }
    }

    /// A budget of `size` connections for `listener`.
    pub fn budget(&self, listener: &'static str, size: usize) -> Budget {
        self.max
            .with_label_values(&[listener])
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        Budget {
            permits: Arc::new(Semaphore::new(size)),
            open: self.open.with_label_values(&[listener]),
        }
    }
}

/// One listener's connection budget.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    open: IntGauge,
}

impl Budget {
    /// A slot for one connection, once one is free; counted as open once
    /// a connection takes it ([`Slot::open`]).
    pub async fn acquire(&self) -> Slot {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot {
            _permit: permit,
            open: self.open.clone(),
            counted: false,
        }
    }
}

/// A connection's place in its listener's budget, given back on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
    counted: bool,
}

impl Slot {
    /// The slot now holds an accepted connection.
    pub fn open(mut self) -> Slot {
        if !self.counted {
            self.counted = true;
            self.open.inc();
        }
        self
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.counted {
            self.open.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_budget_holds_back_only_its_own_listener() {
        let metrics = Metrics::new();
        let budgets = BudgetMetrics::new(&metrics);
        let remote = budgets.budget("remote", 2);
        let local = budgets.budget("tcp", 2);
        let held = [remote.acquire().await.open(), remote.acquire().await.open()];
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), remote.acquire());
        assert!(waiting.await.is_err(), "a third remote slot was given");
        let _local = local.acquire().await.open();
        // Waiting for a connection is not holding one.
        let _waiting_for_accept = local.acquire().await;
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("wxbroker_connections_open{listener=\"remote\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("wxbroker_connections_max{listener=\"remote\"} 2"),
            "{text}"
        );
        drop(held);
        let _again = remote.acquire().await.open();
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("wxbroker_connections_open{listener=\"remote\"} 1"),
            "{text}"
        );
    }
}
