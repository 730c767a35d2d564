//! The credentials' gauges, read when the registry is gathered: a
//! Prometheus collector over the broker. A token that expires without
//! any event shows as invalid at the next scrape, a scrape changes
//! nothing anyone else can read, and a removed app simply is not there
//! to be read. The families are built afresh for each scrape, each kind's
//! from its own readings: the apps' here, written as text directly (a
//! broker may hold ten thousand apps), the platforms' and suites' (per
//! parent aggregates, never one series per child) in their modules.

use std::sync::Weak;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::{Broker, Kinds};
use crate::children::Census;
use crate::credential::Credential;
use crate::engine::{AppHandle, CredentialHandle};
use crate::metrics::{Metrics, ScrapedGauge, TextCollector, TextFamily};
use crate::suite::metrics::SuiteReading;

const TOKEN_VALID: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_token_valid",
    help: "1 while the app holds a valid token.",
    labels: &["app"],
};

const TOKEN_EXPIRY: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_token_expiry_timestamp_seconds",
    help: "Unix time at which the current token expires.",
    labels: &["app"],
};

const TOKEN_LAST_REFRESH: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_token_last_refresh_timestamp_seconds",
    help: "Unix time of the last successful token fetch.",
    labels: &["app"],
};

const TICKET_VALID: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_ticket_valid",
    help: "1 while the app holds a valid JS-SDK ticket of this kind.",
    labels: &["app", "kind"],
};

const TICKET_EXPIRY: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_ticket_expiry_timestamp_seconds",
    help: "Unix time at which the current ticket of this kind expires.",
    labels: &["app", "kind"],
};

const FETCHES_TODAY: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_fetches_today",
    help: "Upstream calls this Beijing day, by credential.",
    labels: &["app", "credential"],
};

const DAILY_BUDGET: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_daily_budget",
    help: "Configured cap on upstream calls per Beijing day, by credential.",
    labels: &["app", "credential"],
};

/// Follower apps only: 1 while the leader answers.
const LEADER_REACHABLE: ScrapedGauge = ScrapedGauge {
    name: "wxbroker_leader_reachable",
    help: "For an app that follows a leader: 1 while the leader answers.",
    labels: &["app"],
};

const APP_GAUGES: [ScrapedGauge; 8] = [
    TOKEN_VALID,
    TOKEN_EXPIRY,
    TOKEN_LAST_REFRESH,
    TICKET_VALID,
    TICKET_EXPIRY,
    FETCHES_TODAY,
    DAILY_BUDGET,
    LEADER_REACHABLE,
];

/// Registers the credentials' gauges with `metrics`: the apps' as text,
/// the platforms' and suites' as a collector.
pub fn register(broker: &Broker, metrics: &Metrics) {
    metrics.register(Box::new(BrokerGauges::new(broker)));
    metrics.register_text(Box::new(AppGauges {
        kinds: std::sync::Arc::downgrade(&broker.kinds),
    }));
}

/// The collector of every credential gauge, registered once with the
/// daemon's registry: it declares them all, and builds the platforms' and
/// suites' families ([`AppGauges`] writes the apps'). It holds the broker
/// weakly: the registry lives in the broker's own context, so a strong
/// hold would keep both forever.
struct BrokerGauges {
    kinds: Weak<Kinds>,
    descs: Vec<Desc>,
}

impl BrokerGauges {
    fn new(broker: &Broker) -> BrokerGauges {
        let gauges = APP_GAUGES
            .iter()
            .chain(&crate::platform::metrics::GAUGES)
            .chain(&crate::suite::metrics::GAUGES);
        BrokerGauges {
            kinds: std::sync::Arc::downgrade(&broker.kinds),
            descs: gauges.map(ScrapedGauge::desc).collect(),
        }
    }
}

impl Collector for BrokerGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    /// Reads every platform and suite as it is now. Nothing is written:
    /// not the credentials, not the registry's other metrics.
    fn collect(&self) -> Vec<MetricFamily> {
        // Gone once the daemon is stopped and dropped: a clone of the
        // registry may outlive it, and then has no credential to show.
        let Some(kinds) = self.kinds.upgrade() else {
            return Vec::new();
        };
        let now_ms = kinds.apps.now_ms();
        let platforms = kinds.platforms.load_full();
        let mut families = crate::platform::metrics::gauge_families(
            platforms
                .iter()
                .map(|platform| (platform.name(), Census::of(platform.authorizers(), now_ms))),
        );
        let suites = kinds.suites.load_full();
        families.extend(crate::suite::metrics::gauge_families(suites.iter().map(
            |suite| SuiteReading {
                suite: suite.name(),
                corps: Census::of(suite.corps(), now_ms),
                ticket_age_secs: suite.ticket_age_secs(now_ms / 1000),
            },
        )));
        families
    }
}

