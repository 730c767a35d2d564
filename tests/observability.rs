//! Observability with the real tools: the alert rules under `promtool`, the
//! `/metrics` exposition under `promtool check metrics` and against the
//! metric list of DESIGN.md section 7, a real `prometheus` scraping a
//! broker and evaluating the rules, and the Grafana dashboard's queries.
//!
//! `promtool` and `prometheus` come from the Debian `prometheus` package,
//! which `make test` installs. A missing tool fails the test; it never skips.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;
use wxbroker::simulator::{Fault, SimConfig};

const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
const ALERTS_TEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/alerts_test.yml"
);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/wxbroker.json");

/// DESIGN.md section 7, with whether each carries the `app` label.
const DOCUMENTED_METRICS: &[(&str, bool)] = &[
    ("wxbroker_build_info", false),
    ("wxbroker_token_valid", true),
    ("wxbroker_token_expiry_timestamp_seconds", true),
    ("wxbroker_token_last_refresh_timestamp_seconds", true),
    ("wxbroker_upstream_fetches_total", true),
    ("wxbroker_upstream_errors_total", true),
    ("wxbroker_upstream_fetch_duration_seconds_bucket", true),
    ("wxbroker_upstream_fetch_duration_seconds_sum", true),
    ("wxbroker_upstream_fetch_duration_seconds_count", true),
    ("wxbroker_fetches_today", true),
    ("wxbroker_daily_budget", true),
    ("wxbroker_forced_refreshes_total", true),
    ("wxbroker_requests_total", false),
    ("wxbroker_request_duration_seconds_bucket", false),
    ("wxbroker_request_duration_seconds_sum", false),
    ("wxbroker_request_duration_seconds_count", false),
    ("wxbroker_client_requests_total", false),
    ("wxbroker_store_errors_total", false),
    ("process_resident_memory_bytes", false),
    ("wxbroker_wechat_quota_remaining", true),
    ("wxbroker_wechat_quota_daily_limit", true),
    ("wxbroker_wechat_quota_polls_total", true),
    ("wxbroker_ticket_valid", true),
    ("wxbroker_ticket_expiry_timestamp_seconds", true),
];

/// Counted only once a request went through the proxy route.
const PROXY_METRIC: &str = "wxbroker_proxy_requests_total";

/// Set only for an app on a shared (Redis) store, which this file's
/// brokers do not use; tests/cluster.rs and tests/redis_ha.rs read it.
const CLUSTER_ONLY: &[&str] = &["wxbroker_cluster_degraded"];

