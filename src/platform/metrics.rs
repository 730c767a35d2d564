//! The platforms' metrics, per platform aggregates only: ten thousand
//! authorizers make no more series than one.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct PlatformMetrics {
    /// `wxbroker_authorizers{platform,state}`: state valid or invalid.
    pub authorizers: IntGaugeVec,
    /// `wxbroker_authorizers_held{platform,reason}`: authorizers held
    /// after a failure waiting cannot fix soon (config, quota, budget).
    pub held: IntGaugeVec,
    /// `wxbroker_authorizer_fetches_total{platform,result}`: ok, an
    /// errcode by its class (errcode, config, quota), transport, or
    /// budget (refused by `authorizer_daily_budget`, no call made).
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
        let held = IntGaugeVec::new(
            Opts::new(
                "wxbroker_authorizers_held",
                "Authorizers held after a failure that waiting cannot fix soon (a configuration errcode: one attempt per 10 minutes; 45009 or the spent authorizer_daily_budget: until Beijing midnight), by reason.",
            ),
            &["platform", "reason"],
        )
        .expect("valid metric");
        let authorizer_fetches = IntCounterVec::new(
            Opts::new(
                "wxbroker_authorizer_fetches_total",
                "Authorizer token fetches (api_authorizer_token, api_query_auth), by result: ok, an errcode by its class (errcode, config, quota), transport, or budget (refused, no call made).",
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
        metrics.register(Box::new(held.clone()));
        metrics.register(Box::new(authorizer_fetches.clone()));
        metrics.register(Box::new(soonest_expiry.clone()));
        metrics.register(Box::new(callbacks.clone()));
        PlatformMetrics {
            authorizers,
            held,
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
        for hold in crate::children::Hold::REASONS {
            self.held.with_label_values(&[platform, hold.label()]);
        }
        for result in crate::children::policy::RESULT_LABELS {
            self.authorizer_fetches
                .with_label_values(&[platform, result]);
        }
        self.callbacks.with_label_values(&[platform, "accepted"]);
    }
}
