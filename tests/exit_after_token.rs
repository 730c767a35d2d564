//! `wxbroker serve --exit-after-token`, the real binary against the
//! simulator: fetch every app's token, write the sinks, shut down, and say
//! by the exit code whether every app got one (for init containers and
//! cron jobs).

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::process;
use support::*;
use wxbroker::simulator::{SimConfig, SimHandle};

/// A config file in `dir` with a Unix socket, a file store, and `apps`.
fn write_config(dir: &Path, apps: &str) -> String {
    let path = dir.join("wxbroker.toml");
    fs::write(
        &path,
        format!(
            "[server]\nunix_socket = \"{}\"\nsocket_mode = \"0600\"\nmetrics_listen = \"127.0.0.1:0\"\n\n\
             [store]\nbackend = \"file\"\npath = \"{}\"\n\n{apps}",
            dir.join("wxbroker.sock").display(),
            dir.join("state").display(),
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn sink(dir: &Path, file: &str, format: &str) -> String {
    format!(
        "sink = {{ path = \"{}\", format = \"{format}\" }}",
        dir.join(file).display()
    )
}

async fn exit_after_token(config: &str, dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["serve", "--config", config, "--exit-after-token"];
    args.extend_from_slice(extra);
    let (status, output) = process::run(&args, &[], dir).await;
    (status.code(), output)
}

fn bad_app(sim: &SimHandle) -> String {
    format!(
        "[[apps]]\nname = \"bad\"\ngrant = \"stable\"\nappid = \"{STABLE_APPID}\"\nsecret = \"not-the-secret\"\napi_base = \"{}\"\n",
        sim.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_fetched_and_written_then_exit_zero() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(
        d,
        &format!(
            "{}{}",
            classic_app("shop", &sim, &sink(d, "shop.json", "json")),
            wecom_app("crm", &sim, &sink(d, "crm.token", "raw")),
        ),
    );
    let (code, output) = exit_after_token(&config, d, &[]).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("every app holds a token"), "{output}");

    let record: Value = serde_json::from_slice(&fs::read(d.join("shop.json")).unwrap()).unwrap();
    let shop = record["access_token"].as_str().unwrap();
    assert!(sim.sim.token_valid(shop));
    assert_eq!(record["app"], "shop");
    assert!(record["expires_in"].as_u64().unwrap() > 7000);
    let crm = fs::read_to_string(d.join("crm.token")).unwrap();
    assert!(sim.sim.token_valid(crm.strip_suffix('\n').unwrap()));
    assert_eq!(sim.sim.total_token_calls(), 2);
    assert!(!d.join("wxbroker.sock").exists(), "clean shutdown");

    // A cron job running it again while the stored tokens are fresh makes
    // no upstream call at all (warm start) and rewrites nothing new.
    let (code, output) = exit_after_token(&config, d, &[]).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(sim.sim.total_token_calls(), 2, "{output}");
    let again: Value = serde_json::from_slice(&fs::read(d.join("shop.json")).unwrap()).unwrap();
    assert_eq!(again["access_token"], shop);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_a_token_is_named_and_exits_one() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(
        d,
        &format!(
            "{}{}",
            classic_app("shop", &sim, &sink(d, "shop.json", "json")),
            bad_app(&sim),
        ),
    );
    let (code, output) = exit_after_token(&config, d, &[]).await;
    assert_eq!(code, Some(1), "{output}");
    let error = output
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in\n{output}"));
    assert!(
        error.starts_with("error: no token for: bad (errcode 40125"),
        "{error}"
    );
    assert!(!error.contains("shop"), "{error}");
    // The app that did get its token still has it written.
    assert!(d.join("shop.json").exists());
    assert!(!d.join("wxbroker.sock").exists(), "clean shutdown");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_is_bounded_by_the_start_timeout() {
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_latency(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The exit waits out the fetch in flight (a begun fetch is never
    // abandoned), so it comes after the start timeout and fetch_timeout.
    let config = write_config(d, &classic_app("shop", &sim, "fetch_timeout = \"3s\""));
    let started = std::time::Instant::now();
    let (code, output) = exit_after_token(&config, d, &["--start-timeout", "1s"]).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("error: no token for: shop (no token fetched yet)"),
        "{output}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{output}");
    // Dropped, not shut down: its handler of the abandoned call still sleeps.
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_exits_two_before_any_call() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(
        d,
        &classic_app("shop", &sim, "sink = { path = \"relative.json\" }"),
    );
    let (code, output) = exit_after_token(&config, d, &[]).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("apps.shop.sink.path"), "{output}");
    assert_eq!(sim.sim.total_token_calls(), 0);
    sim.shutdown().await;
}
