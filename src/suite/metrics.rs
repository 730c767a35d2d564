//! The suites' metrics, per suite aggregates only: ten thousand corps
//! make no more series than one. The suite and provider tokens are engine
//! credentials, on the engine's per-credential series (`app` is the
//! suite's name).

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct SuiteMetrics {
    /// `wxbroker_suite_ticket_age_seconds{suite}`: seconds since WeCom
    /// issued the newest `suite_ticket` known (since the broker started,
    /// before the first).
    pub ticket_age: IntGaugeVec,
    /// `wxbroker_corps{suite,state}`: state valid or invalid.
    pub corps: IntGaugeVec,
    /// `wxbroker_corps_held{suite,reason}`.
    pub held: IntGaugeVec,
    /// `wxbroker_corp_fetches_total{suite,result}`.
    pub corp_fetches: IntCounterVec,
    /// `wxbroker_suite_callbacks_total{suite,outcome}`: accepted, or the
    /// check that refused it.
    pub callbacks: IntCounterVec,
}

impl SuiteMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let ticket_age = IntGaugeVec::new(
            Opts::new(
                "wxbroker_suite_ticket_age_seconds",
                "Seconds since WeCom issued the newest suite_ticket the broker knows (since the broker started, before the first). WeCom pushes one every 10 minutes, each valid 30, and cannot be asked to push again.",
            ),
            &["suite"],
        )
        .expect("valid metric");
        let corps = IntGaugeVec::new(
            Opts::new("wxbroker_corps", "Installed corps held, by token state."),
            &["suite", "state"],
        )
        .expect("valid metric");
        let held = IntGaugeVec::new(
            Opts::new(
                "wxbroker_corps_held",
                "Corps held after a failure that waiting cannot fix soon (a configuration errcode such as a dead permanent code: one attempt per 10 minutes; 45009 or the spent budget: until Beijing midnight), by reason.",
            ),
            &["suite", "reason"],
        )
        .expect("valid metric");
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
        metrics.register(Box::new(ticket_age.clone()));
        metrics.register(Box::new(corps.clone()));
        metrics.register(Box::new(held.clone()));
        metrics.register(Box::new(corp_fetches.clone()));
        metrics.register(Box::new(callbacks.clone()));
        SuiteMetrics {
            ticket_age,
            corps,
            held,
            corp_fetches,
            callbacks,
        }
    }

    /// Creates the suite's series at zero.
    pub fn init(&self, suite: &str) {
        self.ticket_age.with_label_values(&[suite]);
        for state in ["valid", "invalid"] {
            self.corps.with_label_values(&[suite, state]);
        }
        for hold in crate::children::Hold::REASONS {
            self.held.with_label_values(&[suite, hold.label()]);
        }
        for result in crate::children::policy::RESULT_LABELS {
            self.corp_fetches.with_label_values(&[suite, result]);
        }
        self.callbacks.with_label_values(&[suite, "accepted"]);
    }
}
