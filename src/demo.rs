//! `wxbroker demo`: the daemon against the built-in simulator, with short
//! token lifetimes so a newcomer sees refreshes within a minute or two:
//! two apps, and a WeCom service provider's suite that two corps have
//! installed (the simulated WeCom pushes its tickets and the installs to
//! the broker's callback listener).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::errors::Chain;
use crate::simulator::{AccountKind, SimConfig, SimSuite, Simulator};

/// The simulated accounts: one classic-grant, one stable-grant app.
pub const ACCOUNTS: [(&str, &str, &str, &str); 2] = [
    ("shop", "classic", "wxdemo0000000001", "demo-secret-shop"),
    ("mini", "stable", "wxdemo0000000002", "demo-secret-mini"),
];

/// The demo app that owns JS-SDK tickets.
pub const SHOWCASE_APP: &str = "shop";

/// The page the demo signs a `wx.config` for.
pub const SHOWCASE_PAGE: &str = "https://shop.example.com/pay?order=42#/cart";

/// The demo's WeCom suite: its name, suite id, secret, the provider's
/// corpid, and the callback Token and EncodingAESKey its pushes carry.
pub const SUITE_NAME: &str = "crm";
pub const SUITE_ID: &str = "wwdemosuite00001";
const SUITE_SECRET: &str = "demo-suite-secret";
const PROVIDER_CORPID: &str = "wwdemoprovider01";
const SUITE_TOKEN: &str = "demo-callback-token";
const SUITE_AES_KEY: &str = "demoEncodingAESKey0123456789abcdefghijklmno";
/// How many corps install the demo suite.
pub const INSTALLED_CORPS: usize = 2;
/// WeCom pushes a suite ticket about every 10 minutes.
const TICKET_EVERY: Duration = Duration::from_secs(600);

/// A simulator whose tokens live `lifetime`, holding the demo accounts
/// and the demo suite.
pub fn simulator(lifetime: Duration) -> Simulator {
    let simulator = Simulator::new(SimConfig {
        token_lifetime: lifetime,
        ticket_lifetime: lifetime,
        stable_window: lifetime / 4,
        ..SimConfig::default()
    });
    for (_, _, appid, secret) in ACCOUNTS {
        simulator.add_account(appid, secret, AccountKind::Wechat);
    }
    simulator.add_suite(SimSuite {
        suite_id: SUITE_ID.into(),
        suite_secret: SUITE_SECRET.into(),
        token: SUITE_TOKEN.into(),
        aes_key: SUITE_AES_KEY.into(),
        provider_corpid: PROVIDER_CORPID.into(),
        provider_secret: None,
        customized: false,
    });
    simulator.set_suite_token_lifetime(lifetime);
    simulator
}

/// The broker configuration for the demo: refresh a quarter of a lifetime
/// ahead, so a 2-minute token is replaced every 90 seconds.
pub fn config(
    simulator_url: &str,
    listen: SocketAddr,
    socket: &Path,
    metrics_listen: SocketAddr,
    compat_listen: SocketAddr,
    lifetime: Duration,
) -> Result<Config, ConfigError> {
    let refresh_before = (lifetime / 4).max(Duration::from_secs(1));
    // The callback listener takes the simulated WeCom's pushes; any
    // free port does.
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\nunix_socket = \"{}\"\nsocket_mode = \"0600\"\nmetrics_listen = \"{metrics_listen}\"\nwechat_compat_listen = \"{compat_listen}\"\ncallback_listen = \"127.0.0.1:0\"\n\n[store]\nbackend = \"memory\"\n",
        socket.display()
    );
    for (name, grant, appid, secret) in ACCOUNTS {
        text.push_str(&format!(
            "\n[[apps]]\nname = \"{name}\"\ngrant = \"{grant}\"\nappid = \"{appid}\"\nsecret = \"{secret}\"\nrefresh_before = \"{}s\"\napi_base = \"{simulator_url}\"\n",
            refresh_before.as_secs()
        ));
        if name == SHOWCASE_APP {
            text.push_str("tickets = [\"jsapi\", \"wx_card\"]\n");
        }
    }
    text.push_str(&format!(
        "\n[[suites]]\nname = \"{SUITE_NAME}\"\nsuite_id = \"{SUITE_ID}\"\nprovider_corpid = \"{PROVIDER_CORPID}\"\nsecret = \"{SUITE_SECRET}\"\ntoken = \"{SUITE_TOKEN}\"\naes_key = \"{SUITE_AES_KEY}\"\nrefresh_before = \"{}s\"\napi_base = \"{simulator_url}\"\n",
        refresh_before.as_secs()
    ));
    Config::from_toml_str("demo", &text)
}

