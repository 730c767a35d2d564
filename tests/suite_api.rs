//! The WeCom service provider surfaces (DESIGN.md section 19) over real
//! sockets against the simulator: the `/v1/suites/…` routes (suite and
//! provider tokens, the corps list, a corp's token, invalidation,
//! tickets, `wx.config` signatures, pre-auth codes, the corp proxy), their
//! errors, the access rules for other local users (through `setpriv` and
//! `curl`, as tests/access.rs does), and the compatible listener's
//! `/cgi-bin/service/*` calls and corp calls. The simulator pushes suite
//! tickets and installs to the broker's callback listener over HTTP; its
//! counts show what went upstream.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::as_user::{self, As};
use support::within;
use wxbroker::config::Config;
use wxbroker::platform::authorizers::SchedulerTuning;
use wxbroker::simulator::{Endpoint, SimConfig, SimHandle, SimSuite, Simulator};
use wxbroker::{Daemon, Listeners, Tuning};

/// `crm`: a provider secret, both corp tickets.
const SUITE: &str = "wwsuite0000000001";
/// `lite`: another provider's, without a provider secret or tickets.
const LITE_SUITE: &str = "wwsuite0000000002";
/// `dk`: a 代开发 template of `lite`'s provider.
const CUSTOM_SUITE: &str = "dktemplate000001";
const SUITE_SECRET: &str = "suite-s3cret-0123456789";
const PROVIDER: &str = "wwprovider000001";
const LITE_PROVIDER: &str = "wwprovider000002";
const PROVIDER_SECRET: &str = "provider-s3cret-0123456789";
const MSG_TOKEN: &str = "callback-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// Corp tokens live this long at the simulator; suite tokens and
/// tickets longer, so moving the simulator's clock past it kills the
/// corp tokens alone.
const CORP_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Names `crm`.
const READER: u32 = 65534;
/// Names `crm`, forwards `/cgi-bin/message/*` only.
const LIMITED: u32 = 65533;
/// Names `lite` only.
const LITE_READER: u32 = 65532;
/// Matches no client entry.
const STRANGER: u32 = 65531;

fn sim_suite(suite_id: &str, provider: &str, provider_secret: Option<&str>) -> SimSuite {
    let customized = suite_id == CUSTOM_SUITE;
    SimSuite {
        suite_id: suite_id.into(),
        suite_secret: SUITE_SECRET.into(),
        token: MSG_TOKEN.into(),
        aes_key: AES_KEY.into(),
        provider_corpid: provider.into(),
        provider_secret: provider_secret.map(str::to_owned),
        customized,
    }
}