/// The apps' gauges ([`APP_GAUGES`]), written as text at each rendering;
/// [`BrokerGauges`] declares their names. Holds the broker weakly, as
/// that one does.
struct AppGauges {
    kinds: Weak<Kinds>,
}

impl TextCollector for AppGauges {
    fn write(&self, out: &mut Vec<u8>) {
        let Some(kinds) = self.kinds.upgrade() else {
            return;
        };
        app_families(&kinds.apps.apps(), kinds.apps.now_ms(), out);
    }
}

/// The apps' gauges, each app's read from its credentials' views, in
/// the apps' order.
fn app_families(apps: &[AppHandle], now_ms: u64, out: &mut Vec<u8>) {
    let mut families = AppFamilies::new();
    for app in apps {
        families.read(app, now_ms);
    }
    families.finish(out);
}

/// One scrape's families of [`APP_GAUGES`].
struct AppFamilies {
    token_valid: TextFamily,
    token_expiry: TextFamily,
    token_last_refresh: TextFamily,
    ticket_valid: TextFamily,
    ticket_expiry: TextFamily,
    fetches_today: TextFamily,
    daily_budget: TextFamily,
    leader_reachable: TextFamily,
}

impl AppFamilies {
    fn new() -> AppFamilies {
        AppFamilies {
            token_valid: TOKEN_VALID.text(),
            token_expiry: TOKEN_EXPIRY.text(),
            token_last_refresh: TOKEN_LAST_REFRESH.text(),
            ticket_valid: TICKET_VALID.text(),
            ticket_expiry: TICKET_EXPIRY.text(),
            fetches_today: FETCHES_TODAY.text(),
            daily_budget: DAILY_BUDGET.text(),
            leader_reachable: LEADER_REACHABLE.text(),
        }
    }

    /// Adds `app`'s series, as it is at `now_ms`.
    fn read(&mut self, app: &AppHandle, now_ms: u64) {
        let name = app.name();
        let view = app.view();
        self.token_valid
            .push(&[name], flag(view.valid_token(now_ms).is_some()));
        if let Some(token) = &view.token {
            self.token_expiry
                .push_f64(&[name], seconds(token.expires_at_ms));
            // From the token, not the refresh event, so a token loaded
            // on a warm start shows when it was fetched.
            self.token_last_refresh
                .push_f64(&[name], seconds(token.fetched_at_ms));
        }
        if let Some(leader) = &view.leader {
            self.leader_reachable.push(&[name], flag(leader.reachable));
        }
        self.count(app, Credential::AccessToken, view.fetches_on(now_ms / 1000));
        for (kind, ticket) in app.tickets() {
            let view = ticket.view();
            let labels = [name, kind.name()];
            self.ticket_valid
                .push(&labels, flag(view.valid_token(now_ms).is_some()));
            if let Some(ticket) = &view.token {
                self.ticket_expiry
                    .push_f64(&labels, seconds(ticket.expires_at_ms));
            }
            self.count(
                ticket,
                Credential::Ticket(kind),
                view.fetches_on(now_ms / 1000),
            );
        }
    }

    /// A credential's upstream calls today against its daily budget.
    fn count(&mut self, handle: &CredentialHandle, credential: Credential, fetches: u32) {
        let labels = [handle.name(), credential.label()];
        self.fetches_today.push(&labels, u64::from(fetches));
        self.daily_budget
            .push(&labels, u64::from(handle.spec().daily_budget));
    }

    fn finish(self, out: &mut Vec<u8>) {
        for family in [
            self.token_valid,
            self.token_expiry,
            self.token_last_refresh,
            self.ticket_valid,
            self.ticket_expiry,
            self.fetches_today,
            self.daily_budget,
            self.leader_reachable,
        ] {
            family.finish(out);
        }
    }
}

fn flag(on: bool) -> u64 {
    u64::from(on)
}

fn seconds(unix_ms: u64) -> f64 {
    unix_ms as f64 / 1000.0
}
