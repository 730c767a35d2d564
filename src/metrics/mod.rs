//! The daemon's Prometheus metrics (DESIGN.md section 7): one owned
//! registry per daemon, so several daemons can live in one test process.
//! Every label is bounded: app names come from the config, errcodes from a
//! fixed list, client names are capped.
//!
//! Events (a fetch, a request, a store error) count into the vectors
//! held here; those with an `app` label into each app's [`AppSeries`],
//! which costs an app nothing for a series it has not used. State (is the
//! token valid, when does it expire) is not kept here at all: a
//! [`ScrapedGauge`] is read from the credentials by a collector when the
//! registry is gathered, so a scrape changes nothing and a token that
//! expires without any event shows so at once.
//!
//! The families with a series per app are written as text directly
//! ([`text`]), beside the registry's own, so a scrape of ten thousand apps
//! stays cheap. The bounded label values are in [`labels`], the scraped
//! gauges' builder in [`scraped`].

pub mod app_series;
pub mod clients;
pub mod kept;
pub mod labels;
pub mod requests;
pub mod scraped;
mod shards;
pub mod text;

use std::sync::{Arc, Mutex};

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub use app_series::AppSeries;
pub use kept::KeptCounterVec;
pub use labels::status_label;
pub use scraped::{GaugeFamily, ScrapedGauge};
pub use text::{TextCollector, TextFamily};

use app_series::AppTable;
use clients::ClientCounts;
use requests::Requests;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every listener's answers and their durations.
    pub requests: Arc<Requests>,
    clients: Arc<ClientCounts>,
    pub proxy_requests: KeptCounterVec,
    pub store_errors: IntCounterVec,
    /// The counted series with an `app` label, by app.
    apps: Arc<AppTable>,
    /// Families written as text beside the registry's.
    text: Arc<Mutex<Vec<Box<dyn TextCollector>>>>,
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
        let mut declared = app_series::declarations();
        declared.extend([
            requests::REQUESTS,
            requests::DURATION,
            clients::CLIENT_REQUESTS,
        ]);
        registry
            .register(Box::new(text::Declared::new(declared)))
            .expect("the families written as text are declared once");
        Metrics {
            requests: Default::default(),
            clients: Default::default(),
            proxy_requests: KeptCounterVec::new(register(
                &registry,
                counter(
                    "wxbroker_proxy_requests_total",
                    "Proxied requests by outcome.",
                    &["app", "outcome"],
                ),
            )),
            store_errors: register(
                &registry,
                counter(
                    "wxbroker_store_errors_total",
                    "Failed store operations.",
                    &["backend", "op"],
                ),
            ),
            apps: Default::default(),
            text: Default::default(),
            registry,
        }
    }

    /// The counted series of `app` (an app's name, or a platform's or
    /// suite's for their own credentials), made on first use. A holder
    /// counts through it without any lookup.
    pub fn app(&self, app: &str) -> Arc<AppSeries> {
        self.apps.get(app)
    }

    /// Drops a removed app's event-driven gauges (cluster-degraded, its
    /// quota figures), so a reload that removes an app does not leave its
    /// last state (and the alerts on it) behind. Counters stay: they are history. The scraped gauges need
    /// nothing: a removed app is no longer there to be read.
    pub fn forget_app(&self, app: &str) {
        self.apps.forget(app);
    }

    /// Drops the quota figures of every (app, cgi_path) for which
    /// `polled` is false, so no alert fires on a stale figure.
    pub fn keep_quotas(&self, polled: impl Fn(&str, &'static str) -> bool) {
        self.apps.keep_quotas(polled);
    }

    /// Counts a request from a named client (see [`clients`]).
    pub fn count_client(&self, client: &str) {
        self.clients.count(client);
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

    /// Adds families that `collector` writes as text at each rendering
    /// (the apps' gauges), for those with a series per app.
    pub fn register_text(&self, collector: Box<dyn TextCollector>) {
        self.text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(collector);
    }

    /// The Prometheus text exposition: the registry's families, then
    /// those written as text.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        self.apps.write(&mut out);
        self.requests.write(&mut out);
        self.clients.write(&mut out);
        for collector in self
            .text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            collector.write(&mut out);
        }
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
        assert_eq!(labelled, clients::MAX_NAMED + 1);
        assert!(text.contains(r#"wxbroker_client_requests_total{client="other"} 36"#));
    }

    #[test]
    fn an_app_shows_the_series_it_used_and_no_others() {
        let metrics = Metrics::new();
        let shop = metrics.app("shop");
        let before = String::from_utf8(metrics.render()).unwrap();
        assert!(!before.contains(r#"app="shop""#), "{before}");
        shop.fetched(
            "access_token",
            "ok",
            None,
            std::time::Duration::from_millis(80),
        );
        let text = String::from_utf8(metrics.render()).unwrap();
        let shop_series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(r#"app="shop""#))
            .collect();
        assert_eq!(
            shop_series,
            [
                r#"wxbroker_upstream_fetches_total{app="shop",credential="access_token",result="ok"} 1"#,
                r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="0.25"} 1"#,
                r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="1"} 1"#,
                r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="5"} 1"#,
                r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="+Inf"} 1"#,
                r#"wxbroker_upstream_fetch_duration_seconds_sum{app="shop"} 0.08"#,
                r#"wxbroker_upstream_fetch_duration_seconds_count{app="shop"} 1"#,
            ]
        );
    }

    #[test]
    fn the_text_families_names_are_kept_from_any_other_metric() {
        let metrics = Metrics::new();
        let text_families = [
            requests::REQUESTS,
            requests::DURATION,
            clients::CLIENT_REQUESTS,
        ];
        for (name, _, _) in app_series::declarations().into_iter().chain(text_families) {
            let same_name = IntCounterVec::new(Opts::new(name, "Again."), &["app"]).unwrap();
            assert!(
                metrics.registry().register(Box::new(same_name)).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn two_registries_coexist() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.app("shop").set_cluster_degraded(true);
        assert!(String::from_utf8(a.render()).unwrap().contains("shop"));
        assert!(!String::from_utf8(b.render()).unwrap().contains("shop"));
    }
}