/// Once the broker is up, makes the simulated WeCom act for the demo
/// suite: it pushes the suite ticket to the broker's `callback` listener
/// (then every 10 minutes, as WeCom does) and [`INSTALLED_CORPS`] corps
/// install the suite. When the broker serves their tokens, returns what
/// to print: the curl lines for the suite token and each corp's token.
pub async fn suite_showcase(
    simulator: Simulator,
    listen: SocketAddr,
    compat_listen: SocketAddr,
    callback: SocketAddr,
) -> String {
    simulator.set_suite_callback_url(
        SUITE_ID,
        &format!("http://{callback}/wechat/suites/{SUITE_NAME}/callback"),
    );
    // The first ticket now, and the suite token it brings before any
    // install (an install is exchanged with the suite token); then a
    // ticket every 10 minutes for the demo's whole life.
    simulator.push_suite_ticket(SUITE_ID).await;
    let suite_token = format!("/v1/suites/{SUITE_NAME}/suite_token");
    if let Err(last) = served(listen, &suite_token).await {
        return format!("the demo suite has no suite token yet: {last}\n");
    }
    let pusher = simulator.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICKET_EVERY).await;
            pusher.push_suite_ticket(SUITE_ID).await;
        }
    });
    let mut corpids = Vec::with_capacity(INSTALLED_CORPS);
    for _ in 0..INSTALLED_CORPS {
        if let Some(installed) = simulator.install_corp(SUITE_ID).await {
            corpids.push(installed.corpid);
        }
    }
    let curl = format!("curl -s -H 'Wxbroker-Client: demo' http://{listen}/v1/suites/{SUITE_NAME}");
    for corpid in &corpids {
        if let Err(last) = served(
            listen,
            &format!("/v1/suites/{SUITE_NAME}/corps/{corpid}/token"),
        )
        .await
        {
            return format!("the demo suite's corp {corpid} has no token yet: {last}\n");
        }
    }
    let mut text = format!(
        "a WeCom suite '{SUITE_NAME}' ({SUITE_ID}) that {} corps installed; the simulated WeCom pushed its ticket and the installs to the broker's callback (http://{callback}):\n\
         \x20 {curl}/suite_token\n\
         \x20 {curl}/corps\n",
        corpids.len()
    );
    for corpid in &corpids {
        text.push_str(&format!("  {curl}/corps/{corpid}/token\n"));
    }
    text.push_str(&format!(
        "  curl -s -d '{{\"suite_id\":\"{SUITE_ID}\",\"suite_secret\":\"anything\",\"suite_ticket\":\"anything\"}}' http://{compat_listen}/cgi-bin/service/get_suite_token\n"
    ));
    text
}

