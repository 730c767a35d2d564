//! The WeChat simulator over real HTTP: token rules of each family,
//! validation codes, quotas, the whitelist, every fault kind, the
//! token-consuming APIs, the user-facing `/sns/*` APIs (web OAuth with user
//! tokens, the Mini Program login), the JS-SDK tickets and the admin routes.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use wxbroker::simulator::{
    AccountKind, Endpoint, Fault, Scope, SimConfig, SimHandle, Simulator, TicketKind,
};

const APPID: &str = "wx1234567890abcdef";
const SECRET: &str = "s3cr3t";
const CORPID: &str = "ww1234567890abcdef";
const CORPSECRET: &str = "corp-s3cr3t";
const DAY: Duration = Duration::from_secs(86_400);

async fn start(config: SimConfig) -> SimHandle {
    let sim = Simulator::new(config);
    sim.add_account(APPID, SECRET, AccountKind::Wechat);
    sim.add_account(CORPID, CORPSECRET, AccountKind::Wecom);
    sim.spawn().await.expect("simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client builds")
}

/// Bounds every await in these tests.
async fn within<T>(future: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(5), future)
        .await
        .expect("timed out")
}

async fn get_json(url: String) -> Value {
    within(async { client().get(url).send().await?.json::<Value>().await })
        .await
        .expect("request succeeds")
}

async fn post_json(url: String, body: Value) -> Value {
    within(async {
        client()
            .post(url)
            .json(&body)
            .send()
            .await?
            .json::<Value>()
            .await
    })
    .await
    .expect("request succeeds")
}

async fn classic(h: &SimHandle, query: &str) -> Value {
    get_json(format!("{}/cgi-bin/token?{query}", h.base_url())).await
}

async fn classic_ok(h: &SimHandle) -> String {
    let body = classic(
        h,
        &format!("grant_type=client_credential&appid={APPID}&secret={SECRET}"),
    )
    .await;
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_owned()
}

async fn stable(h: &SimHandle, force_refresh: bool) -> Value {
    post_json(
        format!("{}/cgi-bin/stable_token", h.base_url()),
        json!({ "grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": force_refresh }),
    )
    .await
}

async fn wecom(h: &SimHandle, query: &str) -> Value {
    get_json(format!("{}/cgi-bin/gettoken?{query}", h.base_url())).await
}

async fn invoke(h: &SimHandle, token: &str) -> Value {
    post_json(
        format!(
            "{}/tcb/invokecloudfunction?access_token={token}&env=prod-1&name=hello",
            h.base_url()
        ),
        json!({ "x": 1 }),
    )
    .await
}

fn errcode(body: &Value) -> i64 {
    body["errcode"].as_i64().unwrap_or(0)
}

