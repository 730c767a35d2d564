//! WeCom service providers (DESIGN.md section 19) end to end: the
//! simulator checks the broker's callback URL and pushes encrypted
//! tickets, installs, resets and cancellations to it over real HTTP; the
//! broker's suite, provider and corp tokens are then judged by the
//! simulator. Fleets share a real `redis-server`; durability is tried
//! with SIGKILL on the real binary.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{wait_until, within, RedisServer};
use wxbroker::config::Config;
use wxbroker::platform::authorizers::SchedulerTuning;
use wxbroker::platform::store::{AuthorizerRecord, FilePlatformStore, PlatformStore};
use wxbroker::simulator::{
    suite_ticket_xml, Endpoint, Fault, ReceiveId, SimConfig, SimHandle, SimSuite, Simulator,
    TicketKind,
};
use wxbroker::suite::{CorpError, SuiteHandle};
use wxbroker::{Daemon, Listeners, Tuning};

const SUITE: &str = "wwsuite0000000001";
const OTHER_SUITE: &str = "wwsuite0000000002";
const SUITE_SECRET: &str = "suite-s3cret-0123456789";
const PROVIDER: &str = "wwprovider000001";
const PROVIDER_SECRET: &str = "provider-s3cret-0123456789";
const TOKEN: &str = "callback-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// How long the tests wait for anything.
const WAIT: Duration = Duration::from_secs(20);

fn sim_suite(suite_id: &str, customized: bool) -> SimSuite {
    SimSuite {
        suite_id: suite_id.into(),
        suite_secret: SUITE_SECRET.into(),
        token: TOKEN.into(),
        aes_key: AES_KEY.into(),
        provider_corpid: PROVIDER.into(),
        provider_secret: Some(PROVIDER_SECRET.into()),
        customized,
    }
}

