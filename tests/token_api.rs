//! The token API end to end: a broker on real sockets in front of the
//! simulator speaking real HTTP. Covers DESIGN.md section 4 rules 1–4 as
//! the simulator (the oracle) sees them, and section 5's routes and errors.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use support::*;
use tokio::sync::Mutex;
use wxbroker::simulator::{Endpoint, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_reads_make_one_upstream_call() {
    let sim = simulator(SimConfig::default()).await;
    // Slow upstream: every reader arrives while the first fetch is in flight.
    sim.sim.set_latency(Duration::from_millis(500));
    let broker = Broker::start_with(
        &classic_app("shop", &sim, ""),
        Options {
            server: "max_connections = 2048".into(),
            ..Options::default()
        },
    )
    .await;
    let broker = Arc::new(broker);
    let readers: Vec<_> = (0..1000)
        .map(|_| {
            let broker = broker.clone();
            tokio::spawn(async move { broker.token("shop").await })
        })
        .collect();
    let mut tokens = HashSet::new();
    for reader in readers {
        tokens.insert(within(reader).await.unwrap());
    }
    assert_eq!(tokens.len(), 1, "every reader got the same token");
    assert_eq!(sim.sim.total_token_calls(), 1);
    assert!(sim.sim.token_valid(tokens.iter().next().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proactive_refresh_across_four_lifetimes_serves_only_valid_tokens() {
    // 3 s tokens refreshed 1 s ahead: a new token every 2 s, with no request needed.
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(3),
        ..SimConfig::default()
    })
    .await;
    let broker = Broker::start(&classic_app("shop", &sim, "refresh_before = \"1s\"")).await;
    let first = broker.token("shop").await;
    let started = tokio::time::Instant::now();
    let served = Mutex::new(Vec::new());
    // A reader polls throughout, checking each token with the oracle at once.
    while started.elapsed() < Duration::from_millis(9_000) {
        let token = broker.token("shop").await;
        assert!(sim.sim.token_valid(&token), "served a token WeChat rejects");
        served.lock().await.push(token);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Fetches at 0, 2, 4, 6, 8 s: the first plus one per 2 s.
    assert_eq!(sim.sim.calls(Endpoint::Token), 5);
    let distinct: HashSet<_> = served.lock().await.iter().cloned().collect();
    assert_eq!(distinct.len(), 5, "every token was served");
    assert!(distinct.contains(&first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invalidations_of_the_current_token_make_one_call() {
    let sim = simulator(SimConfig::default()).await;
    let broker =
        Arc::new(Broker::start(&classic_app("shop", &sim, "min_forced_interval = \"1s\"")).await);
    let old = broker.token("shop").await;
    // Let the token age past min_forced_interval.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.sim.set_latency(Duration::from_millis(200));
    let body = format!("{{\"access_token\":\"{old}\"}}");
    let storm: Vec<_> = (0..200)
        .map(|_| {
            let (broker, body) = (broker.clone(), body.clone());
            tokio::spawn(async move { broker.post("/v1/apps/shop/token/invalidate", &body).await })
        })
        .collect();
    let mut tokens = HashSet::new();
    let mut refreshed = 0;
    for call in storm {
        let (status, answer) = within(call).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        tokens.insert(answer["access_token"].as_str().unwrap().to_owned());
        refreshed += usize::from(answer["refreshed"] == true);
    }
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        2,
        "one initial fetch, one refresh"
    );
    assert_eq!(tokens.len(), 1, "one new token for all");
    assert_eq!(refreshed, 1);
    let new = tokens.into_iter().next().unwrap();
    assert_ne!(new, old);
    assert!(sim.sim.token_valid(&new));

    // Reporting the replaced token again changes nothing.
    let (status, answer) = broker.post("/v1/apps/shop/token/invalidate", &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["refreshed"], false);
    assert_eq!(answer["access_token"], new.as_str());
    assert_eq!(sim.sim.calls(Endpoint::Token), 2);
}

/// An invalidation never waits longer than token_wait_timeout (3 s here):
/// with upstream slower than that, the caller gets its still-valid token,
/// not refreshed, and the refresh goes on and lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_with_upstream_slow_answers_within_the_wait() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "min_forced_interval = \"0s\"")).await;
    let old = broker.token("shop").await;
    sim.sim.set_latency(Duration::from_secs(6));
    let started = tokio::time::Instant::now();
    let (status, answer) = broker
        .post(
            "/v1/apps/shop/token/invalidate",
            &format!("{{\"access_token\":\"{old}\"}}"),
        )
        .await;
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_millis(4500)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["refreshed"], false);
    assert_eq!(answer["access_token"], old.as_str());
    assert!(sim.sim.token_valid(&old));
    // The refresh goes on, and lands.
    let deadline = tokio::time::Instant::now() + WAIT;
    let new = loop {
        let token = broker.token("shop").await;
        if token != old {
            break token;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(sim.sim.token_valid(&new));
    assert_eq!(sim.sim.calls(Endpoint::Token), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_grant_before_the_window_keeps_its_token_and_does_not_spin() {
    // 12 s tokens that rotate only in their last 2 s; the broker asks 6 s ahead.
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(12),
        stable_window: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let broker = Broker::start(&stable_app("mini", &sim, "refresh_before = \"6s\"")).await;
    let first = broker.token("mini").await;
    // Wait for the rotation, checking what readers get meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(14);
    let mut rotated = None;
    while tokio::time::Instant::now() < deadline {
        let token = broker.token("mini").await;
        assert!(sim.sim.token_valid(&token));
        if token != first {
            rotated = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated.is_some(), "the stable token rotated before expiry");
    // Asks at 6 s (same token, 6 s left), then every max(left/4, 2 s):
    // 8 s (4 s left), 10 s (2 s left: rotates). A spin would be hundreds.
    let calls = sim.sim.calls(Endpoint::StableToken);
    assert!((3..=6).contains(&calls), "{calls} stable_token calls");
}

#[tokio::test]
async fn tcp_and_unix_socket_serve_the_same_token() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let over_tcp = broker.token("shop").await;
    let (status, over_unix) = broker.unix(Method::GET, "/v1/apps/shop/token", None).await;
    assert_eq!(status, 200);
    assert_eq!(over_unix["access_token"], over_tcp.as_str());
    // The only app is the default one, on both transports.
    let (status, default) = broker.unix(Method::GET, "/v1/token", None).await;
    assert_eq!(
        (status, default["access_token"].as_str()),
        (200, Some(over_tcp.as_str()))
    );
    let (status, default) = broker.get("/v1/token").await;
    assert_eq!((status, default["app"].as_str()), (200, Some("shop")));
    let expires_in = default["expires_in"].as_u64().unwrap();
    assert!((7190..=7200).contains(&expires_in), "{expires_in}");
}

#[tokio::test]
async fn token_answers_are_not_cacheable_and_come_as_text_on_request() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let token = broker.token("shop").await;
    let response = reqwest::Client::new()
        .get(broker.url("/v1/apps/shop/token?format=text"))
        .header("wxbroker-client", "tests")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(response.text().await.unwrap(), token);
}

#[tokio::test]
async fn errors_are_json_with_the_pinned_codes() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "") + &stable_app("mini", &sim, "");
    let broker = Broker::start(&apps).await;

    let (status, body) = broker.get("/v1/apps/nope/token").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("app_not_found"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("shop, mini"), "{message}");

    let (status, body) = broker.get("/v1/token").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_default_app"))
    );

    let (status, body) = broker.get("/v1/nothing/here").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("route_not_found"))
    );

    let (status, body) = broker.post("/v1/apps/shop/token", "{}").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    let (status, body) = broker.get("/v1/apps/shop/token/invalidate").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    for bad in ["{not json", "{}", "{\"access_token\": 5}", ""] {
        let (status, body) = broker.post("/v1/apps/shop/token/invalidate", bad).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    let (status, body) = broker
        .unix(Method::POST, "/v1/apps/shop/token/invalidate", Some("[1,2"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );

    let huge = format!("{{\"access_token\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (status, body) = broker.post("/v1/apps/shop/token/invalidate", &huge).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // No upstream call was spent on any of it beyond the two initial fetches.
    wait_until("both apps fetched", || sim.sim.total_token_calls() == 2).await;
}

/// A client still writing a body the broker refused by its declared length
/// gets the answer, then finishes its body and closes, with no reset under
/// it: the broker reads and drops what follows its answer for a while.
#[tokio::test]
async fn a_refused_body_is_answered_while_the_client_still_sends_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let url = reqwest::Url::parse(&broker.url("/")).unwrap();
    let address = (url.host_str().unwrap().to_owned(), url.port().unwrap());
    let mut stream = within(tokio::net::TcpStream::connect(address))
        .await
        .unwrap();
    const SIZE: usize = 4 * 1024 * 1024;
    let head = format!(
        "POST /v1/apps/shop/token/invalidate HTTP/1.1\r\nhost: broker\r\n\
         wxbroker-client: tests\r\ncontent-type: application/json\r\n\
         content-length: {SIZE}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The answer comes before a byte of the body is sent.
    let mut answer = vec![0; 4096];
    let read = within(stream.read(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The whole body still goes: every write is taken.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..SIZE / chunk.len() {
        within(stream.write_all(&chunk))
            .await
            .expect("the broker still reads what the client sends");
    }
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(stream.read_to_end(&mut rest))
        .await
        .expect("the connection ends cleanly, not with a reset");
}

#[tokio::test]
async fn apps_status_and_readiness_never_show_a_token_or_secret() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "") + &wecom_app("crm", &sim, "");
    let broker = Broker::start(&apps).await;
    let shop = broker.token("shop").await;
    let crm = broker.token("crm").await;
    let (status, body) = broker.get("/v1/apps").await;
    assert_eq!(status, 200);
    let text = body.to_string();
    for secret in [shop.as_str(), crm.as_str(), SECRET, CORPSECRET] {
        assert!(!text.contains(secret), "leaked in {text}");
    }
    let apps = body["apps"].as_array().unwrap();
    assert_eq!(apps[0]["name"], "shop");
    assert_eq!(apps[0]["valid"], true);
    assert_eq!(apps[0]["fetches_today"], 1);
    assert_eq!(apps[1]["kind"], "wecom");
    assert_eq!(apps[1]["grant"], "wecom");
    let (status, ready) = broker.unix(Method::GET, "/readyz", None).await;
    assert_eq!((status, ready["ready"].as_bool()), (200, Some(true)));
}

#[tokio::test]
async fn shutdown_removes_the_socket_file() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    let socket = broker.socket.clone();
    assert!(socket.exists());
    let _dir = broker.stop().await;
    assert!(!socket.exists());
}

/// The token read answered at once and the one that waits count alike:
/// each request once in `wxbroker_requests_total` and once for its client,
/// and a request the quick path passes on (a relayed one, one without a
/// client header where one is required) is counted once, with its error.
#[tokio::test]
async fn each_request_is_counted_once_whichever_path_answers_it() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start_with(
        &classic_app("shop", &sim, ""),
        Options {
            server: "require_client_header = true".into(),
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    let ok = r#"wxbroker_requests_total{listener="tcp",route="/v1/apps/{app}/token",status="200"}"#;
    let client = r#"wxbroker_client_requests_total{client="tests"}"#;
    let (ok_before, client_before) = (broker.metric(ok).await, broker.metric(client).await);
    for _ in 0..5 {
        broker.token("shop").await;
    }
    assert_eq!(broker.metric(ok).await, ok_before + 5.0);
    assert_eq!(broker.metric(client).await, client_before + 5.0);

    let (status, _, _) = broker
        .send(
            Method::GET,
            "/v1/apps/shop/token",
            &[("x-forwarded-for", "10.0.0.1")],
            None,
        )
        .await;
    assert_eq!(status, 403);
    let refused =
        r#"wxbroker_requests_total{listener="tcp",route="/v1/apps/{app}/token",status="403"}"#;
    assert_eq!(broker.metric(refused).await, 1.0);
    assert_eq!(
        broker.metric(client).await,
        client_before + 5.0,
        "refused before counting the client"
    );

    let headless = within(broker.http().get(broker.url("/v1/apps/shop/token")).send())
        .await
        .unwrap();
    assert_eq!(headless.status(), 412);
    let missing =
        r#"wxbroker_requests_total{listener="tcp",route="/v1/apps/{app}/token",status="412"}"#;
    assert_eq!(broker.metric(missing).await, 1.0);
    assert_eq!(broker.metric(ok).await, ok_before + 5.0);
    broker.stop().await;
}
