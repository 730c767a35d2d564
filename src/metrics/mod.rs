//! The daemon's Prometheus metrics (DESIGN.md section 7): one owned
//! registry per daemon, so several daemons can live in one test process.
//! Every label is bounded: app names come from the config, errcodes from a
//! fixed list, client names are capped.
//!
//! Events (a fetch, a request, a store error) count into the vectors
//! held here. State (is the token valid, when does it expire) is not
//! kept here at all: a [`ScrapedGauge`] is read from the credentials by a
//! collector when the registry is gathered, so a scrape changes nothing
//! and a token that expires without any event shows so at once.
//!
//! The bounded label values are in [`labels`], the scraped gauges'
//! builder in [`scraped`].

pub mod labels;
pub mod scraped;

use std::collections::HashMap;
use std::sync::Mutex;

use arc_swap::ArcSwap;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use labels::{status_label, AppLabels};
pub use scraped::{GaugeFamily, ScrapedGauge};

/// How many distinct `Wxbroker-Client` names get their own label.
const MAX_CLIENT_LABELS: usize = 64;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub upstream_fetches: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_fetch_duration: HistogramVec,
    pub forced_refreshes: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub client_requests: IntCounterVec,
    pub proxy_requests: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub cluster_degraded: IntGaugeVec,
    pub token_fights: IntCounterVec,
    /// The refreshers' own checks of their held tokens, by result.
    pub token_checks: IntCounterVec,
    /// Follower apps only: answers of the leader that went back to the
    /// value held before the current one.
    pub follower_flips: IntCounterVec,
    /// Counters of the named clients seen so far: read with an atomic
    /// load on every request, replaced whole (rarely: at most 64 names)
    /// under `new_client` when a new name arrives.
    known_clients: std::sync::Arc<ArcSwap<HashMap<String, IntCounter>>>,
    new_client: std::sync::Arc<Mutex<()>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("wxbroker_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        register(&registry, build_info);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");

        let fast_buckets = vec![
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
        ];
        let fetch_buckets = vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        Metrics {
            upstream_fetches: register(
                &registry,
                counter(
                    "wxbroker_upstream_fetches_total",
                    "Upstream credential calls by credential and result (ok, errcode, transport).",
                    &["app", "credential", "result"],
                ),
            ),
            upstream_errors: register(
                &registry,
                counter(
                    "wxbroker_upstream_errors_total",
                    "Failed upstream credential calls by credential and errcode.",
                    &["app", "credential", "errcode"],
                ),
            ),
            upstream_fetch_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "wxbroker_upstream_fetch_duration_seconds",
                        "Duration of upstream token calls.",
                    )
                    .buckets(fetch_buckets),
                    &["app"],
                )
                .expect("valid metric"),
            ),
            forced_refreshes: register(
                &registry,
                counter(
                    "wxbroker_forced_refreshes_total",
                    "Invalidations by outcome (refreshed, already_rotated, rate_limited).",
                    &["app", "outcome"],
                ),
            ),
            requests: register(
                &registry,
                counter(
                    "wxbroker_requests_total",
                    "HTTP requests by listener, route template and status.",
                    &["listener", "route", "status"],
                ),
            ),
            request_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "wxbroker_request_duration_seconds",
                        "HTTP request handling time by route template.",
                    )
                    .buckets(fast_buckets),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            client_requests: register(
                &registry,
                counter(
                    "wxbroker_client_requests_total",
                    "Requests by Wxbroker-Client name (64 names, then \"other\").",
                    &["client"],
                ),
            ),
            proxy_requests: register(
                &registry,
                counter(
                    "wxbroker_proxy_requests_total",
                    "Proxied requests by outcome.",
                    &["app", "outcome"],
                ),
            ),
            store_errors: register(
                &registry,
                counter(
                    "wxbroker_store_errors_total",
                    "Failed store operations.",
                    &["backend", "op"],
                ),
            ),
            cluster_degraded: register(
                &registry,
                int_gauge(
                    "wxbroker_cluster_degraded",
                    "1 while the app refreshes without the cluster store.",
                    &["app"],
                ),
            ),
            token_fights: register(
                &registry,
                counter(
                    "wxbroker_token_fights_total",
                    "Rejections of a token younger than WeChat's overlap that the broker did not supersede: something else fetches tokens for this appid.",
                    &["app"],
                ),
            ),
            token_checks: register(
                &registry,
                counter(
                    "wxbroker_token_checks_total",
                    "The broker's own upstream checks of its held access token, by result (valid, rejected, failed).",
                    &["app", "result"],
                ),
            ),
            follower_flips: register(
                &registry,
                counter(
                    "wxbroker_follower_flips_total",
                    "For an app that follows a leader: answers that went back to the value held before the current one (two brokers without a shared store answering at the leader's address).",
                    &["app", "credential"],
                ),
            ),
            known_clients: Default::default(),
            new_client: Default::default(),
            registry,
        }
    }

    /// Creates the app's series whose label values are known up front, at
    /// zero, so they are exposed before the first event: `increase()` then
    /// sees the first error, and a panel shows 0 rather than "no data".
    /// The label values are their owners' (the upstream protocol's results
    /// and errcodes, the broker's invalidation outcomes): this module only
    /// holds the registry.
    pub fn init_app(&self, app: &str, labels: &AppLabels<'_>) {
        self.upstream_fetch_duration.with_label_values(&[app]);
        self.cluster_degraded.with_label_values(&[app]);
        self.token_fights.with_label_values(&[app]);
        for credential in labels.credentials {
            for result in labels.fetch_results {
                self.upstream_fetches
                    .with_label_values(&[app, credential, result]);
            }
            for errcode in labels.errcodes {
                self.upstream_errors
                    .with_label_values(&[app, credential, errcode]);
            }
        }
        for outcome in labels.forced_refresh_outcomes {
            self.forced_refreshes.with_label_values(&[app, outcome]);
        }
    }

    /// Drops a removed app's event-driven gauge, so a reload that removes
    /// an app does not leave its last state (and the alerts on it)
    /// behind. Counters stay: they are history. The scraped gauges need
    /// nothing: a removed app is no longer there to be read.
    pub fn forget_app(&self, app: &str) {
        let _ = self.cluster_degraded.remove_label_values(&[app]);
    }

    /// Counts a request from a named client, folding names past the cap
    /// into "other" so a hostile client cannot grow the label set. Known
    /// names (nearly every request) take no lock: an atomic load.
    pub fn count_client(&self, client: &str) {
        if let Some(counter) = self.known_clients.load().get(client) {
            counter.inc();
            return;
        }
        let _writer = self.new_client.lock().expect("client map poisoned");
        let known = self.known_clients.load_full();
        let label = if known.len() < MAX_CLIENT_LABELS {
            client
        } else {
            "other"
        };
        let counter = self.client_requests.with_label_values(&[label]);
        counter.inc();
        if label == client && !known.contains_key(client) {
            let mut grown = HashMap::clone(&known);
            grown.insert(client.to_owned(), counter);
            self.known_clients.store(std::sync::Arc::new(grown));
        }
    }

    /// The registry, for a module that owns metrics of its own (the
    /// quota poll's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers metrics a part of the daemon owns itself (the
    /// platforms'), so they appear in the same exposition.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("each collector registers once");
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric registers once");
    metric
}

