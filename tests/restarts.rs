//! Durable state across restarts (DESIGN.md section 4, rules 6–8, and
//! section 17): a warm restart makes no upstream call, corrupt and foreign
//! records are replaced, records another user could have planted are never
//! served, and SIGKILL at any moment never leaves a half-written record.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;
use wxbroker::simulator::{Endpoint, SimConfig};
use wxbroker::store::{StoredCredential, StoredToken};

const FILE_STORE: &str = "[store]\nbackend = \"file\"\npath = \"{dir}/state\"\n";

/// Whether the record at `path` holds `token`.
fn holds(path: &std::path::Path, token: &str) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<StoredCredential>(&bytes).ok())
        .and_then(|stored| stored.token)
        .is_some_and(|stored| stored.access_token.expose() == token)
}

fn file_store(dir: Option<tempfile::TempDir>) -> Options {
    Options {
        store: FILE_STORE.into(),
        dir,
        ..Options::default()
    }
}

#[tokio::test]
async fn warm_restart_serves_the_stored_token_without_an_upstream_call() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "");
    let broker = Broker::start_with(&apps, file_store(None)).await;
    let token = broker.token("shop").await;
    let record = broker.dir.path().join("state/shop.json");
    wait_until("the token is stored", || holds(&record, &token)).await;
    let dir = broker.stop().await;

    let broker = Broker::start_with(&apps, file_store(Some(dir))).await;
    assert_eq!(broker.token("shop").await, token);
    let (_, apps_status) = broker.get("/v1/apps").await;
    assert_eq!(
        apps_status["apps"][0]["fetches_today"], 1,
        "the count survived"
    );
    assert_eq!(
        sim.sim.total_token_calls(),
        1,
        "no upstream call on restart"
    );
}

#[tokio::test]
async fn a_corrupt_record_is_ignored_and_replaced() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("shop.json"),
        b"{\"appid\":\"wx1234567890abcdef\",\"tok",
    )
    .unwrap();
    let broker = Broker::start_with(&classic_app("shop", &sim, ""), file_store(Some(dir))).await;
    let token = broker.token("shop").await;
    assert_eq!(sim.sim.total_token_calls(), 1);
    let record = broker.dir.path().join("state/shop.json");
    wait_until("the record is replaced", || holds(&record, &token)).await;
    let metrics = broker.metrics_text().await;
    assert!(
        metrics.contains(r#"wxbroker_store_errors_total{backend="file",op="decode"} 1"#),
        "the corrupt record is counted"
    );
}

#[tokio::test]
async fn a_record_for_another_appid_is_ignored_and_replaced() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "");
    let broker = Broker::start_with(&apps, file_store(None)).await;
    let token = broker.token("shop").await;
    let record = broker.dir.path().join("state/shop.json");
    wait_until("the token is stored", || holds(&record, &token)).await;
    let dir = broker.stop().await;

    // The same app name now points at the stable account: another grant
    // and appid, so the stored classic token must not be served.
    let apps = stable_app("shop", &sim, "");
    let broker = Broker::start_with(&apps, file_store(Some(dir))).await;
    let stable = broker.token("shop").await;
    assert_ne!(stable, token);
    assert_eq!(sim.sim.calls(Endpoint::StableToken), 1);
}

/// The uid a test plants files as: not ours.
const NOBODY: u32 = 65534;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether this process may give files away (it is root). Without that,
/// a planted file is one others may write to instead of one they own.
fn can_chown(dir: &Path) -> bool {
    std::fs::metadata(dir).unwrap().uid() == 0
}

/// A state directory open to everyone, holding a well-formed record for
/// the classic test app with a token that is valid for another hour, as
/// another local user would leave it.
fn plant_record(state: &Path) -> &'static str {
    std::fs::create_dir_all(state).unwrap();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let now = now_secs();
    let planted = StoredCredential {
        appid: APPID.into(),
        grant: "classic".into(),
        token: Some(StoredToken {
            access_token: wxbroker::secret::AccessToken::new("planted-token"),
            expires_at: now + 3600,
            fetched_at: now - 3600,
            fetched_at_ms: 0,
        }),
        day: 0,
        fetches: 0,
    };
    let record = state.join("shop.json");
    std::fs::write(&record, serde_json::to_vec(&planted).unwrap()).unwrap();
    if can_chown(state) {
        std::os::unix::fs::chown(&record, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).unwrap();
    } else {
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    "planted-token"
}

