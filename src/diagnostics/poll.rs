//! The daemon's own look at WeChat's counts: every 15 minutes it asks
//! `quota/get` about each app's token path (and ticket path, once an app
//! has tickets) and exports what is left, so an alert fires well before
//! 45009. The poll runs in a task of its own and uses only a token the app
//! already holds: it never waits for one, never asks for one, and never
//! delays a reader. Its failures are logged and counted, nothing more.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{CgiPath, Diagnostics};
use crate::broker::Broker;
use crate::config::{AppConfig, AppKind, Grant};
use crate::engine::AppHandle;
use crate::errors::Chain;
use crate::metrics::Metrics;

/// When the poll runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    /// The first round, after start: late enough not to add a call to the
    /// start's token fetches.
    pub first_after: Duration,
    pub every: Duration,
}

impl Default for PollSchedule {
    fn default() -> Self {
        PollSchedule {
            first_after: Duration::from_secs(60),
            every: Duration::from_secs(15 * 60),
        }
    }
}

/// The API paths whose quota the daemon watches for `app`: the endpoint
/// its token comes from (and, for apps with JS-SDK tickets,
/// `/cgi-bin/ticket/getticket`). WeCom has no `quota/get`.
pub fn polled_paths(app: &AppConfig) -> Vec<&'static str> {
    let mut paths = match (app.kind, app.grant) {
        (AppKind::Wecom, _) => return Vec::new(),
        (AppKind::Wechat, Grant::Classic) => vec!["/cgi-bin/token"],
        (AppKind::Wechat, Grant::Stable) => vec!["/cgi-bin/stable_token"],
    };
    // Both WeChat ticket kinds come from one endpoint, on one quota.
    if !app.tickets.is_empty() {
        paths.push("/cgi-bin/ticket/getticket");
    }
    paths
}

/// The poll's metrics, registered on the daemon's registry.
#[derive(Clone)]
pub struct QuotaMetrics {
    remaining: IntGaugeVec,
    daily_limit: IntGaugeVec,
    polls: IntCounterVec,
}

impl QuotaMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let labels = &["app", "cgi_path"];
        let remaining = IntGaugeVec::new(
            Opts::new(
                "wxbroker_wechat_quota_remaining",
                "Calls left today of the API at cgi_path, as WeChat's quota/get counts them.",
            ),
            labels,
        )
        .expect("valid metric");
        let daily_limit = IntGaugeVec::new(
            Opts::new(
                "wxbroker_wechat_quota_daily_limit",
                "Daily limit of the API at cgi_path, as WeChat's quota/get reports it.",
            ),
            labels,
        )
        .expect("valid metric");
        let polls = IntCounterVec::new(
            Opts::new(
                "wxbroker_wechat_quota_polls_total",
                "Polls of WeChat's quota/get by result (ok, error, no_token).",
            ),
            &["app", "result"],
        )
        .expect("valid metric");
        let registry = metrics.registry();
        for metric in [&remaining, &daily_limit] {
            registry
                .register(Box::new(metric.clone()))
                .expect("quota metrics register once");
        }
        registry
            .register(Box::new(polls.clone()))
            .expect("quota metrics register once");
        QuotaMetrics {
            remaining,
            daily_limit,
            polls,
        }
    }
}

/// Starts the poll on `tasks`; it stops with `cancel`.
pub fn spawn(
    diagnostics: Arc<Diagnostics>,
    broker: Broker,
    metrics: QuotaMetrics,
    schedule: PollSchedule,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) {
    let cancel = cancel.clone();
    tasks.spawn(async move {
        let poll = async {
            tokio::time::sleep(schedule.first_after).await;
            loop {
                round(&diagnostics, &broker, &metrics).await;
                tokio::time::sleep(schedule.every).await;
            }
        };
        // Nothing to finish or store: a round cut short is just skipped.
        cancel.run_until_cancelled(poll).await;
    });
}

/// One look at every app's paths, the apps one after the other (a few
/// calls every 15 minutes need no concurrency).
async fn round(diagnostics: &Diagnostics, broker: &Broker, metrics: &QuotaMetrics) {
    let apps = broker.apps();
    let mut polled = HashSet::new();
    // A followed app's quota is its leader's to watch; its own host may
    // not even be on WeChat's IP whitelist.
    for app in apps.iter().filter(|app| app.config().follow.is_none()) {
        for path in polled_paths(app.config()) {
            polled.insert((app.name().to_owned(), path.to_owned()));
            poll_one(diagnostics, app, path, metrics).await;
        }
    }
    forget_unpolled(metrics, &polled);
}

async fn poll_one(diagnostics: &Diagnostics, app: &AppHandle, path: &str, metrics: &QuotaMetrics) {
    let labels = [app.name(), path];
    let Some(token) = app.valid_token() else {
        debug!(
            app = app.name(),
            cgi_path = path,
            "no valid token; quota poll skipped"
        );
        count(metrics, app.name(), "no_token");
        return;
    };
    let cgi_path = CgiPath::parse(path).expect("polled paths are well-formed");
    match diagnostics.quota_with(app, token, &cgi_path).await {
        Ok(quota) => {
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            metrics
                .remaining
                .with_label_values(&labels)
                .set(gauge(quota.remain));
            metrics
                .daily_limit
                .with_label_values(&labels)
                .set(gauge(quota.daily_limit));
            debug!(
                app = app.name(),
                cgi_path = path,
                remain = quota.remain,
                daily_limit = quota.daily_limit,
                "wechat quota polled"
            );
            count(metrics, app.name(), "ok");
        }
        Err(err) => {
            warn!(app = app.name(), cgi_path = path, error = %Chain(&err), "wechat quota poll failed");
            count(metrics, app.name(), "error");
        }
    }
}

fn count(metrics: &QuotaMetrics, app: &str, result: &str) {
    metrics.polls.with_label_values(&[app, result]).inc();
}

/// Drops the gauges of apps or paths no longer polled (an app removed by
/// a reload), so no alert fires on a stale figure.
fn forget_unpolled(metrics: &QuotaMetrics, polled: &HashSet<(String, String)>) {
    for gauge in [&metrics.remaining, &metrics.daily_limit] {
        let stale: Vec<(String, String)> = gauge_labels(gauge)
            .into_iter()
            .filter(|labels| !polled.contains(labels))
            .collect();
        for (app, path) in stale {
            let _ = gauge.remove_label_values(&[&app, &path]);
        }
    }
}

/// The (app, cgi_path) pairs a gauge has series for.
fn gauge_labels(gauge: &IntGaugeVec) -> Vec<(String, String)> {
    use prometheus::core::Collector;
    gauge
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|metric| {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|pair| pair.get_name() == name)
                    .map(|pair| pair.get_value().to_owned())
                    .unwrap_or_default()
            };
            (label("app"), label("cgi_path"))
        })
        .collect()
}
