//! The compatible listener's rules for the SDKs of the real world
//! (DESIGN.md section 12): which credential a path carries decides what is
//! done with it, a rejection of the broker's token is never handed back,
//! held apps answer at once with the cause, token fights are counted, and
//! a per-app listener serves its one app whatever a call carries.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::time::Instant;
use wxbroker::simulator::{Endpoint, Fault, SimConfig, SimHandle};

async fn compat_broker(apps: &str) -> Broker {
    Broker::start_with(
        apps,
        Options {
            compat: true,
            ..Options::default()
        },
    )
    .await
}

async fn compat_get(broker: &Broker, url: String) -> Value {
    let response = within(broker.http().get(url).send())
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "WeChat answers with HTTP 200");
    within(response.json()).await.expect("JSON")
}

async fn compat_post(broker: &Broker, url: String, body: &str) -> Value {
    let response = within(broker.http().post(url).body(body.to_owned()).send())
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "WeChat answers with HTTP 200");
    within(response.json()).await.expect("JSON")
}

/// Waits until the app's first attempt has failed and been recorded.
async fn wait_for_last_error(broker: &Broker) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, apps) = broker.get("/v1/apps").await;
        if !apps["apps"][0]["last_error"].is_null() {
            return;
        }
        assert!(Instant::now() < deadline, "no failure recorded: {apps}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_app_answers_at_once_with_wechats_cause() {
    let sim = simulator(SimConfig::default()).await;
    let apps = format!(
        "[[apps]]\nname = \"shop\"\nappid = \"{APPID}\"\nsecret = \"not-the-secret\"\napi_base = \"{}\"\n",
        sim.base_url()
    );
    let broker = compat_broker(&apps).await;
    wait_for_last_error(&broker).await;
    let asked = Instant::now();
    let answer = compat_get(
        &broker,
        broker.compat_url(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=x"
        )),
    )
    .await;
    assert_eq!(answer["errcode"], 40125, "WeChat's own cause: {answer}");
    assert!(answer["errmsg"].as_str().unwrap().contains("wxbroker"));
    let (status, body) = broker.get("/v1/apps/shop/token").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["errcode"], 40125, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "waiting cannot fix a wrong secret: {:?}",
        asked.elapsed()
    );
    assert!(!answer.to_string().contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_app_whose_cause_sdks_retry_on_answers_minus_one() {
    let sim = simulator(SimConfig::default()).await;
    // WeChat answers some wrong secrets with 40001, which SDKs answer by
    // refetching at once: it must not reach them as 40001.
    sim.sim.inject(Fault::Errcode {
        errcode: 40001,
        count: 1,
    });
    let broker = compat_broker(&classic_app("shop", &sim, "")).await;
    wait_for_last_error(&broker).await;
    let answer = compat_get(
        &broker,
        broker.compat_url(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APPID}"
        )),
    )
    .await;
    assert_eq!(answer["errcode"], -1, "{answer}");
    assert!(
        answer["errmsg"].as_str().unwrap().contains("40001"),
        "{answer}"
    );
    let call = compat_post(
        &broker,
        broker.compat_url("/tcb/databasequery?access_token=ACCESS_TOKEN"),
        "{}",
    )
    .await;
    assert_eq!(call["errcode"], -1, "{call}");
    assert_eq!(
        sim.sim.calls(Endpoint::DatabaseQuery),
        0,
        "nothing to call with"
    );
}