#[tokio::test]
async fn a_planted_record_in_an_open_directory_is_never_served() {
    let logs_before = captured_logs().len();
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let planted = plant_record(&state);

    let broker = Broker::start_with(&classic_app("shop", &sim, ""), file_store(Some(dir))).await;
    let token = broker.token("shop").await;
    assert_ne!(token, planted);
    assert_eq!(
        sim.sim.total_token_calls(),
        1,
        "fetched from upstream instead"
    );
    let mode = std::fs::metadata(&state).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the directory is narrowed");
    let metrics = broker.metrics_text().await;
    assert!(
        metrics.contains(r#"wxbroker_store_errors_total{backend="file",op="untrusted"} 1"#),
        "the refused record is counted:\n{metrics}"
    );
    let logs = captured_logs()[logs_before..].to_owned();
    assert!(
        logs.contains("ERROR") && logs.contains("narrowed to 0700"),
        "{logs}"
    );
    assert!(
        logs.contains("refusing stored state") && logs.contains("shop.json"),
        "{logs}"
    );

    // Replaced by a record of our own, which a restart then trusts.
    let record = state.join("shop.json");
    wait_until("the record is replaced", || holds(&record, &token)).await;
    let ours = std::fs::metadata(&state).unwrap().uid();
    assert_eq!(std::fs::metadata(&record).unwrap().uid(), ours);
    let dir = broker.stop().await;
    let broker = Broker::start_with(&classic_app("shop", &sim, ""), file_store(Some(dir))).await;
    assert_eq!(broker.token("shop").await, token);
    assert_eq!(sim.sim.total_token_calls(), 1);
}

#[tokio::test]
async fn a_state_directory_another_uid_owns_stops_the_start() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    if !can_chown(dir.path()) {
        eprintln!("skipped: giving a directory to another uid needs root");
        return;
    }
    let state = dir.path().join("state");
    plant_record(&state);
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.path().join("wxbroker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n{}",
            free_port(),
            state.display(),
            classic_app("shop", &sim, "")
        ),
    )
    .unwrap();
    let (status, output) = support::process::run(
        &["serve", "--config", config.to_str().unwrap()],
        &[],
        dir.path(),
    )
    .await;
    assert!(!status.success(), "{output}");
    assert!(output.contains(&state.display().to_string()), "{output}");
    assert!(output.contains("owned by uid 65534"), "{output}");
    assert!(output.contains("chown it to uid 0"), "{output}");
    assert_eq!(sim.sim.total_token_calls(), 0);
}

#[tokio::test]
async fn fetches_made_while_the_store_cannot_write_survive_a_restart() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "min_forced_interval = \"0s\"");
    let broker = Broker::start_with(&apps, file_store(None)).await;
    let mut token = broker.token("shop").await;
    let record = broker.dir.path().join("state/shop.json");
    wait_until("the token is stored", || holds(&record, &token)).await;

    // Every save now fails at its rename, as writes do on a full disk.
    std::fs::remove_file(&record).unwrap();
    std::fs::create_dir(&record).unwrap();
    std::fs::write(record.join("blocker"), b"").unwrap();
    for _ in 0..2 {
        let (status, _) = broker
            .post(
                "/v1/apps/shop/token/invalidate",
                &format!("{{\"access_token\":\"{token}\"}}"),
            )
            .await;
        assert_eq!(status, 200);
        token = broker.token("shop").await;
    }
    assert_eq!(sim.sim.total_token_calls(), 3);
    let (_, apps_status) = broker.get("/v1/apps").await;
    assert_eq!(apps_status["apps"][0]["fetches_today"], 3);
    let failed_renames = broker
        .metric(r#"wxbroker_store_errors_total{backend="file",op="rename"}"#)
        .await;
    assert!(failed_renames >= 2.0, "{failed_renames}");

    // The store recovers; the broker is restarted before or after its
    // next retry, and the restart sees every fetch.
    std::fs::remove_dir_all(&record).unwrap();
    let dir = broker.stop().await;
    let broker = Broker::start_with(&apps, file_store(Some(dir))).await;
    assert_eq!(broker.token("shop").await, token);
    let (_, apps_status) = broker.get("/v1/apps").await;
    assert_eq!(apps_status["apps"][0]["fetches_today"], 3);
    assert_eq!(
        sim.sim.total_token_calls(),
        3,
        "no upstream call on restart"
    );
}

