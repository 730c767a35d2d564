//! SIGHUP reload on the real binary: added apps start, removed apps stop,
//! a changed secret is used at once, unchanged apps keep their token with
//! no upstream call, a broken file changes nothing, and a file that blocks
//! neither stops the daemon serving nor from stopping.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;
use wxbroker::simulator::{Endpoint, SimConfig, SimHandle};

fn config(port: u16, metrics_port: u16, apps: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\ntoken_wait_timeout = \"1s\"\n{apps}"
    )
}

fn shop_with_secret_file(sim: &SimHandle, secret_file: &Path) -> String {
    classic_app("shop", sim, "").replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret_file = \"{}\"", secret_file.display()),
    )
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = within(
            self.client
                .get(format!("{}{path}", self.base))
                .header("wxbroker-client", "tests")
                .send(),
        )
        .await
        .expect("broker answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Polls `path` until it answers `status`; returns the body.
    async fn wait_for(&self, path: &str, status: u16) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (got, body) = self.get(path).await;
            if got == status {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never answered {status}; last {got} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reconciles_apps_and_keeps_what_did_not_change() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let secret_file = dir.path().join("shop.secret");
    std::fs::write(&secret_file, "not-the-right-secret\n").unwrap();
    let config_path = dir.path().join("wxbroker.toml");
    let shop = shop_with_secret_file(&sim, &secret_file);
    let crm = wecom_app("crm", &sim, "");
    let mini = stable_app("mini", &sim, "");
    std::fs::write(
        &config_path,
        config(port, metrics_port, &(shop.clone() + &crm)),
    )
    .unwrap();

    let mut broker = ChildBroker::spawn(&config_path, "info");
    let api = Api {
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    broker
        .wait_ready(&format!("{}/v1/apps/crm/token", api.base))
        .await;
    let crm_token = api.get("/v1/apps/crm/token").await.1["access_token"].clone();
    let (status, body) = api.get("/v1/apps/shop/token").await;
    assert_eq!(status, 503);
    assert_eq!(
        body["error"]["errcode"], 40125,
        "the wrong secret is refused: {body}"
    );

    // Fix the secret and add an app: the fixed secret is used at once (not
    // after the 10-minute hold), the new app starts, crm is untouched.
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::write(
        &config_path,
        config(port, metrics_port, &(shop.clone() + &crm + &mini)),
    )
    .unwrap();
    broker.hangup();
    let shop_token = api.wait_for("/v1/apps/shop/token", 200).await["access_token"].clone();
    api.wait_for("/v1/apps/mini/token", 200).await;
    assert!(sim.sim.token_valid(shop_token.as_str().unwrap()));
    assert_eq!(
        api.get("/v1/apps/crm/token").await.1["access_token"],
        crm_token
    );
    assert_eq!(
        sim.sim.calls(Endpoint::WecomGetToken),
        1,
        "crm made no new call"
    );

    // Remove crm, and change a setting of shop's: crm is gone (with its
    // gauges), shop restarts but keeps its token without an upstream call.
    let token_calls = sim.sim.calls(Endpoint::Token);
    let shop_changed = shop.replace("[[apps]]\n", "[[apps]]\ndaily_budget = 500\n");
    std::fs::write(
        &config_path,
        config(port, metrics_port, &(shop_changed + &mini)),
    )
    .unwrap();
    broker.hangup();
    let gone = api.wait_for("/v1/apps/crm/token", 404).await;
    assert_eq!(gone["error"]["code"], "app_not_found");
    let (_, apps) = api.get("/v1/apps").await;
    assert_eq!(apps["apps"][0]["daily_budget"], 500);
    assert_eq!(
        api.get("/v1/apps/shop/token").await.1["access_token"],
        shop_token
    );
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        token_calls,
        "no upstream call for shop"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("wxbroker_token_valid{app=\"crm\"}"),
        "crm's gauges are gone"
    );

    // A broken file is rejected with a log line; everything keeps serving.
    std::fs::write(&config_path, "[server\nlisten = ").unwrap();
    broker.hangup();
    wait_until("the rejection is logged", || {
        broker.log().contains("reload rejected")
    })
    .await;
    assert_eq!(
        api.get("/v1/apps/shop/token").await.1["access_token"],
        shop_token
    );
    assert_eq!(api.get("/v1/apps/mini/token").await.0, 200);
    assert!(broker.terminate().success());
}

/// SIGHUP while a proactive refresh waits on a slow upstream: the reload
/// stops the old refresher and waits for its fetch before the new one
/// starts with that token, so WeChat never sees two token calls for the
/// app at once, and the token served is the one it issued last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_a_fetch_waits_for_it_and_keeps_its_token() {
    // The first token is refreshed 4 s after it is fetched; a replaced
    // token dies at once, so serving one shows at once.
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(8),
        classic_overlap: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config_path = dir.path().join("wxbroker.toml");
    let shop = classic_app("shop", &sim, "refresh_before = \"4s\"");
    std::fs::write(&config_path, config(port, metrics_port, &shop)).unwrap();

    let mut broker = ChildBroker::spawn(&config_path, "info");
    let api = Api {
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    broker
        .wait_ready(&format!("{}/v1/apps/shop/token", api.base))
        .await;
    let first = api.get("/v1/apps/shop/token").await.1["access_token"].clone();
    // The refresh takes 3 s, and the token it gets lives long.
    sim.sim.set_token_lifetime(Duration::from_secs(7200));
    sim.sim.set_latency(Duration::from_secs(3));
    wait_until("the proactive refresh is in flight", || {
        sim.sim.token_calls_in_flight() == 1
    })
    .await;

    let shop_changed = shop.replace("[[apps]]\n", "[[apps]]\ndaily_budget = 500\n");
    std::fs::write(&config_path, config(port, metrics_port, &shop_changed)).unwrap();
    broker.hangup();
    wait_until("the reload is done", || {
        broker.log().contains("configuration reloaded")
    })
    .await;
    wait_until("no token call in flight", || {
        sim.sim.token_calls_in_flight() == 0
    })
    .await;
    sim.sim.set_latency(Duration::ZERO);
    assert_eq!(
        sim.sim.max_token_calls_in_flight(),
        1,
        "never two token calls at once"
    );
    let (status, body) = api.get("/v1/apps/shop/token").await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_ne!(body["access_token"], first);
    assert!(sim.sim.token_valid(token), "the served token is alive");
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        2,
        "the new refresher started with the old one's token"
    );
    let (_, apps) = api.get("/v1/apps").await;
    assert_eq!(apps["apps"][0]["daily_budget"], 500);
    assert!(broker.terminate().success(), "{}", broker.log());
}