struct Broker {
    daemon: Option<Daemon>,
    sim: SimHandle,
    socket: PathBuf,
    api: SocketAddr,
    compat: SocketAddr,
    metrics: SocketAddr,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A broker with suites `crm` and `lite` against a fresh simulator, the
/// simulator's pushes aimed at its callback listener. Nothing pushed yet.
async fn start() -> Broker {
    let sim = Simulator::new(SimConfig {
        token_lifetime: CORP_TOKEN_LIFETIME,
        ..SimConfig::default()
    });
    sim.add_suite(sim_suite(SUITE, PROVIDER, Some(PROVIDER_SECRET)));
    sim.add_suite(sim_suite(LITE_SUITE, LITE_PROVIDER, None));
    sim.add_suite(sim_suite(CUSTOM_SUITE, LITE_PROVIDER, None));
    let sim = sim.spawn().await.expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    // The socket is open to every local user: only the broker's own
    // rules stand between them and the suites.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("wxbroker.sock");
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
unix_socket = "{socket}"
socket_mode = "0666"
callback_listen = "127.0.0.1:0"
wechat_compat_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
token_wait_timeout = "5s"

[[suites]]
name = "crm"
suite_id = "{SUITE}"
provider_corpid = "{PROVIDER}"
secret = "{SUITE_SECRET}"
token = "{MSG_TOKEN}"
aes_key = "{AES_KEY}"
provider_secret = "{PROVIDER_SECRET}"
corp_tickets = ["jsapi", "agent_config"]
api_base = "{base}"

[[suites]]
name = "lite"
suite_id = "{LITE_SUITE}"
provider_corpid = "{LITE_PROVIDER}"
secret = "{SUITE_SECRET}"
token = "{MSG_TOKEN}"
aes_key = "{AES_KEY}"
api_base = "{base}"

[[suites]]
name = "dk"
suite_id = "{CUSTOM_SUITE}"
provider_corpid = "{LITE_PROVIDER}"
secret = "{SUITE_SECRET}"
token = "{MSG_TOKEN}"
aes_key = "{AES_KEY}"
customized = true
api_base = "{base}"

[[clients]]
uid = {READER}
suites = ["crm"]

[[clients]]
name = "limited"
uid = {LIMITED}
suites = ["crm"]
apis = ["/cgi-bin/message/*"]

[[clients]]
uid = {LITE_READER}
suites = ["lite"]
"#,
        socket = socket.display(),
        base = sim.base_url(),
    );
    let config = Config::from_toml_str("suite_api.toml", &text).expect("valid config");
    let listeners = Listeners::bind(&config).await.expect("binds");
    let api = listeners.api_tcp_addr().unwrap();
    let compat = listeners.compat_addr().unwrap();
    let metrics = listeners.metrics_addr().unwrap();
    let callback = listeners.callback_addr().unwrap();
    for (suite_id, name) in [(SUITE, "crm"), (LITE_SUITE, "lite"), (CUSTOM_SUITE, "dk")] {
        sim.sim.set_suite_callback_url(
            suite_id,
            &format!("http://{callback}/wechat/suites/{name}/callback"),
        );
    }
    let tuning = Tuning {
        quota_poll: None,
        // The scheduler of children (authorizers and corps): a reported
        // token is replaced at any age.
        authorizers: SchedulerTuning {
            min_forced_interval: Duration::ZERO,
            ..SchedulerTuning::default()
        },
        corps: SchedulerTuning {
            min_forced_interval: Duration::ZERO,
            ..SchedulerTuning::default()
        },
        ..Tuning::default()
    };
    let daemon = wxbroker::start_with(&config, listeners, tuning)
        .await
        .expect("broker starts");
    Broker {
        daemon: Some(daemon),
        sim,
        socket,
        api,
        compat,
        metrics,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        _dir: dir,
    }
}

/// [`start`], then a ticket pushed for each suite and `corps` corps
/// installed in `crm`, each holding a token: their corpids, sorted.
async fn start_with_corps(corps: usize) -> (Broker, Vec<String>) {
    let broker = start().await;
    for suite_id in [SUITE, LITE_SUITE, CUSTOM_SUITE] {
        let pushed = broker.sim.sim.push_suite_ticket(suite_id).await.unwrap();
        assert_eq!(pushed.status, Some(200), "the callback takes the ticket");
    }
    broker.suite_token("crm").await;
    let mut corpids = Vec::new();
    for _ in 0..corps {
        let installed = broker.sim.sim.install_corp(SUITE).await.unwrap();
        assert_eq!(
            installed.status,
            Some(200),
            "the callback takes the install"
        );
        corpids.push(installed.corpid);
    }
    for corpid in &corpids {
        broker.corp_token(corpid).await;
    }
    corpids.sort();
    (broker, corpids)
}

