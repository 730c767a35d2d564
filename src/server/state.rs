//! What every listener's handlers share: the broker, the metrics, the
//! forwarding proxy, the operator's diagnostics, the clients in force and
//! the remote clients' watches.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::proxy::Proxy;
use super::watches::Watches;
use crate::broker::Broker;
use crate::diagnostics::Diagnostics;
use crate::identity::Clients;
use crate::metrics::Metrics;

/// What the handlers share.
pub struct ApiState {
    pub broker: Broker,
    pub metrics: Metrics,
    pub token_wait: Duration,
    pub proxy: Proxy,
    /// Quota, quota resets and rid lookups (the operator's routes).
    pub diagnostics: Arc<Diagnostics>,
    /// `[[clients]]`, replaced whole by a reload: which apps a remote
    /// client or a local peer may read.
    pub clients: Arc<ArcSwap<Clients>>,
    /// The remote clients' open watches: capped per client, ended by a
    /// reload that revokes the client.
    pub watches: Arc<Watches>,
}

impl ApiState {
    pub fn new(
        broker: Broker,
        metrics: Metrics,
        token_wait: Duration,
        proxy: Proxy,
        diagnostics: Arc<Diagnostics>,
        watches_per_client: usize,
    ) -> Self {
        ApiState {
            watches: Arc::new(Watches::new(&metrics, watches_per_client)),
            broker,
            metrics,
            token_wait,
            proxy,
            diagnostics,
            clients: Arc::default(),
        }
    }
}
