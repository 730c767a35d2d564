//! WeChat Open Platform (DESIGN.md section 13) end to end: the simulator
//! pushes encrypted verify tickets and authorizations to the broker's
//! callback listener over real HTTP, and the broker serves component and
//! authorizer tokens that the simulator then judges.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::within;
use wxbroker::config::Config;
use wxbroker::platform::authorizers::SchedulerTuning;
use wxbroker::platform::store::{FilePlatformStore, PlatformStore};
use wxbroker::simulator::{SimConfig, SimHandle, Simulator};
use wxbroker::{Daemon, Listeners, Tuning};

const COMPONENT: &str = "wxcomponent0000001";
const SECRET: &str = "component-s3cr3t-0123456789";
const MSG_TOKEN: &str = "message-token-01";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

async fn simulator() -> SimHandle {
    let sim = Simulator::new(SimConfig::default());
    sim.add_component(COMPONENT, SECRET, MSG_TOKEN, AES_KEY);
    sim.spawn().await.expect("simulator starts")
}

struct Platform {
    daemon: Option<Daemon>,
    api: SocketAddr,
    callback: SocketAddr,
    metrics: SocketAddr,
    compat: SocketAddr,
    http: reqwest::Client,
}

/// A broker with one platform `saas` against `sim`, its store `store`
/// (a `[store]` section), the simulator's pushes aimed at it.
async fn start(sim: &SimHandle, store: &str, rate: u32) -> Platform {
    start_tuned(
        sim,
        store,
        SchedulerTuning {
            fetch_rate: rate,
            concurrency: 8,
            ..SchedulerTuning::default()
        },
    )
    .await
}

async fn start_tuned(sim: &SimHandle, store: &str, authorizers: SchedulerTuning) -> Platform {
    start_configured(sim, store, authorizers, "").await
}

/// As [`start_tuned`], with `platform` (more keys) added to the platform.
async fn start_configured(
    sim: &SimHandle,
    store: &str,
    authorizers: SchedulerTuning,
    platform: &str,
) -> Platform {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncallback_listen = \"127.0.0.1:0\"\nwechat_compat_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ntoken_wait_timeout = \"5s\"\n{store}\n[[platforms]]\nname = \"saas\"\ncomponent_appid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\ntoken = \"{MSG_TOKEN}\"\naes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n{platform}",
        sim.base_url()
    );
    let config = Config::from_toml_str("platform.toml", &text).expect("valid config");
    let listeners = Listeners::bind(&config).await.expect("binds");
    let api = listeners.api_tcp_addr().unwrap();
    let callback = listeners.callback_addr().unwrap();
    let metrics = listeners.metrics_addr().unwrap();
    let compat = listeners.compat_addr().unwrap();
    sim.sim.set_callback_url(
        COMPONENT,
        &format!("http://{callback}/wechat/platforms/saas/callback"),
    );
    let tuning = Tuning {
        authorizers,
        ..Tuning::default()
    };
    let daemon = wxbroker::start_with(&config, listeners, tuning)
        .await
        .expect("broker starts");
    Platform {
        daemon: Some(daemon),
        api,
        callback,
        metrics,
        compat,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Platform {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.api))
            .header("wxbroker-client", "tests")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn callback(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> u16 {
        self.http
            .post(format!("http://{}{path_and_query}", self.callback))
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

    async fn component_token(&self) -> String {
        let (status, body) = self.get("/v1/platforms/saas/component_token").await;
        assert_eq!(status, 200, "{body}");
        body["component_access_token"].as_str().unwrap().to_owned()
    }

    async fn authorizer_token(&self, appid: &str) -> Option<String> {
        let (status, body) = self
            .get(&format!("/v1/platforms/saas/authorizers/{appid}/token"))
            .await;
        (status == 200).then(|| body["access_token"].as_str().unwrap().to_owned())
    }

    async fn stop(mut self) {
        self.daemon.take().unwrap().shutdown().await;
    }
}

/// Polls until `done` holds, asking again every 20 ms.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    within(async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = what;
}

