//! `wxbroker demo`: the daemon against the built-in simulator, with short
//! token lifetimes so a newcomer sees refreshes within a minute or two.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::simulator::{AccountKind, SimConfig, Simulator};

/// The simulated accounts: one classic-grant, one stable-grant app.
pub const ACCOUNTS: [(&str, &str, &str, &str); 2] = [
    ("shop", "classic", "wxdemo0000000001", "demo-secret-shop"),
    ("mini", "stable", "wxdemo0000000002", "demo-secret-mini"),
];

/// The demo app that owns JS-SDK tickets.
pub const SHOWCASE_APP: &str = "shop";

/// The page the demo signs a `wx.config` for.
pub const SHOWCASE_PAGE: &str = "https://shop.example.com/pay?order=42#/cart";

/// A simulator whose tokens live `lifetime`, holding the demo accounts.
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
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\nunix_socket = \"{}\"\nsocket_mode = \"0600\"\nmetrics_listen = \"{metrics_listen}\"\nwechat_compat_listen = \"{compat_listen}\"\n\n[store]\nbackend = \"memory\"\n",
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
    Config::from_toml_str("demo", &text)
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
            Err(err) => last = err.to_string(),
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
