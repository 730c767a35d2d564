//! The event counters that carry an `app` label (DESIGN.md section 7):
//! upstream fetches, errors and their durations, forced refreshes, token
//! fights and checks, follower flips, the quota poll's (section 16), and
//! the gauges set by events: cluster-degraded and WeChat's quota figures.
//!
//! A broker may hold ten thousand apps, so an app costs little here: one
//! [`AppSeries`] with the counters it has used, nothing for those it has
//! not (but its successful fetches, shown at 0 from the start). A series
//! appears with the first event it counts, at 1 rather than seen at 0
//! first (the alert rules treat a series new in their window as an
//! increase), and the histogram of fetch durations has a few buckets
//! chosen for a token call. The families are written as text at each
//! rendering ([`super::text`]).
//!
//! An app's series outlive it: counters are history, and an app removed
//! and added back by reloads counts on from where it was. The gauges, a
//! state, go with the app.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::text::{Kind, TextFamily};

/// The upper bounds of `wxbroker_upstream_fetch_duration_seconds`, for a
/// token call: a healthy one takes tens to a few hundred milliseconds,
/// one over a second is slow, one over five nears the fetch timeout.
pub const FETCH_DURATION_BUCKETS: [f64; 3] = [0.25, 1.0, 5.0];

/// A counting family with an `app` label and at most two more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Counted {
    UpstreamFetches,
    UpstreamErrors,
    ForcedRefreshes,
    TokenFights,
    TokenChecks,
    FollowerFlips,
    QuotaPolls,
}

impl Counted {
    const ALL: [Counted; 7] = [
        Counted::UpstreamFetches,
        Counted::UpstreamErrors,
        Counted::ForcedRefreshes,
        Counted::TokenFights,
        Counted::TokenChecks,
        Counted::FollowerFlips,
        Counted::QuotaPolls,
    ];

    /// How many labels the family has, `app` included.
    fn arity(self) -> usize {
        self.declaration().2.len()
    }

    fn family(self) -> TextFamily {
        let (name, help, labels) = self.declaration();
        TextFamily::new(name, help, Kind::Counter, labels)
    }

    /// The family's name, help and labels.
    fn declaration(self) -> (&'static str, &'static str, &'static [&'static str]) {
        match self {
            Counted::UpstreamFetches => (
                "wxbroker_upstream_fetches_total",
                "Upstream credential calls by credential and result (ok, errcode, transport).",
                &["app", "credential", "result"],
            ),
            Counted::UpstreamErrors => (
                "wxbroker_upstream_errors_total",
                "Failed upstream credential calls by credential and errcode.",
                &["app", "credential", "errcode"],
            ),
            Counted::ForcedRefreshes => (
                "wxbroker_forced_refreshes_total",
                "Invalidations by outcome (refreshed, already_rotated, rate_limited).",
                &["app", "outcome"],
            ),
            Counted::TokenFights => (
                "wxbroker_token_fights_total",
                "Rejections of a token younger than WeChat's overlap that the broker did not supersede: something else fetches tokens for this appid.",
                &["app"],
            ),
            Counted::TokenChecks => (
                "wxbroker_token_checks_total",
                "The broker's own upstream checks of its held access token, by result (valid, rejected, failed).",
                &["app", "result"],
            ),
            Counted::FollowerFlips => (
                "wxbroker_follower_flips_total",
                "For an app that follows a leader: answers that went back to the value held before the current one (two brokers without a shared store answering at the leader's address).",
                &["app", "credential"],
            ),
            Counted::QuotaPolls => (
                "wxbroker_wechat_quota_polls_total",
                "Polls of WeChat's quota/get by result (ok, error, no_token).",
                &["app", "result"],
            ),
        }
    }
}

const FETCH_DURATION: (&str, &str) = (
    "wxbroker_upstream_fetch_duration_seconds",
    "Duration of upstream token calls.",
);

const CLUSTER_DEGRADED: (&str, &str) = (
    "wxbroker_cluster_degraded",
    "1 while the app refreshes without the cluster store.",
);