#[tokio::test]
async fn a_ticket_push_makes_one_component_token_fetch() {
    let sim = simulator().await;
    let broker = start(&sim, "", 20).await;
    // No ticket yet: the broker asks WeChat to push one, and fetches with it.
    let token = within(broker.component_token()).await;
    assert!(token.starts_with("componenttoken_"));
    assert_eq!(sim.sim.component_calls("api_start_push_ticket"), 1);
    assert_eq!(sim.sim.component_calls("api_component_token"), 1);
    // More pushes change the ticket, not the token.
    assert_eq!(sim.sim.push_verify_ticket(COMPONENT).await, Some(200));
    assert_eq!(broker.component_token().await, token);
    assert_eq!(sim.sim.component_calls("api_component_token"), 1);
    broker.stop().await;
}

#[tokio::test]
async fn forged_or_broken_pushes_get_403_and_change_nothing() {
    support::captured_logs();
    let sim = simulator().await;
    let broker = start(&sim, "", 20).await;
    let component = broker.component_token().await;
    let route = "/wechat/platforms/saas/callback";
    let inner = format!(
        "<xml><AppId><![CDATA[{COMPONENT}]]></AppId><InfoType><![CDATA[unknown_kind]]></InfoType></xml>"
    );
    let good = sim.sim.seal_push(COMPONENT, &inner).unwrap();
    assert_eq!(
        broker
            .callback(&format!("{route}?{}", good.query), good.body.clone())
            .await,
        200
    );

    let push = sim.sim.seal_push(COMPONENT, &inner).unwrap();
    let forged_signature = push.query.replace("msg_signature=", "msg_signature=0");
    let stale = push.query.replacen("timestamp=", "timestamp=1", 1);
    let truncated = push.body[..push.body.len() - 40].to_owned() + "]]></Encrypt></xml>";
    // The same key, another appid: decrypts, but is not this platform's.
    sim.sim
        .add_component("wxsomeoneelse00001", SECRET, MSG_TOKEN, AES_KEY);
    let foreign = sim.sim.seal_push("wxsomeoneelse00001", &inner).unwrap();
    let cases: Vec<(&str, String, String, u16)> = vec![
        ("wrong signature", forged_signature, push.body.clone(), 403),
        ("stale timestamp", stale, push.body.clone(), 403),
        (
            "wrong appid",
            foreign.query.clone(),
            foreign.body.clone(),
            403,
        ),
        ("truncated", push.query.clone(), truncated, 403),
        ("not xml", push.query.clone(), "{\"Encrypt\":1}".into(), 403),
        ("no query", String::new(), push.body.clone(), 403),
        ("oversize", push.query.clone(), "x".repeat(70 * 1024), 413),
    ];
    for (what, query, body, status) in cases {
        assert_eq!(
            broker.callback(&format!("{route}?{query}"), body).await,
            status,
            "{what}"
        );
    }
    assert_eq!(
        broker
            .callback("/wechat/platforms/other/callback", "x")
            .await,
        404
    );
    assert_eq!(
        broker
            .callback("/v1/platforms/saas/component_token", "x")
            .await,
        404
    );
    let metrics = broker.metrics_text().await;
    assert!(
        metrics.contains(
            "wxbroker_platform_callbacks_total{outcome=\"accepted\",platform=\"saas\"} 2"
        ),
        "only the ticket push and the good push were accepted:\n{metrics}"
    );
    let encrypted = push
        .body
        .split("CDATA[")
        .nth(2)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    let logs = support::captured_logs();
    assert!(
        logs.contains("refused a callback push"),
        "refusals are logged"
    );
    for secret in [SECRET, MSG_TOKEN, AES_KEY, &component, encrypted] {
        assert!(!metrics.contains(secret));
        assert!(!logs.contains(secret), "a secret reached the log");
    }
    assert_eq!(sim.sim.component_calls("api_component_token"), 1);
    broker.stop().await;
}

