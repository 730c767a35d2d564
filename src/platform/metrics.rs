//! The platforms' metrics, per platform aggregates only: ten thousand
//! authorizers make no more series than one. The counters are counted
//! here as events happen; the gauges are read from each platform's
//! authorizers when the registry is gathered ([`gauge_families`]).

use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use crate::children::Census;
use crate::metrics::{Metrics, ScrapedGauge};

/// `wxbroker_authorizers{platform,state}`: state valid or invalid.
const AUTHORIZERS: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_authorizers",
    help: "Authorizers held, by token state.",
    labels: &["platform", "state"],
};

/// `wxbroker_authorizers_held{platform,reason}`: authorizers held after a
/// failure waiting cannot fix soon (config, quota, budget).
const HELD: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_authorizers_held",
    help: "Authorizers held after a failure that waiting cannot fix soon (a configuration errcode: one attempt per 10 minutes; 45009 or the spent authorizer_daily_budget: until Beijing midnight), by reason.",
    labels: &["platform", "reason"],
};

/// `wxbroker_authorizer_soonest_expiry_timestamp_seconds{platform}`,
/// while any authorizer's token is valid.
const SOONEST_EXPIRY: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_authorizer_soonest_expiry_timestamp_seconds",
    help: "When the first of the platform's authorizer tokens expires.",
    labels: &["platform"],
};

/// The platforms' gauges, for their collector to declare.
pub const GAUGES: [ScrapedGauge; 3] = [AUTHORIZERS, HELD, SOONEST_EXPIRY];

/// The families of [`GAUGES`], from each platform's name and the census
/// of its authorizers.
pub fn gauge_families<'a>(
    platforms: impl IntoIterator<Item = (&'a str, Census)>,
) -> Vec<MetricFamily> {
    let mut authorizers = AUTHORIZERS.family();
    let mut held = HELD.family();
    let mut soonest = SOONEST_EXPIRY.family();
    for (platform, census) in platforms {
        authorizers.push(&[platform, "valid"], census.valid as f64);
        authorizers.push(&[platform, "invalid"], census.invalid as f64);
        for (reason, count) in census.held_by_reason() {
            held.push(&[platform, reason], count as f64);
        }
        if let Some(at_ms) = census.soonest_expiry_ms {
            soonest.push(&[platform], at_ms as f64 / 1000.0);
        }
    }
    vec![authorizers.finish(), held.finish(), soonest.finish()]
}

#[derive(Clone)]
pub struct PlatformMetrics {
    /// `wxbroker_authorizer_fetches_total{platform,result}`: ok, an
    /// errcode by its class (errcode, config, quota), transport, or
    /// budget (refused by `authorizer_daily_budget`, no call made).
    pub authorizer_fetches: IntCounterVec,
    /// `wxbroker_platform_callbacks_total{platform,outcome}`: accepted or
    /// the check that refused it.
    pub callbacks: IntCounterVec,
}

impl PlatformMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let authorizer_fetches = IntCounterVec::new(
            Opts::new(
                "wxbroker_authorizer_fetches_total",
                "Authorizer token fetches (api_authorizer_token, api_query_auth), by result: ok, an errcode by its class (errcode, config, quota), transport, or budget (refused, no call made).",
            ),
            &["platform", "result"],
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
        metrics.register(Box::new(authorizer_fetches.clone()));
        metrics.register(Box::new(callbacks.clone()));
        PlatformMetrics {
            authorizer_fetches,
            callbacks,
        }
    }

    /// Creates the platform's counters at zero.
    pub fn init(&self, platform: &str) {
        for result in crate::children::policy::RESULT_LABELS {
            self.authorizer_fetches
                .with_label_values(&[platform, result]);
        }
        self.callbacks.with_label_values(&[platform, "accepted"]);
    }
}