/// Waits (up to ten seconds) for `path` on the token API to answer 200;
/// the last answer or error otherwise.
async fn served(listen: SocketAddr, path: &str) -> Result<(), String> {
    use crate::client::{send, Target};
    let target = Target::Tcp(format!("http://{listen}"));
    let mut last = String::from("no answer");
    for _ in 0..20 {
        let reply = send(
            &target,
            http::Method::GET,
            path,
            "demo",
            None,
            Duration::from_secs(10),
        )
        .await;
        match reply {
            Ok(reply) if reply.status.is_success() => return Ok(()),
            Ok(reply) => last = String::from_utf8_lossy(&reply.body).into_owned(),
            Err(err) => last = Chain(&err).to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// Once the broker is up, asks it for `wx.config`'s signed object for
/// [`SHOWCASE_PAGE`] the way a web backend would, and returns what to
/// print: the object, ready to paste into a page.
pub async fn signed_wx_config(listen: SocketAddr) -> String {
    use crate::client::{send, Target};
    let target = Target::Tcp(format!("http://{listen}"));
    let body = serde_json::json!({ "url": SHOWCASE_PAGE }).to_string();
    let path = format!("/v1/apps/{SHOWCASE_APP}/jssdk/config");
    let mut last = String::from("no answer");
    // The first ticket needs the first token: a few seconds at most.
    for _ in 0..20 {
        let reply = send(
            &target,
            http::Method::POST,
            &path,
            "demo",
            Some(body.clone().into()),
            Duration::from_secs(10),
        )
        .await;
        match reply {
            Ok(reply) if reply.status.is_success() => {
                return format!(
                    "a signed wx.config for {SHOWCASE_PAGE} (the ticket never leaves the broker):\n  wx.config({{ debug: false, jsApiList: ['chooseWXPay'], ...{} }})\n",
                    String::from_utf8_lossy(&reply.body)
                );
            }
            Ok(reply) => last = String::from_utf8_lossy(&reply.body).into_owned(),
            Err(err) => last = Chain(&err).to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    format!("could not get a signed wx.config: {last}\n")
}

/// What the demo prints once it is up: where to look and what to paste.
pub fn banner(
    listen: SocketAddr,
    socket: &Path,
    metrics_listen: SocketAddr,
    compat_listen: SocketAddr,
    simulator_url: &str,
    lifetime: Duration,
) -> String {
    let socket = socket.display();
    let shop_appid = ACCOUNTS[0].2;
    format!(
        "\nwxbroker demo: a broker in front of a simulated WeChat API ({simulator_url})\n\
         tokens live {lifetime}; each is refreshed a quarter of that before it expires.\n\n\
         token API (tcp):   http://{listen}\n\
         token API (unix):  {socket}\n\
         metrics & probes:  http://{metrics_listen}/metrics  /livez  /readyz\n\
         wechat-compatible: http://{compat_listen}  (point an SDK's API base here; any secret will do)\n\n\
         try:\n\
         \x20 curl -s -H 'Wxbroker-Client: demo' http://{listen}/v1/apps/shop/token\n\
         \x20 curl -s -H 'Wxbroker-Client: demo' 'http://{listen}/v1/apps/mini/token?format=text'\n\
         \x20 curl -s -H 'Wxbroker-Client: demo' http://{listen}/v1/apps/shop/tickets/jsapi\n\
         \x20 curl -s -H 'Wxbroker-Client: demo' -d '{{\"url\":\"https://shop.example.com/pay?order=42\"}}' http://{listen}/v1/apps/shop/jssdk/config\n\
         \x20 curl -s --unix-socket {socket} http://localhost/v1/apps\n\
         \x20 curl -s -X POST -H 'Wxbroker-Client: demo' -d '{{\"access_token\":\"<a token that failed>\"}}' http://{listen}/v1/apps/shop/token/invalidate\n\
         \x20 curl -s http://{metrics_listen}/metrics | grep ^wxbroker_token\n\
         \x20 curl -s 'http://{compat_listen}/cgi-bin/token?grant_type=client_credential&appid={shop_appid}&secret=anything'\n\
         \x20 curl -s 'http://{compat_listen}/cgi-bin/getcallbackip?appid={shop_appid}&access_token=whatever'\n\
         \x20 curl -s 'http://{compat_listen}/cgi-bin/ticket/getticket?appid={shop_appid}&access_token=whatever&type=jsapi'\n\
         \x20 cargo run --release -- token --app shop\n\n\
         watch the log for \"access_token refreshed\" and \"jsapi_ticket refreshed\"; Ctrl-C stops.\n",
        lifetime = humantime::format_duration(lifetime),
    )
}