fn int_gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_labels_are_capped() {
        let metrics = Metrics::new();
        for i in 0..100 {
            metrics.count_client(&format!("svc{i}"));
        }
        let text = String::from_utf8(metrics.render()).unwrap();
        let labelled = text
            .lines()
            .filter(|l| l.starts_with("wxbroker_client_requests_total{"))
            .count();
        assert_eq!(labelled, MAX_CLIENT_LABELS + 1);
        assert!(text.contains(r#"wxbroker_client_requests_total{client="other"} 36"#));
    }

    #[test]
    fn app_series_exist_before_any_event() {
        let metrics = Metrics::new();
        metrics.init_app(
            "shop",
            &AppLabels {
                credentials: &["access_token", "jsapi_ticket"],
                fetch_results: &["ok"],
                errcodes: &["40164", "other"],
                forced_refresh_outcomes: &["rate_limited"],
            },
        );
        let text = String::from_utf8(metrics.render()).unwrap();
        for series in [
            r#"wxbroker_upstream_fetches_total{app="shop",credential="access_token",result="ok"} 0"#,
            r#"wxbroker_upstream_fetches_total{app="shop",credential="jsapi_ticket",result="ok"} 0"#,
            r#"wxbroker_upstream_errors_total{app="shop",credential="access_token",errcode="40164"} 0"#,
            r#"wxbroker_upstream_errors_total{app="shop",credential="jsapi_ticket",errcode="other"} 0"#,
            r#"wxbroker_upstream_fetch_duration_seconds_count{app="shop"} 0"#,
            r#"wxbroker_forced_refreshes_total{app="shop",outcome="rate_limited"} 0"#,
            r#"wxbroker_cluster_degraded{app="shop"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn two_registries_coexist() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.cluster_degraded.with_label_values(&["shop"]).set(1);
        assert!(!String::from_utf8(b.render()).unwrap().contains("shop"));
    }
}
