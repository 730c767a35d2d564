//! The log formats of the real binary: a credential's log lines name it
//! (`app`, `credential`) through the span its refresher runs in, at the
//! top level of each `json` object and as `key=value` in `pretty`.

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::process;
use support::*;
use wxbroker::simulator::SimConfig;

/// `serve --exit-after-token` for one classic app with `[log]` as given:
/// its exit code and output.
async fn one_refresh(log: &str) -> (Option<i32>, String) {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("wxbroker.toml");
    fs::write(
        &config,
        format!(
            "[server]\nunix_socket = \"{}\"\nsocket_mode = \"0600\"\nmetrics_listen = \"127.0.0.1:0\"\n\n\
             [store]\nbackend = \"memory\"\n\n[log]\n{log}\n\n{}",
            d.join("wxbroker.sock").display(),
            classic_app("shop", &sim, ""),
        ),
    )
    .unwrap();
    let (status, output) = run(&config, d).await;
    sim.shutdown().await;
    (status, output)
}

async fn run(config: &Path, dir: &Path) -> (Option<i32>, String) {
    let config = config.to_str().unwrap();
    let (status, output) = process::run(
        &["serve", "--config", config, "--exit-after-token"],
        &[],
        dir,
    )
    .await;
    (status.code(), output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_credential_at_the_top_level() {
    let (code, output) = one_refresh("format = \"json\"").await;
    assert_eq!(code, Some(0), "{output}");
    let lines: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let refreshed = lines
        .iter()
        .find(|line| line["message"] == "access_token refreshed")
        .unwrap_or_else(|| panic!("no refresh logged:\n{output}"));
    assert_eq!(refreshed["level"], "INFO", "{refreshed}");
    assert_eq!(refreshed["app"], "shop", "{refreshed}");
    assert_eq!(refreshed["credential"], "access_token", "{refreshed}");
    assert_eq!(refreshed["grant"], "classic", "{refreshed}");
    assert_eq!(refreshed["target"], "wxbroker::engine::refresher");
    let object = refreshed.as_object().unwrap();
    assert!(
        !object.contains_key("span") && !object.contains_key("spans"),
        "{refreshed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_lines_name_the_credential() {
    let (code, output) = one_refresh("format = \"pretty\"").await;
    assert_eq!(code, Some(0), "{output}");
    let plain = without_colours(&output);
    let refreshed = plain
        .lines()
        .find(|line| line.contains("access_token refreshed"))
        .unwrap_or_else(|| panic!("no refresh logged:\n{plain}"));
    assert!(
        refreshed.contains("app=shop") && refreshed.contains("credential=access_token"),
        "{refreshed}"
    );
}

/// `text` without its ANSI colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}