const QUOTA_REMAINING: (&str, &str) = (
    "wxbroker_wechat_quota_remaining",
    "Calls left today of the API at cgi_path, as WeChat's quota/get counts them.",
);

const QUOTA_DAILY_LIMIT: (&str, &str) = (
    "wxbroker_wechat_quota_daily_limit",
    "Daily limit of the API at cgi_path, as WeChat's quota/get reports it.",
);

/// The name, help and labels of every family written here, declared to
/// the registry so that it refuses any other metric of the same name.
pub(super) fn declarations() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    let mut declared: Vec<_> = Counted::ALL.iter().map(|c| c.declaration()).collect();
    declared.push((FETCH_DURATION.0, FETCH_DURATION.1, &["app"]));
    declared.push((CLUSTER_DEGRADED.0, CLUSTER_DEGRADED.1, &["app"]));
    declared.push((QUOTA_REMAINING.0, QUOTA_REMAINING.1, &["app", "cgi_path"]));
    declared.push((
        QUOTA_DAILY_LIMIT.0,
        QUOTA_DAILY_LIMIT.1,
        &["app", "cgi_path"],
    ));
    declared
}

/// One counted series of an app: its family, the label values after
/// `app` (unused ones empty), its count.
struct Count {
    family: Counted,
    labels: [&'static str; 2],
    value: u64,
}

/// The fetch durations of one app, all its credentials together.
#[derive(Default)]
struct Durations {
    /// Fetches no longer than each of [`FETCH_DURATION_BUCKETS`].
    cumulative: [u64; FETCH_DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// WeChat's count for one API path of an app, as last polled.
struct Quota {
    cgi_path: &'static str,
    remaining: i64,
    daily_limit: i64,
}

#[derive(Default)]
struct Counts {
    /// In the order of first use; a handful at most.
    counts: Vec<Count>,
    durations: Option<Box<Durations>>,
    cluster_degraded: Option<bool>,
    /// By path, in the order first polled.
    quotas: Vec<Quota>,
}

impl Counts {
    /// The count of `family` with `labels`, made at 0 on first use.
    fn entry(&mut self, family: Counted, labels: [&'static str; 2]) -> &mut u64 {
        let at = match self
            .counts
            .iter()
            .position(|count| count.family == family && count.labels == labels)
        {
            Some(at) => at,
            None => {
                self.counts.push(Count {
                    family,
                    labels,
                    value: 0,
                });
                self.counts.len() - 1
            }
        };
        &mut self.counts[at].value
    }

    fn add(&mut self, family: Counted, labels: [&'static str; 2]) {
        *self.entry(family, labels) += 1;
    }
}

/// The counted series of one `app` label value (an app, or a platform's
/// or suite's own credential). Events are rare (a fetch every two hours
/// or so), so one small lock guards them all.
pub struct AppSeries {
    app: Box<str>,
    counts: Mutex<Counts>,
}

impl AppSeries {
    fn new(app: &str) -> AppSeries {
        AppSeries {
            app: app.into(),
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // A counter update cannot leave the counts half-changed.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, family: Counted, labels: [&'static str; 2]) {
        self.counts().add(family, labels);
    }

    fn value(&self, family: Counted, labels: [&'static str; 2]) -> u64 {
        self.counts()
            .counts
            .iter()
            .find(|count| count.family == family && count.labels == labels)
            .map_or(0, |count| count.value)
    }

    /// One upstream call of `credential` that took `took`: `result` is
    /// `wxbroker_upstream_fetches_total`'s label, `errcode` the error's
    /// when it failed.
    pub fn fetched(
        &self,
        credential: &'static str,
        result: &'static str,
        errcode: Option<&'static str>,
        took: Duration,
    ) {
        let mut counts = self.counts();
        counts.add(Counted::UpstreamFetches, [credential, result]);
        if let Some(errcode) = errcode {
            counts.add(Counted::UpstreamErrors, [credential, errcode]);
        }
        let seconds = took.as_secs_f64();
        let durations = counts.durations.get_or_insert_with(Box::default);
        for (bound, below) in FETCH_DURATION_BUCKETS.iter().zip(&mut durations.cumulative) {
            if seconds <= *bound {
                *below += 1;
            }
        }
        durations.sum += seconds;
        durations.count += 1;
    }

    /// Shows `wxbroker_upstream_fetches_total{credential, result="ok"}`
    /// at 0 until the first fetch: the one series every fetching app has
    /// anyway, there from the start.
    pub fn show_fetches(&self, credential: &'static str) {
        self.counts()
            .entry(Counted::UpstreamFetches, [credential, "ok"]);
    }

    /// An upstream error not tied to one call's failure (an answer whose
    /// lifetime is too short to pace refreshes by).
    pub fn count_error(&self, credential: &'static str, errcode: &'static str) {
        self.count(Counted::UpstreamErrors, [credential, errcode]);
    }

    pub fn count_forced_refresh(&self, outcome: &'static str) {
        self.count(Counted::ForcedRefreshes, [outcome, ""]);
    }

    pub fn count_fight(&self) {
        self.count(Counted::TokenFights, ["", ""]);
    }

    pub fn count_check(&self, result: &'static str) {
        self.count(Counted::TokenChecks, [result, ""]);
    }

    pub fn count_flip(&self, credential: &'static str) {
        self.count(Counted::FollowerFlips, [credential, ""]);
    }

    pub fn set_cluster_degraded(&self, degraded: bool) {
        self.counts().cluster_degraded = Some(degraded);
    }

    /// WeChat's figures for `cgi_path`, as its `quota/get` answered.
    pub fn set_quota(&self, cgi_path: &'static str, remaining: i64, daily_limit: i64) {
        let mut counts = self.counts();
        match counts.quotas.iter_mut().find(|q| q.cgi_path == cgi_path) {
            Some(quota) => {
                quota.remaining = remaining;
                quota.daily_limit = daily_limit;
            }
            None => counts.quotas.push(Quota {
                cgi_path,
                remaining,
                daily_limit,
            }),
        }
    }

    /// One poll of WeChat's quota, by result.
    pub fn count_quota_poll(&self, result: &'static str) {
        self.count(Counted::QuotaPolls, [result, ""]);
    }

    /// `wxbroker_token_fights_total` of this app.
    pub fn fights(&self) -> u64 {
        self.value(Counted::TokenFights, ["", ""])
    }

    /// `wxbroker_upstream_fetches_total` of this app's `credential` with
    /// `result`.
    pub fn fetches(&self, credential: &'static str, result: &'static str) -> u64 {
        self.value(Counted::UpstreamFetches, [credential, result])
    }
}

/// Every [`AppSeries`] the daemon has counted into, by `app` label value.
#[derive(Default)]
pub(super) struct AppTable {
    apps: Mutex<BTreeMap<Box<str>, Arc<AppSeries>>>,
}

impl AppTable {
    fn apps(&self) -> MutexGuard<'_, BTreeMap<Box<str>, Arc<AppSeries>>> {
        self.apps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `app`'s series, made on first use.
    pub(super) fn get(&self, app: &str) -> Arc<AppSeries> {
        let mut apps = self.apps();
        if let Some(series) = apps.get(app) {
            return series.clone();
        }
        let series = Arc::new(AppSeries::new(app));
        apps.insert(app.into(), series.clone());
        series
    }

    /// Drops `app`'s state (its gauges), keeping its counters.
    pub(super) fn forget(&self, app: &str) {
        if let Some(series) = self.apps().get(app) {
            let mut counts = series.counts();
            counts.cluster_degraded = None;
            counts.quotas.clear();
        }
    }

    /// Drops the quota figures of every (app, path) for which `polled`
    /// is false: an app removed by a reload, a path no longer polled.
    pub(super) fn keep_quotas(&self, polled: impl Fn(&str, &'static str) -> bool) {
        let apps: Vec<Arc<AppSeries>> = self.apps().values().cloned().collect();
        for series in apps {
            series
                .counts()
                .quotas
                .retain(|quota| polled(&series.app, quota.cgi_path));
        }
    }

    /// Writes every family that has a series, apps in name order.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        // A copy of the list, so counting is never held up by a scrape.
        let apps: Vec<Arc<AppSeries>> = self.apps().values().cloned().collect();
        let mut counted = Counted::ALL.map(Counted::family);
        let mut durations = TextFamily::new(
            FETCH_DURATION.0,
            FETCH_DURATION.1,
            Kind::Histogram,
            &["app"],
        );
        let mut degraded = TextFamily::new(
            CLUSTER_DEGRADED.0,
            CLUSTER_DEGRADED.1,
            Kind::Gauge,
            &["app"],
        );
        let quota_labels: &'static [&'static str] = &["app", "cgi_path"];
        let mut remaining = TextFamily::new(
            QUOTA_REMAINING.0,
            QUOTA_REMAINING.1,
            Kind::Gauge,
            quota_labels,
        );
        let mut daily_limit = TextFamily::new(
            QUOTA_DAILY_LIMIT.0,
            QUOTA_DAILY_LIMIT.1,
            Kind::Gauge,
            quota_labels,
        );
        let mut sorted: Vec<(Counted, [&'static str; 2], u64)> = Vec::new();
        for series in &apps {
            let app = &*series.app;
            {
                let counts = series.counts();
                sorted.clear();
                sorted.extend(
                    counts
                        .counts
                        .iter()
                        .map(|count| (count.family, count.labels, count.value)),
                );
                if let Some(d) = &counts.durations {
                    durations.push_histogram(
                        &[app],
                        &FETCH_DURATION_BUCKETS,
                        &d.cumulative,
                        d.sum,
                        d.count,
                    );
                }
                if let Some(on) = counts.cluster_degraded {
                    degraded.push(&[app], u64::from(on));
                }
                for quota in &counts.quotas {
                    remaining.push_f64(&[app, quota.cgi_path], quota.remaining as f64);
                    daily_limit.push_f64(&[app, quota.cgi_path], quota.daily_limit as f64);
                }
            }
            // Within an app, by label values, as the registry sorts them.
            sorted.sort_unstable();
            for (family, labels, value) in &sorted {
                let values = [app, labels[0], labels[1]];
                counted[*family as usize].push(&values[..family.arity()], *value);
            }
        }
        for family in counted {
            family.finish(out);
        }
        durations.finish(out);
        degraded.finish(out);
        remaining.finish(out);
        daily_limit.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(table: &AppTable) -> String {
        let mut out = Vec::new();
        table.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_counted_family_is_written_where_its_index_says() {
        for (at, family) in Counted::ALL.iter().enumerate() {
            assert_eq!(*family as usize, at, "{family:?}");
        }
    }

    #[test]
    fn an_app_has_no_series_before_its_first_event() {
        let table = AppTable::default();
        let shop = table.get("shop");
        assert_eq!(written(&table), "");
        shop.count_fight();
        assert_eq!(
            written(&table),
            "# HELP wxbroker_token_fights_total Rejections of a token younger than WeChat's overlap that the broker did not supersede: something else fetches tokens for this appid.\n\
             # TYPE wxbroker_token_fights_total counter\n\
             wxbroker_token_fights_total{app=\"shop\"} 1\n"
        );
    }

    #[test]
    fn fetches_shown_at_zero_count_on_from_there() {
        let table = AppTable::default();
        let shop = table.get("shop");
        shop.show_fetches("access_token");
        let at_zero = r#"wxbroker_upstream_fetches_total{app="shop",credential="access_token",result="ok"} 0"#;
        assert!(written(&table).lines().any(|l| l == at_zero));
        shop.fetched("access_token", "ok", None, Duration::from_millis(50));
        shop.show_fetches("access_token");
        assert_eq!(shop.fetches("access_token", "ok"), 1);
        assert_eq!(
            written(&table)
                .matches("wxbroker_upstream_fetches_total{")
                .count(),
            1
        );
    }

    #[test]
    fn a_fetch_counts_its_result_error_and_duration() {
        let table = AppTable::default();
        let shop = table.get("shop");
        shop.fetched("access_token", "ok", None, Duration::from_millis(120));
        shop.fetched(
            "access_token",
            "errcode",
            Some("40164"),
            Duration::from_millis(2_000),
        );
        shop.fetched("jsapi_ticket", "ok", None, Duration::from_millis(300));
        let text = written(&table);
        for line in [
            r#"wxbroker_upstream_fetches_total{app="shop",credential="access_token",result="errcode"} 1"#,
            r#"wxbroker_upstream_fetches_total{app="shop",credential="access_token",result="ok"} 1"#,
            r#"wxbroker_upstream_fetches_total{app="shop",credential="jsapi_ticket",result="ok"} 1"#,
            r#"wxbroker_upstream_errors_total{app="shop",credential="access_token",errcode="40164"} 1"#,
            r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="0.25"} 1"#,
            r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="1"} 2"#,
            r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="5"} 3"#,
            r#"wxbroker_upstream_fetch_duration_seconds_bucket{app="shop",le="+Inf"} 3"#,
            r#"wxbroker_upstream_fetch_duration_seconds_count{app="shop"} 3"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert_eq!(shop.fetches("access_token", "ok"), 1);
        // One family header each, however many apps and series.
        assert_eq!(
            text.matches("# TYPE wxbroker_upstream_fetches_total")
                .count(),
            1
        );
        assert!(!text.contains("wxbroker_token_fights_total"), "{text}");
    }

    #[test]
    fn counters_outlive_the_app_and_the_degraded_state_does_not() {
        let table = AppTable::default();
        let shop = table.get("shop");
        shop.count_forced_refresh("refreshed");
        shop.set_cluster_degraded(true);
        assert!(written(&table).contains("wxbroker_cluster_degraded{app=\"shop\"} 1"));
        table.forget("shop");
        drop(shop);
        let text = written(&table);
        assert!(!text.contains("wxbroker_cluster_degraded"), "{text}");
        table.get("shop").count_forced_refresh("refreshed");
        assert!(written(&table)
            .contains(r#"wxbroker_forced_refreshes_total{app="shop",outcome="refreshed"} 2"#));
    }

    #[test]
    fn quota_figures_are_kept_while_polled_and_go_with_the_app() {
        let table = AppTable::default();
        let shop = table.get("shop");
        shop.set_quota("/cgi-bin/token", 1990, 2000);
        shop.set_quota("/cgi-bin/ticket/getticket", 99, 100);
        shop.set_quota("/cgi-bin/token", 1980, 2000);
        shop.count_quota_poll("ok");
        let text = written(&table);
        for line in [
            r#"wxbroker_wechat_quota_remaining{app="shop",cgi_path="/cgi-bin/token"} 1980"#,
            r#"wxbroker_wechat_quota_daily_limit{app="shop",cgi_path="/cgi-bin/token"} 2000"#,
            r#"wxbroker_wechat_quota_remaining{app="shop",cgi_path="/cgi-bin/ticket/getticket"} 99"#,
            r#"wxbroker_wechat_quota_polls_total{app="shop",result="ok"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        table.keep_quotas(|_, path| path == "/cgi-bin/token");
        assert!(!written(&table).contains("getticket"));
        table.forget("shop");
        let text = written(&table);
        assert!(!text.contains("wxbroker_wechat_quota_remaining"), "{text}");
        assert!(text.contains(r#"wxbroker_wechat_quota_polls_total{app="shop",result="ok"} 1"#));
    }

    #[test]
    fn apps_are_written_in_name_order_within_each_family() {
        let table = AppTable::default();
        for app in ["mini", "crm", "shop"] {
            table.get(app).count_check("valid");
        }
        let text = written(&table);
        let order: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| &l[l.find("app=\"").unwrap() + 5..l.find("\",").unwrap()])
            .collect();
        assert_eq!(order, ["crm", "mini", "shop"]);
    }
}