/// A simulator with the suite `SUITE` (a 代开发 template when
/// `customized`) and another suite of the same provider, sealed with the
/// same callback token and key.
async fn simulator(customized: bool) -> SimHandle {
    let sim = Simulator::new(SimConfig::default());
    sim.add_suite(sim_suite(SUITE, customized));
    sim.add_suite(sim_suite(OTHER_SUITE, false));
    sim.spawn().await.expect("simulator starts")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `[[suites]]` entry `crm` for `SUITE` against `sim`.
fn suite_section(sim: &SimHandle, extra: &str) -> String {
    format!(
        "[[suites]]\nname = \"crm\"\nsuite_id = \"{SUITE}\"\nprovider_corpid = \"{PROVIDER}\"\nsecret = \"{SUITE_SECRET}\"\ntoken = \"{TOKEN}\"\naes_key = \"{AES_KEY}\"\nprovider_secret = \"{PROVIDER_SECRET}\"\ncorp_tickets = [\"jsapi\", \"agent_config\"]\napi_base = \"{}\"\n{extra}\n",
        sim.base_url()
    )
}

/// A broker serving the suite `crm`, its callback and metrics listeners.
struct Broker {
    daemon: Option<Daemon>,
    callback: SocketAddr,
    metrics: SocketAddr,
    http: reqwest::Client,
}

impl Broker {
    /// A broker for `SUITE` against `sim` on `store` (a `[store]`
    /// section), its corps fetched at most `rate` a second.
    async fn start(sim: &SimHandle, store: &str, extra: &str, rate: u32) -> Broker {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncallback_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ntoken_wait_timeout = \"5s\"\n{store}\n{}",
            suite_section(sim, extra)
        );
        let config = Config::from_toml_str("suites.toml", &text).expect("valid config");
        let listeners = Listeners::bind(&config).await.expect("binds");
        let callback = listeners.callback_addr().unwrap();
        let metrics = listeners.metrics_addr().unwrap();
        let tuning = Tuning {
            quota_poll: None,
            corps: SchedulerTuning {
                fetch_rate: rate,
                concurrency: 8,
                min_forced_interval: Duration::ZERO,
            },
            ..Tuning::default()
        };
        let daemon = wxbroker::start_with(&config, listeners, tuning)
            .await
            .expect("broker starts");
        Broker {
            daemon: Some(daemon),
            callback,
            metrics,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(WAIT)
                .build()
                .unwrap(),
        }
    }

    fn suite(&self) -> SuiteHandle {
        self.daemon.as_ref().unwrap().broker.suite("crm").unwrap()
    }

    fn callback_url(&self) -> String {
        format!("http://{}/wechat/suites/crm/callback", self.callback)
    }

    /// Points the simulator's pushes for `SUITE` at this broker.
    fn receive_pushes(&self, sim: &SimHandle) {
        sim.sim.set_suite_callback_url(SUITE, &self.callback_url());
    }

    /// POSTs a push (`query`, `body`) to the callback; its status.
    async fn post(&self, query: &str, body: impl Into<reqwest::Body>) -> u16 {
        self.http
            .post(format!("{}?{query}", self.callback_url()))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn metrics_text(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the series `series` exactly, or 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// The suite token, once the broker has one.
    async fn suite_token(&self) -> String {
        let token = self.suite().suite_token().token(WAIT).await.unwrap();
        token.value.expose().to_owned()
    }

    async fn corp_token(&self, corpid: &str) -> Result<String, CorpError> {
        let token = self.suite().corp_token(corpid, WAIT).await?;
        Ok(token.value.expose().to_owned())
    }

    /// The token of a corp that just installed the suite, once its code
    /// is exchanged (the exchange follows the push's answer).
    async fn installed_token(&self, corpid: &str) -> String {
        eventually("the install exchanged", || async {
            self.suite().corps().get(corpid).is_some()
        })
        .await;
        self.corp_token(corpid).await.unwrap()
    }

    async fn stop(mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().await;
        }
    }
}

/// Polls `done` every 20 ms until it holds, failing after [`WAIT`].
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_check_and_a_pushed_ticket_give_suite_and_provider_tokens_the_simulator_accepts() {
    let sim = simulator(false).await;
    let broker = Broker::start(&sim, "", "", 20).await;
    broker.receive_pushes(&sim);
    for receive in [ReceiveId::SuiteId, ReceiveId::ProviderCorpId] {
        assert_eq!(
            sim.sim.check_suite_callback_url(SUITE, receive).await,
            Some((200, true)),
            "the URL check sealed for {receive:?} is answered with its plaintext"
        );
    }
    // No ticket yet: the suite makes no call and waits for the push.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.sim.suite_calls("get_suite_token"), 0);
    assert!(broker.suite().suite_token().valid_token().is_none());

    let pushed = sim.sim.push_suite_ticket(SUITE).await.unwrap();
    assert_eq!(pushed.status, Some(200));
    assert_eq!(broker.suite().ticket_timestamp(), Some(pushed.timestamp));
    let token = broker.suite_token().await;
    assert!(sim.sim.suite_token_valid(&token));
    let suite = broker.suite();
    let provider = suite.provider_token().expect("configured");
    let provider = provider.token(WAIT).await.unwrap();
    assert!(sim.sim.provider_token_valid(provider.value.expose()));
    assert_eq!(sim.sim.suite_calls("get_suite_token"), 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_foreign_or_oversized_pushes_get_403_and_change_nothing() {
    let sim = simulator(false).await;
    let broker = Broker::start(&sim, "", "", 20).await;
    broker.receive_pushes(&sim);
    // Sealed for the provider's corpid, as WeCom does for some pushes.
    sim.sim
        .set_suite_receive_id(SUITE, ReceiveId::ProviderCorpId);
    let first = sim.sim.push_suite_ticket(SUITE).await.unwrap();
    assert_eq!(
        first.status,
        Some(200),
        "the provider's corpid is a receive id"
    );
    assert_eq!(broker.suite().ticket_timestamp(), Some(first.timestamp));
    let accepted = r#"wxbroker_suite_callbacks_total{outcome="accepted",suite="crm"}"#;
    assert_eq!(broker.metric(accepted).await, 1.0);

    // Each would replace the ticket, were it accepted: it is newer.
    let stamp = now_secs() + 10;
    let newer = suite_ticket_xml(SUITE, "forged-ticket", stamp);
    let sealed = sim
        .sim
        .seal_suite_push(SUITE, &newer, ReceiveId::SuiteId)
        .unwrap();
    let forged = sealed.query.replace("msg_signature=", "msg_signature=0");
    let stale = sim
        .sim
        .seal_suite_push_at(SUITE, &newer, ReceiveId::SuiteId, now_secs() - 600)
        .unwrap();
    let foreign = sim
        .sim
        .seal_suite_push(
            OTHER_SUITE,
            &suite_ticket_xml(OTHER_SUITE, "foreign-ticket", now_secs() + 10),
            ReceiveId::SuiteId,
        )
        .unwrap();
    let named_other = sim
        .sim
        .seal_suite_push(
            SUITE,
            &suite_ticket_xml(OTHER_SUITE, "other-ticket", now_secs() + 10),
            ReceiveId::SuiteId,
        )
        .unwrap();
    let oversized = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(70 * 1024));
    let cases: [(&str, &str, String); 6] = [
        ("forged signature", &forged, sealed.body.clone()),
        ("stale timestamp", &stale.query, stale.body.clone()),
        ("another suite's push", &foreign.query, foreign.body.clone()),
        (
            "naming another suite",
            &named_other.query,
            named_other.body.clone(),
        ),
        ("no signature", "timestamp=1&nonce=2", sealed.body.clone()),
        ("over 64 KiB", &sealed.query, oversized),
    ];
    for (what, query, body) in cases {
        assert_eq!(broker.post(query, body).await, 403, "{what}");
    }
    assert_eq!(broker.suite().ticket_timestamp(), Some(first.timestamp));
    assert_eq!(broker.metric(accepted).await, 1.0);
    for outcome in ["signature", "stale", "too_large", "other_suite"] {
        let series =
            format!(r#"wxbroker_suite_callbacks_total{{outcome="{outcome}",suite="crm"}}"#);
        assert!(broker.metric(&series).await >= 1.0, "{series}");
    }
    // The push they were made from, untouched, is accepted.
    assert_eq!(broker.post(&sealed.query, sealed.body).await, 200);
    assert_eq!(broker.suite().ticket_timestamp(), Some(stamp));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_push_never_replaces_a_newer_ticket() {
    let sim = simulator(false).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\nbackend = \"file\"\npath = \"{}\"\n",
        dir.path().display()
    );
    let broker = Broker::start(&sim, &store, "", 20).await;
    broker.receive_pushes(&sim);
    let newest = sim.sim.push_suite_ticket(SUITE).await.unwrap();
    for age in [60, 600, 1700] {
        let older = sim
            .sim
            .push_delayed_suite_ticket(SUITE, Duration::from_secs(age))
            .await
            .unwrap();
        assert_eq!(older.status, Some(200), "answered success, and ignored");
        assert_eq!(broker.suite().ticket_timestamp(), Some(newest.timestamp));
    }
    // The newest is the one kept durably, and the one fetched with.
    let kept = suite_store(dir.path())
        .load_ticket()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.ticket.as_str(), kept.received_at),
        (newest.ticket.as_str(), newest.timestamp)
    );
    let token = broker.suite_token().await;
    assert!(sim.sim.suite_token_valid(&token));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_ticket_waits_for_the_next_push() {
    let sim = simulator(false).await;
    let broker = Broker::start(&sim, "", "", 20).await;
    broker.receive_pushes(&sim);
    sim.sim.inject_suite_fault(
        "get_suite_token",
        Fault::Errcode {
            errcode: 40085,
            count: 1,
        },
    );
    sim.sim.push_suite_ticket(SUITE).await.unwrap();
    wait_until("the refused fetch", || {
        sim.sim.suite_calls("get_suite_token") == 1
    })
    .await;
    // WeCom cannot be asked to push again: no call until it does.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.sim.suite_calls("get_suite_token"), 1);
    assert!(broker.suite().suite_token().valid_token().is_none());
    sim.sim.push_suite_ticket(SUITE).await.unwrap();
    let token = broker.suite_token().await;
    assert!(sim.sim.suite_token_valid(&token));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticket_age_gauge_counts_from_the_newest_ticket() {
    let sim = simulator(false).await;
    let broker = Broker::start(&sim, "", "", 20).await;
    broker.receive_pushes(&sim);
    let age = r#"wxbroker_suite_ticket_age_seconds{suite="crm"}"#;
    assert!(broker.metric(age).await < 60.0, "counted from the start");
    // WeCom's pushes stopped 22 minutes ago: the alert's threshold passed.
    let late = sim
        .sim
        .push_delayed_suite_ticket(SUITE, Duration::from_secs(22 * 60))
        .await
        .unwrap();
    assert_eq!(late.status, Some(200));
    let seconds = broker.metric(age).await;
    assert!((1320.0..1400.0).contains(&seconds), "{seconds}");
    sim.sim.push_suite_ticket(SUITE).await.unwrap();
    assert!(broker.metric(age).await < 60.0);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_serves_a_corp_token_the_simulator_accepts_and_a_cancellation_removes_the_corp()
{
    let sim = simulator(false).await;
    let broker = Broker::start(&sim, "", "", 20).await;
    broker.receive_pushes(&sim);
    sim.sim.push_suite_ticket(SUITE).await.unwrap();
    broker.suite_token().await;
    // The exchange takes 3 s: the push is answered within a second
    // anyway, and the exchange goes on after the answer.
    sim.sim.inject_suite_fault(
        "v2/get_permanent_code",
        Fault::Delay {
            delay: Duration::from_secs(3),
            count: 1,
        },
    );
    let started = Instant::now();
    let corp = sim.sim.install_corp(SUITE).await.unwrap();
    assert_eq!(corp.status, Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let token = broker.installed_token(&corp.corpid).await;
    assert!(sim.sim.token_valid(&token));
    assert_eq!(sim.sim.suite_calls("v2/get_permanent_code"), 1);
    assert_eq!(sim.sim.suite_calls("get_corp_token"), 1);
    let suite = broker.suite();
    assert!(suite.corp_name(&corp.corpid).unwrap().starts_with("Corp "));
    assert!(suite.installed_at(&corp.corpid).unwrap() + 60 > now_secs());
    let owner = suite
        .corps()
        .owner_of(&token)
        .map(|slot| slot.id.to_string());
    assert_eq!(owner.as_deref(), Some(corp.corpid.as_str()));
    assert_eq!(
        broker
            .metric(r#"wxbroker_corps{state="valid",suite="crm"}"#)
            .await,
        1.0
    );
    let permanent = sim.sim.permanent_code_of(SUITE, &corp.corpid).unwrap();
    assert!(!broker.metrics_text().await.contains(&permanent));

    // change_auth: the name is read again.
    sim.sim
        .rename_corp(SUITE, &corp.corpid, "Renamed Ltd")
        .await
        .unwrap();
    eventually("the new name", || async {
        broker.suite().corp_name(&corp.corpid).as_deref() == Some("Renamed Ltd")
    })
    .await;

    // The corp's JS-SDK tickets, fetched with its token.
    for kind in [TicketKind::Jsapi, TicketKind::AgentConfig] {
        let wanted = match kind {
            TicketKind::Jsapi => wxbroker::credential::TicketKind::Jsapi,
            _ => wxbroker::credential::TicketKind::AgentConfig,
        };
        let ticket = suite.corp_ticket(&corp.corpid, wanted).unwrap();
        let ticket = ticket.token(WAIT).await.unwrap();
        assert!(
            sim.sim
                .ticket_valid(&corp.corpid, kind, ticket.value.expose()),
            "{kind:?}"
        );
    }
    assert_eq!(
        suite
            .corp_ticket("wwnobody", wxbroker::credential::TicketKind::Jsapi)
            .err(),
        Some(CorpError::NotFound)
    );

    // Pre-auth codes: fresh each call.
    let (one, expires_in) = suite.pre_auth_code(WAIT).await.unwrap();
    let (two, _) = suite.pre_auth_code(WAIT).await.unwrap();
    assert_ne!(one, two);
    assert_eq!(expires_in, 1200);
    assert_eq!(sim.sim.suite_calls("get_pre_auth_code"), 2);

    // A dead permanent code holds the corp; its siblings are not touched.
    let sibling = sim.sim.install_corp(SUITE).await.unwrap();
    broker.installed_token(&sibling.corpid).await;
    sim.sim.inject_suite_fault(
        "get_corp_token",
        Fault::Errcode {
            errcode: 40084,
            count: 1,
        },
    );
    let (_, refreshed) = suite
        .invalidate_corp(&corp.corpid, &token, WAIT)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(!refreshed);
    eventually("the corp held", || async {
        broker
            .metric(r#"wxbroker_corps_held{reason="config",suite="crm"}"#)
            .await
            == 1.0
    })
    .await;

    // cancel_auth: the corp, its tokens and its code are gone.
    assert_eq!(sim.sim.cancel_corp(SUITE, &corp.corpid).await, Some(200));
    eventually("the corp removed", || async {
        broker.corp_token(&corp.corpid).await == Err(CorpError::NotFound)
    })
    .await;
    assert!(suite.corps().owner_of(&token).is_none());
    assert!(broker.corp_token(&sibling.corpid).await.is_ok());
    assert_eq!(
        broker
            .metric(r#"wxbroker_corps{state="valid",suite="crm"}"#)
            .await,
        1.0
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customized_corp_tokens_come_from_gettoken_and_follow_a_reset() {
    let sim = simulator(true).await;
    let broker = Broker::start(&sim, "", "customized = true", 20).await;
    broker.receive_pushes(&sim);
    sim.sim.push_suite_ticket(SUITE).await.unwrap();
    let corp = sim.sim.install_corp(SUITE).await.unwrap();
    assert_eq!(corp.status, Some(200));
    let first = broker.installed_token(&corp.corpid).await;
    assert!(sim.sim.token_valid(&first));
    assert_eq!(sim.sim.suite_calls("get_corp_token"), 0);
    assert_eq!(sim.sim.calls(Endpoint::WecomGetToken), 1);

    assert_eq!(
        sim.sim.reset_permanent_code(SUITE, &corp.corpid).await,
        Some(200)
    );
    assert!(!sim.sim.token_valid(&first), "the old secret's token died");
    eventually("a token of the new code", || async {
        let token = broker.corp_token(&corp.corpid).await.unwrap();
        token != first && sim.sim.token_valid(&token)
    })
    .await;
    assert_eq!(sim.sim.calls(Endpoint::WecomGetToken), 2);
    assert_eq!(sim.sim.suite_calls("v2/get_permanent_code"), 2);
    broker.stop().await;
}

/// The suite's state in the file store in `dir`.
fn suite_store(dir: &std::path::Path) -> FilePlatformStore {
    FilePlatformStore::with_files(
        dir.join("crm.suite_ticket.json"),
        dir.join("crm.corps.jsonl"),
        SUITE,
    )
}

/// The corps (their permanent codes) a file store holds for the suite.
async fn stored_codes(dir: &std::path::Path) -> Vec<AuthorizerRecord> {
    suite_store(dir).load_authorizers().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_codes_survive_sigkill_and_a_restart_makes_no_exchange_and_no_fetch() {
    let sim = simulator(false).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (api, callback, metrics) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let config_path = dir.path().join("wxbroker.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\ncallback_listen = \"127.0.0.1:{callback}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n{}",
            state.display(),
            suite_section(&sim, "")
        ),
    )
    .unwrap();
    sim.sim.set_suite_callback_url(
        SUITE,
        &format!("http://127.0.0.1:{callback}/wechat/suites/crm/callback"),
    );
    let metrics_url = format!("http://127.0.0.1:{metrics}/metrics");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let valid_corps = |count: usize| {
        let (http, url) = (&http, &metrics_url);
        async move {
            let series = format!("wxbroker_corps{{state=\"valid\",suite=\"crm\"}} {count}");
            let text = http.get(url).send().await.unwrap().text().await.unwrap();
            text.contains(&series)
        }
    };
    let mut broker = support::ChildBroker::spawn(&config_path, "info");
    broker.wait_ready(&metrics_url).await;
    assert_eq!(
        sim.sim.push_suite_ticket(SUITE).await.unwrap().status,
        Some(200)
    );
    let mut corps = Vec::new();
    for _ in 0..3 {
        let corp = sim.sim.install_corp(SUITE).await.unwrap();
        assert_eq!(corp.status, Some(200));
        corps.push(corp.corpid);
    }
    eventually("three corps served", || valid_corps(3)).await;
    // No chance to clean up.
    broker.kill();
    let stored = stored_codes(&state).await;
    assert_eq!(stored.len(), 3);
    for record in &stored {
        assert_eq!(
            sim.sim.permanent_code_of(SUITE, &record.appid).as_deref(),
            Some(record.refresh_token.as_str()),
            "{}: the stored permanent code is WeCom's",
            record.appid
        );
        assert!(!record.access_token.is_empty(), "the token was stored too");
        assert!(
            !broker.log().contains(&record.refresh_token),
            "never logged"
        );
    }
    let calls = |sim: &SimHandle| {
        ["get_suite_token", "v2/get_permanent_code", "get_corp_token"]
            .map(|endpoint| sim.sim.suite_calls(endpoint))
    };
    let before = calls(&sim);
    assert_eq!(before, [1, 3, 3]);

    let mut broker = support::ChildBroker::spawn(&config_path, "info");
    broker.wait_ready(&metrics_url).await;
    eventually("three corps served again", || valid_corps(3)).await;
    // The ticket, the suite token and every corp token came back from
    // the store.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls(&sim), before, "no exchange, no fetch");
    let age = r#"wxbroker_suite_ticket_age_seconds{suite="crm"}"#;
    let text = http
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(age), "{text}");
    for corpid in &corps {
        assert!(!text.contains(corpid.as_str()), "no corp in /metrics");
    }
    broker.terminate();
}

/// The `[store]` section of a Redis store at `redis`.
fn redis_store(redis: &RedisServer) -> String {
    support::redis_store(&redis.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_the_newest_ticket_and_an_older_push_never_regresses_it() {
    let sim = simulator(false).await;
    let redis = RedisServer::start().await;
    let store = redis_store(&redis);
    let (a, b) = (
        Broker::start(&sim, &store, "", 20).await,
        Broker::start(&sim, &store, "", 20).await,
    );
    a.receive_pushes(&sim);
    let newest = sim.sim.push_suite_ticket(SUITE).await.unwrap();
    assert_eq!(newest.status, Some(200));
    let token = a.suite_token().await;
    assert!(sim.sim.suite_token_valid(&token));
    assert_eq!(b.suite_token().await, token, "one token for the fleet");

    // An older push reaches B, which never held the newest: it judges
    // the push against the fleet's ticket.
    b.receive_pushes(&sim);
    let older = sim
        .sim
        .push_delayed_suite_ticket(SUITE, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(older.status, Some(200));
    assert_eq!(b.suite().ticket_timestamp(), Some(newest.timestamp));
    let key = format!("{{test:{SUITE}:corps}}:suite_ticket");
    let stored = support::redis_ha::get(&redis.url(), &key)
        .await
        .expect("the fleet's ticket");
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["received_at"], newest.timestamp);
    assert_eq!(stored["ticket"], newest.ticket);

    // A broker started now receives no push: it holds the fleet's ticket.
    let c = Broker::start(&sim, &store, "", 20).await;
    eventually("C holds the fleet's ticket", || async {
        c.suite().ticket_timestamp() == Some(newest.timestamp)
    })
    .await;
    for broker in [a, b, c] {
        broker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_corps_refresh_at_most_20_a_second_across_a_fleet_with_bounded_metrics() {
    const CORPS: usize = 1000;
    let sim = simulator(false).await;
    let redis = RedisServer::start().await;
    // A thousand corps installed, their permanent codes in the fleet's
    // store, none with a token yet.
    let corpids = sim.sim.add_installed_corps(SUITE, CORPS);
    let mut hset = redis::cmd("HSET");
    hset.arg(format!("{{test:{SUITE}:corps}}"));
    for corpid in &corpids {
        let record = AuthorizerRecord {
            appid: corpid.clone(),
            refresh_token: sim.sim.permanent_code_of(SUITE, corpid).unwrap(),
            access_token: String::new(),
            expires_at_ms: 0,
            fetched_at_ms: 0,
            authorized_at: now_secs(),
            name: String::new(),
        };
        hset.arg(corpid)
            .arg(serde_json::to_string(&record).unwrap());
    }
    assert!(support::redis_ha::ask(&redis.url(), &hset).await.is_some());
    let store = redis_store(&redis);
    let fleet = [
        Broker::start(&sim, &store, "", 20).await,
        Broker::start(&sim, &store, "", 20).await,
    ];
    fleet[0].receive_pushes(&sim);
    sim.sim.push_suite_ticket(SUITE).await.unwrap();

    // The fleet's fetches, counted in each wall-clock second.
    let started = Instant::now();
    let mut per_second: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut last = 0;
    while sim.sim.suite_calls("get_corp_token") < CORPS as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} fetched in two minutes",
            sim.sim.suite_calls("get_corp_token")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = sim.sim.suite_calls("get_corp_token");
        *per_second.entry(now_secs()).or_default() += now - last;
        last = now;
    }
    let elapsed = started.elapsed();
    let busiest = per_second.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= 22,
        "at most 20 a second (a sample's slack): {per_second:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(CORPS as u64 / 20 - 3),
        "{CORPS} fetches took {elapsed:?}"
    );
    for broker in &fleet {
        eventually("every corp served", || async {
            broker
                .metric(r#"wxbroker_corps{state="valid",suite="crm"}"#)
                .await
                == CORPS as f64
        })
        .await;
        let text = broker.metrics_text().await;
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#') && line.contains("suite=\"crm\""))
            .count();
        assert!(series < 40, "{series} series for the suite");
        assert!(!text.contains("wwcorp"), "no corp in /metrics");
    }
    let token = fleet[1].corp_token(corpids.last().unwrap()).await.unwrap();
    assert!(sim.sim.token_valid(&token));
    assert!(
        sim.sim.suite_calls("get_corp_token") <= CORPS as u64 + 50,
        "each corp fetched about once by the fleet: {}",
        sim.sim.suite_calls("get_corp_token")
    );
    for broker in fleet {
        broker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suites_and_their_callbacks_show_in_metrics_at_zero() {
    let sim = simulator(false).await;
    let broker = Broker::start(&sim, "", "", 20).await;
    let text = broker.metrics_text().await;
    for series in [
        r#"wxbroker_suite_ticket_age_seconds{suite="crm"}"#,
        r#"wxbroker_corps{state="valid",suite="crm"} 0"#,
        r#"wxbroker_corp_fetches_total{result="ok",suite="crm"} 0"#,
        r#"wxbroker_suite_callbacks_total{outcome="accepted",suite="crm"} 0"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    within(broker.stop()).await;
}
