//! Followers (DESIGN.md section 15) with real processes: a leader broker
//! serving its remote listener over TLS (a throwaway CA from `tls init`)
//! and a follower broker reading the leader's token from it, each
//! against its own simulator so the follower's upstream calls are counted
//! apart: it must make none.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::scripted::{Answer, ScriptedUpstream};
use support::{free_port, simulator, within, ChildBroker, APPID, OTHER_APPID};
use wxbroker::simulator::{SimConfig, SimHandle};

const CREDENTIAL: &str = "staging-credential-7f3a9c01d2e4b5a6";

/// A running leader, its simulator and the files a follower needs.
struct Leader {
    process: ChildBroker,
    sim: SimHandle,
    api: String,
    metrics: String,
    /// `127.0.0.1:PORT` of the remote listener.
    remote: String,
    ca: PathBuf,
    credential_file: PathBuf,
    dir: tempfile::TempDir,
}

/// A running follower and its own simulator, which it must never call.
struct Follower {
    process: ChildBroker,
    sim: SimHandle,
    api: String,
    metrics: String,
    config: PathBuf,
}

fn sim_config(token_lifetime: Duration) -> SimConfig {
    SimConfig {
        token_lifetime,
        ..SimConfig::default()
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

impl Leader {
    /// `shop` (the classic test account) and `crm` (another account);
    /// the client "staging" may read `shop` only.
    async fn start(token_lifetime: Duration, refresh_before: &str) -> Leader {
        let dir = tempfile::tempdir().unwrap();
        let issued = wxbroker::tls::init(&dir.path().join("tls")).expect("tls init");
        let sim = simulator(sim_config(token_lifetime)).await;
        let credential_file = dir.path().join("leader.credential");
        write_private(&credential_file, &format!("{CREDENTIAL}\n"));
        let (api_port, ops_port, remote_port) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"[server]
listen = "127.0.0.1:{api_port}"
metrics_listen = "127.0.0.1:{ops_port}"
remote_listen = "127.0.0.1:{remote_port}"
remote_tls = {{ cert_file = "{cert}", key_file = "{key}" }}

[[apps]]
name = "shop"
appid = "{APPID}"
secret = "{secret}"
api_base = "{base}"
refresh_before = "{refresh_before}"
min_forced_interval = "0s"
tickets = ["jsapi"]

[[apps]]
name = "crm"
appid = "{OTHER_APPID}"
secret = "{other_secret}"
api_base = "{base}"

[[clients]]
name = "staging"
credential_sha256 = "{digest}"
apps = ["shop"]
"#,
            cert = issued.cert.display(),
            key = issued.key.display(),
            secret = support::SECRET,
            other_secret = support::OTHER_SECRET,
            base = sim.base_url(),
            digest = sha256_hex(CREDENTIAL),
        );
        let path = dir.path().join("leader.toml");
        std::fs::write(&path, config).unwrap();
        let mut process = ChildBroker::spawn(&path, "info");
        process
            .wait_ready(&format!("http://127.0.0.1:{ops_port}/readyz"))
            .await;
        Leader {
            process,
            sim,
            api: format!("http://127.0.0.1:{api_port}"),
            metrics: format!("http://127.0.0.1:{ops_port}"),
            remote: format!("127.0.0.1:{remote_port}"),
            ca: issued.ca,
            credential_file,
            dir,
        }
    }

    /// Token reads the remote listener has answered.
    async fn remote_token_reads(&self) -> f64 {
        let text = http()
            .get(format!("{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| {
                line.starts_with("wxbroker_requests_total{")
                    && line.contains("listener=\"remote\"")
                    && line.contains("route=\"/v1/apps/{app}/token\"")
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    async fn token(&self) -> String {
        get(&format!("{}/v1/apps/shop/token", self.api)).await.1["access_token"]
            .as_str()
            .expect("leader token")
            .to_owned()
    }
}

/// The follower's config text, following `url` for `shop`.
fn follower_config(leader: &Leader, url: &str, sim: &SimHandle, ports: (u16, u16)) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{}"
metrics_listen = "127.0.0.1:{}"

[[apps]]
name = "shop"
appid = "{APPID}"
api_base = "{}"
follow = "{url}"
follow_credential_file = "{}"
follow_ca_file = "{}"
tickets = ["jsapi"]
"#,
        ports.0,
        ports.1,
        sim.base_url(),
        leader.credential_file.display(),
        leader.ca.display(),
    )
}

impl Follower {
    /// A follower of `leader`'s `shop` through `url`, started and, when
    /// `ready`, waited for until it serves a token.
    async fn start(leader: &Leader, url: &str, ready: bool) -> Follower {
        let sim = simulator(SimConfig::default()).await;
        let ports = (free_port(), free_port());
        let config = leader.dir.path().join(format!("follower-{}.toml", ports.0));
        std::fs::write(&config, follower_config(leader, url, &sim, ports)).unwrap();
        let mut process = ChildBroker::spawn(&config, "info");
        let metrics = format!("http://127.0.0.1:{}", ports.1);
        if ready {
            process.wait_ready(&format!("{metrics}/readyz")).await;
        } else {
            process.wait_ready(&format!("{metrics}/livez")).await;
        }
        Follower {
            process,
            sim,
            api: format!("http://127.0.0.1:{}", ports.0),
            metrics,
            config,
        }
    }

    async fn token(&self) -> (u16, Value) {
        get(&format!("{}/v1/apps/shop/token", self.api)).await
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        let text = http()
            .get(format!("{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(support::WAIT)
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, Value) {
    let response = http()
        .get(url)
        .header("wxbroker-client", "tests")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(url)
        .header("wxbroker-client", "tests")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `probe` until it yields `Some`, within the tests' bound.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_the_leaders_token_and_never_calls_wechat() {
    let leader = Leader::start(Duration::from_secs(7200), "5m").await;
    let url = format!(
        "https://localhost:{}",
        leader.remote.rsplit(':').next().unwrap()
    );
    let follower = Follower::start(&leader, &url, true).await;

    let first = leader.token().await;
    let (status, body) = follower.token().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], first.as_str());

    // The leader refreshes (a local caller reported its token): the
    // follower has the new one within a second, without asking WeChat.
    let (status, refreshed) = post(
        &format!("{}/v1/apps/shop/token/invalidate", leader.api),
        json!({ "access_token": first }),
    )
    .await;
    assert_eq!(
        (status, &refreshed["refreshed"]),
        (200, &json!(true)),
        "{refreshed}\n{}",
        leader.process.log()
    );
    let second = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let started = std::time::Instant::now();
    eventually("the follower to adopt the leader's new token", || async {
        let (_, body) = follower.token().await;
        (body["access_token"] == second.as_str()).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "adopted after {:?}",
        started.elapsed()
    );
    assert!(leader.sim.sim.token_valid(&second));

    // It watches rather than polls: over a quiet second and a half the
    // leader answers at most the one watch in flight.
    let before = leader.remote_token_reads().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = leader.remote_token_reads().await;
    assert!(after - before <= 1.0, "{before} -> {after} token reads");

    // Its JS-SDK ticket is the leader's too.
    let (_, ticket) = get(&format!("{}/v1/apps/shop/tickets/jsapi", leader.api)).await;
    let ticket = ticket["ticket"].as_str().expect("leader ticket").to_owned();
    eventually("the follower to serve the leader's ticket", || async {
        let (_, body) = get(&format!("{}/v1/apps/shop/tickets/jsapi", follower.api)).await;
        (body["ticket"] == ticket.as_str()).then_some(())
    })
    .await;
    assert_eq!(follower.sim.sim.total_ticket_calls(), 0);

    assert_eq!(
        follower.sim.sim.total_token_calls(),
        0,
        "the follower called WeChat"
    );
    assert_eq!(
        follower
            .metric("wxbroker_upstream_fetches_total{app=\"shop\",credential=\"access_token\",result=\"ok\"}")
            .await,
        Some(0.0)
    );
    assert_eq!(
        follower
            .metric("wxbroker_leader_reachable{app=\"shop\"}")
            .await,
        Some(1.0)
    );
    let (_, apps) = get(&format!("{}/v1/apps", follower.api)).await;
    assert_eq!(apps["apps"][0]["follows"], url.as_str());
    assert_eq!(apps["apps"][0]["leader_reachable"], true);
    let (_, apps) = get(&format!("{}/v1/apps", leader.api)).await;
    assert_eq!(apps["apps"][0]["follows"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_at_the_follower_makes_one_refresh_at_the_leader() {
    let leader = Leader::start(Duration::from_secs(7200), "5m").await;
    let url = format!(
        "https://localhost:{}",
        leader.remote.rsplit(':').next().unwrap()
    );
    let follower = Follower::start(&leader, &url, true).await;
    let (_, body) = follower.token().await;
    let held = body["access_token"].as_str().unwrap().to_owned();
    let calls = leader.sim.sim.total_token_calls();

    let invalidate = format!("{}/v1/apps/shop/token/invalidate", follower.api);
    let (status, answer) = post(&invalidate, json!({ "access_token": held })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["refreshed"], true, "{answer}");
    let new = answer["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new, held);
    assert_eq!(leader.token().await, new);
    assert_eq!(leader.sim.sim.total_token_calls(), calls + 1);

    // The stale token again, and once more: the leader has rotated it
    // already, so nothing more is fetched.
    let (status, again) = post(&invalidate, json!({ "access_token": held })).await;
    assert_eq!(
        (status, &again["refreshed"]),
        (200, &json!(false)),
        "{again}"
    );
    assert_eq!(again["access_token"], new.as_str());
    assert_eq!(leader.sim.sim.total_token_calls(), calls + 1);
    assert_eq!(follower.sim.sim.total_token_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_serving_until_expiry_when_the_leader_dies() {
    // Short tokens, so the held one runs out within the test.
    let mut leader = Leader::start(Duration::from_secs(12), "3s").await;
    let url = format!(
        "https://localhost:{}",
        leader.remote.rsplit(':').next().unwrap()
    );
    let follower = Follower::start(&leader, &url, true).await;
    let (_, body) = follower.token().await;
    let held = body["access_token"].as_str().unwrap().to_owned();
    leader.process.kill();

    eventually("the follower to see the leader gone", || async {
        let reachable = follower
            .metric("wxbroker_leader_reachable{app=\"shop\"}")
            .await;
        (reachable == Some(0.0)).then_some(())
    })
    .await;
    // While it lives, the held token is served and the follower is ready.
    let (status, body) = follower.token().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], held.as_str());
    let (status, ready) = get(&format!("{}/readyz", follower.metrics)).await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)), "{ready}");
    let (_, apps) = get(&format!("{}/v1/apps", follower.api)).await;
    assert_eq!(apps["apps"][0]["leader_reachable"], false);

    // Then it expires: not ready, and no token served.
    eventually("the follower to report not ready", || async {
        let (status, body) = get(&format!("{}/readyz", follower.metrics)).await;
        (status == 503).then_some(body)
    })
    .await;
    let (status, body) = follower.token().await;
    assert_eq!(status, 503, "{body}");
    assert!(!follower.process.log().contains(&held));
    assert_eq!(follower.sim.sim.total_token_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_listener_wants_a_known_credential_and_an_allowed_app() {
    let leader = Leader::start(Duration::from_secs(7200), "5m").await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&leader.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .timeout(support::WAIT)
        .build()
        .unwrap();
    let port = leader.remote.rsplit(':').next().unwrap();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let send = |path: &str, bearer: Option<&str>| {
        let mut request = client.get(url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };

    let none = send("/v1/apps/shop/token", None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"wxbroker\""
    );
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let wrong = send("/v1/apps/shop/token", Some("staging-credential-wrong"))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let right = send("/v1/apps/shop/token", Some(CREDENTIAL)).await.unwrap();
    assert_eq!(right.status(), 200);
    let body: Value = right.json().await.unwrap();
    assert_eq!(body["appid"], APPID);
    assert_eq!(body["access_token"], leader.token().await.as_str());

    let other = send("/v1/apps/crm/token", Some(CREDENTIAL)).await.unwrap();
    assert_eq!(other.status(), 403);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");

    let apps: Value = send("/v1/apps", Some(CREDENTIAL))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop"]);

    // No proxy and no signing on the remote listener.
    for path in ["/v1/apps/shop/proxy/cgi-bin/openapi/quota/get", "/v1/token"] {
        let response = send(path, Some(CREDENTIAL)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    // Plain HTTP is not spoken there.
    assert!(reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/v1/apps", leader.remote))
        .bearer_auth(CREDENTIAL)
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
        .eq(&false));
    assert!(!leader.process.log().contains(CREDENTIAL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_certificate_for_another_name_is_refused_and_the_held_token_kept() {
    let leader = Leader::start(Duration::from_secs(7200), "5m").await;
    let port = leader.remote.rsplit(':').next().unwrap().to_owned();
    let good = format!("https://localhost:{port}");
    let follower = Follower::start(&leader, &good, true).await;
    let (_, body) = follower.token().await;
    let held = body["access_token"].as_str().unwrap().to_owned();

    // The same leader reached by an address its certificate does not
    // name (127.0.0.2, forwarded to it): the follower must refuse it.
    let relay = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let target = leader.remote.clone();
    let relaying = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = relay.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let config = std::fs::read_to_string(&follower.config)
        .unwrap()
        .replace(&good, &format!("https://{relay_addr}"));
    std::fs::write(&follower.config, config).unwrap();
    follower.process.hangup();

    let log = eventually("the follower to log the refused certificate", || async {
        let log = follower.process.log();
        log.contains("certificate not valid for name \"127.0.0.2\"")
            .then_some(log)
    })
    .await;
    assert!(!log.contains(&held) && !log.contains(CREDENTIAL));
    let (status, body) = follower.token().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], held.as_str());
    let (_, apps) = get(&format!("{}/v1/apps", follower.api)).await;
    assert_eq!(apps["apps"][0]["leader_reachable"], false, "{apps}");
    relaying.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_a_redirect_or_another_appids_token_from_the_leader_is_never_served() {
    let good = json!({
        "app": "shop", "appid": APPID, "grant": "classic", "credential": "access_token",
        "access_token": "GOOD-TOKEN-from-the-leader", "expires_in": 7000,
        "expires_at": 0, "fetched_at": 0, "version": "0011223344556677"
    });
    let mut foreign = good.clone();
    foreign["appid"] = json!(OTHER_APPID);
    foreign["access_token"] = json!("FOREIGN-TOKEN-of-another-app");
    let script_good = good.to_string();
    let script_foreign = foreign.to_string();
    let leader = ScriptedUpstream::start(move |n, _| match n {
        0 => Answer::json(script_good.clone()),
        1 => Answer::json("<html>garbage</html>"),
        2 => Answer::redirect(302, "http://127.0.0.1:1/v1/apps/shop/token"),
        _ => Answer::json(script_foreign.clone()),
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let credential_file = dir.path().join("credential");
    write_private(&credential_file, CREDENTIAL);
    let sim = simulator(SimConfig::default()).await;
    let (api_port, ops_port) = (free_port(), free_port());
    let config = dir.path().join("follower.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{api_port}"
metrics_listen = "127.0.0.1:{ops_port}"

[[apps]]
name = "shop"
appid = "{APPID}"
api_base = "{}"
follow = "{}"
follow_credential_file = "{}"
"#,
            sim.base_url(),
            leader.base_url(),
            credential_file.display()
        ),
    )
    .unwrap();
    let mut follower = ChildBroker::spawn(&config, "info");
    follower
        .wait_ready(&format!("http://127.0.0.1:{ops_port}/readyz"))
        .await;
    within(async {
        while leader.count() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (status, body) = get(&format!("http://127.0.0.1:{api_port}/v1/apps/shop/token")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "GOOD-TOKEN-from-the-leader");
    let log = follower.log();
    for cause in [
        "not a credential answer",
        "redirect (302 Found); redirects are never followed",
        &format!("appid \"{OTHER_APPID}\""),
    ] {
        assert!(log.contains(cause), "no {cause:?} in:\n{log}");
    }
    assert!(!log.contains("FOREIGN-TOKEN") && !log.contains("GOOD-TOKEN"));
    assert!(!log.contains(CREDENTIAL));
    // Only the leader was asked, with the bearer credential, never the
    // redirect's target nor WeChat.
    assert!(leader
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {CREDENTIAL}"))));
    assert_eq!(sim.sim.total_token_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_while_the_leader_is_down_serves_its_stored_token() {
    let mut leader = Leader::start(Duration::from_secs(7200), "5m").await;
    let url = format!(
        "https://localhost:{}",
        leader.remote.rsplit(':').next().unwrap()
    );
    let sim = simulator(SimConfig::default()).await;
    let ports = (free_port(), free_port());
    let config = leader.dir.path().join("follower-with-store.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[store]\nbackend = \"file\"\npath = \"{}\"\n",
            follower_config(&leader, &url, &sim, ports),
            leader.dir.path().join("follower-state").display()
        ),
    )
    .unwrap();
    let ready = format!("http://127.0.0.1:{}/readyz", ports.1);
    let token_url = format!("http://127.0.0.1:{}/v1/apps/shop/token", ports.0);
    let mut follower = ChildBroker::spawn(&config, "info");
    follower.wait_ready(&ready).await;
    let held = get(&token_url).await.1["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();

    leader.process.kill();
    follower.kill();
    let mut follower = ChildBroker::spawn(&config, "info");
    follower.wait_ready(&ready).await;
    let (status, body) = get(&token_url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], held.as_str());
    assert!(follower
        .log()
        .contains("loaded the stored credential of the leader"));
    assert_eq!(sim.sim.total_token_calls(), 0);
}

/// A follower of `leader` (a scripted leader on plain HTTP) for `shop`,
/// with a file store so that every adoption is saved; waited for until
/// it serves a token.
async fn follower_of(leader: &ScriptedUpstream, dir: &Path) -> (ChildBroker, String, String) {
    let credential_file = dir.join("credential");
    write_private(&credential_file, CREDENTIAL);
    let sim = simulator(SimConfig::default()).await;
    let (api_port, ops_port) = (free_port(), free_port());
    let config = dir.join("follower.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{api_port}"
metrics_listen = "127.0.0.1:{ops_port}"

[store]
backend = "file"
path = "{}"

[[apps]]
name = "shop"
appid = "{APPID}"
api_base = "{}"
follow = "{}"
follow_credential_file = "{}"
"#,
            dir.join("state").display(),
            sim.base_url(),
            leader.base_url(),
            credential_file.display()
        ),
    )
    .unwrap();
    let mut follower = ChildBroker::spawn(&config, "info");
    let metrics = format!("http://127.0.0.1:{ops_port}");
    follower.wait_ready(&format!("{metrics}/readyz")).await;
    (follower, format!("http://127.0.0.1:{api_port}"), metrics)
}

/// A leader's answer for `shop` carrying `token`.
fn leader_answer(token: &str) -> String {
    json!({
        "app": "shop", "appid": APPID, "grant": "classic", "credential": "access_token",
        "access_token": token, "expires_in": 7000,
        "expires_at": 0, "fetched_at": 0, "version": "0011223344556677"
    })
    .to_string()
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_answering_every_watch_at_once_is_asked_at_a_bounded_pace() {
    let answer = leader_answer("SAME-TOKEN-every-time");
    let leader = ScriptedUpstream::start(move |_, _| Answer::json(answer.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let (follower, api, _) = follower_of(&leader, dir.path()).await;

    let before = leader.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = leader.count() - before;
    assert!(
        asked <= 10,
        "{asked} watches in 3 s against a leader answering at once"
    );
    let (status, body) = get(&format!("{api}/v1/apps/shop/token")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "SAME-TOKEN-every-time");
    // A same-value answer is not a change: adopted (and saved) once.
    let log = follower.log();
    assert_eq!(
        lines_with(&log, "adopted the leader's credential"),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_flipping_between_two_tokens_is_an_anomaly_logged_once_and_counted() {
    let (a, b) = (leader_answer("FLIP-TOKEN-A"), leader_answer("FLIP-TOKEN-B"));
    let leader = ScriptedUpstream::start(move |n, _| {
        Answer::json(if n % 2 == 0 { a.clone() } else { b.clone() })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (follower, api, metrics) = follower_of(&leader, dir.path()).await;
    let flips = "wxbroker_follower_flips_total{app=\"shop\",credential=\"access_token\"}";
    let flipped = || async {
        let text = http()
            .get(format!("{metrics}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(flips)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    eventually("two flips counted", || async {
        (flipped().await >= 2.0).then_some(())
    })
    .await;
    let before = leader.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = leader.count() - before;
    assert!(
        asked <= 5,
        "{asked} watches in 3 s against a flipping leader"
    );

    let log = follower.log();
    assert_eq!(
        lines_with(&log, "flip between two values"),
        1,
        "one anomaly line per episode:\n{log}"
    );
    // A and B each adopted (and saved) once; the flips back are neither
    // saved nor logged one by one.
    assert_eq!(
        lines_with(&log, "adopted the leader's credential"),
        2,
        "{log}"
    );
    assert!(!log.contains("FLIP-TOKEN"), "a token in the log:\n{log}");
    let (status, body) = get(&format!("{api}/v1/apps/shop/token")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"]
        .as_str()
        .is_some_and(|token| token.starts_with("FLIP-TOKEN-")));
}