impl Broker {
    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.api))
            .header("wxbroker-client", "tests");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(body)).await
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.api))
            .header("wxbroker-client", "tests")
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// `method path` on the compatible listener, as this process (root).
    async fn compat(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.compat));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// `method path` on the Unix socket as `uid`.
    async fn unix_as(
        &self,
        uid: u32,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("http://localhost{path}");
        curl(Some(uid), Some(&self.socket), method, &url, body).await
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

    /// The suite's token, once it holds one.
    async fn suite_token(&self, suite: &str) -> String {
        let path = format!("/v1/suites/{suite}/suite_token");
        let body = self.eventually_ok(&path).await;
        body["suite_access_token"].as_str().unwrap().to_owned()
    }

    /// The corp's token in `crm`, once it holds one.
    async fn corp_token(&self, corpid: &str) -> String {
        let path = format!("/v1/suites/crm/corps/{corpid}/token");
        let body = self.eventually_ok(&path).await;
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `GET path` until it answers 200: its body.
    async fn eventually_ok(&self, path: &str) -> Value {
        within(async {
            loop {
                let (status, body) = self.get(path).await;
                if status == 200 {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn stop(mut self) {
        self.daemon.take().unwrap().shutdown().await;
    }
}

/// One request through `curl`, as `uid` through `setpriv` when given.
/// Returns the status and the body as JSON (Null when it is not).
async fn curl(
    uid: Option<u32>,
    socket: Option<&Path>,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    as_user::curl(As::uid(uid), socket, method, url, body).await
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every route below `/v1/suites/crm/`, with its body, for `corpid`
/// holding `token`.
fn suite_routes(corpid: &str, token: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let base = "/v1/suites/crm";
    let corp = format!("{base}/corps/{corpid}");
    vec![
        ("GET", format!("{base}/suite_token"), None),
        ("GET", format!("{base}/suite_token?format=text"), None),
        ("GET", format!("{base}/provider_token"), None),
        ("GET", format!("{base}/corps"), None),
        ("POST", format!("{base}/pre_auth_code"), None),
        ("GET", format!("{corp}/token"), None),
        (
            "POST",
            format!("{corp}/token/invalidate"),
            Some(json!({ "access_token": token })),
        ),
        ("GET", format!("{corp}/tickets/jsapi"), None),
        (
            "POST",
            format!("{corp}/jssdk/config"),
            Some(json!({ "url": "https://crm.example.com/page" })),
        ),
        (
            "GET",
            format!("{corp}/proxy/cgi-bin/get_api_domain_ip"),
            None,
        ),
    ]
}

// Runs with the suite engine or without it: the access check comes
// before the suite is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suite_route_needs_a_client_naming_the_suite() {
    let broker = start().await;
    let routes = suite_routes("wwcorp0000000001", "a-token");
    let before = broker.sim.sim.requests_by_path();
    for uid in [STRANGER, LITE_READER] {
        for (method, path, body) in &routes {
            let (status, answer) = broker.unix_as(uid, method, path, body.as_ref()).await;
            assert_eq!(status, 403, "uid {uid}: {method} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "forbidden", "{path}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains("suite 'crm'"), "{message}");
        }
    }
    // An unknown suite is refused alike: the answer does not say which
    // suites exist.
    let (status, answer) = broker
        .unix_as(STRANGER, "GET", "/v1/suites/other/suite_token", None)
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (403, &json!("forbidden"))
    );
    // A suite's name reads no app or platform of that name.
    let (status, _) = broker
        .unix_as(READER, "GET", "/v1/platforms/crm/component_token", None)
        .await;
    assert_eq!(status, 403);
    // The engine fetches the suite's own tokens on its own schedule; no
    // refused request reached anything else.
    let own = |paths: std::collections::BTreeMap<String, u64>| {
        paths
            .into_iter()
            .filter(|(path, _)| {
                !path.ends_with("/get_suite_token") && !path.ends_with("/get_provider_token")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        own(broker.sim.sim.requests_by_path()),
        own(before),
        "nothing refused went upstream"
    );
    // Root reads everything; an unknown suite is then named as such.
    let (status, answer) = broker.get("/v1/suites/other/suite_token").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "suite_not_found");
    let (status, answer) = broker.get("/v1/suites/crm/nothing").await;
    assert_eq!(status, 404, "an unknown route below a suite: {answer}");
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_and_provider_tokens_are_served_as_the_simulator_issued_them() {
    let (broker, _) = start_with_corps(0).await;
    let (status, body) = broker.get("/v1/suites/crm/suite_token").await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["expires_at", "expires_in", "suite", "suite_access_token"]
    );
    assert_eq!(body["suite"], "crm");
    let token = body["suite_access_token"].as_str().unwrap();
    assert!(broker.sim.sim.suite_token_valid(token));
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let (status, text) = broker.text("/v1/suites/crm/suite_token?format=text").await;
    assert_eq!((status, text.as_str()), (200, token));

    let (status, body) = broker.get("/v1/suites/crm/provider_token").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suite"], "crm");
    let provider = body["provider_access_token"].as_str().unwrap();
    assert!(broker.sim.sim.provider_token_valid(provider));
    assert!(body.get("suite_access_token").is_none());

    let (status, body) = broker.get("/v1/suites/lite/provider_token").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "provider_not_configured");
    let (status, body) = broker.post("/v1/suites/crm/suite_token", json!({})).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = broker.get("/v1/suites/crm/pre_auth_code").await;
    assert_eq!(status, 405, "{body}");

    let codes = broker.sim.sim.suite_calls("get_pre_auth_code");
    let (status, body) = broker.post("/v1/suites/crm/pre_auth_code", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["pre_auth_code"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert_eq!(
        broker.sim.sim.suite_calls("get_pre_auth_code"),
        codes + 1,
        "fresh each call"
    );
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_corps_are_listed_in_pages_without_tokens_or_codes() {
    let (broker, corpids) = start_with_corps(3).await;
    let (status, body) = broker.get("/v1/suites/crm/corps").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3);
    let corps = body["corps"].as_array().unwrap();
    let listed: Vec<&str> = corps
        .iter()
        .map(|c| c["corpid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, corpids, "every corp, ordered by corpid");
    for corp in corps {
        let keys: Vec<&str> = corp
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["corp_name", "corpid", "expires_in", "installed_at", "valid"]
        );
        assert_eq!(corp["valid"], true, "{corp}");
        assert!(corp["expires_in"].as_u64().unwrap() > 0);
        assert!(corp["installed_at"].as_u64().unwrap() > 0);
        assert!(corp["corp_name"].is_string(), "{corp}");
    }
    // No token and no permanent code anywhere in the answer.
    let text = body.to_string();
    for corpid in &corpids {
        let token = broker.corp_token(corpid).await;
        assert!(!text.contains(&token), "a corp token in the list");
        let code = broker.sim.sim.permanent_code_of(SUITE, corpid).unwrap();
        assert!(!text.contains(&code), "a permanent code in the list");
    }
    let suite_token = broker.suite_token("crm").await;
    assert!(!text.contains(&suite_token));

    // Pages: `limit` at least 1 and at most 500, `offset` past the end
    // gives none.
    let page = |query: &'static str| {
        let broker = &broker;
        async move {
            let (status, body) = broker.get(&format!("/v1/suites/crm/corps?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            assert_eq!(body["total"], 3, "{query}");
            body["corps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["corpid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let mut walked = page("offset=0&limit=2").await;
    walked.extend(page("offset=2&limit=2").await);
    assert_eq!(walked, corpids);
    assert_eq!(page("offset=3").await, Vec::<String>::new());
    assert_eq!(page("limit=0").await, corpids[..1].to_vec());
    assert_eq!(page("limit=100000").await, corpids);
    // Another suite's corps are its own.
    let (status, body) = broker.get("/v1/suites/lite/corps").await;
    assert_eq!((status, &body["total"]), (200, &json!(0)), "{body}");
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corps_token_is_answered_like_an_apps_and_is_gone_after_a_cancellation() {
    let (broker, corpids) = start_with_corps(2).await;
    let corpid = &corpids[0];
    let path = format!("/v1/suites/crm/corps/{corpid}/token");
    let (status, body) = broker.get(&path).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "corpid",
            "expires_at",
            "expires_in",
            "suite"
        ]
    );
    assert_eq!(
        (&body["suite"], &body["corpid"]),
        (&json!("crm"), &json!(corpid))
    );
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(broker.sim.sim.token_valid(&token), "WeCom accepts it");
    let (status, text) = broker.text(&format!("{path}?format=text")).await;
    assert_eq!((status, text.as_str()), (200, token.as_str()));

    // A report of a token that is not the current one changes nothing.
    let fetches = broker.sim.sim.suite_calls("get_corp_token");
    let (status, body) = broker
        .post(
            &format!("{path}/invalidate"),
            json!({ "access_token": "not-the-current-one" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["refreshed"].as_bool(), body["access_token"].as_str()),
        (Some(false), Some(token.as_str()))
    );
    assert_eq!(broker.sim.sim.suite_calls("get_corp_token"), fetches);
    let (status, body) = broker.post(&format!("{path}/invalidate"), json!({})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );

    // An unknown corp, then a cancelled one: 404 corp_not_found on
    // every corp route, and the corp leaves the list.
    let (status, body) = broker
        .get("/v1/suites/crm/corps/wwnobody00000001/token")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("corp_not_found"))
    );
    assert_eq!(broker.sim.sim.cancel_corp(SUITE, corpid).await, Some(200));
    within(async {
        while broker.get(&path).await.0 != 404 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let corp = format!("/v1/suites/crm/corps/{corpid}");
    for (method, path, body) in [
        ("GET", format!("{corp}/token"), None),
        (
            "POST",
            format!("{corp}/token/invalidate"),
            Some(json!({ "access_token": token })),
        ),
        ("GET", format!("{corp}/tickets/jsapi"), None),
        (
            "POST",
            format!("{corp}/jssdk/config"),
            Some(json!({ "url": "https://crm.example.com/" })),
        ),
        (
            "GET",
            format!("{corp}/proxy/cgi-bin/get_api_domain_ip"),
            None,
        ),
    ] {
        let (status, answer) = broker.request(method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "corp_not_found", "{path}");
    }
    let (_, body) = broker.get("/v1/suites/crm/corps").await;
    assert_eq!(body["total"], 1, "{body}");
    // The compatible listener no longer knows the corp either.
    let suite_token = broker.suite_token("crm").await;
    let answer = broker
        .compat(
            "POST",
            &format!("/cgi-bin/service/get_corp_token?suite_access_token={suite_token}"),
            Some(json!({ "auth_corpid": corpid, "permanent_code": "sdk-held" })),
        )
        .await;
    assert_eq!(answer["errcode"], 40084, "{answer}");
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corps_tickets_sign_its_pages_and_unkept_kinds_are_404() {
    let (broker, corpids) = start_with_corps(1).await;
    let corpid = &corpids[0];
    let corp = format!("/v1/suites/crm/corps/{corpid}");
    let ticket = broker.eventually_ok(&format!("{corp}/tickets/jsapi")).await;
    assert_eq!(
        (&ticket["suite"], &ticket["corpid"], &ticket["kind"]),
        (&json!("crm"), &json!(corpid), &json!("jsapi"))
    );
    let jsapi = ticket["ticket"].as_str().unwrap().to_owned();
    assert!(ticket["expires_in"].as_u64().unwrap() > 0);
    let agent = broker
        .eventually_ok(&format!("{corp}/tickets/agent_config"))
        .await;
    assert!(agent["ticket"].is_string(), "{agent}");

    // wx_card is no WeCom corp's ticket.
    let (status, body) = broker.get(&format!("{corp}/tickets/wx_card")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("ticket_not_configured"))
    );

    let page = "https://crm.example.com/pay?order=42#/cart";
    let (status, signed) = broker
        .post(&format!("{corp}/jssdk/config"), json!({ "url": page }))
        .await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["appId"], corpid.as_str(), "signed for the corp");
    let expected = wxbroker::jssdk::signature(
        &jsapi,
        signed["nonceStr"].as_str().unwrap(),
        signed["timestamp"].as_u64().unwrap(),
        "https://crm.example.com/pay?order=42",
    );
    assert_eq!(signed["signature"], expected.as_str());
    assert!(!signed.to_string().contains(&jsapi), "the ticket stays");

    let (status, body) = broker
        .post(
            &format!("{corp}/jssdk/config"),
            json!({ "url": page, "agent": true }),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );
    let (status, signed) = broker
        .post(
            &format!("{corp}/jssdk/config"),
            json!({ "url": page, "agent": true, "agentid": 1000002 }),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(
        (&signed["corpid"], &signed["agentid"]),
        (&json!(corpid), &json!(1000002))
    );
    let expected = wxbroker::jssdk::signature(
        agent["ticket"].as_str().unwrap(),
        signed["nonceStr"].as_str().unwrap(),
        signed["timestamp"].as_u64().unwrap(),
        "https://crm.example.com/pay?order=42",
    );
    assert_eq!(signed["signature"], expected.as_str());
    let (status, _) = broker
        .post(
            &format!("{corp}/jssdk/config"),
            json!({ "url": "/relative" }),
        )
        .await;
    assert_eq!(status, 400);
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corp_proxy_forwards_with_the_corps_token_and_refuses_permanent_codes() {
    let (broker, corpids) = start_with_corps(1).await;
    let corp = format!("/v1/suites/crm/corps/{}", corpids[0]);
    let calls = broker.sim.sim.calls(Endpoint::GetApiDomainIp);
    let (status, body) = broker
        .get(&format!(
            "{corp}/proxy/cgi-bin/get_api_domain_ip?access_token=client-held"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["ip_list"].is_array(), "{body}");
    assert_eq!(broker.sim.sim.calls(Endpoint::GetApiDomainIp), calls + 1);

    let exchanges = broker.sim.sim.suite_calls("v2/get_permanent_code");
    let auth_info = broker.sim.sim.suite_calls("get_auth_info");
    let before = broker.sim.sim.requests_by_path();
    for path in [
        "cgi-bin/service/get_permanent_code",
        "cgi-bin/service/v2/get_permanent_code",
        "cgi-bin/service/%67et_auth_info",
        "cgi-bin/service/get_corp_token",
        "cgi-bin/gettoken",
        "cgi-bin/clear_quota",
    ] {
        let (status, body) = broker
            .post(&format!("{corp}/proxy/{path}"), json!({}))
            .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "proxied_request_refused", "{path}");
    }
    assert_eq!(
        broker.sim.sim.requests_by_path(),
        before,
        "nothing went upstream"
    );
    assert_eq!(
        broker.sim.sim.suite_calls("v2/get_permanent_code"),
        exchanges
    );
    assert_eq!(broker.sim.sim.suite_calls("get_auth_info"), auth_info);

    // Audited under the suite's name: one call forwarded, six refused.
    let metrics = broker.metrics_text().await;
    let series = |outcome: &str| {
        format!(r#"wxbroker_proxied_calls_total{{app="crm",client="unknown",outcome="{outcome}"}}"#)
    };
    assert_eq!(metric(&metrics, &series("ok")), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, &series("refused")), 6.0, "{metrics}");
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_naming_the_suite_reads_it_and_forwards_only_its_apis() {
    let (broker, corpids) = start_with_corps(1).await;
    let corp = format!("/v1/suites/crm/corps/{}", corpids[0]);
    let token = broker.corp_token(&corpids[0]).await;
    for (method, path, body) in suite_routes(&corpids[0], &token) {
        let (status, answer) = broker.unix_as(READER, method, &path, body.as_ref()).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
    }
    let calls = broker.sim.sim.calls(Endpoint::GetApiDomainIp);
    let proxied = format!("{corp}/proxy/cgi-bin/get_api_domain_ip");
    let (status, answer) = broker.unix_as(LIMITED, "GET", &proxied, None).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "api_not_allowed");
    assert_eq!(broker.sim.sim.calls(Endpoint::GetApiDomainIp), calls);
    let (status, _) = broker
        .unix_as(LIMITED, "GET", "/v1/suites/crm/suite_token", None)
        .await;
    assert_eq!(status, 200, "apis limit forwarding, not reading");

    // The compatible listener applies the same rules to a stranger.
    let url = format!("http://{}/cgi-bin/service/get_suite_token", broker.compat);
    let fetches = broker.sim.sim.suite_calls("get_suite_token");
    let (_, answer) = curl(
        Some(STRANGER),
        None,
        "POST",
        &url,
        Some(&json!({ "suite_id": SUITE, "suite_secret": "x", "suite_ticket": "y" })),
    )
    .await;
    assert_eq!(answer["errcode"], -1, "{answer}");
    assert!(answer["errmsg"].as_str().unwrap().contains("forbidden"));
    let (_, answer) = curl(
        Some(READER),
        None,
        "POST",
        &url,
        Some(&json!({ "suite_id": SUITE })),
    )
    .await;
    assert!(answer["suite_access_token"].is_string(), "{answer}");
    let corp_call = format!(
        "http://{}/cgi-bin/get_api_domain_ip?access_token={token}",
        broker.compat
    );
    let (_, answer) = curl(Some(LITE_READER), None, "GET", &corp_call, None).await;
    assert_eq!(answer["errcode"], -1, "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::GetApiDomainIp), calls);
    assert_eq!(broker.sim.sim.suite_calls("get_suite_token"), fetches);
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_suite_token_with_no_newer_one_is_never_handed_back() {
    let (broker, _) = start_with_corps(0).await;
    let token = broker.suite_token("crm").await;
    // The token dies at WeCom while the broker still holds it valid, too
    // young (min_forced_interval) to be replaced.
    broker.sim.sim.advance(Duration::from_secs(7201));
    let fetches = broker.sim.sim.suite_calls("get_suite_token");
    let answer = broker
        .compat(
            "GET",
            &format!("/cgi-bin/service/get_pre_auth_code?suite_access_token={token}"),
            None,
        )
        .await;
    assert_eq!(
        answer["errcode"], -1,
        "WeCom's rejection is not handed back: {answer}"
    );
    assert!(
        answer["errmsg"].as_str().unwrap().contains("rejected"),
        "{answer}"
    );
    assert_eq!(
        broker.sim.sim.suite_calls("get_pre_auth_code"),
        1,
        "sent once"
    );
    assert_eq!(
        broker.sim.sim.suite_calls("get_suite_token"),
        fetches,
        "no refresh was allowed yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compatible_listener_answers_the_three_token_endpoints_from_the_caches() {
    let (broker, corpids) = start_with_corps(1).await;
    let corpid = &corpids[0];
    let suite_token = broker.suite_token("crm").await;
    let corp_token = broker.corp_token(corpid).await;
    let (_, provider) = broker.get("/v1/suites/crm/provider_token").await;
    let provider = provider["provider_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let counts = |broker: &Broker| {
        ["get_suite_token", "get_provider_token", "get_corp_token"]
            .map(|endpoint| broker.sim.sim.suite_calls(endpoint))
    };
    let before = counts(&broker);

    // What the SDKs send (secrets, tickets, permanent codes) is ignored.
    let answer = broker
        .compat(
            "POST",
            "/cgi-bin/service/get_suite_token",
            Some(json!({ "suite_id": SUITE, "suite_secret": "wrong", "suite_ticket": "old" })),
        )
        .await;
    assert_eq!(
        answer["suite_access_token"],
        suite_token.as_str(),
        "{answer}"
    );
    assert!(answer["expires_in"].as_u64().unwrap() > 0);
    let answer = broker
        .compat(
            "POST",
            "/cgi-bin/service/get_provider_token",
            Some(json!({ "corpid": PROVIDER, "provider_secret": "wrong" })),
        )
        .await;
    assert_eq!(
        answer["provider_access_token"],
        provider.as_str(),
        "{answer}"
    );
    let answer = broker
        .compat(
            "POST",
            "/cgi-bin/service/get_corp_token?suite_access_token=stale",
            Some(json!({ "auth_corpid": corpid, "permanent_code": "sdk-held" })),
        )
        .await;
    assert_eq!(answer["access_token"], corp_token.as_str(), "{answer}");
    assert!(answer["expires_in"].as_u64().unwrap() > 0);
    let answer = broker
        .compat(
            "POST",
            "/cgi-bin/service/get_provider_token",
            Some(json!({ "corpid": LITE_PROVIDER })),
        )
        .await;
    assert_eq!(
        answer["errcode"], -1,
        "no provider secret for lite: {answer}"
    );
    assert_eq!(counts(&broker), before, "no upstream call");

    // Permanent codes never come through.
    for path in [
        "/cgi-bin/service/get_permanent_code",
        "/cgi-bin/service/v2/get_permanent_code",
        "/cgi-bin/service/get_auth_info",
    ] {
        let answer = broker
            .compat(
                "POST",
                &format!("{path}?suite_access_token={suite_token}"),
                Some(json!({ "auth_code": "c", "auth_corpid": corpid, "permanent_code": "p" })),
            )
            .await;
        assert_eq!(answer["errcode"], -1, "{path}: {answer}");
    }
    assert_eq!(
        broker.sim.sim.suite_calls("v2/get_permanent_code"),
        1,
        "the broker's own exchange only"
    );
    assert_eq!(broker.sim.sim.suite_calls("get_auth_info"), 0);

    // Other service calls go out with the suite's token.
    let codes = broker.sim.sim.suite_calls("get_pre_auth_code");
    let answer = broker
        .compat(
            "GET",
            &format!("/cgi-bin/service/get_pre_auth_code?suite_access_token={suite_token}"),
            None,
        )
        .await;
    assert!(answer["pre_auth_code"].is_string(), "{answer}");
    assert_eq!(broker.sim.sim.suite_calls("get_pre_auth_code"), codes + 1);
    assert_eq!(counts(&broker), before);
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corps_call_on_the_compatible_listener_goes_with_its_current_token() {
    let (broker, corpids) = start_with_corps(2).await;
    let first = broker.corp_token(&corpids[0]).await;
    let calls = broker.sim.sim.calls(Endpoint::GetApiDomainIp);
    let call = |token: String| {
        let broker = &broker;
        async move {
            broker
                .compat(
                    "GET",
                    &format!("/cgi-bin/get_api_domain_ip?access_token={token}"),
                    None,
                )
                .await
        }
    };
    let answer = call(first.clone()).await;
    assert!(answer["ip_list"].is_array(), "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::GetApiDomainIp), calls + 1);
    // A token the broker never served is no corp's.
    let answer = call("made-up-token".into()).await;
    assert_ne!(answer["errcode"], 0, "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::GetApiDomainIp), calls + 1);

    // The corp's token dies at WeCom before the broker would refresh it:
    // the call is rejected, the token reported and replaced, and the call
    // made once more with the new one.
    broker
        .sim
        .sim
        .advance(CORP_TOKEN_LIFETIME + Duration::from_secs(1));
    assert!(!broker.sim.sim.token_valid(&first));
    let fetches = broker.sim.sim.suite_calls("get_corp_token");
    let answer = call(first.clone()).await;
    assert!(answer["ip_list"].is_array(), "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::GetApiDomainIp), calls + 3);
    assert_eq!(broker.sim.sim.suite_calls("get_corp_token"), fetches + 1);
    let second = broker.corp_token(&corpids[0]).await;
    assert_ne!(second, first);
    assert!(broker.sim.sim.token_valid(&second));
    // A client still holding the replaced token is forwarded with the
    // current one, with no fetch.
    let answer = call(first).await;
    assert!(answer["ip_list"].is_array(), "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::GetApiDomainIp), calls + 4);
    assert_eq!(broker.sim.sim.suite_calls("get_corp_token"), fetches + 1);
    let metrics = broker.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wxbroker_proxied_calls_total{app="crm",client="unknown",outcome="ok"}"#
        ),
        3.0,
        "{metrics}"
    );
    broker.stop().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_a_suite_with_two_installed_corps() {
    use wxbroker::demo;
    let lifetime = Duration::from_secs(120);
    let sim = demo::simulator(lifetime).spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = demo::config(
        &sim.base_url(),
        any,
        &dir.path().join("demo.sock"),
        any,
        any,
        lifetime,
    )
    .expect("the demo's configuration is valid");
    let listeners = Listeners::bind(&config).await.unwrap();
    let (api, compat) = (
        listeners.api_tcp_addr().unwrap(),
        listeners.compat_addr().unwrap(),
    );
    let callback = listeners.callback_addr().unwrap();
    let daemon = wxbroker::start(&config, listeners).await.unwrap();
    let shown = within(demo::suite_showcase(sim.sim.clone(), api, compat, callback)).await;
    let corp_lines = shown
        .lines()
        .filter(|line| line.contains("/v1/suites/crm/corps/") && line.ends_with("/token"))
        .count();
    assert_eq!(corp_lines, demo::INSTALLED_CORPS, "{shown}");
    assert!(shown.contains("/v1/suites/crm/suite_token"), "{shown}");
    let corps: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{api}/v1/suites/crm/corps"))
        .header("wxbroker-client", "tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(corps["total"], 2, "{corps}");
    assert_eq!(sim.sim.installed_corps(demo::SUITE_ID).len(), 2);
    daemon.shutdown().await;
}

// Needs the suite engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customized_corps_gettoken_is_answered_from_its_cache() {
    let (broker, _) = start_with_corps(0).await;
    let installed = broker.sim.sim.install_corp(CUSTOM_SUITE).await.unwrap();
    assert_eq!(installed.status, Some(200));
    let corpid = installed.corpid;
    let body = broker
        .eventually_ok(&format!("/v1/suites/dk/corps/{corpid}/token"))
        .await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(broker.sim.sim.token_valid(&token));
    let fetches = broker.sim.sim.calls(Endpoint::WecomGetToken);
    let answer = broker
        .compat(
            "GET",
            &format!("/cgi-bin/gettoken?corpid={corpid}&corpsecret=sdk-held-permanent-code"),
            None,
        )
        .await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert_eq!(answer["access_token"], token.as_str(), "{answer}");
    assert_eq!(
        broker.sim.sim.calls(Endpoint::WecomGetToken),
        fetches,
        "no upstream call"
    );
    // A corpid no suite or app knows is no 代开发 corp's.
    let answer = broker
        .compat(
            "GET",
            "/cgi-bin/gettoken?corpid=wwnobody&corpsecret=x",
            None,
        )
        .await;
    assert_ne!(answer["errcode"], 0, "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::WecomGetToken), fetches);
    broker.stop().await;
}