/// Replaces `path` with a FIFO that nobody writes to: opening it for
/// reading in the ordinary way blocks forever.
fn replace_with_fifo(path: &Path) {
    std::fs::remove_file(path).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_blocks_never_wedges_the_daemon() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let secret_file = dir.path().join("shop.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let config_path = dir.path().join("wxbroker.toml");
    let shop = shop_with_secret_file(&sim, &secret_file);
    std::fs::write(&config_path, config(port, metrics_port, &shop)).unwrap();

    let mut broker = ChildBroker::spawn(&config_path, "info");
    let api = Api {
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    broker
        .wait_ready(&format!("{}/v1/apps/shop/token", api.base))
        .await;
    let token = api.get("/v1/apps/shop/token").await.1["access_token"].clone();

    // A secret_file that is a FIFO is refused by name, without waiting for
    // a writer.
    replace_with_fifo(&secret_file);
    broker.hangup();
    wait_until("the rejection is logged", || {
        broker.log().contains("reload rejected")
    })
    .await;
    let log = broker.log();
    let rejection = log
        .lines()
        .find(|line| line.contains("reload rejected"))
        .unwrap();
    assert!(
        rejection.contains("apps.shop.secret_file") && rejection.contains("FIFO"),
        "{rejection}"
    );
    assert_eq!(
        api.get("/v1/apps/shop/token").await.1["access_token"],
        token
    );

    // The configuration file itself blocking (a FIFO again, here; a hung
    // mount in life): the read never ends, the daemon serves on, later
    // SIGHUPs wait behind the stuck read, and SIGTERM still stops it.
    replace_with_fifo(&config_path);
    broker.hangup();
    wait_until("the second reload starts", || {
        broker.log().matches("SIGHUP: reloading").count() == 2
    })
    .await;
    assert_eq!(
        api.get("/v1/apps/shop/token").await.1["access_token"],
        token
    );
    broker.hangup();
    wait_until("the queued reload is logged", || {
        broker.log().contains("still reading the configuration")
    })
    .await;
    assert_eq!(
        api.get("/v1/apps/shop/token").await.1["access_token"],
        token
    );

    let pid = broker.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let mut exited = None;
    wait_until("the daemon exits on SIGTERM", || {
        exited = broker.child.try_wait().expect("try_wait");
        exited.is_some()
    })
    .await;
    assert!(exited.unwrap().success(), "{}", broker.log());
}
