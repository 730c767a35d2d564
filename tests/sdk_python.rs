//! wechatpy (pinned by scripts/install-sdks.sh) against the compatible
//! listener: pointed there by its own `API_BASE_URL` settings, and once
//! with no change at all through transparent mode (DESIGN.md section 12).
//! The SDK is only ever given a placeholder secret: the broker owns the
//! real one.

mod support;

use serde_json::{json, Value};
use support::sdk::{
    compat_broker, install, revocable_simulator, Driver, Launch, TlsFiles, FORCED,
    PLACEHOLDER_SECRET,
};
use support::*;
use wxbroker::simulator::Endpoint;

async fn wechatpy(broker: &Broker) -> Driver {
    install("python").await;
    Driver::start(
        "wechatpy",
        Launch::wechatpy(),
        json!({ "appid": APPID, "secret": PLACEHOLDER_SECRET, "base": broker.compat_url("") }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_gets_the_brokers_token() {
    let sim = revocable_simulator().await;
    let broker = compat_broker(&sim, "").await;
    let before = sim.sim.total_token_calls();
    let mut sdk = wechatpy(&broker).await;
    let token = sdk.ok("token", Value::Null).await;
    assert_eq!(token, broker.token("shop").await.as_str());
    assert_eq!(sim.sim.total_token_calls(), before, "served from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_calls_app_token_apis() {
    let sim = revocable_simulator().await;
    let broker = compat_broker(&sim, "").await;
    let mut sdk = wechatpy(&broker).await;
    let ips = sdk.ok("callback_ip", Value::Null).await;
    assert!(!ips.as_array().expect("a list").is_empty(), "{ips}");
    let answer = sdk
        .ok(
            "cloud_function",
            json!({ "env": "prod-1", "name": "hello", "data": { "x": 1 } }),
        )
        .await;
    assert_eq!(
        answer,
        json!({ "env": "prod-1", "name": "hello", "event": { "x": 1 } })
    );
    let openid = sim.sim.add_user(APPID);
    let user = sdk.ok("user_info", json!({ "openid": openid })).await;
    assert_eq!(user["openid"], openid.as_str(), "{user}");
    assert_eq!(sim.sim.calls(Endpoint::GetCallbackIp), 1);
    assert_eq!(sim.sim.calls(Endpoint::InvokeCloudFunction), 1);
    assert_eq!(sim.sim.calls(Endpoint::UserInfo), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_survives_a_token_revoked_behind_the_brokers_back() {
    let sim = revocable_simulator().await;
    let broker = compat_broker(&sim, "").await;
    let mut sdk = wechatpy(&broker).await;
    let held = sdk.ok("token", Value::Null).await;
    let held = held.as_str().unwrap();
    sim.sim
        .issue_classic_directly(APPID)
        .expect("another party fetches a token");
    assert!(!sim.sim.token_valid(held), "the broker's token is revoked");
    let token_calls = sim.sim.calls(Endpoint::Token);
    let ips = sdk.ok("callback_ip", Value::Null).await;
    assert!(!ips.as_array().expect("a list").is_empty(), "{ips}");
    assert!(
        sim.sim.token_valid(&broker.token("shop").await),
        "the broker holds a valid token again"
    );
    assert_eq!(
        sim.sim.calls(Endpoint::GetCallbackIp),
        2,
        "the rejected call and one retry, never the SDK's own retry loop"
    );
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        token_calls + 1,
        "one refresh"
    );
}

/// `media/get` answers a rejection as `text/plain`: the broker must see
/// the 40001 in it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_downloads_media_after_a_revocation() {
    let sim = revocable_simulator().await;
    let broker = compat_broker(&sim, "").await;
    let media_id = sim.sim.add_media(APPID, b"\xff\xd8\xff\xe0 jpeg");
    let mut sdk = wechatpy(&broker).await;
    let media = sdk.ok("media", json!({ "media_id": media_id })).await;
    assert_eq!(media["hex"], hex(b"\xff\xd8\xff\xe0 jpeg"), "{media}");
    sim.sim.issue_classic_directly(APPID).unwrap();
    let media = sdk.ok("media", json!({ "media_id": media_id })).await;
    assert_eq!(media["hex"], hex(b"\xff\xd8\xff\xe0 jpeg"), "{media}");
    assert_eq!(media["content_type"], "image/jpeg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_oauth_userinfo_costs_no_app_token() {
    let sim = revocable_simulator().await;
    let broker = compat_broker(&sim, "").await;
    let mut sdk = wechatpy(&broker).await;
    let code = sim.sim.mint_oauth_code(APPID);
    let before = sim.sim.calls(Endpoint::Token);
    let answer = sdk.ok("oauth_userinfo", json!({ "code": code })).await;
    let openid = answer["grant"]["openid"].as_str().expect("an openid");
    assert_eq!(answer["info"]["openid"], openid, "{answer}");
    assert_eq!(sim.sim.calls(Endpoint::SnsUserInfo), 1);
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        before,
        "a user-token call costs no app-token fetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_jscode2session_without_the_secret() {
    let sim = revocable_simulator().await;
    let broker = compat_broker(&sim, "").await;
    let mut sdk = wechatpy(&broker).await;
    let js_code = sim.sim.mint_js_code(APPID);
    let session = sdk
        .ok("jscode2session", json!({ "js_code": js_code }))
        .await;
    assert!(session["openid"].as_str().is_some(), "{session}");
    assert!(session["session_key"].as_str().is_some(), "{session}");
    assert_eq!(sim.sim.calls(Endpoint::JsCode2Session), 1);
}

/// wechatpy exactly as shipped: it calls https://api.weixin.qq.com, which
/// only its own process resolves to 127.0.0.1, where the compatible
/// listener serves TLS with a certificate from `wxbroker tls init`. The
/// broker's own upstream calls are pinned to the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_unchanged_in_transparent_mode() {
    let tls = TlsFiles::init();
    let sim = revocable_simulator().await;
    let apps = format!(
        "[upstream]\nconnect_to = {{ \"api.weixin.qq.com\" = \"{}\" }}\n\n[[apps]]\nname = \"shop\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\napi_base = \"http://api.weixin.qq.com\"\n{FORCED}\n",
        sim.addr
    );
    let broker = Broker::start_with(
        &apps,
        Options {
            compat: true,
            compat_addr: Some("127.0.0.1:443".parse().unwrap()),
            server: tls.server_section(),
            ..Options::default()
        },
    )
    .await;
    let token = broker.token("shop").await;
    install("python").await;
    let mut sdk = Driver::start(
        "wechatpy",
        Launch::wechatpy()
            .env("REQUESTS_CA_BUNDLE", tls.ca_path().display().to_string())
            .private_hosts(),
        json!({ "appid": APPID, "secret": PLACEHOLDER_SECRET }),
    )
    .await;
    assert_eq!(sdk.ok("token", Value::Null).await, token.as_str());
    let ips = sdk.ok("callback_ip", Value::Null).await;
    assert!(!ips.as_array().expect("a list").is_empty(), "{ips}");
    let js_code = sim.sim.mint_js_code(APPID);
    let session = sdk
        .ok("jscode2session", json!({ "js_code": js_code }))
        .await;
    assert!(session["session_key"].as_str().is_some(), "{session}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The driver itself, against the simulator directly with the real
/// secret: every operation the tests above use works when nothing stands
/// between the SDK and WeChat, so a failure above is the listener's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_driver_works_against_wechat_itself() {
    let sim = revocable_simulator().await;
    install("python").await;
    let mut sdk = Driver::start(
        "wechatpy",
        Launch::wechatpy(),
        json!({ "appid": APPID, "secret": SECRET, "base": sim.base_url() }),
    )
    .await;
    let token = sdk.ok("token", Value::Null).await;
    assert!(sim.sim.token_valid(token.as_str().unwrap()));
    sdk.ok("callback_ip", Value::Null).await;
    let media_id = sim.sim.add_media(APPID, b"jpeg");
    let media = sdk.ok("media", json!({ "media_id": media_id })).await;
    assert_eq!(media["hex"], hex(b"jpeg"), "{media}");
    let code = sim.sim.mint_oauth_code(APPID);
    let answer = sdk.ok("oauth_userinfo", json!({ "code": code })).await;
    assert_eq!(answer["info"]["openid"], answer["grant"]["openid"]);
    let js_code = sim.sim.mint_js_code(APPID);
    let session = sdk
        .ok("jscode2session", json!({ "js_code": js_code }))
        .await;
    assert!(session["session_key"].as_str().is_some(), "{session}");
}
