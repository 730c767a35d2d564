//! The token-injecting proxy, `ANY /v1/apps/{app}/proxy/{path}`, end to
//! end: a broker on real sockets in front of the simulator over real HTTP.
//! What arrives upstream is checked with the simulator's own record of the
//! request; the token must never show up in an error body or a log line.

mod support;

use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wxbroker::client::{self, Target};
use wxbroker::simulator::{Endpoint, SimConfig};
use wxbroker::Tuning;

/// One call for each token-consuming endpoint: (endpoint, method, path, query, body).
fn calls() -> Vec<(Endpoint, Method, &'static str, &'static str, &'static str)> {
    vec![
        (
            Endpoint::InvokeCloudFunction,
            Method::POST,
            "tcb/invokecloudfunction",
            "env=test-2a8b&name=music",
            r#"{"$url":"playlist","start":0,"count":10,"title":"中文 & more"}"#,
        ),
        (
            Endpoint::DatabaseQuery,
            Method::POST,
            "tcb/databasequery",
            "",
            r#"{"env":"test-2a8b","query":"db.collection(\"geo\").where({done:true}).limit(10).get()"}"#,
        ),
        (
            Endpoint::DatabaseAdd,
            Method::POST,
            "tcb/databaseadd",
            "",
            r#"{"env":"test-2a8b","query":"db.collection(\"geo\").add({data:[{done:false}]})"}"#,
        ),
        (
            Endpoint::DatabaseUpdate,
            Method::POST,
            "tcb/databaseupdate",
            "",
            r#"{"env":"test-2a8b","query":"db.collection(\"geo\").doc(\"x\").update({data:{done:true}})"}"#,
        ),
        (
            Endpoint::DatabaseDelete,
            Method::POST,
            "tcb/databasedelete",
            "",
            r#"{"env":"test-2a8b","query":"db.collection(\"geo\").doc(\"x\").remove()"}"#,
        ),
        (
            Endpoint::BatchDownloadFile,
            Method::POST,
            "tcb/batchdownloadfile",
            "",
            r#"{"env":"test-2a8b","file_list":[{"fileid":"cloud://test-2a8b.7465/swiper/a.png","max_age":7200}]}"#,
        ),
        (
            Endpoint::UploadFile,
            Method::POST,
            "tcb/uploadfile",
            "",
            r#"{"env":"test-2a8b","path":"swiper/1700000000-a.png"}"#,
        ),
        (
            Endpoint::BatchDeleteFile,
            Method::POST,
            "tcb/batchdeletefile",
            "",
            r#"{"env":"test-2a8b","fileid_list":["cloud://test-2a8b.7465/swiper/a.png"]}"#,
        ),
        (
            Endpoint::QuotaGet,
            Method::POST,
            "cgi-bin/openapi/quota/get",
            "",
            r#"{"cgi_path":"/cgi-bin/token"}"#,
        ),
        (
            Endpoint::QuotaGet,
            Method::GET,
            "cgi-bin/openapi/quota/get",
            "cgi_path=%2Fcgi-bin%2Ftoken&lang=zh_CN",
            "",
        ),
    ]
}

