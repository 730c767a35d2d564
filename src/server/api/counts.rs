//! The token API's request metrics, by listener and route. Each (listener,
//! route) pair's series is resolved once, so counting an answer looks
//! nothing up; every pair is shown from the start.

use std::sync::Arc;

use http::StatusCode;

use super::context::ListenerKind;
use super::route::Route;
use crate::metrics::requests::RouteSeries;
use crate::metrics::Metrics;

pub(super) struct RouteCounts {
    routes: usize,
    /// By listener, then by position in the route table.
    series: Vec<Arc<RouteSeries>>,
}

impl RouteCounts {
    pub fn new(metrics: &Metrics, routes: &[Route]) -> Self {
        let series = ListenerKind::ALL
            .iter()
            .flat_map(|listener| {
                routes
                    .iter()
                    .map(|route| metrics.requests.declared(listener.label(), route.template))
            })
            .collect();
        RouteCounts {
            routes: routes.len(),
            series,
        }
    }

    /// Counts an answer of the route at `route` in the table.
    pub fn record(&self, listener: ListenerKind, route: usize, status: StatusCode, seconds: f64) {
        self.series[listener.index() * self.routes + route].record(status, seconds);
    }
}
