//! The WeChat-compatible listener end to end: WeChat's own token endpoints
//! answered from the broker's cache, every other path proxied with the
//! broker's token, WeChat-shaped errors.

mod support;

use serde_json::{json, Value};
use support::*;
use wxbroker::simulator::{Endpoint, SimConfig};

async fn start(sim: &wxbroker::simulator::SimHandle, classic_extra: &str) -> Broker {
    let apps = format!(
        "{}{}{}",
        classic_app("shop", sim, classic_extra),
        stable_app("mini", sim, ""),
        wecom_app("corp", sim, "")
    );
    Broker::start_with(
        &apps,
        Options {
            compat: true,
            ..Options::default()
        },
    )
    .await
}

async fn get(broker: &Broker, path: &str) -> Value {
    let response = within(broker.http().get(broker.compat_url(path)).send())
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "WeChat answers with HTTP 200");
    within(response.json()).await.expect("JSON")
}

async fn post(broker: &Broker, path: &str, body: &Value) -> Value {
    let response = within(
        broker
            .http()
            .post(broker.compat_url(path))
            .json(body)
            .send(),
    )
    .await
    .expect("request");
    assert_eq!(response.status(), 200, "WeChat answers with HTTP 200");
    within(response.json()).await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_token_calls_make_no_upstream_call() {
    let sim = simulator(SimConfig::default()).await;
    let broker = start(&sim, "").await;
    let shop = broker.token("shop").await;
    let mini = broker.token("mini").await;
    let corp = broker.token("corp").await;
    let before = sim.sim.total_token_calls();
    for i in 0..50 {
        // A secret sent by the SDK is ignored, right or wrong.
        let answer = get(
            &broker,
            &format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=wrong-{i}"),
        )
        .await;
        assert_eq!(answer["access_token"], shop.as_str(), "{answer}");
        assert!(answer["expires_in"].as_u64().unwrap() > 7000);
        assert!(answer.get("errcode").is_none());
        let answer = post(
            &broker,
            "/cgi-bin/stable_token",
            &json!({"grant_type":"client_credential","appid":STABLE_APPID,"secret":"x","force_refresh":i == 7}),
        )
        .await;
        assert_eq!(answer["access_token"], mini.as_str(), "{answer}");
        assert!(answer["expires_in"].as_u64().unwrap() > 0);
    }
    let answer = get(
        &broker,
        &format!("/cgi-bin/gettoken?corpid={CORPID}&corpsecret=x"),
    )
    .await;
    assert_eq!(
        answer,
        json!({"errcode":0,"errmsg":"ok","access_token":corp,"expires_in":answer["expires_in"]})
    );
    assert_eq!(
        sim.sim.total_token_calls(),
        before,
        "all answered from cache"
    );
    assert!(broker
        .metrics_text()
        .await
        .contains("listener=\"compat\",route=\"/cgi-bin/token\",status=\"200\"} 50"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_appids_and_bad_requests_get_wechat_errcodes() {
    let sim = simulator(SimConfig::default()).await;
    let broker = start(&sim, "").await;
    broker.token("shop").await;
    let answer = get(
        &broker,
        "/cgi-bin/token?grant_type=client_credential&appid=wx0000000000000000&secret=s",
    )
    .await;
    assert_eq!(answer, json!({"errcode":40013,"errmsg":"invalid appid"}));
    let answer = post(
        &broker,
        "/cgi-bin/stable_token",
        &json!({"grant_type":"client_credential","appid":"wx0000000000000000","secret":"s"}),
    )
    .await;
    assert_eq!(answer["errcode"], 40013);
    // A WeCom corpid is no Official Account appid, and the other way round.
    let answer = get(
        &broker,
        &format!("/cgi-bin/token?grant_type=client_credential&appid={CORPID}"),
    )
    .await;
    assert_eq!(answer["errcode"], 40013);
    let answer = get(&broker, &format!("/cgi-bin/gettoken?corpid={APPID}")).await;
    assert_eq!(answer["errcode"], 40013);
    let answer = get(
        &broker,
        &format!("/cgi-bin/token?grant_type=password&appid={APPID}"),
    )
    .await;
    assert_eq!(answer["errcode"], 40002);
    let answer = get(&broker, "/cgi-bin/token?grant_type=client_credential").await;
    assert_eq!(answer["errcode"], 41002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_calls_made_with_stale_tokens_succeed() {
    let sim = simulator(SimConfig::default()).await;
    let broker = start(&sim, "min_forced_interval = \"0s\"").await;
    // The SDK fetched its token through the compatible listener.
    let held = get(
        &broker,
        &format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=x"),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Someone else kills it behind the broker's back.
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
    assert!(!sim.sim.token_valid(&held));
    let fetches = sim.sim.calls(Endpoint::Token);
    let query = json!({"env":"e1","query":"db.collection(\"geo\").get()"});
    let path = format!("/tcb/databasequery?access_token={held}");
    let answer = post(&broker, &path, &query).await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert_eq!(sim.sim.calls(Endpoint::Token), fetches + 1, "one refresh");
    let seen = sim.sim.last_request(Endpoint::DatabaseQuery).unwrap();
    assert_eq!(seen.body, serde_json::to_vec(&query).unwrap());
    assert_eq!(seen.query, "", "the client's token was replaced");

    // The SDK still holds the dead token: it is recognised as the shop's
    // (which it was), and the current one is used instead, with no fetch.
    let answer = post(&broker, &path, &query).await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    let answer = get(
        &broker,
        &format!("/cgi-bin/openapi/quota/get?access_token={held}&cgi_path=%2Fcgi-bin%2Ftoken"),
    )
    .await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert_eq!(
        sim.sim.last_request(Endpoint::QuotaGet).unwrap().query,
        "cgi_path=%2Fcgi-bin%2Ftoken"
    );
    assert_eq!(sim.sim.calls(Endpoint::Token), fetches + 1);

    // The stable app's token routes to the stable app.
    let mini = post(
        &broker,
        "/cgi-bin/stable_token",
        &json!({"grant_type":"client_credential","appid":STABLE_APPID}),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = post(
        &broker,
        &format!("/tcb/invokecloudfunction?access_token={mini}&env=e2&name=login"),
        &json!({"code":"x"}),
    )
    .await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    // An appid parameter picks the app too.
    let answer = post(
        &broker,
        &format!("/tcb/invokecloudfunction?appid={STABLE_APPID}&env=e2&name=login"),
        &json!({}),
    )
    .await;
    assert_eq!(answer["errcode"], 0, "{answer}");

    // A token no app ever held, with several apps configured: WeChat's 40001.
    let answer = post(
        &broker,
        "/tcb/databasequery?access_token=never-issued",
        &query,
    )
    .await;
    assert_eq!(answer["errcode"], 40001, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_paths_and_upstream_failures_are_wechat_shaped() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start_with(
        &classic_app("shop", &sim, ""),
        Options {
            compat: true,
            ..Options::default()
        },
    )
    .await;
    let token = broker.token("shop").await;
    for path in [
        "/tcb/%2e%2e/__sim/calls",
        "/tcb/..%2f__sim/calls",
        "//169.254.169.254/latest",
    ] {
        let reply = wxbroker::client::send(
            &wxbroker::client::Target::Tcp(broker.compat_url("")),
            http::Method::GET,
            path,
            "sdk",
            None,
            WAIT,
        )
        .await
        .unwrap();
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(answer["errcode"], 40066, "{path}: {answer}");
        assert!(answer["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("invalid url"));
    }
    // Relayed requests are refused here too.
    let response = within(
        broker
            .http()
            .get(broker.compat_url("/cgi-bin/token?grant_type=client_credential"))
            .header("x-forwarded-for", "203.0.113.9")
            .send(),
    )
    .await
    .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errcode"], 40164);
    // With one app, a call without any token is still that app's.
    let answer = get(
        &broker,
        "/cgi-bin/openapi/quota/get?cgi_path=%2Fcgi-bin%2Ftoken",
    )
    .await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    // WeChat gone: errcode -1, as WeChat's own "system error", no token.
    sim.shutdown().await;
    let response = within(
        broker
            .http()
            .post(broker.compat_url("/tcb/databasequery"))
            .body("{}")
            .send(),
    )
    .await
    .unwrap();
    let text = response.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["errcode"], -1, "{answer}");
    assert!(!text.contains(&token));
}