/// Polls `condition` until it holds, failing after `limit`.
async fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn classic_tokens_overlap_once_then_die() {
    let h = start(SimConfig {
        classic_overlap: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let body = classic(
        &h,
        &format!("grant_type=client_credential&appid={APPID}&secret={SECRET}"),
    )
    .await;
    assert_eq!(body["expires_in"], 7200);
    assert!(
        body.get("errcode").is_none(),
        "success has no errcode: {body}"
    );
    let first = body["access_token"].as_str().unwrap().to_owned();
    assert!(first.starts_with("87_") && first.len() > 100);
    assert!(first[3..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));

    let second = classic_ok(&h).await;
    assert_ne!(first, second);
    assert!(h.sim.token_valid(&first), "previous stays valid in overlap");
    assert!(h.sim.token_valid(&second));

    let third = classic_ok(&h).await;
    assert!(
        !h.sim.token_valid(&first),
        "the one before the previous dies at once"
    );
    assert!(h.sim.token_ever_issued(&first));
    assert_eq!(errcode(&invoke(&h, &first).await), 40001);
    assert!(h.sim.token_valid(&second));
    assert_eq!(errcode(&invoke(&h, &second).await), 0);

    let sim = h.sim.clone();
    wait_for(Duration::from_secs(3), || !sim.token_valid(&second)).await;
    assert!(h.sim.token_valid(&third));
    assert_eq!(h.sim.calls(Endpoint::Token), 3);
    assert_eq!(h.sim.total_token_calls(), 3);
}

#[tokio::test]
async fn classic_overlap_never_outlives_expiry() {
    let h = start(SimConfig {
        token_lifetime: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await;
    let old = classic_ok(&h).await;
    h.sim.advance(Duration::from_secs(9));
    let new = classic_ok(&h).await;
    assert!(h.sim.token_valid(&old));
    h.sim.advance(Duration::from_secs(2));
    assert!(!h.sim.token_valid(&old));
    assert_eq!(errcode(&invoke(&h, &old).await), 42001);
    assert!(h.sim.token_valid(&new));
}

#[tokio::test]
async fn issuing_directly_invalidates_behind_the_clients_back() {
    let h = start(SimConfig::default()).await;
    let mine = classic_ok(&h).await;
    let theirs = h.sim.issue_classic_directly(APPID).expect("issued");
    assert!(h.sim.token_valid(&mine), "still inside the overlap");
    h.sim.issue_classic_directly(APPID).expect("issued");
    assert!(!h.sim.token_valid(&mine));
    assert!(h.sim.token_valid(&theirs));
    assert_eq!(h.sim.calls(Endpoint::Token), 3);
    assert_eq!(h.sim.issue_classic_directly(CORPID), None);
    assert_eq!(h.sim.issue_classic_directly("wxunknown"), None);
}

#[tokio::test]
async fn stable_token_is_shared_until_its_window() {
    let h = start(SimConfig {
        token_lifetime: Duration::from_secs(100),
        stable_window: Duration::from_secs(30),
        ..SimConfig::default()
    })
    .await;
    let first = stable(&h, false).await;
    let token = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(first["expires_in"], 100);

    h.sim.advance(Duration::from_secs(40));
    let again = stable(&h, false).await;
    assert_eq!(
        again["access_token"],
        token.as_str(),
        "same token outside the window"
    );
    let left = again["expires_in"].as_u64().unwrap();
    assert!((59..=60).contains(&left), "remaining lifetime, got {left}");

    // A classic fetch is another family and changes nothing here.
    let classic_token = classic_ok(&h).await;
    assert_eq!(stable(&h, false).await["access_token"], token.as_str());

    h.sim.advance(Duration::from_secs(35));
    let rotated = stable(&h, false).await;
    let new = rotated["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new, token, "rotates inside the window");
    assert_eq!(rotated["expires_in"], 100);
    assert!(h.sim.token_valid(&token), "old one lives to its expiry");
    assert!(h.sim.token_valid(&classic_token));

    h.sim.advance(Duration::from_secs(26));
    assert!(!h.sim.token_valid(&token));
    assert!(h.sim.token_valid(&new));
    assert_eq!(h.sim.calls(Endpoint::StableToken), 4);
}

#[tokio::test]
async fn stable_force_refresh_is_rate_limited() {
    let h = start(SimConfig {
        stable_force_daily_limit: 2,
        classic_overlap: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await;
    let plain = stable(&h, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let forced = stable(&h, true).await;
    let forced = forced["access_token"].as_str().unwrap().to_owned();
    assert_ne!(forced, plain);
    assert!(h.sim.token_valid(&plain), "old one overlaps a while");

    let too_soon = stable(&h, true).await;
    assert_eq!(errcode(&too_soon), 45011);
    assert!(too_soon.get("access_token").is_none());

    h.sim.advance(Duration::from_secs(31));
    assert!(!h.sim.token_valid(&plain), "overlap after force is bounded");
    let second = stable(&h, true).await;
    assert!(second["access_token"].is_string(), "{second}");

    h.sim.advance(Duration::from_secs(31));
    assert_eq!(errcode(&stable(&h, true).await), 45009, "daily force limit");
    assert!(stable(&h, false).await["access_token"].is_string());

    h.sim.advance(DAY);
    assert!(stable(&h, true).await["access_token"].is_string());
}

#[tokio::test]
async fn validation_errors_use_wechat_codes() {
    let h = start(SimConfig::default()).await;
    let cases = [
        (format!("appid={APPID}&secret={SECRET}"), 40002),
        (
            format!("grant_type=password&appid={APPID}&secret={SECRET}"),
            40002,
        ),
        (
            format!("grant_type=client_credential&secret={SECRET}"),
            41002,
        ),
        (format!("grant_type=client_credential&appid={APPID}"), 41004),
        (
            format!("grant_type=client_credential&appid=wxnope&secret={SECRET}"),
            40013,
        ),
        (
            format!("grant_type=client_credential&appid={APPID}&secret=wrong"),
            40125,
        ),
        (
            format!("grant_type=client_credential&appid={CORPID}&secret={CORPSECRET}"),
            40013,
        ),
    ];
    for (query, code) in &cases {
        let body = classic(&h, query).await;
        assert_eq!(errcode(&body), *code, "{query}: {body}");
        assert!(
            body["errmsg"].as_str().unwrap().contains(" rid: "),
            "{body}"
        );
        assert!(body.get("access_token").is_none());
    }
    assert_eq!(h.sim.calls(Endpoint::Token), cases.len() as u64);

    let url = format!("{}/cgi-bin/stable_token", h.base_url());
    let not_json = within(async {
        client()
            .post(&url)
            .body("grant_type=client_credential")
            .send()
            .await?
            .json::<Value>()
            .await
    })
    .await
    .unwrap();
    assert_eq!(errcode(&not_json), 47001);
    assert_eq!(errcode(&get_json(url.clone()).await), 43002);
    let body = post_json(
        url.clone(),
        json!({ "grant_type": "client_credential", "appid": APPID }),
    )
    .await;
    assert_eq!(errcode(&body), 41004);
    let body = post_json(
        url.clone(),
        json!({ "grant_type": "client_credential", "appid": APPID, "secret": "wrong" }),
    )
    .await;
    assert_eq!(errcode(&body), 40125);
    let body = post_json(url, json!({ "appid": APPID, "secret": SECRET })).await;
    assert_eq!(errcode(&body), 40002);
}

#[tokio::test]
async fn daily_limit_then_rollover() {
    let h = start(SimConfig {
        daily_limit: 3,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..3 {
        classic_ok(&h).await;
    }
    let refused = classic(
        &h,
        &format!("grant_type=client_credential&appid={APPID}&secret={SECRET}"),
    )
    .await;
    assert_eq!(errcode(&refused), 45009);
    assert!(refused["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("reach max api daily quota limit rid: "));
    assert_eq!(h.sim.issue_classic_directly(APPID), None);
    // Stable tokens have their own counter.
    assert!(stable(&h, false).await["access_token"].is_string());

    h.sim.advance(DAY);
    classic_ok(&h).await;
}

#[tokio::test]
async fn wecom_caches_its_token() {
    let h = start(SimConfig {
        token_lifetime: Duration::from_secs(100),
        ..SimConfig::default()
    })
    .await;
    let query = format!("corpid={CORPID}&corpsecret={CORPSECRET}");
    let first = wecom(&h, &query).await;
    assert_eq!(first["errcode"], 0);
    assert_eq!(first["errmsg"], "ok");
    assert_eq!(first["expires_in"], 100);
    let token = first["access_token"].as_str().unwrap().to_owned();

    h.sim.advance(Duration::from_secs(30));
    let again = wecom(&h, &query).await;
    assert_eq!(again["access_token"], token.as_str());
    assert!(again["expires_in"].as_u64().unwrap() <= 70);

    assert_eq!(
        errcode(&invoke(&h, &token).await),
        40014,
        "wecom token on a wechat api"
    );

    h.sim.advance(Duration::from_secs(71));
    let renewed = wecom(&h, &query).await;
    assert_ne!(renewed["access_token"], token.as_str());
    assert_eq!(renewed["expires_in"], 100);

    for (query, code) in [
        (format!("corpid=wwnope&corpsecret={CORPSECRET}"), 40013),
        (format!("corpid={APPID}&corpsecret={SECRET}"), 40013),
        (format!("corpid={CORPID}&corpsecret=wrong"), 40001),
        (format!("corpsecret={CORPSECRET}"), 41002),
        (format!("corpid={CORPID}"), 41004),
    ] {
        let body = wecom(&h, &query).await;
        assert_eq!(errcode(&body), code, "{query}: {body}");
        assert!(body.get("access_token").is_none());
    }
    assert_eq!(h.sim.calls(Endpoint::WecomGetToken), 8);
}

#[tokio::test]
async fn ip_whitelist_refuses_other_peers() {
    let h = start(SimConfig {
        ip_whitelist: Some(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]),
        ..SimConfig::default()
    })
    .await;
    let body = classic(
        &h,
        &format!("grant_type=client_credential&appid={APPID}&secret={SECRET}"),
    )
    .await;
    assert_eq!(errcode(&body), 40164);
    assert!(body["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist rid: "));
    assert_eq!(errcode(&stable(&h, false).await), 40164);
    // Configuration errors are checked first, as on WeChat.
    let wrong = classic(&h, "grant_type=client_credential&appid=wxnope&secret=x").await;
    assert_eq!(errcode(&wrong), 40013);

    let allowed = start(SimConfig {
        ip_whitelist: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        ..SimConfig::default()
    })
    .await;
    classic_ok(&allowed).await;
}

#[tokio::test]
async fn faults_are_consumed_in_order() {
    let h = start(SimConfig::default()).await;
    let token_url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}",
        h.base_url()
    );
    h.sim.inject(Fault::Errcode {
        errcode: -1,
        count: 2,
    });
    h.sim.inject(Fault::Http500Html { count: 1 });
    h.sim.inject(Fault::MalformedJson { count: 1 });
    h.sim.inject(Fault::DropConnection { count: 1 });
    h.sim.inject(Fault::Delay {
        delay: Duration::from_millis(300),
        count: 1,
    });

    for _ in 0..2 {
        let body = get_json(token_url.clone()).await;
        assert_eq!(errcode(&body), -1);
        assert!(body.get("access_token").is_none());
    }

    let response = within(client().get(&token_url).send()).await.unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(within(response.text()).await.unwrap().contains("<html>"));

    let response = within(client().get(&token_url).send()).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = within(response.text()).await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let dropped = within(client().get(&token_url).send()).await;
    assert!(dropped.is_err(), "connection must close without an answer");

    let started = Instant::now();
    let delayed = get_json(token_url.clone()).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let delayed = delayed["access_token"]
        .as_str()
        .expect("delay still answers")
        .to_owned();

    assert_eq!(h.sim.calls(Endpoint::Token), 6);
    let after = classic_ok(&h).await;
    assert!(h.sim.token_valid(&delayed) && h.sim.token_valid(&after));

    // Faults hit every token family, and clear removes them.
    h.sim.inject(Fault::Errcode {
        errcode: 40164,
        count: 1,
    });
    assert_eq!(errcode(&stable(&h, false).await), 40164);
    h.sim.inject(Fault::Errcode {
        errcode: 40164,
        count: 5,
    });
    h.sim.clear_faults();
    classic_ok(&h).await;
}

#[tokio::test]
async fn latency_is_added_to_token_calls() {
    let h = start(SimConfig::default()).await;
    h.sim.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    classic_ok(&h).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    h.sim.set_latency(Duration::ZERO);
    h.sim.set_token_lifetime(Duration::from_secs(60));
    let body = stable(&h, false).await;
    assert_eq!(body["expires_in"], 60);
    assert_eq!(h.sim.config().token_lifetime, Duration::from_secs(60));
}

#[tokio::test]
async fn tcb_apis_check_the_token() {
    let h = start(SimConfig {
        token_lifetime: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await;
    let base = h.base_url();
    let missing = post_json(format!("{base}/tcb/databasequery"), json!({})).await;
    assert_eq!(errcode(&missing), 41001);
    assert_eq!(errcode(&invoke(&h, "garbage").await), 40001);

    let token = classic_ok(&h).await;
    let answer = invoke(&h, &token).await;
    assert_eq!(errcode(&answer), 0, "{answer}");
    let resp: Value = serde_json::from_str(answer["resp_data"].as_str().unwrap()).unwrap();
    assert_eq!(resp["name"], "hello");
    assert_eq!(resp["event"], json!({ "x": 1 }));
    let last = h.sim.last_request(Endpoint::InvokeCloudFunction).unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.query, "env=prod-1&name=hello");
    assert_eq!(last.body, br#"{"x":1}"#);
    assert!(last.headers.iter().any(|(k, _)| k == "content-type"));

    let db = json!({ "env": "prod-1", "query": "db.collection(\"todos\").get()" });
    for (path, field) in [
        ("databasequery", "data"),
        ("databaseadd", "id_list"),
        ("databaseupdate", "matched"),
        ("databasedelete", "deleted"),
    ] {
        let body = post_json(
            format!("{base}/tcb/{path}?access_token={token}"),
            db.clone(),
        )
        .await;
        assert_eq!(errcode(&body), 0, "{path}: {body}");
        assert!(body.get(field).is_some(), "{path}: {body}");
    }
    let body = post_json(
        format!("{base}/tcb/batchdownloadfile?access_token={token}"),
        json!({ "env": "prod-1", "file_list": [{ "fileid": "cloud://prod-1.7072-prod/a.png", "max_age": 7200 }] }),
    )
    .await;
    assert_eq!(
        body["file_list"][0]["fileid"],
        "cloud://prod-1.7072-prod/a.png"
    );
    assert!(body["file_list"][0]["download_url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    let body = post_json(
        format!("{base}/tcb/uploadfile?access_token={token}"),
        json!({ "env": "prod-1", "path": "a/b.png" }),
    )
    .await;
    assert!(body["file_id"].as_str().unwrap().ends_with("/a/b.png"));
    let body = post_json(
        format!("{base}/tcb/batchdeletefile?access_token={token}"),
        json!({ "env": "prod-1", "fileid_list": ["cloud://x/y"] }),
    )
    .await;
    assert_eq!(body["delete_list"][0]["status"], 0);
    let body = post_json(
        format!("{base}/cgi-bin/openapi/quota/get?access_token={token}"),
        json!({ "cgi_path": "/cgi-bin/token" }),
    )
    .await;
    assert_eq!(body["quota"]["used"], 1);
    assert_eq!(body["quota"]["daily_limit"], 2000);
    let body = get_json(format!(
        "{base}/cgi-bin/openapi/quota/get?access_token={token}&cgi_path=/tcb/databasequery"
    ))
    .await;
    assert_eq!(errcode(&body), 0, "{body}");
    let body = get_json(format!("{base}/tcb/databasequery?access_token={token}")).await;
    assert_eq!(errcode(&body), 43002);
    let bad = within(async {
        client()
            .post(format!("{base}/tcb/databasequery?access_token={token}"))
            .body("not json")
            .send()
            .await?
            .json::<Value>()
            .await
    })
    .await
    .unwrap();
    assert_eq!(errcode(&bad), 47001);

    h.sim.advance(Duration::from_secs(11));
    assert_eq!(errcode(&invoke(&h, &token).await), 42001);
    assert_eq!(h.sim.calls(Endpoint::InvokeCloudFunction), 3);
    assert_eq!(h.sim.calls(Endpoint::DatabaseQuery), 4);
}

#[tokio::test]
async fn admin_routes_mirror_the_api() {
    let sim = Simulator::new(SimConfig::default());
    let h = sim.spawn().await.unwrap();
    let admin = format!("{}/__sim", h.base_url());
    let ok = json!({ "errcode": 0, "errmsg": "ok" });

    let added = post_json(
        format!("{admin}/accounts"),
        json!({ "appid": APPID, "secret": SECRET, "kind": "wechat" }),
    )
    .await;
    assert_eq!(added, ok);
    let token = classic_ok(&h).await;

    let calls = get_json(format!("{admin}/calls")).await;
    assert_eq!(calls["token"], 1);
    assert_eq!(calls["stable_token"], 0);

    let valid = get_json(format!("{admin}/valid?token={token}")).await;
    assert_eq!(valid, json!({ "valid": true, "issued": true }));
    let valid = get_json(format!("{admin}/valid?token=nope")).await;
    assert_eq!(valid, json!({ "valid": false, "issued": false }));

    for fault in [
        json!({ "kind": "errcode", "errcode": 40164, "count": 1 }),
        json!({ "kind": "http500", "count": 1 }),
        json!({ "kind": "malformed" }),
        json!({ "kind": "drop", "count": 1 }),
        json!({ "kind": "delay", "ms": 1, "count": 1 }),
    ] {
        assert_eq!(post_json(format!("{admin}/fault"), fault).await, ok);
    }
    let query = format!("grant_type=client_credential&appid={APPID}&secret={SECRET}");
    assert_eq!(errcode(&classic(&h, &query).await), 40164);
    assert_eq!(post_json(format!("{admin}/clear"), json!({})).await, ok);
    classic_ok(&h).await;

    let bad = within(
        client()
            .post(format!("{admin}/fault"))
            .json(&json!({ "kind": "meteor" }))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);

    assert_eq!(
        post_json(format!("{admin}/lifetime"), json!({ "secs": 50 })).await,
        ok
    );
    let body = classic(&h, &query).await;
    assert_eq!(body["expires_in"], 50);
    let short = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        post_json(format!("{admin}/advance"), json!({ "secs": 51 })).await,
        ok
    );
    assert!(!h.sim.token_valid(&short));

    assert_eq!(
        post_json(format!("{admin}/latency"), json!({ "ms": 150 })).await,
        ok
    );
    let started = Instant::now();
    classic_ok(&h).await;
    assert!(started.elapsed() >= Duration::from_millis(150));

    let last = get_json(format!("{admin}/last?endpoint=token")).await;
    assert_eq!(last["method"], "GET");
    let config = get_json(format!("{admin}/config")).await;
    assert_eq!(config["token_lifetime_secs"], 50.0);

    let missing = within(client().get(format!("{}/nowhere", h.base_url())).send())
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        within(missing.json::<Value>()).await.unwrap(),
        json!({ "errcode": 404, "errmsg": "not found" })
    );
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let h = start(SimConfig::default()).await;
    let url = format!("{}/__sim/calls", h.base_url());
    get_json(url.clone()).await;
    within(h.shutdown()).await;
    assert!(within(client().get(&url).send()).await.is_err());

    let h = start(SimConfig::default()).await;
    let url = format!("{}/__sim/calls", h.base_url());
    drop(h);
    // Dropping the handle stops the server in the background.
    within(async {
        while client().get(&url).send().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn sns(h: &SimHandle, path_and_query: &str) -> Value {
    get_json(format!("{}/sns/{path_and_query}", h.base_url())).await
}

async fn oauth_exchange(h: &SimHandle, secret: &str, code: &str) -> Value {
    sns(
        h,
        &format!(
            "oauth2/access_token?appid={APPID}&secret={secret}&code={code}&grant_type=authorization_code"
        ),
    )
    .await
}

#[tokio::test]
async fn oauth_codes_give_user_tokens_once() {
    let h = start(SimConfig::default()).await;
    let code = h.sim.mint_oauth_code(APPID);
    // The secret is checked before the code, and a refusal spends no code.
    assert_eq!(errcode(&oauth_exchange(&h, "wrong", &code).await), 40125);
    let grant = oauth_exchange(&h, SECRET, &code).await;
    assert_eq!(grant["expires_in"], 7200, "{grant}");
    assert_eq!(grant["scope"], "snsapi_userinfo");
    let user_token = grant["access_token"].as_str().unwrap().to_owned();
    let openid = grant["openid"].as_str().unwrap().to_owned();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();
    assert!(openid.starts_with('o') && openid.len() == 28, "{openid}");
    assert!(h.sim.user_token_valid(&user_token));
    assert!(
        !h.sim.token_valid(&user_token),
        "a user token is no app token"
    );

    assert_eq!(errcode(&oauth_exchange(&h, SECRET, &code).await), 40163);
    assert_eq!(errcode(&oauth_exchange(&h, SECRET, "nope").await), 40029);
    let js_code = h.sim.mint_js_code(APPID);
    assert_eq!(
        errcode(&oauth_exchange(&h, SECRET, &js_code).await),
        40029,
        "a js_code is no OAuth code"
    );
    let late = h.sim.mint_oauth_code(APPID);
    h.sim.advance(Duration::from_secs(301));
    assert_eq!(errcode(&oauth_exchange(&h, SECRET, &late).await), 40029);

    let info = sns(
        &h,
        &format!("userinfo?access_token={user_token}&openid={openid}&lang=en"),
    )
    .await;
    assert_eq!(info["openid"], openid.as_str(), "{info}");
    assert_eq!(info["language"], "en");
    let other = h.sim.add_user(APPID);
    let info = sns(
        &h,
        &format!("userinfo?access_token={user_token}&openid={other}"),
    )
    .await;
    assert_eq!(errcode(&info), 40003);
    let auth = sns(
        &h,
        &format!("auth?access_token={user_token}&openid={openid}"),
    )
    .await;
    assert_eq!(auth, json!({ "errcode": 0, "errmsg": "ok" }));

    // Refreshing issues a new user token and keeps the refresh token.
    let renewed = sns(
        &h,
        &format!(
            "oauth2/refresh_token?appid={APPID}&grant_type=refresh_token&refresh_token={refresh}"
        ),
    )
    .await;
    assert_eq!(renewed["refresh_token"], refresh.as_str(), "{renewed}");
    assert_eq!(renewed["openid"], openid.as_str());
    let renewed_token = renewed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(renewed_token, user_token);
    let bad = sns(
        &h,
        &format!("oauth2/refresh_token?appid={APPID}&grant_type=refresh_token&refresh_token=nope"),
    )
    .await;
    assert_eq!(errcode(&bad), 40030);

    // After two hours the user token is dead; the refresh token is not.
    h.sim.advance(Duration::from_secs(7200));
    let info = sns(
        &h,
        &format!("userinfo?access_token={user_token}&openid={openid}"),
    )
    .await;
    assert_eq!(errcode(&info), 42001);
    let renewed = sns(
        &h,
        &format!(
            "oauth2/refresh_token?appid={APPID}&grant_type=refresh_token&refresh_token={refresh}"
        ),
    )
    .await;
    let renewed_token = renewed["access_token"].as_str().unwrap();
    let auth = sns(
        &h,
        &format!("auth?access_token={renewed_token}&openid={openid}"),
    )
    .await;
    assert_eq!(auth, json!({ "errcode": 0, "errmsg": "ok" }));

    assert_eq!(h.sim.calls(Endpoint::OAuthAccessToken), 6);
    assert_eq!(h.sim.calls(Endpoint::OAuthRefreshToken), 3);
    assert_eq!(h.sim.calls(Endpoint::SnsUserInfo), 3);
    assert_eq!(h.sim.calls(Endpoint::SnsAuth), 2);
    assert_eq!(h.sim.total_token_calls(), 0, "no app token was involved");
}

#[tokio::test]
async fn user_and_app_tokens_do_not_mix() {
    let h = start(SimConfig::default()).await;
    let app_token = classic_ok(&h).await;
    let openid = h.sim.add_user(APPID);
    let info = sns(
        &h,
        &format!("userinfo?access_token={app_token}&openid={openid}"),
    )
    .await;
    assert_eq!(errcode(&info), 40001, "an app token on /sns/userinfo");

    let code = h.sim.mint_oauth_code_for(APPID, &openid, Scope::Base);
    let grant = oauth_exchange(&h, SECRET, &code).await;
    assert_eq!(grant["scope"], "snsapi_base");
    let user_token = grant["access_token"].as_str().unwrap();
    assert_eq!(errcode(&invoke(&h, user_token).await), 40001);
    let info = get_json(format!(
        "{}/cgi-bin/user/info?access_token={user_token}&openid={openid}",
        h.base_url()
    ))
    .await;
    assert_eq!(errcode(&info), 40001, "a user token on an app-token API");
    let info = sns(
        &h,
        &format!("userinfo?access_token={user_token}&openid={openid}"),
    )
    .await;
    assert_eq!(errcode(&info), 48001, "snsapi_base grants no profile");
    let auth = sns(
        &h,
        &format!("auth?access_token={user_token}&openid={openid}"),
    )
    .await;
    assert_eq!(errcode(&auth), 0);
}

#[tokio::test]
async fn jscode2session_checks_the_secret_and_spends_the_code() {
    let h = start(SimConfig::default()).await;
    let session = |secret: &'static str, code: String| {
        let h = &h;
        async move {
            sns(
                h,
                &format!(
                    "jscode2session?appid={APPID}&secret={secret}&js_code={code}&grant_type=authorization_code"
                ),
            )
            .await
        }
    };
    let code = h.sim.mint_js_code(APPID);
    assert_eq!(errcode(&session("anything", code.clone()).await), 40125);
    let answer = session(SECRET, code.clone()).await;
    assert!(
        answer["openid"].as_str().unwrap().starts_with('o'),
        "{answer}"
    );
    assert_eq!(answer["session_key"].as_str().unwrap().len(), 24);
    assert!(answer.get("errcode").is_none());
    assert_eq!(errcode(&session(SECRET, code).await), 40163);
    assert_eq!(errcode(&session(SECRET, "nope".into()).await), 40029);
    let unknown = get_json(format!(
        "{}/sns/jscode2session?appid=wx0000000000000000&secret=s&js_code=c&grant_type=authorization_code",
        h.base_url()
    ))
    .await;
    assert_eq!(errcode(&unknown), 40013);
    let missing = sns(
        &h,
        &format!("jscode2session?appid={APPID}&secret={SECRET}&grant_type=authorization_code"),
    )
    .await;
    assert_eq!(errcode(&missing), 41008);
    assert_eq!(h.sim.calls(Endpoint::JsCode2Session), 6);
}

#[tokio::test]
async fn media_get_answers_errors_as_text_plain() {
    let h = start(SimConfig::default()).await;
    let token = classic_ok(&h).await;
    let media_id = h.sim.add_media(APPID, b"\xff\xd8\xff\xe0 a jpeg");
    let fetch = |token: String, media_id: String| {
        let url = format!(
            "{}/cgi-bin/media/get?access_token={token}&media_id={media_id}",
            h.base_url()
        );
        async move {
            within(async {
                let response = client().get(url).send().await?;
                let content_type = response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                Ok::<_, reqwest::Error>((content_type, response.bytes().await?))
            })
            .await
            .expect("request succeeds")
        }
    };
    let (content_type, body) = fetch(token.clone(), media_id.clone()).await;
    assert_eq!(content_type, "image/jpeg");
    assert_eq!(&body[..], b"\xff\xd8\xff\xe0 a jpeg");

    for (token, media_id, code) in [
        ("bogus".to_owned(), media_id.clone(), 40001),
        (token.clone(), "nope".to_owned(), 40007),
    ] {
        let (content_type, body) = fetch(token, media_id).await;
        assert_eq!(content_type, "text/plain", "errors are not labelled JSON");
        let error: Value = serde_json::from_slice(&body).expect("the body is still JSON");
        assert_eq!(errcode(&error), code, "{error}");
    }
    assert_eq!(h.sim.calls(Endpoint::MediaGet), 3);
}

#[tokio::test]
async fn official_account_apis_check_the_app_token_and_openid() {
    let h = start(SimConfig::default()).await;
    let token = classic_ok(&h).await;
    let openid = h.sim.add_user(APPID);
    let base = h.base_url();

    let ips = get_json(format!("{base}/cgi-bin/getcallbackip?access_token={token}")).await;
    assert!(!ips["ip_list"].as_array().unwrap().is_empty(), "{ips}");
    let info = get_json(format!(
        "{base}/cgi-bin/user/info?access_token={token}&openid={openid}&lang=zh_CN"
    ))
    .await;
    assert_eq!(info["subscribe"], 1, "{info}");
    assert_eq!(info["openid"], openid.as_str());
    let stranger = h.sim.add_user("wx0000000000other1");
    let info = get_json(format!(
        "{base}/cgi-bin/user/info?access_token={token}&openid={stranger}"
    ))
    .await;
    assert_eq!(errcode(&info), 40003, "another app's user");

    let send = |body: Value| {
        post_json(
            format!("{base}/cgi-bin/message/custom/send?access_token={token}"),
            body,
        )
    };
    let sent =
        send(json!({ "touser": openid, "msgtype": "text", "text": { "content": "hi" } })).await;
    assert_eq!(sent, json!({ "errcode": 0, "errmsg": "ok" }));
    assert_eq!(
        errcode(&send(json!({ "touser": openid, "msgtype": "fax" })).await),
        40008
    );
    assert_eq!(
        errcode(&send(json!({ "touser": stranger, "msgtype": "text" })).await),
        40003
    );

    // The same token checks as every app-token API.
    let _ = h.sim.issue_classic_directly(APPID);
    let _ = h.sim.issue_classic_directly(APPID);
    let stale = get_json(format!("{base}/cgi-bin/getcallbackip?access_token={token}")).await;
    assert_eq!(errcode(&stale), 40001);
    h.sim.advance(Duration::from_secs(7200));
    let fresh = h.sim.issue_classic_directly(APPID).unwrap();
    h.sim.advance(Duration::from_secs(7200));
    let expired = get_json(format!("{base}/cgi-bin/getcallbackip?access_token={fresh}")).await;
    assert_eq!(errcode(&expired), 42001);

    assert_eq!(h.sim.calls(Endpoint::GetCallbackIp), 3);
    assert_eq!(h.sim.calls(Endpoint::UserInfo), 2);
    assert_eq!(h.sim.calls(Endpoint::CustomSend), 3);
}

#[tokio::test]
async fn admin_routes_mint_codes_and_count_the_user_apis() {
    let h = start(SimConfig::default()).await;
    let admin = format!("{}/__sim", h.base_url());
    let user = post_json(format!("{admin}/users"), json!({ "appid": APPID })).await;
    let openid = user["openid"].as_str().unwrap().to_owned();
    let minted = post_json(
        format!("{admin}/oauth_code"),
        json!({ "appid": APPID, "openid": openid, "scope": "snsapi_base" }),
    )
    .await;
    assert_eq!(minted["openid"], openid.as_str());
    let grant = oauth_exchange(&h, SECRET, minted["code"].as_str().unwrap()).await;
    assert_eq!(grant["openid"], openid.as_str(), "{grant}");
    assert_eq!(grant["scope"], "snsapi_base");

    let minted = post_json(format!("{admin}/js_code"), json!({ "appid": APPID })).await;
    let js_code = minted["js_code"].as_str().unwrap();
    let session = sns(
        &h,
        &format!("jscode2session?appid={APPID}&secret={SECRET}&js_code={js_code}&grant_type=authorization_code"),
    )
    .await;
    assert_eq!(session["openid"], minted["openid"], "{session}");

    let media = post_json(
        format!("{admin}/media"),
        json!({ "appid": APPID, "content": "jpeg" }),
    )
    .await;
    assert_eq!(media["media_id"].as_str().unwrap().len(), 64);
    let bad = post_json(
        format!("{admin}/oauth_code"),
        json!({ "appid": APPID, "scope": "snsapi_login" }),
    )
    .await;
    assert_eq!(errcode(&bad), 400);

    let calls = get_json(format!("{admin}/calls")).await;
    assert_eq!(calls["oauth_access_token"], 1, "{calls}");
    assert_eq!(calls["jscode2session"], 1);
    assert_eq!(calls["sns_userinfo"], 0);
    assert_eq!(calls["media_get"], 0);
}

const AGENT_SECRET: &str = "agent-2-s3cr3t";

async fn getticket(h: &SimHandle, token: &str, kind: &str) -> Value {
    get_json(format!(
        "{}/cgi-bin/ticket/getticket?access_token={token}&type={kind}",
        h.base_url()
    ))
    .await
}

async fn corp_ticket(h: &SimHandle, token: &str) -> Value {
    get_json(format!(
        "{}/cgi-bin/get_jsapi_ticket?access_token={token}",
        h.base_url()
    ))
    .await
}

async fn agent_ticket(h: &SimHandle, token: &str) -> Value {
    get_json(format!(
        "{}/cgi-bin/ticket/get?access_token={token}&type=agent_config",
        h.base_url()
    ))
    .await
}

/// The ticket of a success body, checking its shape.
fn ticket(body: &Value) -> String {
    assert_eq!(body["errcode"], 0, "{body}");
    assert_eq!(body["errmsg"], "ok", "{body}");
    body["ticket"]
        .as_str()
        .unwrap_or_else(|| panic!("no ticket in {body}"))
        .to_owned()
}

async fn wecom_token(h: &SimHandle, secret: &str) -> String {
    let body = wecom(h, &format!("corpid={CORPID}&corpsecret={secret}")).await;
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_owned()
}

#[tokio::test]
async fn a_repeated_ticket_keeps_its_first_expiry() {
    let h = start(SimConfig {
        ticket_lifetime: Duration::from_secs(100),
        classic_overlap: Duration::from_secs(300),
        ..SimConfig::default()
    })
    .await;
    let token = classic_ok(&h).await;
    let first = getticket(&h, &token, "jsapi").await;
    assert_eq!(first["expires_in"], 100);
    let jsapi = ticket(&first);
    assert_eq!(jsapi.len(), 86);
    assert!(h.sim.ticket_valid(APPID, TicketKind::Jsapi, &jsapi));

    // Later, and with a newer token (the first still in its overlap): the
    // same ticket, claiming a full lifetime again.
    h.sim.advance(Duration::from_secs(60));
    let newer = classic_ok(&h).await;
    for token in [&token, &newer] {
        let again = getticket(&h, token, "jsapi").await;
        assert_eq!(ticket(&again), jsapi);
        assert_eq!(again["expires_in"], 100);
    }
    // But it dies 100 s after its first issue, not after the last answer.
    h.sim.advance(Duration::from_secs(41));
    assert!(!h.sim.ticket_valid(APPID, TicketKind::Jsapi, &jsapi));
    assert!(h.sim.ticket_ever_issued(&jsapi));
    let renewed = getticket(&h, &newer, "jsapi").await;
    let next = ticket(&renewed);
    assert_ne!(next, jsapi);
    assert_eq!(renewed["expires_in"], 100);
    assert!(h.sim.ticket_valid(APPID, TicketKind::Jsapi, &next));
    assert_eq!(h.sim.calls(Endpoint::GetTicket), 4);
    assert_eq!(h.sim.total_ticket_calls(), 4);
}

#[tokio::test]
async fn jsapi_and_wx_card_are_distinct_and_the_type_is_checked() {
    let h = start(SimConfig::default()).await;
    let token = classic_ok(&h).await;
    let jsapi = ticket(&getticket(&h, &token, "jsapi").await);
    let card = ticket(&getticket(&h, &token, "wx_card").await);
    assert_ne!(jsapi, card);
    assert!(h.sim.ticket_valid(APPID, TicketKind::WxCard, &card));
    assert!(!h.sim.ticket_valid(APPID, TicketKind::Jsapi, &card));
    assert!(!h.sim.ticket_valid(CORPID, TicketKind::WxCard, &card));

    for kind in ["agent_config", "JSAPI", ""] {
        let body = getticket(&h, &token, kind).await;
        assert_eq!(errcode(&body), 40097, "{kind}: {body}");
        assert!(body.get("ticket").is_none());
    }
    let untyped = get_json(format!(
        "{}/cgi-bin/ticket/getticket?access_token={token}",
        h.base_url()
    ))
    .await;
    assert_eq!(errcode(&untyped), 40097);
}

#[tokio::test]
async fn ticket_calls_check_the_token() {
    let h = start(SimConfig {
        token_lifetime: Duration::from_secs(100),
        classic_overlap: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let old = classic_ok(&h).await;
    let expiring = classic_ok(&h).await;
    let corp = wecom_token(&h, CORPSECRET).await;
    h.sim.advance(Duration::from_secs(2));
    assert_eq!(errcode(&getticket(&h, "garbage", "jsapi").await), 40001);
    assert_eq!(errcode(&getticket(&h, &old, "jsapi").await), 40001);
    assert_eq!(errcode(&getticket(&h, &corp, "jsapi").await), 40014);
    let missing = get_json(format!(
        "{}/cgi-bin/ticket/getticket?type=jsapi",
        h.base_url()
    ))
    .await;
    assert_eq!(errcode(&missing), 41001);

    for body in [
        corp_ticket(&h, "garbage").await,
        corp_ticket(&h, &expiring).await,
        agent_ticket(&h, "garbage").await,
        agent_ticket(&h, &expiring).await,
    ] {
        assert_eq!(errcode(&body), 40014, "{body}");
    }

    h.sim.advance(Duration::from_secs(100));
    assert_eq!(errcode(&getticket(&h, &expiring, "jsapi").await), 42001);
    assert_eq!(errcode(&corp_ticket(&h, &corp).await), 42001);
    assert_eq!(errcode(&agent_ticket(&h, &corp).await), 42001);
    assert_eq!(h.sim.total_ticket_calls(), 11);
}

#[tokio::test]
async fn wecom_agents_get_their_own_agent_ticket_and_share_the_corp_ticket() {
    let h = start(SimConfig::default()).await;
    h.sim.add_wecom_agent(CORPID, AGENT_SECRET, 1_000_002);
    let first = wecom_token(&h, CORPSECRET).await;
    let second = wecom_token(&h, AGENT_SECRET).await;
    assert_ne!(first, second, "each WeCom app has its own token");

    let corp = ticket(&corp_ticket(&h, &first).await);
    assert_eq!(ticket(&corp_ticket(&h, &second).await), corp);
    assert!(h.sim.ticket_valid(CORPID, TicketKind::Jsapi, &corp));

    let agent_one = agent_ticket(&h, &first).await;
    assert_eq!(agent_one["expires_in"], 7200);
    let agent_one = ticket(&agent_one);
    let agent_two = ticket(&agent_ticket(&h, &second).await);
    assert_ne!(agent_one, agent_two);
    assert_ne!(agent_one, corp);
    assert_eq!(ticket(&agent_ticket(&h, &second).await), agent_two);
    for t in [&agent_one, &agent_two] {
        assert!(h.sim.ticket_valid(CORPID, TicketKind::AgentConfig, t));
        assert!(!h.sim.ticket_valid(CORPID, TicketKind::Jsapi, t));
    }

    let untyped = get_json(format!(
        "{}/cgi-bin/ticket/get?access_token={first}",
        h.base_url()
    ))
    .await;
    assert_eq!(errcode(&untyped), 40058);
    assert_eq!(h.sim.calls(Endpoint::WecomGetJsapiTicket), 2);
    assert_eq!(h.sim.calls(Endpoint::WecomTicketGet), 4);
}

#[tokio::test]
async fn ticket_daily_limit_per_app_and_kind_then_rollover() {
    let h = start(SimConfig {
        ticket_daily_limit: 2,
        ..SimConfig::default()
    })
    .await;
    let token = classic_ok(&h).await;
    for _ in 0..2 {
        ticket(&getticket(&h, &token, "jsapi").await);
    }
    let refused = getticket(&h, &token, "jsapi").await;
    assert_eq!(errcode(&refused), 45009);
    assert!(refused.get("ticket").is_none());
    // Each kind has its own counter.
    ticket(&getticket(&h, &token, "wx_card").await);

    h.sim.advance(DAY);
    let token = classic_ok(&h).await;
    ticket(&getticket(&h, &token, "jsapi").await);
}

#[tokio::test]
async fn wecom_ticket_limits_count_per_hour() {
    let h = start(SimConfig {
        wecom_corp_ticket_hourly_limit: 3,
        wecom_agent_ticket_hourly_limit: 2,
        ..SimConfig::default()
    })
    .await;
    h.sim.add_wecom_agent(CORPID, AGENT_SECRET, 1_000_002);
    let first = wecom_token(&h, CORPSECRET).await;
    let second = wecom_token(&h, AGENT_SECRET).await;

    // agent_config: 2 an hour per agent, the other agent unaffected.
    ticket(&agent_ticket(&h, &first).await);
    ticket(&agent_ticket(&h, &first).await);
    let refused = agent_ticket(&h, &first).await;
    assert_eq!(errcode(&refused), 45009);
    assert!(refused["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("api freq out of limit"));
    ticket(&agent_ticket(&h, &second).await);

    // The corp ticket: 2 an hour per agent, 3 per corp.
    ticket(&corp_ticket(&h, &first).await);
    ticket(&corp_ticket(&h, &first).await);
    assert_eq!(errcode(&corp_ticket(&h, &first).await), 45009, "per agent");
    ticket(&corp_ticket(&h, &second).await);
    assert_eq!(errcode(&corp_ticket(&h, &second).await), 45009, "per corp");

    h.sim.advance(Duration::from_secs(3600));
    let first = wecom_token(&h, CORPSECRET).await;
    ticket(&corp_ticket(&h, &first).await);
    ticket(&agent_ticket(&h, &first).await);
}

#[tokio::test]
async fn ticket_faults_have_their_own_queue() {
    let h = start(SimConfig::default()).await;
    let token = classic_ok(&h).await;
    h.sim.inject_ticket_fault(Fault::Errcode {
        errcode: 40001,
        count: 2,
    });
    h.sim.inject_ticket_fault(Fault::Http500Html { count: 1 });
    // Token calls do not see ticket faults.
    let token = {
        let newer = classic_ok(&h).await;
        assert_ne!(newer, token);
        newer
    };
    for _ in 0..2 {
        let body = getticket(&h, &token, "jsapi").await;
        assert_eq!(errcode(&body), 40001, "{body}");
        assert!(body.get("ticket").is_none());
    }
    let failed = within(
        client()
            .get(format!(
                "{}/cgi-bin/ticket/getticket?access_token={token}&type=jsapi",
                h.base_url()
            ))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(failed.status(), 500);
    let jsapi = ticket(&getticket(&h, &token, "jsapi").await);
    assert!(h.sim.ticket_valid(APPID, TicketKind::Jsapi, &jsapi));

    // Nor do ticket calls see token faults.
    h.sim.inject(Fault::Errcode {
        errcode: -1,
        count: 1,
    });
    assert_eq!(ticket(&getticket(&h, &token, "jsapi").await), jsapi);
    let query = format!("grant_type=client_credential&appid={APPID}&secret={SECRET}");
    assert_eq!(errcode(&classic(&h, &query).await), -1);

    // WeCom ticket calls share the ticket queue; clearing empties it.
    let corp = wecom_token(&h, CORPSECRET).await;
    h.sim.inject_ticket_fault(Fault::Errcode {
        errcode: 42001,
        count: 5,
    });
    assert_eq!(errcode(&corp_ticket(&h, &corp).await), 42001);
    assert_eq!(errcode(&agent_ticket(&h, &corp).await), 42001);
    h.sim.clear_faults();
    ticket(&corp_ticket(&h, &corp).await);
    ticket(&agent_ticket(&h, &corp).await);
}

#[tokio::test]
async fn admin_routes_cover_tickets() {
    let h = start(SimConfig::default()).await;
    let admin = format!("{}/__sim", h.base_url());
    let ok = json!({ "errcode": 0, "errmsg": "ok" });

    let added = post_json(
        format!("{admin}/wecom_agents"),
        json!({ "corpid": CORPID, "secret": AGENT_SECRET, "agentid": 1_000_002 }),
    )
    .await;
    assert_eq!(added, ok);
    let agent = wecom_token(&h, AGENT_SECRET).await;
    let agent_config = ticket(&agent_ticket(&h, &agent).await);
    let valid = get_json(format!(
        "{admin}/ticket_valid?owner={CORPID}&kind=agent_config&ticket={agent_config}"
    ))
    .await;
    assert_eq!(valid, json!({ "valid": true, "issued": true }));
    let valid = get_json(format!(
        "{admin}/ticket_valid?owner={APPID}&kind=jsapi&ticket=nope"
    ))
    .await;
    assert_eq!(valid, json!({ "valid": false, "issued": false }));
    let bad = within(
        client()
            .get(format!(
                "{admin}/ticket_valid?owner={APPID}&kind=meteor&ticket=x"
            ))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);

    assert_eq!(
        post_json(
            format!("{admin}/ticket_fault"),
            json!({ "kind": "errcode", "errcode": 40001 })
        )
        .await,
        ok
    );
    let token = classic_ok(&h).await;
    assert_eq!(errcode(&getticket(&h, &token, "jsapi").await), 40001);

    assert_eq!(
        post_json(format!("{admin}/ticket_lifetime"), json!({ "secs": 30 })).await,
        ok
    );
    let short = getticket(&h, &token, "wx_card").await;
    assert_eq!(short["expires_in"], 30);
    let short = ticket(&short);
    assert_eq!(
        post_json(format!("{admin}/advance"), json!({ "secs": 31 })).await,
        ok
    );
    let valid = get_json(format!(
        "{admin}/ticket_valid?owner={APPID}&kind=wx_card&ticket={short}"
    ))
    .await;
    assert_eq!(valid, json!({ "valid": false, "issued": true }));

    let calls = get_json(format!("{admin}/calls")).await;
    assert_eq!(calls["getticket"], 2);
    assert_eq!(calls["wecom_ticket_get"], 1);
    assert_eq!(calls["wecom_get_jsapi_ticket"], 0);
    let last = get_json(format!("{admin}/last?endpoint=getticket")).await;
    assert_eq!(last["query"], "type=wx_card");
    let config = get_json(format!("{admin}/config")).await;
    assert_eq!(config["ticket_lifetime_secs"], 30.0);
    assert_eq!(config["ticket_daily_limit"], 100_000);
    assert_eq!(config["wecom_corp_ticket_hourly_limit"], 400);
    assert_eq!(config["wecom_agent_ticket_hourly_limit"], 100);
}