/// Kills the real binary with SIGKILL while it rewrites its record as fast
/// as it can, then checks the record: always whole, always loadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_never_leaves_a_half_written_record() {
    let sim = simulator(SimConfig {
        daily_limit: 1_000_000,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_path = dir.path().join("wxbroker.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n{}",
            state.display(),
            classic_app(
                "shop",
                &sim,
                "daily_budget = 100000\nmin_forced_interval = \"0s\""
            )
        ),
    )
    .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token_url = format!("http://127.0.0.1:{port}/v1/apps/shop/token?format=text");
    let invalidate_url = format!("http://127.0.0.1:{port}/v1/apps/shop/token/invalidate");
    let record = state.join("shop.json");
    let mut last_count = 0;
    for round in 0..8u64 {
        let mut broker = ChildBroker::spawn(&config_path, "warn");
        broker.wait_ready(&token_url).await;
        // Every invalidation of the current token refreshes and rewrites
        // the record; kill at a different point of that churn each round.
        let churn = Duration::from_millis(100 + round * 37);
        let started = tokio::time::Instant::now();
        while started.elapsed() < churn {
            let Ok(response) = client
                .get(&token_url)
                .header("wxbroker-client", "tests")
                .send()
                .await
            else {
                break;
            };
            let token = response.text().await.unwrap_or_default();
            let _ = client
                .post(&invalidate_url)
                .header("wxbroker-client", "tests")
                .body(format!("{{\"access_token\":\"{token}\"}}"))
                .send()
                .await;
        }
        broker.kill();
        let bytes = std::fs::read(&record).expect("the record exists after the first fetch");
        let stored: StoredCredential = serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("round {round}: torn record ({err}): {bytes:?}"));
        assert!(stored.token.is_some());
        // Each start took over the stored day's count: it only grows.
        assert!(stored.fetches >= last_count.max(1), "round {round}");
        last_count = stored.fetches;
    }
    // Calls are counted durably before they are made: a kill can only
    // overcount (by the one call it interrupted), never undercount.
    let calls = sim.sim.total_token_calls();
    let counted = u64::from(last_count);
    assert!(
        (calls..=calls + 8).contains(&counted),
        "{counted} counted of {calls}"
    );
}

/// SIGTERM while an invalidation's upstream fetch is in flight. WeChat
/// replaces the token when it answers, so the stop waits for the fetch,
/// answers the invalidation and stores the new token: the restart serves
/// a token WeChat accepts, without a call of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_fetch_keeps_the_token_it_fetched() {
    // A replaced token dies at once, so serving one shows at once.
    let sim = simulator(SimConfig {
        classic_overlap: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_path = dir.path().join("wxbroker.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ntoken_wait_timeout = \"10s\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n{}",
            dir.path().join("state").display(),
            classic_app("shop", &sim, "min_forced_interval = \"0s\"")
        ),
    )
    .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token_url = format!("http://127.0.0.1:{port}/v1/apps/shop/token?format=text");
    let token = || async {
        let response = within(
            client
                .get(&token_url)
                .header("wxbroker-client", "tests")
                .send(),
        )
        .await
        .expect("the broker answers");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };

    let mut broker = ChildBroker::spawn(&config_path, "info");
    broker.wait_ready(&token_url).await;
    let first = token().await;
    sim.sim.set_latency(Duration::from_secs(3));
    let invalidation = tokio::spawn(
        client
            .post(format!(
                "http://127.0.0.1:{port}/v1/apps/shop/token/invalidate"
            ))
            .header("wxbroker-client", "tests")
            .body(format!("{{\"access_token\":\"{first}\"}}"))
            .send(),
    );
    wait_until("the invalidation's fetch is in flight", || {
        sim.sim.token_calls_in_flight() == 1
    })
    .await;
    assert!(broker.terminate().success(), "{}", broker.log());
    assert_eq!(
        sim.sim.token_calls_in_flight(),
        0,
        "the stop waited for the fetch"
    );
    let answer = within(invalidation)
        .await
        .unwrap()
        .expect("the invalidation is answered");
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["refreshed"], true, "{answer}");

    sim.sim.set_latency(Duration::ZERO);
    let mut broker = ChildBroker::spawn(&config_path, "info");
    broker.wait_ready(&token_url).await;
    let served = token().await;
    wait_until("no token call in flight", || {
        sim.sim.token_calls_in_flight() == 0
    })
    .await;
    assert_eq!(served, answer["access_token"].as_str().unwrap());
    assert!(
        sim.sim.token_valid(&served),
        "the restart serves a token WeChat accepts"
    );
    assert_eq!(
        sim.sim.total_token_calls(),
        2,
        "the restart made no call of its own"
    );
    assert!(broker.terminate().success());
}