/// The client's query with a stale `access_token` of its own in the middle.
fn with_client_token(query: &str) -> String {
    match query.split_once('&') {
        Some((first, rest)) => format!("{first}&access_token=client-held-stale&{rest}"),
        None if query.is_empty() => "access_token=client-held-stale".to_owned(),
        None => format!("{query}&access_token=client-held-stale"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_consuming_api_arrives_intact_with_the_brokers_token() {
    captured_logs();
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let token = broker.token("shop").await;
    for (endpoint, method, path, query, body) in calls() {
        let uri = format!("/v1/apps/shop/proxy/{path}?{}", with_client_token(query));
        let body_bytes = (!body.is_empty()).then_some(body.as_bytes());
        let (status, headers, answer) = broker
            .send(
                method.clone(),
                &uri,
                &[
                    ("content-type", "application/json"),
                    ("x-request-id", "req-42"),
                    ("connection", "keep-alive, x-hop"),
                    ("x-hop", "must-not-pass"),
                ],
                body_bytes,
            )
            .await;
        let answer: Value = serde_json::from_slice(&answer).expect("a JSON answer");
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["errcode"], 0, "{path}: {answer}");
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let seen = sim.sim.last_request(endpoint).expect("the call arrived");
        assert_eq!(seen.method, method.as_str(), "{path}");
        assert_eq!(seen.query, query, "{path}: the query arrived intact");
        assert_eq!(
            seen.body,
            body.as_bytes(),
            "{path}: the body arrived intact"
        );
        let header = |name: &str| {
            seen.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-request-id"), Some("req-42"));
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("wxbroker-client"), None);
        assert_eq!(header("x-hop"), None, "hop-by-hop headers stay here");
        assert_ne!(header("host"), Some("localhost"));
    }
    // The function saw the parameters the client posted.
    let (_, _, answer) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/invokecloudfunction?env=e1&name=music",
            &[],
            Some(br#"{"$url":"playlist"}"#),
        )
        .await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let resp_data: Value = serde_json::from_str(answer["resp_data"].as_str().unwrap()).unwrap();
    assert_eq!(
        resp_data,
        json!({"env":"e1","name":"music","event":{"$url":"playlist"}})
    );
    // Every call succeeded with the broker's token, none fetched another.
    assert_eq!(sim.sim.calls(Endpoint::Token), 1);
    assert!(sim.sim.token_valid(&token));
    assert_eq!(
        broker
            .metric("wxbroker_proxy_requests_total{app=\"shop\",outcome=\"ok\"}")
            .await,
        (calls().len() + 1) as f64
    );
    assert!(broker
        .metrics_text()
        .await
        .contains("route=\"/v1/apps/{app}/proxy\",status=\"200\""));
    assert!(
        !captured_logs().contains(&token),
        "the token reached a log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_proxies_too() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let body = r#"{"env":"e1","query":"db.collection(\"todos\").get()"}"#;
    let (status, answer) = broker
        .unix(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/databasequery",
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errcode"], 0);
    let seen = sim.sim.last_request(Endpoint::DatabaseQuery).unwrap();
    assert_eq!(seen.body, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_calls_need_the_client_header() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let response = within(
        broker
            .http()
            .post(broker.url("/v1/apps/shop/proxy/tcb/databasequery"))
            .body(r#"{"env":"e1","query":"q"}"#)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 412);
    let response = within(
        broker
            .http()
            .post(broker.url("/v1/apps/shop/proxy/tcb/databasequery"))
            .header("wxbroker-client", "tests")
            .header("x-forwarded-for", "203.0.113.9")
            .body(r#"{"env":"e1","query":"q"}"#)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 403);
    let (status, body) = broker
        .post("/v1/apps/nope/proxy/tcb/databasequery", "{}")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "app_not_found");
    assert_eq!(sim.sim.calls(Endpoint::DatabaseQuery), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_killed_behind_the_brokers_back_costs_one_fetch_and_the_call_succeeds() {
    captured_logs();
    // Short overlap, as the point is a token WeChat no longer accepts.
    let sim = simulator(SimConfig {
        classic_overlap: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let broker = Broker::start(&classic_app("shop", &sim, "min_forced_interval = \"0s\"")).await;
    let old = broker.token("shop").await;
    // Someone else fetches twice with the app's secret: the broker's token dies.
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
    assert!(!sim.sim.token_valid(&old));
    let fetches = sim.sim.calls(Endpoint::Token);
    let body = r#"{"env":"e1","query":"db.collection(\"geo\").get()"}"#;
    let (status, _, answer) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/databasequery",
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errcode"], 0, "the retry succeeded: {answer}");
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        fetches + 1,
        "one extra fetch"
    );
    // Two attempts reached WeChat, the second with the same body.
    assert_eq!(sim.sim.calls(Endpoint::DatabaseQuery), 2);
    assert_eq!(
        sim.sim.last_request(Endpoint::DatabaseQuery).unwrap().body,
        body.as_bytes()
    );
    let new = broker.token("shop").await;
    assert_ne!(new, old);
    assert!(sim.sim.token_valid(&new));
    assert_eq!(
        broker
            .metric("wxbroker_proxy_requests_total{app=\"shop\",outcome=\"retried\"}")
            .await,
        1.0
    );
    let logs = captured_logs();
    assert!(logs.contains("proxied"), "the log capture works");
    assert!(
        !logs.contains(&old) && !logs.contains(&new),
        "a token reached a log line"
    );
    if let Ok(path) = std::env::var("WXBROKER_DUMP_TEST_LOGS") {
        std::fs::write(path, &logs).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_the_broker_cannot_fix_is_never_handed_back_and_the_refresh_is_deferred() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "min_forced_interval = \"3s\"")).await;
    let held = broker.token("shop").await;
    // Two fetches behind the broker's back kill its token at once, and
    // min_forced_interval forbids replacing a token this young.
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
    let token_calls = sim.sim.calls(Endpoint::Token);
    let (status, headers, answer) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/databasequery",
            &[],
            Some(br#"{"env":"e1","query":"q"}"#),
        )
        .await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "token_unavailable");
    assert_eq!(answer["error"]["errcode"], 40001, "{answer}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert_eq!(
        sim.sim.calls(Endpoint::DatabaseQuery),
        1,
        "no pointless retry"
    );
    assert_eq!(
        broker
            .metric("wxbroker_forced_refreshes_total{app=\"shop\",outcome=\"deferred\"}")
            .await,
        1.0
    );
    // The deferred refresh runs on its own at the earliest allowed moment,
    // and its token is served once it has arrived (the simulator counts
    // the call before the broker has the answer).
    let deadline = tokio::time::Instant::now() + WAIT;
    let fresh = loop {
        let served = broker.token("shop").await;
        if served != held {
            break served;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no deferred refresh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(sim.sim.token_valid(&fresh));
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        token_calls + 1,
        "one refresh"
    );
    assert!(
        broker
            .metric("wxbroker_token_fights_total{app=\"shop\"}")
            .await
            >= 1.0,
        "a young token killed behind the broker's back is a token fight"
    );
}

/// Raw requests: a URL library would normalise `..` away before sending.
async fn raw(broker: &Broker, path: &str) -> (u16, Value) {
    let reply = client::send(
        &Target::Tcp(broker.url("")),
        Method::POST,
        path,
        "tests",
        Some(bytes::Bytes::from_static(br#"{"env":"e1","query":"q"}"#)),
        WAIT,
    )
    .await
    .expect("request");
    (
        reply.status.as_u16(),
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_would_leave_api_base_are_refused() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    for path in [
        "/v1/apps/shop/proxy/tcb/../../cgi-bin/token",
        "/v1/apps/shop/proxy/../__sim/calls",
        "/v1/apps/shop/proxy/tcb/%2e%2e/%2E%2E/__sim/calls",
        "/v1/apps/shop/proxy/tcb/.%2e/x",
        "/v1/apps/shop/proxy/http://169.254.169.254/latest/meta-data",
        "/v1/apps/shop/proxy/http:%2F%2F169.254.169.254/x",
        "/v1/apps/shop/proxy//169.254.169.254/x",
        "/v1/apps/shop/proxy/tcb//databasequery",
        "/v1/apps/shop/proxy/tcb%5c..%5c__sim",
        "/v1/apps/shop/proxy/tcb%2f..%2f__sim",
        "/v1/apps/shop/proxy/",
        "/v1/apps/shop/proxy",
    ] {
        let (status, body) = raw(&broker, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{path}");
    }
    for endpoint in Endpoint::ALL.into_iter().filter(|e| !e.issues_tokens()) {
        assert_eq!(sim.sim.calls(endpoint), 0, "nothing was forwarded");
    }
    assert_eq!(
        broker
            .metric("wxbroker_proxy_requests_total{app=\"shop\",outcome=\"refused\"}")
            .await,
        12.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_ten_mebibytes_get_413_before_being_read() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    // `Expect: 100-continue`, as curl sends for large bodies: the broker
    // answers from the declared length without asking for the body.
    let mut stream = tokio::net::TcpStream::connect(broker.tcp).await.unwrap();
    let head = format!(
        "POST /v1/apps/shop/proxy/tcb/uploadfile HTTP/1.1\r\nHost: localhost\r\nWxbroker-Client: tests\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        10 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(sim.sim.calls(Endpoint::UploadFile), 0);

    // Exactly the limit passes.
    let body = format!(
        r#"{{"env":"e1","path":"big.bin","pad":"{}"}}"#,
        "x".repeat(10 * 1024 * 1024 - 40)
    );
    assert!(body.len() <= 10 * 1024 * 1024);
    let (status, _, _) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/uploadfile",
            &[],
            Some(body.as_bytes()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        sim.sim
            .last_request(Endpoint::UploadFile)
            .unwrap()
            .body
            .len(),
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_502_without_the_token() {
    captured_logs();
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let token = broker.token("shop").await;
    // WeChat goes away; the broker still holds a valid token.
    sim.shutdown().await;
    let (status, _, body) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/databasequery?env=e1",
            &[],
            Some(b"{}"),
        )
        .await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(
        !text.contains(&token),
        "the token leaked into an error body"
    );
    assert!(!text.contains("access_token"), "{text}");
    assert_eq!(
        broker
            .metric("wxbroker_proxy_requests_total{app=\"shop\",outcome=\"upstream_error\"}")
            .await,
        1.0
    );
    assert!(
        !captured_logs().contains(&token),
        "the token reached a log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_504_after_the_proxy_timeout() {
    captured_logs();
    let upstream = StallingUpstream::start().await;
    let apps = format!(
        "[[apps]]\nname = \"shop\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\napi_base = \"{}\"\n",
        upstream.base_url()
    );
    let broker = Broker::start_with(
        &apps,
        Options {
            tuning: Some(Tuning {
                proxy_timeout: Duration::from_millis(300),
                quota_poll: None,
                ..Tuning::default()
            }),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(broker.token("shop").await, STALL_TOKEN);
    let started = tokio::time::Instant::now();
    let (status, _, body) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/databasequery",
            &[],
            Some(b"{}"),
        )
        .await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 504, "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(!text.contains(STALL_TOKEN));
    assert_eq!(
        broker
            .metric("wxbroker_proxy_requests_total{app=\"shop\",outcome=\"timeout\"}")
            .await,
        1.0
    );
    assert!(
        !captured_logs().contains(STALL_TOKEN),
        "the token reached a log line"
    );
}
