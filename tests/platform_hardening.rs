//! The Open Platform against a hostile world (DESIGN.md sections 17 and
//! 21): state planted in the platform's durable files (an authorizer
//! journal or verify ticket with impossible times, readable by others,
//! symlinked elsewhere, or a FIFO) is never served, followed or blocked
//! on, and authorizer tokens granted lifetimes shorter than
//! `refresh_before` are paced by the error backoff instead of refetched
//! for ever. Real HTTP against the simulator, the file store on disk.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{captured_logs, within, WAIT};
use wxbroker::config::Config;
use wxbroker::platform::store::{AuthorizerRecord, FilePlatformStore, PlatformStore, StoredTicket};
use wxbroker::simulator::{SimConfig, SimHandle, Simulator};
use wxbroker::{Daemon, Listeners, Tuning};

const COMPONENT: &str = "wxcomponent0000001";
const SECRET: &str = "component-s3cr3t-0123456789";
const MSG_TOKEN: &str = "message-token-01";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const YEAR_MS: u64 = 365 * 86_400_000;

async fn simulator() -> SimHandle {
    let sim = Simulator::new(SimConfig::default());
    sim.add_component(COMPONENT, SECRET, MSG_TOKEN, AES_KEY);
    sim.spawn().await.expect("simulator starts")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A private state directory under `root`, as the broker makes it.
fn state_dir(root: &Path) -> PathBuf {
    let dir = root.join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn file_store(dir: &Path) -> String {
    format!(
        "[store]\nbackend = \"file\"\npath = \"{}\"\n",
        dir.display()
    )
}

/// The `[server]` and `[[platforms]]` sections of a broker with one
/// platform `name` against `sim`; `keys` adds platform keys.
fn config_text(sim: &SimHandle, name: &str, server: &str, store: &str, keys: &str) -> String {
    format!(
        "[server]\n{server}token_wait_timeout = \"5s\"\n{store}\n[[platforms]]\nname = \"{name}\"\ncomponent_appid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\ntoken = \"{MSG_TOKEN}\"\naes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n{keys}",
        sim.base_url()
    )
}

/// An in-process broker with one platform.
struct Platform {
    daemon: Daemon,
    api: SocketAddr,
    name: String,
    http: reqwest::Client,
}

async fn start(sim: &SimHandle, name: &str, store: &str, keys: &str) -> Platform {
    // The log collector must be in place before the broker logs.
    captured_logs();
    let server = "listen = \"127.0.0.1:0\"\ncallback_listen = \"127.0.0.1:0\"\n";
    let text = config_text(sim, name, server, store, keys);
    let config = Config::from_toml_str("platform.toml", &text).expect("valid config");
    let listeners = Listeners::bind(&config).await.expect("binds");
    let api = listeners.api_tcp_addr().unwrap();
    let callback = listeners.callback_addr().unwrap();
    sim.sim.set_callback_url(
        COMPONENT,
        &format!("http://{callback}/wechat/platforms/{name}/callback"),
    );
    let daemon = wxbroker::start_with(&config, listeners, Tuning::default())
        .await
        .expect("broker starts");
    Platform {
        daemon,
        api,
        name: name.to_owned(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Platform {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!(
                "http://{}/v1/platforms/{}{path}",
                self.api, self.name
            ))
            .header("wxbroker-client", "tests")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The first token the broker serves for `appid`, waiting for one.
    async fn first_authorizer_token(&self, appid: &str) -> String {
        within(async {
            loop {
                let (status, body) = self.get(&format!("/authorizers/{appid}/token")).await;
                if status == 200 {
                    return body["access_token"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn first_component_token(&self) -> String {
        within(async {
            loop {
                let (status, body) = self.get("/component_token").await;
                if status == 200 {
                    return body["component_access_token"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn stop(self) {
        self.daemon.shutdown().await;
    }
}

/// A record for `appid` holding `access_token` dated `fetched_at_ms`,
/// dying `lifetime_ms` later.
fn record(
    appid: &str,
    refresh: &str,
    token: &str,
    fetched_at_ms: u64,
    lifetime_ms: u64,
) -> AuthorizerRecord {
    AuthorizerRecord {
        appid: appid.to_owned(),
        refresh_token: refresh.to_owned(),
        access_token: token.to_owned(),
        expires_at_ms: fetched_at_ms + lifetime_ms,
        fetched_at_ms,
        authorized_at: fetched_at_ms / 1000,
        name: String::new(),
    }
}

/// Log lines that contain every one of `parts`.
fn log_lines(parts: &[&str]) -> usize {
    captured_logs()
        .lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .count()
}

#[tokio::test]
async fn a_record_dated_a_year_ahead_is_not_served_and_its_refresh_token_is_used() {
    let sim = simulator().await;
    let appid = sim.sim.add_authorizers(COMPONENT, 1).remove(0);
    let refresh = sim.sim.refresh_token_of(&appid).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = state_dir(root.path());
    let planted = record(
        &appid,
        &refresh,
        "planted-token",
        now_ms() + YEAR_MS,
        9 * YEAR_MS,
    );
    FilePlatformStore::new(&dir, "ahead", COMPONENT)
        .save_authorizers(&[planted])
        .await
        .unwrap();
    let broker = start(&sim, "ahead", &file_store(&dir), "").await;
    let served = broker.first_authorizer_token(&appid).await;
    assert_ne!(served, "planted-token");
    assert!(sim.sim.token_valid(&served));
    assert_eq!(
        sim.sim.component_calls("api_authorizer_token"),
        1,
        "fetched with the stored refresh token"
    );
    assert_eq!(
        sim.sim.component_calls("api_get_authorizer_list"),
        0,
        "no recovery: the refresh token was kept"
    );
    assert_eq!(
        log_lines(&[
            "ERROR",
            "ahead",
            "refusing stored authorizer tokens no broker could have written"
        ]),
        1
    );
    broker.stop().await;
    // The rotated refresh token is what the journal holds now.
    let stored = FilePlatformStore::new(&dir, "ahead", COMPONENT)
        .load_authorizers()
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        Some(stored[0].refresh_token.clone()),
        sim.sim.refresh_token_of(&appid)
    );
}

#[tokio::test]
async fn a_journal_others_may_read_is_narrowed_to_0600_with_an_error() {
    let sim = simulator().await;
    let appid = sim.sim.add_authorizers(COMPONENT, 1).remove(0);
    let refresh = sim.sim.refresh_token_of(&appid).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = state_dir(root.path());
    let store = FilePlatformStore::new(&dir, "readable", COMPONENT);
    let stored = record(
        &appid,
        &refresh,
        "stored-token",
        now_ms() - 60_000,
        7_200_000,
    );
    store.save_authorizers(&[stored]).await.unwrap();
    let journal = store.journal_path().to_owned();
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = start(&sim, "readable", &file_store(&dir), "").await;
    assert_eq!(broker.first_authorizer_token(&appid).await, "stored-token");
    assert_eq!(std::fs::metadata(&journal).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(
        log_lines(&["ERROR", &journal.display().to_string(), "narrowed to 0600"]),
        1
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_symlinked_journal_is_neither_read_nor_written_through() {
    let sim = simulator().await;
    let appid = sim.sim.add_authorizers(COMPONENT, 1).remove(0);
    let refresh = sim.sim.refresh_token_of(&appid).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = state_dir(root.path());
    // A well-formed journal elsewhere, with a token the broker would serve.
    let elsewhere_dir = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere_dir).unwrap();
    let elsewhere = FilePlatformStore::new(&elsewhere_dir, "linked", COMPONENT);
    let planted = record(
        &appid,
        &refresh,
        "planted-token",
        now_ms() - 60_000,
        7_200_000,
    );
    elsewhere.save_authorizers(&[planted]).await.unwrap();
    let target = elsewhere.journal_path().to_owned();
    let before = std::fs::read(&target).unwrap();
    let journal = FilePlatformStore::new(&dir, "linked", COMPONENT)
        .journal_path()
        .to_owned();
    std::os::unix::fs::symlink(&target, &journal).unwrap();

    let broker = start(&sim, "linked", &file_store(&dir), "").await;
    let served = broker.first_authorizer_token(&appid).await;
    assert_ne!(served, "planted-token", "the link was not followed");
    assert!(
        sim.sim.token_valid(&served),
        "recovered from WeChat instead"
    );
    // The token was served after its refresh token was stored: into a
    // file of the broker's own, not through the link.
    assert_eq!(std::fs::read(&target).unwrap(), before, "target unchanged");
    let meta = std::fs::symlink_metadata(&journal).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.to_string_lossy()
                .contains("linked.authorizers.jsonl.untrusted-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the link is set aside");
    assert!(std::fs::symlink_metadata(&aside[0])
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        log_lines(&["ERROR", &journal.display().to_string(), "set it aside"]),
        1
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_verify_ticket_dated_ahead_is_never_sent() {
    let sim = simulator().await;
    let root = tempfile::tempdir().unwrap();
    let dir = state_dir(root.path());
    FilePlatformStore::new(&dir, "ticketed", COMPONENT)
        .save_ticket(&StoredTicket {
            component_appid: COMPONENT.to_owned(),
            ticket: "ticket@@@planted".to_owned(),
            received_at: (now_ms() + YEAR_MS) / 1000,
        })
        .await
        .unwrap();
    let broker = start(&sim, "ticketed", &file_store(&dir), "").await;
    let token = broker.first_component_token().await;
    assert!(!token.is_empty());
    assert_eq!(
        sim.sim.component_calls("api_component_token"),
        1,
        "one call, with the ticket pushed, never with the planted one"
    );
    assert_eq!(
        log_lines(&[
            "ERROR",
            "ticketed",
            "refusing a stored component_verify_ticket"
        ]),
        1
    );
    broker.stop().await;
}

#[tokio::test]
async fn fifos_for_journal_and_ticket_wedge_neither_start_nor_sigterm() {
    let sim = simulator().await;
    let appid = sim.sim.add_authorizers(COMPONENT, 1).remove(0);
    let root = tempfile::tempdir().unwrap();
    let dir = state_dir(root.path());
    for name in ["piped.authorizers.jsonl", "piped.verify_ticket.json"] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join(name),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }
    let (api, callback) = (support::free_port(), support::free_port());
    let server =
        format!("listen = \"127.0.0.1:{api}\"\ncallback_listen = \"127.0.0.1:{callback}\"\n");
    let config_path = root.path().join("wxbroker.toml");
    std::fs::write(
        &config_path,
        config_text(&sim, "piped", &server, &file_store(&dir), ""),
    )
    .unwrap();
    sim.sim.set_callback_url(
        COMPONENT,
        &format!("http://127.0.0.1:{callback}/wechat/platforms/piped/callback"),
    );
    let mut broker = support::ChildBroker::spawn(&config_path, "info");
    broker
        .wait_ready(&format!(
            "http://127.0.0.1:{api}/v1/platforms/piped/authorizers/{appid}/token"
        ))
        .await;
    let sigterm = std::process::Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sigterm.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = broker.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGTERM did not stop the broker:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}:\n{}", broker.log());
    let log = broker.log();
    for name in ["piped.authorizers.jsonl", "piped.verify_ticket.json"] {
        let path = dir.join(name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "{name} is the broker's own now");
        assert!(
            log.lines().any(|line| line.contains("ERROR")
                && line.contains(&path.display().to_string())
                && line.contains("set it aside")),
            "{log}"
        );
    }
}

#[tokio::test]
async fn authorizer_tokens_living_under_refresh_before_are_paced_by_the_backoff() {
    let sim = simulator().await;
    let appid = sim.sim.add_authorizers(COMPONENT, 1).remove(0);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = http
        .post(format!("{}/__sim/authorizer_lifetime", sim.base_url()))
        .json(&json!({ "secs": 2 }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let broker = start(&sim, "paced", "", "refresh_before = \"8s\"\n").await;
    let first = broker.first_authorizer_token(&appid).await;
    assert!(sim.sim.token_valid(&first), "served while it lives");
    // Fetched at 0 s, then paced 1, 2, 4 s apart (not every second, as a
    // 2 s lifetime alone would have it): 4 fetches in 10 s, 10 unpaced.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let fetches = sim.sim.component_calls("api_authorizer_token");
    assert!(
        (2..=5).contains(&fetches),
        "{fetches} authorizer fetches in the first 10 s"
    );
    assert_eq!(
        log_lines(&[
            "ERROR",
            "paced",
            "authorizer token a lifetime no longer than refresh_before"
        ]),
        1,
        "the anomaly is logged once"
    );
    broker.stop().await;
}
