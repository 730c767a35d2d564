//! Each listener's own connection budget, with real sockets: the remote
//! listener's peers (TLS handshakes that never start, long-poll
//! watchers) fill the remote listener's budget and no other, so fresh
//! local reads on TCP and on the Unix socket answer at once; a stalled
//! handshake gives its slot back within seconds; a client holds at most
//! its share of watches; and a reload that removes a client ends its
//! open watches before they can deliver another token.

mod support;

use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use wxbroker::simulator::{SimConfig, SimHandle};

const STAGING: &str = "staging-credential-7f3a9c01d2e4b5a6";
const CI: &str = "ci-credential-0b1c2d3e4f5a6b7c8d9e";
/// What "promptly" means for a local read while the remote listener is
/// flooded: far below any deadline that would free a slot.
const PROMPT: Duration = Duration::from_secs(2);

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn client_entry(name: &str, credential: &str) -> String {
    format!(
        "[[clients]]\nname = \"{name}\"\ncredential_sha256 = \"{}\"\napps = [\"shop\"]\n",
        sha256_hex(credential)
    )
}

/// A broker serving `shop` on every local listener and on a remote
/// listener (TLS from `tls init`) for the clients staging and ci, with
/// `server` as further `[server]` lines.
async fn remote_broker(server: &str) -> (Broker, SimHandle, reqwest::Certificate) {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let issued = wxbroker::tls::init(&dir.path().join("tls")).expect("tls init");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&issued.ca).unwrap()).unwrap();
    let apps = format!(
        "{}{}{}",
        classic_app("shop", &sim, "min_forced_interval = \"0s\""),
        client_entry("staging", STAGING),
        client_entry("ci", CI),
    );
    let broker = Broker::start_with(
        &apps,
        Options {
            server: format!(
                "remote_listen = \"127.0.0.1:0\"\nremote_tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n{server}",
                issued.cert.display(),
                issued.key.display()
            ),
            dir: Some(dir),
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    (broker, sim, ca)
}

/// A client of the remote listener; no idle connection is kept, so none
/// holds a slot after its request.
fn remote_client(ca: &reqwest::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca.clone())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn remote_url(broker: &Broker, path: &str) -> String {
    let port = broker.remote.expect("remote listener").port();
    format!("https://localhost:{port}{path}")
}

/// A remote read of shop's token as `credential`: status and body.
async fn remote_get(
    broker: &Broker,
    client: &reqwest::Client,
    credential: &str,
    path: &str,
) -> (u16, Value) {
    let response = within(
        client
            .get(remote_url(broker, path))
            .bearer_auth(credential)
            .send(),
    )
    .await
    .expect("remote request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Starts a watch of shop's token from `version`, held up to 60 s.
fn spawn_watch(
    broker: &Broker,
    client: &reqwest::Client,
    credential: &'static str,
    version: &str,
) -> tokio::task::JoinHandle<(u16, String)> {
    let request = client
        .get(remote_url(
            broker,
            &format!("/v1/apps/shop/token?wait_change_from={version}&timeout=60"),
        ))
        .bearer_auth(credential);
    tokio::spawn(async move {
        let response = request.send().await.expect("watch sent");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

/// Polls a metric until it reaches `value`.
async fn wait_for_metric(broker: &Broker, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = broker.metric(series).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {now}, never {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh local read on TCP and one on the Unix socket, each answered
/// within [`PROMPT`].
async fn local_reads_answer_promptly(broker: &Broker) {
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let tcp = tokio::time::timeout(
        PROMPT,
        fresh
            .get(broker.url("/v1/apps/shop/token"))
            .header("wxbroker-client", "tests")
            .send(),
    )
    .await
    .expect("a local TCP read answered promptly")
    .unwrap();
    assert_eq!(tcp.status(), 200);
    let (status, body) = tokio::time::timeout(
        PROMPT,
        broker.unix(Method::GET, "/v1/apps/shop/token", None),
    )
    .await
    .expect("a Unix socket read answered promptly");
    assert_eq!(status, 200, "{body}");
    let livez = tokio::time::timeout(
        PROMPT,
        fresh.get(format!("http://{}/livez", broker.metrics)).send(),
    )
    .await
    .expect("/livez answered promptly")
    .unwrap();
    assert_eq!(livez.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_and_watchers_on_the_remote_listener_leave_local_reads_answering() {
    // Twenty watchers alone would take every slot of a budget shared
    // with the local API (16); the remote listener has 24 of its own.
    let (broker, _sim, ca) =
        remote_broker("max_connections = 16\nremote_max_connections = 24\nidle_timeout = \"60s\"")
            .await;
    let client = remote_client(&ca);
    let (status, held) = remote_get(&broker, &client, STAGING, "/v1/apps/shop/token").await;
    assert_eq!(status, 200, "{held}");
    let version = held["version"].as_str().unwrap().to_owned();

    let watchers: Vec<_> = (0..20)
        .map(|i| {
            let credential = if i % 2 == 0 { STAGING } else { CI };
            spawn_watch(&broker, &client, credential, &version)
        })
        .collect();
    wait_for_metric(&broker, "wxbroker_remote_watches_open", 20.0).await;
    // Then connections that never send a ClientHello, more than the
    // budget has left: the rest wait in the listen backlog.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(TcpStream::connect(broker.remote.unwrap()).await.unwrap());
    }
    wait_for_metric(
        &broker,
        "wxbroker_connections_open{listener=\"remote\"}",
        24.0,
    )
    .await;

    for _ in 0..5 {
        local_reads_answer_promptly(&broker).await;
    }
    let text = broker.metrics_text().await;
    assert!(
        text.contains("wxbroker_connections_max{listener=\"remote\"} 24")
            && text.contains("wxbroker_connections_max{listener=\"tcp\"} 16")
            && text.contains("wxbroker_connections_max{listener=\"unix\"} 16"),
        "{text}"
    );
    for watcher in watchers {
        watcher.abort();
    }
    drop(stalled);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_starts_gives_its_slot_back_within_seconds() {
    // A request head may take a minute here; a handshake may not.
    let (broker, _sim, ca) =
        remote_broker("remote_max_connections = 4\nidle_timeout = \"60s\"").await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(TcpStream::connect(broker.remote.unwrap()).await.unwrap());
    }
    wait_for_metric(
        &broker,
        "wxbroker_connections_open{listener=\"remote\"}",
        4.0,
    )
    .await;
    let started = Instant::now();
    let (status, body) =
        remote_get(&broker, &remote_client(&ca), STAGING, "/v1/apps/shop/token").await;
    assert_eq!(status, 200, "{body}");
    let waited = started.elapsed();
    assert!(
        waited < wxbroker::server::TLS_HANDSHAKE_DEADLINE * 3,
        "the read waited {waited:?} for a slot"
    );
    // The stalled peers were let go, not merely outnumbered.
    for mut stream in stalled {
        let mut byte = [0u8; 1];
        let read = within(stream.read(&mut byte)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_at_most_its_share_of_watches() {
    let (broker, _sim, ca) = remote_broker("remote_max_watches_per_client = 2").await;
    let client = remote_client(&ca);
    let (_, held) = remote_get(&broker, &client, STAGING, "/v1/apps/shop/token").await;
    let version = held["version"].as_str().unwrap().to_owned();
    let watches = [
        spawn_watch(&broker, &client, STAGING, &version),
        spawn_watch(&broker, &client, STAGING, &version),
    ];
    wait_for_metric(&broker, "wxbroker_remote_watches_open", 2.0).await;

    let started = Instant::now();
    let (status, body) = remote_get(
        &broker,
        &client,
        STAGING,
        &format!("/v1/apps/shop/token?wait_change_from={version}&timeout=60"),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_watches", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("remote_max_watches_per_client") && message.contains("staging"),
        "{message}"
    );
    assert!(
        started.elapsed() < PROMPT,
        "refused only after {:?}",
        started.elapsed()
    );

    // A read is not a watch, and another client has its own share.
    let (status, _) = remote_get(&broker, &client, STAGING, "/v1/apps/shop/token").await;
    assert_eq!(status, 200);
    let other = spawn_watch(&broker, &client, CI, &version);
    wait_for_metric(&broker, "wxbroker_remote_watches_open", 3.0).await;
    for watch in watches.into_iter().chain([other]) {
        watch.abort();
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_client_ends_its_open_watch_before_the_next_token() {
    let (broker, sim, ca) = remote_broker("").await;
    let client = remote_client(&ca);
    let (_, held) = remote_get(&broker, &client, STAGING, "/v1/apps/shop/token").await;
    let (version, old_token) = (
        held["version"].as_str().unwrap().to_owned(),
        held["access_token"].as_str().unwrap().to_owned(),
    );
    let revoked = spawn_watch(&broker, &client, STAGING, &version);
    let kept = spawn_watch(&broker, &client, CI, &version);
    wait_for_metric(&broker, "wxbroker_remote_watches_open", 2.0).await;

    // The operator removes staging and reloads (what SIGHUP applies).
    let mut config = broker.config.clone();
    config.clients.retain(|entry| entry.name != "staging");
    within(broker.daemon().reload(&config))
        .await
        .expect("the reload is accepted");
    // Then the token is refreshed.
    let (status, refreshed) = broker
        .post(
            "/v1/apps/shop/token/invalidate",
            &serde_json::json!({ "access_token": old_token }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let new_token = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, old_token);
    assert!(sim.sim.token_valid(&new_token));

    let (status, body) = within(revoked).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    assert!(
        !body.contains(&new_token),
        "the revoked watch carried the new token"
    );
    // The client that stays keeps its watch, and gets the new token.
    let (status, body) = within(kept).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&new_token), "{body}");
    // And the removed client's next request is refused too.
    let (status, _) = remote_get(&broker, &client, STAGING, "/v1/apps/shop/token").await;
    assert_eq!(status, 401);

    // A changed credential ends the old one's watch at once, with no
    // token change to wait for.
    let (_, held) = remote_get(&broker, &client, CI, "/v1/apps/shop/token").await;
    let watch = spawn_watch(&broker, &client, CI, held["version"].as_str().unwrap());
    wait_for_metric(&broker, "wxbroker_remote_watches_open", 1.0).await;
    for entry in config.clients.iter_mut().filter(|entry| entry.name == "ci") {
        entry.identity = wxbroker::config::ClientIdentity::Bearer {
            sha256: Sha256::digest(b"ci-credential-rotated-0a1b2c3d4e5f").into(),
        };
    }
    within(broker.daemon().reload(&config)).await.unwrap();
    let (status, body) = tokio::time::timeout(PROMPT, watch)
        .await
        .expect("the watch ended at the reload")
        .unwrap();
    assert_eq!(status, 401, "{body}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reads_its_version_percent_decoded() {
    let (broker, _sim, ca) = remote_broker("").await;
    let client = remote_client(&ca);
    let (_, held) = remote_get(&broker, &client, STAGING, "/v1/apps/shop/token").await;
    let (version, old_token) = (
        held["version"].as_str().unwrap().to_owned(),
        held["access_token"].as_str().unwrap().to_owned(),
    );
    // Every byte escaped: read raw, it is no version at all, and the
    // watch would answer at once with the token it already holds.
    let escaped: String = version.bytes().map(|b| format!("%{b:02X}")).collect();
    let watch = spawn_watch(&broker, &client, STAGING, &escaped);
    wait_for_metric(&broker, "wxbroker_remote_watches_open", 1.0).await;
    let (status, refreshed) = broker
        .post(
            "/v1/apps/shop/token/invalidate",
            &serde_json::json!({ "access_token": old_token }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let new_token = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, old_token);
    let (status, body) = within(watch).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&new_token),
        "the watch ended before the change: {body}"
    );
    broker.stop().await;
}

/// How many threads of the daemon `pid` serve request connections.
fn request_threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        // Thread names are cut to 15 bytes: "wxbroker-requests-N".
        .filter(|name| name.starts_with("wxbroker-reques"))
        .count()
}

#[tokio::test]
async fn request_threads_sets_how_many_threads_serve_requests() {
    let sim = simulator(SimConfig::default()).await;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for (setting, expected) in [("request_threads = 3", 3), ("", cores.div_ceil(2))] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{setting}\n\n{}",
            classic_app("shop", &sim, "")
        );
        let path = dir.path().join("wxbroker.toml");
        std::fs::write(&path, config).unwrap();
        let mut broker = ChildBroker::spawn(&path, "warn");
        let token = format!("http://127.0.0.1:{port}/v1/apps/shop/token");
        broker.wait_ready(&token).await;
        assert_eq!(
            request_threads_of(broker.child.id()),
            expected,
            "{setting:?}"
        );
        broker.kill();
    }
}
