//! The suites' metrics, per suite aggregates only: ten thousand corps
//! make no more series than one. The suite and provider tokens are engine
//! credentials, on the engine's per-credential series (`app` is the
//! suite's name). The counters are counted here as events happen; the
//! gauges are read from each suite when the registry is gathered
//! ([`gauge_families`]).

use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use crate::children::Census;
use crate::metrics::{Metrics, ScrapedGauge};

/// `wxbroker_suite_ticket_age_seconds{suite}`: seconds since WeCom
/// issued the newest `suite_ticket` known (since the broker started,
/// before the first).
const TICKET_AGE: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_suite_ticket_age_seconds",
    help: "Seconds since WeCom issued the newest suite_ticket the broker knows (since the broker started, before the first). WeCom pushes one every 10 minutes, each valid 30, and cannot be asked to push again.",
    labels: &["suite"],
};

/// `wxbroker_corps{suite,state}`: state valid or invalid.
const CORPS: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_corps",
    help: "Installed corps held, by token state.",
    labels: &["suite", "state"],
};

/// `wxbroker_corps_held{suite,reason}`.
const HELD: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_corps_held",
    help: "Corps held after a failure that waiting cannot fix soon (a configuration errcode such as a dead permanent code: one attempt per 10 minutes; 45009 or the spent budget: until Beijing midnight), by reason.",
    labels: &["suite", "reason"],
};

/// The suites' gauges, for their collector to declare.
pub const GAUGES: [ScrapedGauge; 3] = [TICKET_AGE, CORPS, HELD];

/// What one suite's gauges are read from, at one moment.
pub struct SuiteReading<'a> {
    pub suite: &'a str,
    /// The census of its installed corps.
    pub corps: Census,
    /// Seconds since its newest `suite_ticket` was issued.
    pub ticket_age_secs: u64,
}

/// The families of [`GAUGES`], from each suite's reading.
pub fn gauge_families<'a>(suites: impl IntoIterator<Item = SuiteReading<'a>>) -> Vec<MetricFamily> {
    let mut ticket_age = TICKET_AGE.family();
    let mut corps = CORPS.family();
    let mut held = HELD.family();
    for SuiteReading {
        suite,
        corps: census,
        ticket_age_secs,
    } in suites
    {
        // As an integer gauge showed it: capped at i64::MAX.
        let age = i64::try_from(ticket_age_secs).unwrap_or(i64::MAX);
        ticket_age.push(&[suite], age as f64);
        corps.push(&[suite, "valid"], census.valid as f64);
        corps.push(&[suite, "invalid"], census.invalid as f64);
        for (reason, count) in census.held_by_reason() {
            held.push(&[suite, reason], count as f64);
        }
    }
    vec![ticket_age.finish(), corps.finish(), held.finish()]
}

#[derive(Clone)]
pub struct SuiteMetrics {
    /// `wxbroker_corp_fetches_total{suite,result}`.
    pub corp_fetches: IntCounterVec,
    /// `wxbroker_suite_callbacks_total{suite,outcome}`: accepted, or the
    /// check that refused it.
    pub callbacks: IntCounterVec,
}

impl SuiteMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let corp_fetches = IntCounterVec::new(
            Opts::new(
                "wxbroker_corp_fetches_total",
                "Corp token fetches and install exchanges (get_corp_token or gettoken, v2/get_permanent_code), by result: ok, an errcode by its class (errcode, config, quota), transport, or budget (refused, no call made).",
            ),
            &["suite", "result"],
        )
        .expect("valid metric");
        let callbacks = IntCounterVec::new(
            Opts::new(
                "wxbroker_suite_callbacks_total",
                "Calls on a suite's callback URL, by outcome: accepted, or the check that refused them.",
            ),
            &["suite", "outcome"],
        )
        .expect("valid metric");
        metrics.register(Box::new(corp_fetches.clone()));
        metrics.register(Box::new(callbacks.clone()));
        SuiteMetrics {
            corp_fetches,
            callbacks,
        }
    }

    /// Creates the suite's counters at zero.
    pub fn init(&self, suite: &str) {
        for result in crate::children::policy::RESULT_LABELS {
            self.corp_fetches.with_label_values(&[suite, result]);
        }
        self.callbacks.with_label_values(&[suite, "accepted"]);
    }
}
