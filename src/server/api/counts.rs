//! The token API's request metrics, by listener and route. The children
//! of the common case (a 200 answer, per listener and route, and each
//! route's duration histogram) are resolved once, so the hot path hashes
//! no labels; other statuses take the general way.

use http::StatusCode;
use prometheus::{Histogram, IntCounter};

use super::context::ListenerKind;
use super::route::Route;
use crate::metrics::Metrics;

pub(super) struct RouteCounts {
    metrics: Metrics,
    /// The routes' labels, by position in the table.
    templates: Vec<&'static str>,
    ok: Vec<IntCounter>,
    duration: Vec<Histogram>,
}

impl RouteCounts {
    pub fn new(metrics: &Metrics, routes: &[Route]) -> Self {
        let templates: Vec<&'static str> = routes.iter().map(|route| route.template).collect();
        let ok = ListenerKind::ALL
            .iter()
            .flat_map(|listener| {
                templates.iter().map(move |route| {
                    metrics
                        .requests
                        .with_label_values(&[listener.label(), route, "200"])
                })
            })
            .collect();
        let duration = templates
            .iter()
            .map(|route| metrics.request_duration.with_label_values(&[route]))
            .collect();
        RouteCounts {
            metrics: metrics.clone(),
            templates,
            ok,
            duration,
        }
    }

    /// Counts an answer of the route at `route` in the table.
    pub fn record(&self, listener: ListenerKind, route: usize, status: StatusCode, seconds: f64) {
        if status == StatusCode::OK {
            self.ok[listener.index() * self.templates.len() + route].inc();
        } else {
            self.metrics
                .requests
                .with_label_values(&[
                    listener.label(),
                    self.templates[route],
                    crate::metrics::status_label(status),
                ])
                .inc();
        }
        self.duration[route].observe(seconds);
    }
}
