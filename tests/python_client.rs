//! The Python client (`deploy/clients/python`) end to end: a real
//! `python3` runs `deploy/clients/python/test/smoke.py` against a broker
//! on its Unix socket, in front of the simulator, and prints what it got.

mod support;

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use support::*;
use tokio::process::Command;
use wxbroker::simulator::{Endpoint, SimConfig, TicketKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_gets_tokens_tickets_and_signed_wx_configs() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app(
        "shop",
        &sim,
        "tickets = [\"jsapi\"]\nmin_forced_interval = \"0s\"",
    );
    let broker = Broker::start(&apps).await;
    let page = "https://shop.example.com/pay?order=42";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/clients/python/test/smoke.py");
    let child = Command::new("python3")
        .arg(&script)
        .env("WXBROKER_SOCKET", &broker.socket)
        .env("WXBROKER_APP", "shop")
        .env("PAGE_URL", format!("{page}#/cart"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("WXBROKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (make test installs it)");
    let output = within(child.wait_with_output()).await.expect("python ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed: {stderr}\n{stdout}");
    let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    let token = result["token"].as_str().unwrap();
    assert!(sim.sim.token_ever_issued(token));
    assert_eq!(result["cached_token"], true, "{result}");
    let fresh = result["fresh"].as_str().unwrap();
    assert_ne!(fresh, token, "the invalidated token was replaced");
    assert!(sim.sim.token_valid(fresh));
    assert_eq!(
        result["ip_list"]["ip_list"]
            .as_array()
            .map(|l| !l.is_empty()),
        Some(true),
        "{result}"
    );
    // The simulator answers getcallbackip only for a valid token: the
    // broker put its own in.
    assert_eq!(sim.sim.calls(Endpoint::GetCallbackIp), 1);

    let ticket = result["ticket"].as_str().unwrap();
    assert!(sim.sim.ticket_valid(APPID, TicketKind::Jsapi, ticket));
    assert_eq!(result["cached_ticket"], true);
    let config = &result["config"];
    let expected = expected_signature(ticket, config, page);
    assert_eq!(config["signature"], expected.as_str());
    assert_eq!(config["appId"], APPID);
    assert_eq!(result["not_configured"]["code"], "ticket_not_configured");
    assert_eq!(result["bad_url"]["code"], "bad_request");
    assert_eq!(result["unknown_app"]["status"], 404);
    assert_eq!(result["unknown_app"]["code"], "app_not_found");
}