/// A program from the test dependencies, checked to be installed.
fn tool(name: &str) -> Command {
    match Command::new(name).arg("--version").output() {
        Ok(output) if output.status.success() => Command::new(name),
        Ok(output) => panic!(
            "`{name} --version` failed ({}): {}; run `make test`, which installs the test dependencies (scripts/install-test-deps.sh)",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(err) => panic!(
            "`{name}` is not installed ({err}); run `make test`, which installs it (scripts/install-test-deps.sh)"
        ),
    }
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let output = tool("promtool")
        .args(["check", "rules", ALERTS])
        .output()
        .expect("promtool runs");
    assert_success("promtool check rules", &output);
    let output = tool("promtool")
        .args(["test", "rules", ALERTS_TEST])
        .output()
        .expect("promtool runs");
    assert_success("promtool test rules", &output);
}

/// A WeCom suite (its pushes never come here): its metrics are exposed
/// from the start.
const SUITE: &str = "[[suites]]\nname = \"crm\"\nsuite_id = \"wwsuite0000000001\"\nprovider_corpid = \"wwprovider000001\"\nsecret = \"suite-s3cret\"\ntoken = \"callback-token\"\naes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n";

/// A broker with a file store whose record for `shop` is corrupt (so the
/// store error counter has a series), after one token fetch over TCP,
/// and a WeCom suite. A per-app counter has a series once it has counted
/// something, so the broker has had one of each event: a first token
/// call answered -1 (an upstream error), and a report that its young
/// token was rejected (a token fight, and a forced refresh that
/// `min_forced_interval` does not allow yet: the token stays).
async fn broker_after_a_fetch(sim: &wxbroker::simulator::SimHandle) -> Broker {
    sim.sim.inject(Fault::Errcode {
        errcode: -1,
        count: 1,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir(dir.path().join("state")).unwrap();
    fs::write(dir.path().join("state/shop.json"), b"{not json").unwrap();
    let suite = format!("{SUITE}api_base = \"{}\"\n", sim.base_url());
    let broker = Broker::start_with(
        &format!(
            "{}{suite}",
            classic_app("shop", sim, "tickets = [\"jsapi\"]")
        ),
        Options {
            server: "callback_listen = \"127.0.0.1:0\"\n".into(),
            store: "[store]\nbackend = \"file\"\npath = \"{dir}/state\"\n".into(),
            dir: Some(dir),
            // Polls of WeChat's quota from soon after start.
            tuning: Some(wxbroker::Tuning {
                quota_poll: Some(wxbroker::diagnostics::PollSchedule {
                    first_after: Duration::from_millis(10),
                    every: Duration::from_millis(100),
                }),
                ..wxbroker::Tuning::default()
            }),
            ..Options::default()
        },
    )
    .await;
    let token = broker.token("shop").await;
    let (status, _) = broker.get("/v1/apps/shop/tickets/jsapi").await;
    assert_eq!(status, 200, "the ticket is fetched");
    let (status, body) = broker
        .post(
            "/v1/apps/shop/token/invalidate",
            &format!(r#"{{"access_token":"{token}"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let polled = r#"wxbroker_wechat_quota_remaining{app="shop",cgi_path="/cgi-bin/token"}"#;
    within(async {
        while !broker.metrics_text().await.contains(polled) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    broker
}

/// Sample names in a text exposition, each with its label sets.
fn samples(exposition: &str) -> BTreeMap<String, Vec<String>> {
    let mut samples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = match line[end..].strip_prefix('{') {
            Some(rest) => rest[..rest.find('}').unwrap_or(rest.len())].to_owned(),
            None => String::new(),
        };
        samples
            .entry(line[..end].to_owned())
            .or_default()
            .push(labels);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_lint_and_cover_the_documented_list() {
    let sim = simulator(SimConfig::default()).await;
    let broker = broker_after_a_fetch(&sim).await;
    // Through the proxy route, where this build has one.
    let (proxy_status, proxy_body) = broker
        .post("/v1/apps/shop/proxy/cgi-bin/openapi/quota/get", "{}")
        .await;
    let has_proxy = proxy_body["error"]["code"] != "route_not_found";
    let exposition = broker.metrics_text().await;

    let mut promtool = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert_success("promtool check metrics", &output);

    let samples = samples(&exposition);
    let mut expected: Vec<(&str, bool)> = DOCUMENTED_METRICS.to_vec();
    if has_proxy {
        expected.push((PROXY_METRIC, true));
    } else {
        assert_eq!(proxy_status, 404);
    }
    for (name, per_app) in expected {
        let labels = samples
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{exposition}"));
        if per_app {
            assert!(
                labels.iter().any(|l| l.contains(r#"app="shop""#)),
                "{name} has no series for app shop: {labels:?}"
            );
        }
    }
    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    assert_eq!(samples["wxbroker_build_info"], vec![version]);
    assert!(
        samples["wxbroker_store_errors_total"]
            .iter()
            .any(|l| l.contains(r#"backend="file""#) && l.contains(r#"op="decode""#)),
        "{:?}",
        samples["wxbroker_store_errors_total"]
    );
    assert!(exposition.contains(r#"wxbroker_token_valid{app="shop"} 1"#));
    assert!(exposition.contains(
        r#"wxbroker_requests_total{listener="tcp",route="/v1/apps/{app}/token",status="200"} 1"#
    ));
    broker.stop().await;
}

/// An exposition without what moves by itself: the process collector's
/// readings of the OS, and the operations listener's count of its own
/// requests (a `/metrics` request is an event of its own).
fn without_self_moving(exposition: &str) -> String {
    exposition
        .lines()
        .filter(|line| {
            !line.starts_with("process_")
                && !line.starts_with("# HELP process_")
                && !line.starts_with("# TYPE process_")
                && !line.contains(r#"listener="metrics""#)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The daemon's registry, gathered in the process: no `/metrics` request.
fn gathered(broker: &Broker) -> String {
    String::from_utf8(broker.daemon().metrics.render()).expect("UTF-8 exposition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_are_read_when_gathered_and_a_scrape_changes_nothing() {
    // 3 s tokens, refreshed 1 s ahead.
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(3),
        ..SimConfig::default()
    })
    .await;
    let broker = Broker::start(&classic_app("shop", &sim, "refresh_before = \"1s\"")).await;
    broker.token("shop").await;
    // Any gather reads the token as it is: no scrape had to come first.
    let live = gathered(&broker);
    for series in [
        r#"wxbroker_token_valid{app="shop"} 1"#,
        r#"wxbroker_fetches_today{app="shop",credential="access_token"} 1"#,
        r#"wxbroker_daily_budget{app="shop",credential="access_token"} 1000"#,
        r#"wxbroker_token_expiry_timestamp_seconds{app="shop"}"#,
        r#"wxbroker_token_last_refresh_timestamp_seconds{app="shop"}"#,
    ] {
        assert!(live.contains(series), "{series} missing from\n{live}");
    }

    // WeChat now refuses the broker's address: the refresh 1 s before
    // expiry fails with 40164, a configuration errcode tried again only
    // after 10 minutes. The token then runs out with no event at all.
    sim.sim
        .set_ip_whitelist(Some(vec!["192.0.2.1".parse().unwrap()]));
    wait_until("the refresh is refused", || {
        sim.sim.calls(wxbroker::simulator::Endpoint::Token) == 2
    })
    .await;
    wait_until("the gathered token_valid falls to 0 at expiry", || {
        gathered(&broker).contains(r#"wxbroker_token_valid{app="shop"} 0"#)
    })
    .await;

    // Nothing happens now, so two gathers in a row are the same bytes,
    // and a scrape over HTTP leaves every other metric as it was.
    let before = without_self_moving(&gathered(&broker));
    assert_eq!(without_self_moving(&gathered(&broker)), before);
    let scraped = broker.metrics_text().await;
    assert_eq!(without_self_moving(&scraped), before);
    assert_eq!(
        without_self_moving(&broker.metrics_text().await),
        before,
        "a second scrape"
    );
    // What the filter leaves out did move: the two scrapes were counted.
    let after = gathered(&broker);
    assert_eq!(without_self_moving(&after), before);
    assert!(after.contains(
        r#"wxbroker_requests_total{listener="metrics",route="/metrics",status="200"} 2"#
    ));

    // The registry does not keep the broker alive: once the daemon is
    // stopped, its credentials are gone from what a gather reads.
    let registry = broker.daemon().metrics.clone();
    broker.stop().await;
    let stopped = String::from_utf8(registry.render()).unwrap();
    assert!(!stopped.contains("wxbroker_token_valid"), "{stopped}");
    assert!(stopped.contains(r#"wxbroker_upstream_fetches_total{app="shop""#));
}

/// Metric names a PromQL expression selects: identifiers outside label
/// matchers, ranges and strings that are neither functions, keywords nor
/// Grafana variables. Grouping label lists (`by (app, le)`) are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations too: `sum by (x) (...)` puts no `(` right after `sum`.
    const KEYWORDS: &[&str] = &[
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let skip_past = |from: usize, close: char| {
        let mut i = from + 1;
        let mut quote = None;
        while i < chars.len() {
            match (quote, chars[i]) {
                (Some(_), '\\') => i += 1,
                (Some(q), c) if c == q => quote = None,
                (None, c @ ('"' | '\'' | '`')) => quote = Some(c),
                (None, c) if c == close => return i + 1,
                _ => {}
            }
            i += 1;
        }
        i
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_past(i, '}');
        } else if c == '[' {
            i = skip_past(i, ']');
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_past(i, c);
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                if call {
                    i = skip_past(next, ')');
                }
            } else if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The PromQL of every panel target and query variable in the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    let mut stack = vec![dashboard["panels"].clone()];
    while let Some(panels) = stack.pop() {
        for panel in panels.as_array().into_iter().flatten() {
            stack.push(panel["panels"].clone());
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push(target["expr"].as_str().expect("expr").to_owned());
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().expect("query");
            // label_values(SELECTOR, LABEL): the selector is PromQL.
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map_or(query, |(selector, _)| selector);
            queries.push(selector.to_owned());
        }
    }
    queries
}

/// The `expr:` of every rule in alerts.yml (inline or a `|` block).
fn alert_queries() -> Vec<String> {
    let text = fs::read_to_string(ALERTS).unwrap();
    let mut queries = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, value)) = line.split_once("expr:") else {
            continue;
        };
        let value = value.trim();
        if value != "|" {
            queries.push(value.to_owned());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.next_if(|l| l.len() - l.trim_start().len() > indent.len()) {
            block.push_str(next.trim());
            block.push(' ');
        }
        queries.push(block);
    }
    queries
}

#[test]
fn the_query_parser_finds_metrics_only() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x=~"$i", y="b c"}[$__rate_interval]))) > 0.5 * b and on (job) c offset 5m"#,
    );
    assert_eq!(
        names,
        ["a_bucket", "b", "c"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_only_metrics_the_daemon_exposes() {
    let dashboard: Value = serde_json::from_str(&fs::read_to_string(DASHBOARD).unwrap())
        .expect("the dashboard is valid JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains(&"DS_PROMETHEUS") && variables.contains(&"app"));
    let queries = dashboard_queries(&dashboard);
    let alerts = alert_queries();
    assert_eq!(alerts.len(), 14, "{alerts:?}");

    let sim = simulator(SimConfig::default()).await;
    let broker = broker_after_a_fetch(&sim).await;
    let exposed = samples(&broker.metrics_text().await);
    broker.stop().await;

    let mut used = BTreeSet::new();
    for query in &queries {
        for name in metric_names(query) {
            assert!(
                exposed.contains_key(&name) || CLUSTER_ONLY.contains(&name.as_str()),
                "the dashboard queries {name}, which /metrics does not expose: {query}"
            );
            used.insert(name);
        }
    }
    for name in [
        "wxbroker_token_expiry_timestamp_seconds",
        "wxbroker_token_valid",
        "wxbroker_fetches_today",
        "wxbroker_daily_budget",
        "wxbroker_requests_total",
        "wxbroker_request_duration_seconds_bucket",
        "wxbroker_upstream_errors_total",
        "wxbroker_upstream_fetch_duration_seconds_bucket",
        "wxbroker_forced_refreshes_total",
        "wxbroker_token_fights_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(name), "no dashboard panel shows {name}");
    }
    for query in &alerts {
        for name in metric_names(query) {
            // `up` is Prometheus's own, per scrape target.
            assert!(
                name == "up"
                    || exposed.contains_key(&name)
                    || CLUSTER_ONLY.contains(&name.as_str()),
                "an alert queries {name}, which /metrics does not expose: {query}"
            );
        }
    }
}

/// A process this test started; killed and reaped when dropped, also when
/// the test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A `prometheus` server on a free loopback port, scraping `target` every
/// second and evaluating alerts.yml every second.
struct Prometheus {
    process: KillOnDrop,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let mut command = tool("prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {ALERTS}\n\
                 scrape_configs:\n  - job_name: wxbroker\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_loopback_port();
        let log = dir.path().join("prometheus.log");
        let child = command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            process: KillOnDrop(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    /// GET an API path; `None` until the server answers.
    async fn api(&mut self, path_and_query: &str) -> Option<Value> {
        if let Some(status) = self.process.0.try_wait().unwrap() {
            panic!("prometheus exited ({status}):\n{}", self.log_text());
        }
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Polls `path_and_query` until `done` holds for its JSON answer.
    async fn wait_for(&mut self, what: &str, path_and_query: &str, done: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(answer) = self.api(path_and_query).await {
                if done(&answer) {
                    return;
                }
                last = Some(answer);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last answer: {last:?}\nprometheus log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn query_path(query: &str) -> String {
    let mut url = reqwest::Url::parse("http://localhost/api/v1/query").unwrap();
    url.query_pairs_mut().append_pair("query", query);
    format!("{}?{}", url.path(), url.query().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_broker_and_evaluates_the_rules() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    let mut prometheus = Prometheus::start(broker.metrics);

    prometheus
        .wait_for(
            "wxbroker_token_valid{app=\"shop\"} to be 1 in prometheus",
            &query_path(r#"wxbroker_token_valid{app="shop"}"#),
            |answer| answer["data"]["result"][0]["value"][1] == "1",
        )
        .await;

    // Every rule evaluated without error, and a healthy broker raises no
    // alert, not even a pending one.
    prometheus
        .wait_for(
            "every rule evaluated and no alert pending",
            "/api/v1/rules",
            |answer| {
                let rules: Vec<&Value> = answer["data"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|group| group["rules"].as_array().unwrap())
                    .collect();
                rules.len() == 14
                    && rules
                        .iter()
                        .all(|rule| rule["health"] == "ok" && rule["state"] == "inactive")
            },
        )
        .await;

    // The dashboard's queries are PromQL this Prometheus accepts.
    let dashboard: Value = serde_json::from_str(&fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    for query in dashboard_queries(&dashboard) {
        let query = query
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$app", ".*");
        let answer = prometheus
            .api(&query_path(&query))
            .await
            .expect("prometheus answers");
        assert_eq!(answer["status"], "success", "{query}: {answer}");
    }
    drop(prometheus);
    broker.stop().await;
}
