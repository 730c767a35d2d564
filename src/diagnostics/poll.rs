//! The daemon's own look at WeChat's counts: every 15 minutes it asks
//! `quota/get` about each app's token path (and ticket path, once an app
//! has tickets) and exports what is left, so an alert fires well before
//! 45009. The poll runs in a task of its own and uses only a token the app
//! already holds: it never waits for one, never asks for one, and never
//! delays a reader. Its failures are logged and counted, nothing more.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

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

/// The poll's metrics: `wxbroker_wechat_quota_remaining` and
/// `_daily_limit{app,cgi_path}`, `wxbroker_wechat_quota_polls_total{app,result}`,
/// kept with each app's other series.
#[derive(Clone)]
pub struct QuotaMetrics {
    metrics: Metrics,
}

impl QuotaMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        QuotaMetrics {
            metrics: metrics.clone(),
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
            polled.insert((app.name().to_owned(), path));
            poll_one(diagnostics, app, path, metrics).await;
        }
    }
    forget_unpolled(metrics, &polled);
}

async fn poll_one(
    diagnostics: &Diagnostics,
    app: &AppHandle,
    path: &'static str,
    metrics: &QuotaMetrics,
) {
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
            metrics.metrics.app(app.name()).set_quota(
                path,
                gauge(quota.remain),
                gauge(quota.daily_limit),
            );
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

fn count(metrics: &QuotaMetrics, app: &str, result: &'static str) {
    metrics.metrics.app(app).count_quota_poll(result);
}

/// Drops the gauges of apps or paths no longer polled (an app removed by
/// a reload), so no alert fires on a stale figure.
fn forget_unpolled(metrics: &QuotaMetrics, polled: &HashSet<(String, &'static str)>) {
    metrics
        .metrics
        .keep_quotas(|app, path| polled.contains(&(app.to_owned(), path)));
}
