//! The platforms' metrics, per platform aggregates only: ten thousand
//! authorizers make no more series than one.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct PlatformMetrics {
    /// `wxbroker_authorizers{platform,state}`: state valid or invalid.
    pub authorizers: IntGaugeVec,
    /// `wxbroker_authorizer_fetches_total{platform,result}`.
    pub authorizer_fetches: IntCounterVec,
    /// `wxbroker_authorizer_soonest_expiry_timestamp_seconds{platform}`.
    pub soonest_expiry: GaugeVec,
    /// `wxbroker_platform_callbacks_total{platform,outcome}`: accepted or
    /// the check that refused it.
    pub callbacks: IntCounterVec,
}

impl PlatformMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let authorizers = IntGaugeVec::new(
            Opts::new("wxbroker_authorizers", "Authorizers held, by token state."),
            &["platform", "state"],
        )
        .expect("valid metric");
        let authorizer_fetches = IntCounterVec::new(
            Opts::new(
                "wxbroker_authorizer_fetches_total",
                "Authorizer token fetches (api_authorizer_token, api_query_auth), by result.",
            ),
            &["platform", "result"],
        )
        .expect("valid metric");
        let soonest_expiry = GaugeVec::new(
            Opts::new(
                "wxbroker_authorizer_soonest_expiry_timestamp_seconds",
                "When the first of the platform's authorizer tokens expires.",
            ),
            &["platform"],
        )
        .expect("valid metric");
        let callbacks = IntCounterVec::new(
            Opts::new(
                "wxbroker_platform_callbacks_total",
                "Pushes received on the callback listener, by outcome.",
            ),
            &["platform", "outcome"],
        )
        .expect("valid metric");
        metrics.register(Box::new(authorizers.clone()));
        metrics.register(Box::new(authorizer_fetches.clone()));
        metrics.register(Box::new(soonest_expiry.clone()));
        metrics.register(Box::new(callbacks.clone()));
        PlatformMetrics {
            authorizers,
            authorizer_fetches,
            soonest_expiry,
            callbacks,
        }
    }

    /// Creates the platform's series at zero.
    pub fn init(&self, platform: &str) {
        for state in ["valid", "invalid"] {
            self.authorizers.with_label_values(&[platform, state]);
        }
        for result in crate::wechat::RESULT_LABELS {
            self.authorizer_fetches
                .with_label_values(&[platform, result]);
        }
        self.callbacks.with_label_values(&[platform, "accepted"]);
    }
}