#[tokio::test]
async fn authorized_gives_a_valid_token_and_unauthorized_drops_it() {
    let sim = simulator().await;
    let broker = start(&sim, "", 20).await;
    broker.component_token().await;
    let (appid, status) = sim.sim.authorize_new(COMPONENT).await;
    assert_eq!(status, Some(200));
    eventually("the authorizer's token", || {
        let broker = &broker;
        let appid = appid.clone();
        async move { broker.authorizer_token(&appid).await.is_some() }
    })
    .await;
    let token = broker.authorizer_token(&appid).await.unwrap();
    assert!(sim.sim.token_valid(&token), "the simulator accepts it");
    let (status, list) = broker.get("/v1/platforms/saas/authorizers").await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
    assert_eq!(list["authorizers"][0]["appid"], appid.as_str());
    assert!(
        !list.to_string().contains(&token),
        "the list never shows a token"
    );

    assert_eq!(sim.sim.unauthorize(COMPONENT, &appid).await, Some(200));
    let path = format!("/v1/platforms/saas/authorizers/{appid}/token");
    eventually("the authorizer gone", || {
        let broker = &broker;
        let path = path.clone();
        async move { broker.get(&path).await.0 == 404 }
    })
    .await;
    let (_, body) = broker.get(&path).await;
    assert_eq!(body["error"]["code"], "authorizer_not_found");
    let (status, body) = broker.get("/v1/platforms/nope/component_token").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("platform_not_found"))
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_thousand_authorizers_are_recovered_page_by_page() {
    let sim = simulator().await;
    let appids = sim.sim.add_authorizers(COMPONENT, 1000);
    let broker = start(&sim, "", 2000).await;
    eventually("every authorizer recovered and valid", || {
        let broker = &broker;
        async move {
            let metrics = broker.metrics_text().await;
            metrics.contains("wxbroker_authorizers{platform=\"saas\",state=\"valid\"} 1000")
        }
    })
    .await;
    assert_eq!(sim.sim.component_calls("api_get_authorizer_list"), 2);
    assert_eq!(sim.sim.component_calls("api_authorizer_token"), 1000);
    for appid in &appids {
        let token = broker.authorizer_token(appid).await.expect("served");
        assert!(sim.sim.token_valid(&token), "{appid}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_every_refresh_token_and_fetches_nothing() {
    let sim = simulator().await;
    let appids = sim.sim.add_authorizers(COMPONENT, 50);
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\nbackend = \"file\"\npath = \"{}\"\n",
        dir.path().display()
    );
    let broker = start(&sim, &store, 1000).await;
    eventually("all authorizers valid", || {
        let broker = &broker;
        async move {
            broker
                .metrics_text()
                .await
                .contains("wxbroker_authorizers{platform=\"saas\",state=\"valid\"} 50")
        }
    })
    .await;
    broker.stop().await;
    // Refresh tokens rotated on every fetch: the store holds the live ones.
    let stored = FilePlatformStore::new(dir.path(), "saas", COMPONENT)
        .load_authorizers()
        .await
        .unwrap();
    assert_eq!(stored.len(), 50);
    for record in &stored {
        assert_eq!(
            Some(record.refresh_token.clone()),
            sim.sim.refresh_token_of(&record.appid),
            "{}",
            record.appid
        );
    }
    let fetches = sim.sim.component_calls("api_authorizer_token");
    let lists = sim.sim.component_calls("api_get_authorizer_list");
    let broker = start(&sim, &store, 1000).await;
    for appid in &appids {
        let token = broker
            .authorizer_token(appid)
            .await
            .expect("served from the store");
        assert!(sim.sim.token_valid(&token));
    }
    assert_eq!(
        sim.sim.component_calls("api_authorizer_token"),
        fetches,
        "a warm restart fetches no authorizer"
    );
    assert_eq!(sim.sim.component_calls("api_get_authorizer_list"), lists);
    broker.stop().await;
}

/// Every authorizer's token as `broker` serves it now.
async fn tokens_of(broker: &Platform, appids: &[String]) -> Vec<Option<String>> {
    let mut tokens = Vec::with_capacity(appids.len());
    for appid in appids {
        tokens.push(broker.authorizer_token(appid).await);
    }
    tokens
}

#[tokio::test]
async fn a_fleet_of_three_makes_one_fleets_worth_of_fetches() {
    let redis = support::RedisServer::start().await;
    let store = support::redis_store(&redis.url());
    let sim = simulator().await;
    // Short first lifetimes, so a second round of refreshes comes within
    // the test (at half of them).
    sim.sim
        .set_authorizer_token_lifetime(Duration::from_secs(30));
    let appids = sim.sim.add_authorizers(COMPONENT, 200);
    // Pushes reach the first broker only; the others read the shared store.
    let fleet = [
        start(&sim, &store, 1000).await,
        start(&sim, &store, 1000).await,
        start(&sim, &store, 1000).await,
    ];
    sim.sim.set_callback_url(
        COMPONENT,
        &format!(
            "http://{}/wechat/platforms/saas/callback",
            fleet[0].callback
        ),
    );
    sim.sim.push_verify_ticket(COMPONENT).await;
    let mut first_round = Vec::new();
    for broker in &fleet {
        eventually("every authorizer valid on every broker", || async {
            broker
                .metrics_text()
                .await
                .contains("wxbroker_authorizers{platform=\"saas\",state=\"valid\"} 200")
        })
        .await;
        first_round.push(tokens_of(broker, &appids).await);
    }
    assert_eq!(
        sim.sim.component_calls("api_authorizer_token"),
        200,
        "one fetch per authorizer for the whole fleet"
    );
    assert_eq!(sim.sim.component_calls("api_component_token"), 1);
    // Tokens of the second round live long: no third round in the test.
    sim.sim
        .set_authorizer_token_lifetime(Duration::from_secs(3600));
    // The second round: each broker ends up serving new tokens...
    for (broker, before) in fleet.iter().zip(&first_round) {
        eventually("the second round on every broker", || async {
            let now = tokens_of(broker, &appids).await;
            now.iter()
                .zip(before)
                .all(|(now, before)| now.is_some() && now != before)
        })
        .await;
        for token in tokens_of(broker, &appids).await.into_iter().flatten() {
            assert!(sim.sim.token_valid(&token));
        }
    }
    // ...fetched once for the fleet.
    assert_eq!(sim.sim.component_calls("api_authorizer_token"), 400);
    for broker in fleet {
        broker.stop().await;
    }
}

/// The value of the metric series `series` (name and labels), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_fleet_shares_one_authorizer_daily_budget() {
    let redis = support::RedisServer::start().await;
    let store = support::redis_store(&redis.url());
    let sim = simulator().await;
    let appids = sim.sim.add_authorizers(COMPONENT, 6);
    let budget = "authorizer_daily_budget = 4\n";
    let tuning = SchedulerTuning {
        fetch_rate: 1000,
        concurrency: 8,
        ..SchedulerTuning::default()
    };
    let fleet = [
        start_configured(&sim, &store, tuning, budget).await,
        start_configured(&sim, &store, tuning, budget).await,
    ];
    sim.sim.set_callback_url(
        COMPONENT,
        &format!(
            "http://{}/wechat/platforms/saas/callback",
            fleet[0].callback
        ),
    );
    sim.sim.push_verify_ticket(COMPONENT).await;
    // Every broker tries every authorizer: four are fetched for the
    // fleet, the other two are refused by the fleet's budget and held.
    for broker in &fleet {
        eventually("four valid and two held on every broker", || async {
            let text = broker.metrics_text().await;
            metric(
                &text,
                "wxbroker_authorizers{platform=\"saas\",state=\"valid\"}",
            ) == 4.0
                && metric(
                    &text,
                    "wxbroker_authorizers_held{platform=\"saas\",reason=\"budget\"}",
                ) == 2.0
        })
        .await;
    }
    assert_eq!(
        sim.sim.component_calls("api_authorizer_token"),
        4,
        "the budget is the fleet's, not each broker's"
    );
    let refused: f64 = {
        let mut sum = 0.0;
        for broker in &fleet {
            sum += metric(
                &broker.metrics_text().await,
                "wxbroker_authorizer_fetches_total{platform=\"saas\",result=\"budget\"}",
            );
        }
        sum
    };
    assert!(refused >= 2.0, "refusals are counted: {refused}");
    // The four fetched tokens are served on every broker; a held
    // authorizer without a token is answered at once, not after
    // token_wait_timeout (5 s).
    for broker in &fleet {
        let asked = std::time::Instant::now();
        let served = tokens_of(broker, &appids).await;
        assert_eq!(served.iter().flatten().count(), 4);
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "{:?}",
            asked.elapsed()
        );
    }
    // One counter for the fleet, beside the platform's other keys.
    let day = wxbroker::clock::beijing_day(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let counted: u32 = redis::cmd("GET")
        .arg(format!("{{test:{COMPONENT}:authorizers}}:fetches:{day}"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(counted >= 4, "{counted}");
    for broker in fleet {
        broker.stop().await;
    }
}

#[tokio::test]
async fn sigkill_loses_no_refresh_token() {
    let sim = simulator().await;
    sim.sim.set_refresh_token_rotation(true);
    let appids = sim.sim.add_authorizers(COMPONENT, 60);
    let dir = tempfile::tempdir().unwrap();
    let (api, callback) = (support::free_port(), support::free_port());
    let config_path = dir.path().join("wxbroker.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\ncallback_listen = \"127.0.0.1:{callback}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n[[platforms]]\nname = \"saas\"\ncomponent_appid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\ntoken = \"{MSG_TOKEN}\"\naes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n",
            dir.path().join("state").display(),
            sim.base_url()
        ),
    )
    .unwrap();
    sim.sim.set_callback_url(
        COMPONENT,
        &format!("http://127.0.0.1:{callback}/wechat/platforms/saas/callback"),
    );
    let last = format!(
        "http://127.0.0.1:{api}/v1/platforms/saas/authorizers/{}/token",
        appids.last().unwrap()
    );
    let mut broker = support::ChildBroker::spawn(&config_path, "warn");
    broker.wait_ready(&last).await;
    // Every authorizer refreshed (and its rotated refresh token stored
    // before its token was served), then no chance to clean up.
    support::wait_until("every authorizer fetched", || {
        sim.sim.component_calls("api_authorizer_token") == 60
    })
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for appid in &appids {
        let url = format!("http://127.0.0.1:{api}/v1/platforms/saas/authorizers/{appid}/token");
        let status = http
            .get(&url)
            .header("wxbroker-client", "tests")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{appid}");
    }
    broker.kill();
    let stored = FilePlatformStore::new(&dir.path().join("state"), "saas", COMPONENT)
        .load_authorizers()
        .await
        .unwrap();
    assert_eq!(stored.len(), 60);
    for record in &stored {
        assert_eq!(
            sim.sim.refresh_token_of(&record.appid).as_deref(),
            Some(record.refresh_token.as_str()),
            "{}: the stored refresh token is the one WeChat holds",
            record.appid
        );
    }
    let mut broker = support::ChildBroker::spawn(&config_path, "warn");
    broker.wait_ready(&last).await;
    assert_eq!(
        sim.sim.component_calls("api_authorizer_token"),
        60,
        "the restart fetched no authorizer"
    );
    broker.terminate();
}

#[tokio::test]
async fn the_compatible_listener_serves_component_sdks() {
    let sim = simulator().await;
    let broker = start(&sim, "", 20).await;
    let component = broker.component_token().await;
    let (appid, _) = sim.sim.authorize_new(COMPONENT).await;
    eventually("the authorizer's token", || {
        let (broker, appid) = (&broker, appid.clone());
        async move { broker.authorizer_token(&appid).await.is_some() }
    })
    .await;
    let authorizer = broker.authorizer_token(&appid).await.unwrap();
    let compat = |path: &str| format!("http://{}{path}", broker.compat);
    let post = |path: String, body: Value| {
        let http = broker.http.clone();
        async move {
            http.post(path)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let fetches = sim.sim.component_calls("api_component_token");
    // From the cache, whatever secret and ticket the SDK sends.
    let answer = post(
        compat("/cgi-bin/component/api_component_token"),
        serde_json::json!({"component_appid": COMPONENT, "component_appsecret": "wrong", "component_verify_ticket": "old"}),
    )
    .await;
    assert_eq!(
        answer["component_access_token"],
        component.as_str(),
        "{answer}"
    );
    let answer = post(
        compat("/cgi-bin/component/api_authorizer_token?component_access_token=stale"),
        serde_json::json!({"component_appid": COMPONENT, "authorizer_appid": appid, "authorizer_refresh_token": "sdk-held"}),
    )
    .await;
    assert_eq!(
        answer["authorizer_access_token"],
        authorizer.as_str(),
        "{answer}"
    );
    assert_eq!(sim.sim.component_calls("api_component_token"), fetches);
    assert_eq!(sim.sim.component_calls("api_authorizer_token"), 0);
    // Other component calls go out with the broker's component token.
    let answer = post(
        compat("/cgi-bin/component/api_create_preauthcode?component_access_token=stale"),
        serde_json::json!({"component_appid": COMPONENT}),
    )
    .await;
    assert!(answer["pre_auth_code"].is_string(), "{answer}");
    // An authorizer's call is recognised by the token it holds.
    let answer: Value = broker
        .http
        .get(compat(&format!(
            "/cgi-bin/getcallbackip?access_token={authorizer}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["ip_list"].is_array(), "{answer}");
    let refused = post(
        compat("/cgi-bin/component/api_query_auth?component_access_token=x"),
        serde_json::json!({"component_appid": COMPONENT, "authorization_code": "c"}),
    )
    .await;
    assert_eq!(refused["errcode"], -1);
    assert_eq!(
        sim.sim.component_calls("api_query_auth"),
        1,
        "only the broker's own exchange"
    );

    // The token API's side: the authorizer proxy, pre-auth codes, and an
    // invalidation of a token too young to refresh.
    let (status, body) = broker
        .get(&format!(
            "/v1/platforms/saas/authorizers/{appid}/proxy/cgi-bin/getcallbackip"
        ))
        .await;
    assert_eq!(status, 200);
    assert!(body["ip_list"].is_array(), "{body}");
    let answer: Value = broker
        .http
        .post(format!(
            "http://{}/v1/platforms/saas/pre_auth_code",
            broker.api
        ))
        .header("wxbroker-client", "tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["pre_auth_code"].is_string(), "{answer}");
    let answer: Value = broker
        .http
        .post(format!(
            "http://{}/v1/platforms/saas/authorizers/{appid}/token/invalidate",
            broker.api
        ))
        .header("wxbroker-client", "tests")
        .json(&serde_json::json!({ "access_token": authorizer }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["access_token"], authorizer.as_str(), "{answer}");
    assert_eq!(answer["refreshed"], false);
    // Three calls were forwarded (a component call and an authorizer's on
    // the compatible listener, one through the authorizer proxy), each
    // audited under the platform's name; the cache answers were not.
    let metrics = broker.metrics_text().await;
    assert!(
        metrics.lines().any(|line| line
            == r#"wxbroker_proxied_calls_total{app="saas",client="unknown",outcome="ok"} 3"#),
        "{metrics}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn the_simulator_pushes_tickets_on_a_timer() {
    let sim = simulator().await;
    let broker = start(&sim, "", 20).await;
    broker.component_token().await;
    let pusher = sim
        .sim
        .spawn_ticket_pusher(COMPONENT, Duration::from_millis(50));
    eventually("three more accepted pushes", || async {
        broker
            .metrics_text()
            .await
            .lines()
            .find(|line| line.starts_with("wxbroker_platform_callbacks_total{outcome=\"accepted\""))
            .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .is_some_and(|accepted| accepted >= 4)
    })
    .await;
    pusher.abort();
    // New tickets alone make no component token fetch.
    assert_eq!(sim.sim.component_calls("api_component_token"), 1);
    broker.stop().await;
}

#[tokio::test]
async fn a_refused_verify_ticket_brings_a_new_push() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\nbackend = \"file\"\npath = \"{}\"\n",
        dir.path().display()
    );
    let broker = start(&sim, &store, 20).await;
    broker.component_token().await;
    broker.stop().await;
    // The stored ticket is stale at WeChat, and the component token must
    // be fetched anew.
    sim.sim.forget_verify_tickets(COMPONENT);
    std::fs::remove_file(dir.path().join("saas.component_access_token.json")).unwrap();
    let pushes = sim.sim.component_calls("api_start_push_ticket");
    let broker = start(&sim, &store, 20).await;
    let token = within(async {
        loop {
            let (status, body) = broker.get("/v1/platforms/saas/component_token").await;
            if status == 200 {
                break body["component_access_token"].as_str().unwrap().to_owned();
            }
        }
    })
    .await;
    assert!(token.starts_with("componenttoken_"));
    assert_eq!(
        sim.sim.component_calls("api_start_push_ticket"),
        pushes + 1,
        "61006 asked for one new push"
    );
    assert_eq!(
        sim.sim.component_calls("api_component_token"),
        3,
        "one fetch in the first life; a refused one and a good one in the second"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_reported_authorizer_token_is_replaced_once() {
    let sim = simulator().await;
    let broker = start_tuned(
        &sim,
        "",
        SchedulerTuning {
            min_forced_interval: Duration::ZERO,
            ..SchedulerTuning::default()
        },
    )
    .await;
    broker.component_token().await;
    let (appid, _) = sim.sim.authorize_new(COMPONENT).await;
    eventually("the authorizer's token", || {
        let (broker, appid) = (&broker, appid.clone());
        async move { broker.authorizer_token(&appid).await.is_some() }
    })
    .await;
    let first = broker.authorizer_token(&appid).await.unwrap();
    let answer: Value = broker
        .http
        .post(format!(
            "http://{}/v1/platforms/saas/authorizers/{appid}/token/invalidate",
            broker.api
        ))
        .header("wxbroker-client", "tests")
        .json(&serde_json::json!({ "access_token": first }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["refreshed"], true, "{answer}");
    let second = answer["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(sim.sim.token_valid(&second));
    assert_eq!(sim.sim.component_calls("api_authorizer_token"), 1);
    // Reported again, the replaced token changes nothing.
    let answer: Value = broker
        .http
        .post(format!(
            "http://{}/v1/platforms/saas/authorizers/{appid}/token/invalidate",
            broker.api
        ))
        .header("wxbroker-client", "tests")
        .json(&serde_json::json!({ "access_token": first }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            answer["refreshed"].as_bool(),
            answer["access_token"].as_str()
        ),
        (Some(false), Some(second.as_str()))
    );
    assert_eq!(sim.sim.component_calls("api_authorizer_token"), 1);
    broker.stop().await;
}

/// WeChat rejects an authorizer's token that the broker may not replace
/// yet (younger than `min_forced_interval`): a forwarded call answers
/// that no token can be had, on the token API and on the compatible
/// listener alike, and never hands WeChat's rejection back as an answer
/// (an SDK would retry it at once, without end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_component_token_with_no_newer_one_is_never_handed_back() {
    let sim = simulator().await;
    // The default min_forced_interval (30 s): the component token just
    // fetched is too young to replace.
    let broker = start(&sim, "", 20).await;
    let token = broker.component_token().await;
    // The token dies at WeChat while the broker still holds it valid.
    sim.sim.advance(Duration::from_secs(7201));
    let fetches = sim.sim.component_calls("api_component_token");

    let answer: Value = broker
        .http
        .post(format!(
            "http://{}/cgi-bin/component/api_get_authorizer_info?component_access_token={token}",
            broker.compat
        ))
        .json(&serde_json::json!({ "component_appid": COMPONENT, "authorizer_appid": "wxanyauthorizer01" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["errcode"], -1,
        "WeChat's rejection is not handed back: {answer}"
    );
    assert!(
        answer["errmsg"].as_str().unwrap().contains("rejected"),
        "{answer}"
    );
    assert_eq!(
        sim.sim.component_calls("api_get_authorizer_info"),
        1,
        "sent once: no newer token to send it with"
    );
    assert_eq!(
        sim.sim.component_calls("api_component_token"),
        fetches,
        "no refresh was allowed yet"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_rejected_authorizer_token_with_no_newer_one_is_never_handed_back() {
    let sim = simulator().await;
    // The default min_forced_interval (30 s): the token just fetched is
    // too young to replace.
    let broker = start(&sim, "", 20).await;
    broker.component_token().await;
    let (appid, _) = sim.sim.authorize_new(COMPONENT).await;
    eventually("the authorizer's token", || {
        let (broker, appid) = (&broker, appid.clone());
        async move { broker.authorizer_token(&appid).await.is_some() }
    })
    .await;
    let token = broker.authorizer_token(&appid).await.unwrap();
    // The token dies at WeChat while the broker still holds it valid.
    sim.sim.advance(Duration::from_secs(7201));
    assert!(!sim.sim.token_valid(&token));
    let fetches = sim.sim.component_calls("api_authorizer_token");

    let (status, body) = broker
        .get(&format!(
            "/v1/platforms/saas/authorizers/{appid}/proxy/cgi-bin/getcallbackip"
        ))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "token_unavailable", "{body}");
    let errcode = body["error"]["errcode"].as_i64();
    assert!(matches!(errcode, Some(40001 | 42001)), "{body}");

    let answer: Value = broker
        .http
        .get(format!(
            "http://{}/cgi-bin/getcallbackip?access_token={token}",
            broker.compat
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errcode"], -1, "{answer}");
    assert!(
        answer["errmsg"].as_str().unwrap().contains("rejected"),
        "{answer}"
    );
    assert_eq!(
        sim.sim.component_calls("api_authorizer_token"),
        fetches,
        "no refresh was allowed yet"
    );
    broker.stop().await;
}
