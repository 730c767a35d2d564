//! Token sinks end to end: a broker in front of the simulator keeps a file
//! holding the current token, rewritten on every refresh, never seen torn
//! by a concurrent reader, with the configured mode.

mod support;

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;
use wxbroker::simulator::SimConfig;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains(".tmp."))
        .collect()
}

/// Reads and parses `path` in a tight loop on its own thread until
/// `stop`, panicking on any content that is not a whole JSON sink record.
/// Returns the distinct tokens seen and how many reads parsed.
fn reader(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, u64)> {
    std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        let mut reads = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => panic!("reading the sink: {err}"),
            };
            let record: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("torn sink ({e}): {:?}", String::from_utf8_lossy(&bytes))
            });
            let token = record["access_token"].as_str().expect("access_token");
            assert!(!token.is_empty());
            assert_eq!(record["app"], "shop");
            assert!(record["expires_at"].as_u64().unwrap() > 0);
            assert!(record["expires_in"].as_u64().unwrap() <= 3);
            if seen.last().map(String::as_str) != Some(token) {
                seen.push(token.to_owned());
            }
            reads += 1;
        }
        (seen, reads)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_follows_every_refresh_and_is_never_torn() {
    // 3 s tokens refreshed 1 s ahead: a new token every 2 s.
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(3),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("shop.json");
    let broker = Broker::start_with(
        &classic_app(
            "shop",
            &sim,
            &format!(
                "refresh_before = \"1s\"\nsink = {{ path = \"{}\", format = \"json\", mode = \"0640\" }}",
                sink.display()
            ),
        ),
        Options {
            dir: Some(dir),
            ..Options::default()
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let reading = reader(sink.clone(), stop.clone());
    // Four tokens means three rewrites while the reader was reading.
    let mut distinct = HashSet::new();
    wait_until("four tokens in the sink", || {
        if let Ok(bytes) = fs::read(&sink) {
            let record: Value = serde_json::from_slice(&bytes).expect("whole record");
            distinct.insert(record["access_token"].as_str().unwrap().to_owned());
        }
        distinct.len() >= 4 || reading.is_finished()
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (seen, reads) = reading.join().expect("the reader never saw a torn sink");
    assert!(seen.len() >= 4, "the reader saw {seen:?} in {reads} reads");
    for token in &seen {
        assert!(sim.sim.token_ever_issued(token), "not a WeChat token");
    }
    assert_eq!(mode(&sink), 0o640);

    // The file holds what the API serves.
    let current = broker.token("shop").await;
    wait_until("the sink to hold the served token", || {
        let record: Value = serde_json::from_slice(&fs::read(&sink).unwrap()).unwrap();
        record["access_token"] == current.as_str()
    })
    .await;
    let dir = broker.stop().await;
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
    // The file outlives the daemon: that is what it is for.
    assert!(sink.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_sink_holds_the_bare_token_owner_only() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("shop.token");
    // A stale file with loose bits is replaced, not rewritten in place.
    fs::write(&sink, "old\n").unwrap();
    fs::set_permissions(&sink, fs::Permissions::from_mode(0o666)).unwrap();
    let broker = Broker::start_with(
        &classic_app(
            "shop",
            &sim,
            &format!(
                "sink = {{ path = \"{}\", format = \"raw\" }}",
                sink.display()
            ),
        ),
        Options {
            dir: Some(dir),
            ..Options::default()
        },
    )
    .await;
    let token = broker.token("shop").await;
    within(broker.daemon().flush_sinks())
        .await
        .expect("the sink is written");
    assert_eq!(fs::read_to_string(&sink).unwrap(), format!("{token}\n"));
    assert_eq!(mode(&sink), 0o600);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_be_written_is_reported_and_costs_readers_nothing() {
    let sim = simulator(SimConfig::default()).await;
    let missing = tempfile::tempdir().unwrap().path().join("gone/shop.json");
    let broker = Broker::start(&classic_app(
        "shop",
        &sim,
        &format!("sink = {{ path = \"{}\" }}", missing.display()),
    ))
    .await;
    broker.token("shop").await;
    let errors = within(broker.daemon().flush_sinks())
        .await
        .expect_err("no directory to write in");
    assert_eq!(errors.len(), 1);
    let shown = wxbroker::errors::Chain(&errors[0]).to_string();
    assert!(
        shown.starts_with(&format!("app shop: sink {}: write: ", missing.display())),
        "{shown}"
    );
    let (status, _) = broker.get("/v1/apps/shop/token").await;
    assert_eq!(status, 200);
    broker.stop().await;
}