/// Two fetches behind the broker's back kill its token at once.
fn kill_the_token(sim: &SimHandle) {
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_is_never_handed_back_and_costs_at_most_two_calls() {
    let sim = simulator(SimConfig::default()).await;
    // A refresh of a token this young is not allowed: no retry is possible.
    let broker = compat_broker(&classic_app("shop", &sim, "min_forced_interval = \"30s\"")).await;
    broker.token("shop").await;
    kill_the_token(&sim);
    let url = broker.compat_url("/tcb/databasequery?access_token=ACCESS_TOKEN");
    for _ in 0..5 {
        let answer = compat_post(&broker, url.clone(), r#"{"env":"e","query":"q"}"#).await;
        assert_eq!(answer["errcode"], -1, "never WeChat's 40001: {answer}");
        assert!(answer["errmsg"].as_str().unwrap().contains("40001"));
    }
    assert_eq!(
        sim.sim.calls(Endpoint::DatabaseQuery),
        5,
        "one upstream call per client call when no refresh is allowed"
    );
    assert_eq!(
        broker
            .metric("wxbroker_forced_refreshes_total{app=\"shop\",outcome=\"deferred\"}")
            .await,
        5.0,
        "every refused refresh is counted (and merged into one deferred)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_that_a_refresh_fixes_costs_one_retry() {
    let sim = simulator(SimConfig::default()).await;
    let broker = compat_broker(&classic_app("shop", &sim, "min_forced_interval = \"0s\"")).await;
    let held = broker.token("shop").await;
    kill_the_token(&sim);
    let answer = compat_post(
        &broker,
        broker.compat_url("/tcb/databasequery?access_token=ACCESS_TOKEN"),
        r#"{"env":"e","query":"q"}"#,
    )
    .await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert_eq!(
        sim.sim.calls(Endpoint::DatabaseQuery),
        2,
        "the call and one retry"
    );
    assert_ne!(broker.token("shop").await, held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_rejected_token_is_the_users_business() {
    let sim = simulator(SimConfig::default()).await;
    let broker = compat_broker(&classic_app("shop", &sim, "min_forced_interval = \"0s\"")).await;
    let token = broker.token("shop").await;
    let fetches = sim.sim.total_token_calls();
    for _ in 0..3 {
        let answer = compat_get(
            &broker,
            broker.compat_url("/sns/userinfo?access_token=A_DEAD_USER_TOKEN&openid=o1"),
        )
        .await;
        assert_eq!(
            answer["errcode"], 40001,
            "WeChat's answer about the user's token: {answer}"
        );
    }
    assert_eq!(sim.sim.total_token_calls(), fetches, "no app-token refresh");
    assert_eq!(broker.token("shop").await, token);
    let recorded = sim
        .sim
        .last_request(Endpoint::SnsUserInfo)
        .expect("forwarded");
    assert!(
        !format!("{recorded:?}").contains(&token),
        "the app token never went to /sns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_bearing_call_needs_a_configured_app_and_never_leaves_otherwise() {
    let sim = simulator(SimConfig::default()).await;
    let apps = format!(
        "{}{}",
        classic_app("shop", &sim, ""),
        stable_app("mini", &sim, "")
    );
    let broker = compat_broker(&apps).await;
    for query in ["appid=wx00000000000000ff&js_code=c", "js_code=c"] {
        let answer = compat_get(
            &broker,
            broker.compat_url(&format!(
                "/sns/jscode2session?{query}&secret=placeholder&grant_type=authorization_code"
            )),
        )
        .await;
        assert!(
            answer["errcode"] == 40013 || answer["errcode"] == 41002,
            "{query}: {answer}"
        );
    }
    assert_eq!(
        sim.sim.calls(Endpoint::JsCode2Session),
        0,
        "never forwarded"
    );
    // With a configured appid, the real secret is put in.
    let js_code = sim.sim.mint_js_code(STABLE_APPID);
    let answer = compat_get(
        &broker,
        broker.compat_url(&format!(
            "/sns/jscode2session?appid={STABLE_APPID}&secret=placeholder&js_code={js_code}&grant_type=authorization_code"
        )),
    )
    .await;
    assert!(answer["session_key"].is_string(), "{answer}");
    assert!(!answer.to_string().contains(STABLE_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_app_listener_serves_its_app_whatever_a_call_carries() {
    let sim = simulator(SimConfig::default()).await;
    let apps = format!(
        "{}[[apps]]\nname = \"other\"\nappid = \"{OTHER_APPID}\"\nsecret = \"{OTHER_SECRET}\"\napi_base = \"{}\"\ncompat_listen = \"127.0.0.1:0\"\n",
        classic_app("shop", &sim, ""),
        sim.base_url()
    );
    let broker = compat_broker(&apps).await;
    let other = broker.token("other").await;
    let answer = compat_get(
        &broker,
        broker.app_compat_url(
            "other",
            "/cgi-bin/token?grant_type=client_credential&appid=wx_some_constant",
        ),
    )
    .await;
    assert_eq!(answer["access_token"], other.as_str(), "{answer}");
    let before = sim.sim.calls(Endpoint::DatabaseQuery);
    let call = compat_post(
        &broker,
        broker.app_compat_url("other", "/tcb/databasequery?access_token=undefined"),
        r#"{"env":"e","query":"q"}"#,
    )
    .await;
    assert_eq!(
        call["errcode"], 0,
        "made with the other app's token: {call}"
    );
    assert_eq!(sim.sim.calls(Endpoint::DatabaseQuery), before + 1);
    // The shared listener cannot tell which app `undefined` is for.
    let shared = compat_post(
        &broker,
        broker.compat_url("/tcb/databasequery?access_token=undefined"),
        "{}",
    )
    .await;
    assert_ne!(shared["errcode"], 0, "{shared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_fight_is_counted_every_time_and_logged_once_per_episode() {
    let logs_before = captured_logs();
    let sim = simulator(SimConfig::default()).await;
    let broker = compat_broker(&classic_app(
        "fighty",
        &sim,
        "min_forced_interval = \"30s\"",
    ))
    .await;
    let token = broker.token("fighty").await;
    kill_the_token(&sim);
    for _ in 0..3 {
        let (status, _) = broker
            .post(
                "/v1/apps/fighty/token/invalidate",
                &format!(r#"{{"access_token":"{token}"}}"#),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        broker
            .metric("wxbroker_token_fights_total{app=\"fighty\"}")
            .await,
        3.0
    );
    let logs = captured_logs();
    let new_logs = &logs[logs_before.len()..];
    let lines = new_logs
        .lines()
        .filter(|line| line.contains("token fight") && line.contains("fighty"))
        .count();
    assert_eq!(lines, 1, "one error line per episode:\n{new_logs}");
    assert!(new_logs.contains(APPID), "the line names the appid");
}
