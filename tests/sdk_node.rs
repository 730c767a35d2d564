//! Node.js SDKs (pinned by scripts/install-sdks.sh) against the compatible
//! listener, each pointed there by its own setting (see
//! tests/sdk/node_driver.js): co-wechat-api 3.11 by its URL prefixes,
//! node-easywechat 3 by its axios `baseURL`, and wechat-api 1.35 by
//! `setEndpoint`, which forces https: for it the listener serves TLS
//! (`[server.compat_tls]` with a certificate from `wxbroker tls init`) and
//! the driver alone resolves api.weixin.qq.com to 127.0.0.1. The SDKs only
//! ever hold a placeholder secret.

mod support;

use serde_json::{json, Value};
use support::sdk::{
    compat_broker, install, revocable_simulator, Driver, Launch, TlsFiles, PLACEHOLDER_SECRET,
};
use support::*;
use wxbroker::simulator::{Endpoint, SimHandle};

/// A simulator, a broker with the compatible listener and one SDK driver
/// pointed at it.
struct World {
    sim: SimHandle,
    broker: Broker,
    sdk: Driver,
    _tls: Option<TlsFiles>,
}

async fn world(sdk: &str) -> World {
    install("node").await;
    let sim = revocable_simulator().await;
    if sdk == "wechat-api" {
        let tls = TlsFiles::init();
        let broker = compat_broker(&sim, &tls.server_section()).await;
        let port = broker.compat.expect("compat listener").port();
        let driver = Driver::start(
            sdk,
            Launch::node()
                .env("NODE_EXTRA_CA_CERTS", tls.ca_path().display().to_string())
                .private_hosts(),
            json!({
                "sdk": sdk,
                "appid": APPID,
                "secret": PLACEHOLDER_SECRET,
                "domain": format!("api.weixin.qq.com:{port}"),
            }),
        )
        .await;
        return World {
            sim,
            broker,
            sdk: driver,
            _tls: Some(tls),
        };
    }
    let broker = compat_broker(&sim, "").await;
    let driver = Driver::start(
        sdk,
        Launch::node(),
        json!({ "sdk": sdk, "appid": APPID, "secret": PLACEHOLDER_SECRET, "base": broker.compat_url("") }),
    )
    .await;
    World {
        sim,
        broker,
        sdk: driver,
        _tls: None,
    }
}

async fn gets_the_brokers_token(mut w: World) {
    let before = w.sim.sim.total_token_calls();
    let token = w.sdk.ok("token", Value::Null).await;
    assert_eq!(token, w.broker.token("shop").await.as_str());
    assert_eq!(
        w.sim.sim.total_token_calls(),
        before,
        "served from the cache"
    );
}

async fn calls_app_token_apis(mut w: World) {
    let ips = w.sdk.ok("app_call", Value::Null).await;
    assert!(!ips["ip_list"].as_array().expect("ip_list").is_empty());
    let openid = w.sim.sim.add_user(APPID);
    let user = w.sdk.ok("user_info", json!({ "openid": openid })).await;
    assert_eq!(user["openid"], openid.as_str(), "{user}");
    assert_eq!(w.sim.sim.calls(Endpoint::GetCallbackIp), 1);
    assert_eq!(w.sim.sim.calls(Endpoint::UserInfo), 1);
}

async fn survives_a_token_revoked_behind_the_brokers_back(mut w: World) {
    let held = w.sdk.ok("token", Value::Null).await;
    w.sim
        .sim
        .issue_classic_directly(APPID)
        .expect("another party fetches a token");
    assert!(!w.sim.sim.token_valid(held.as_str().unwrap()));
    let token_calls = w.sim.sim.calls(Endpoint::Token);
    let api_calls = w.sim.sim.calls(Endpoint::GetCallbackIp);
    let ips = w.sdk.ok("app_call", Value::Null).await;
    assert!(!ips["ip_list"].as_array().expect("ip_list").is_empty());
    assert!(w.sim.sim.token_valid(&w.broker.token("shop").await));
    assert_eq!(
        w.sim.sim.calls(Endpoint::GetCallbackIp),
        api_calls + 2,
        "the rejected call and one retry, never the SDK's own retry loop"
    );
    assert_eq!(
        w.sim.sim.calls(Endpoint::Token),
        token_calls + 1,
        "one refresh"
    );
}

async fn oauth_userinfo_costs_no_app_token(mut w: World) {
    let code = w.sim.sim.mint_oauth_code(APPID);
    let before = w.sim.sim.calls(Endpoint::Token);
    let answer = w.sdk.ok("oauth_userinfo", json!({ "code": code })).await;
    let openid = answer["grant"]["openid"].as_str().expect("an openid");
    assert_eq!(answer["info"]["openid"], openid, "{answer}");
    assert_eq!(w.sim.sim.calls(Endpoint::SnsUserInfo), 1);
    assert_eq!(
        w.sim.sim.calls(Endpoint::Token),
        before,
        "a user-token call costs no app-token fetch"
    );
}

async fn jscode2session_without_the_secret(mut w: World) {
    let js_code = w.sim.sim.mint_js_code(APPID);
    let session = w
        .sdk
        .ok("jscode2session", json!({ "js_code": js_code }))
        .await;
    assert!(session["openid"].as_str().is_some(), "{session}");
    assert!(session["session_key"].as_str().is_some(), "{session}");
    assert_eq!(w.sim.sim.calls(Endpoint::JsCode2Session), 1);
}

/// The driver against the simulator directly, with the real secret: every
/// operation works when nothing stands between the SDK and WeChat, so a
/// failure in the tests above is the listener's.
async fn driver_works_against_wechat_itself(sdk: &str) {
    install("node").await;
    let sim = revocable_simulator().await;
    let mut driver = Driver::start(
        sdk,
        Launch::node(),
        json!({ "sdk": sdk, "appid": APPID, "secret": SECRET, "base": sim.base_url() }),
    )
    .await;
    let token = driver.ok("token", Value::Null).await;
    assert!(sim.sim.token_valid(token.as_str().unwrap()), "{token}");
    driver.ok("app_call", Value::Null).await;
    let openid = sim.sim.add_user(APPID);
    driver.ok("user_info", json!({ "openid": openid })).await;
    let code = sim.sim.mint_oauth_code(APPID);
    let answer = driver.ok("oauth_userinfo", json!({ "code": code })).await;
    assert_eq!(answer["info"]["openid"], answer["grant"]["openid"]);
    let js_code = sim.sim.mint_js_code(APPID);
    let session = driver
        .ok("jscode2session", json!({ "js_code": js_code }))
        .await;
    assert!(session["session_key"].as_str().is_some(), "{session}");
}

/// The same checks for each SDK, one test each so a report names the
/// check that failed.
macro_rules! sdk_tests {
    ($module:ident, $sdk:literal) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn gets_the_brokers_token() {
                super::gets_the_brokers_token(world($sdk).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn calls_app_token_apis() {
                super::calls_app_token_apis(world($sdk).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn survives_a_token_revoked_behind_the_brokers_back() {
                super::survives_a_token_revoked_behind_the_brokers_back(world($sdk).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oauth_userinfo_costs_no_app_token() {
                super::oauth_userinfo_costs_no_app_token(world($sdk).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn jscode2session_without_the_secret() {
                super::jscode2session_without_the_secret(world($sdk).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn driver_works_against_wechat_itself() {
                super::driver_works_against_wechat_itself($sdk).await;
            }
        }
    };
}

sdk_tests!(co_wechat_api, "co-wechat-api");
sdk_tests!(wechat_api, "wechat-api");
sdk_tests!(node_easywechat, "node-easywechat");
