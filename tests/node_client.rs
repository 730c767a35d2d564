//! The Node.js client (`deploy/clients/node`) against a real broker on its
//! Unix socket, in front of the simulator: a real `node` runs
//! `deploy/clients/node/test/smoke.js` and prints what it got.

mod support;

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use support::*;
use tokio::process::Command;
use wxbroker::simulator::{Endpoint, SimConfig, TicketKind};

const NODE: &str = "node";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_calls_cloud_functions_and_the_database_through_the_broker() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "min_forced_interval = \"0s\"")).await;
    broker.token("shop").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/clients/node/test/smoke.js");
    let child = Command::new(NODE)
        .arg(&script)
        .env("WXBROKER_SOCKET", &broker.socket)
        .env("WXBROKER_APP", "shop")
        .env("SIM_URL", sim.base_url())
        .env("WX_APPID", APPID)
        .env("WX_SECRET", SECRET)
        .env_remove("WXBROKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped on timeout: kills this child, and only it.
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{NODE}` is not installed: the Node.js client cannot be tested; run `make test`, which installs it"
        ),
        Err(err) => panic!("could not run {NODE}: {err}"),
    };
    let output = within(child.wait_with_output()).await.expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed: {stderr}\n{stdout}");
    let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    let token = result["token"].as_str().unwrap();
    assert!(sim.sim.token_ever_issued(token));
    assert_eq!(
        result["cached"], true,
        "the second getAccessToken was cached"
    );

    let fn_answer = &result["fn"];
    assert_eq!(fn_answer["errcode"], 0, "{fn_answer}");
    let resp_data: Value = serde_json::from_str(fn_answer["resp_data"].as_str().unwrap()).unwrap();
    assert_eq!(resp_data["name"], "music");
    assert_eq!(resp_data["env"], "test-2a8b");
    assert_eq!(resp_data["event"]["$url"], "playlist");
    assert_eq!(resp_data["event"]["count"], 10);

    let db = &result["db"];
    assert_eq!(db["errcode"], 0, "{db}");
    let document: Value = serde_json::from_str(db["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        document["query"],
        "db.collection(\"playlist\").limit(10).get()"
    );
    assert_eq!(result["added"]["errcode"], 0);
    assert_eq!(result["download"]["errcode"], 0);
    assert_eq!(
        result["download"]["file_list"][0]["fileid"],
        "cloud://test-2a8b.7465/swiper/a.png"
    );
    assert_eq!(result["upload"]["errcode"], 0);
    assert_eq!(
        result["deleted"]["delete_list"][0]["fileid"],
        result["upload"]["file_id"]
    );
    assert!(result["badAction"]
        .as_str()
        .unwrap()
        .contains("unknown database action"));
    let seen = sim.sim.last_request(Endpoint::BatchDeleteFile).unwrap();
    assert!(String::from_utf8_lossy(&seen.body).contains("fileid_list"));

    // The direct call made with a token killed behind the broker's back was
    // invalidated and retried once with the broker's new token.
    let direct = &result["direct"];
    assert_eq!(direct["errcode"], 0, "{direct}");
    assert_eq!(direct["attempts"], 2);
    assert_eq!(direct["retried_with_new_token"], true);
    let after = result["after"].as_str().unwrap();
    assert_ne!(after, token);
    assert!(sim.sim.token_valid(after));
    assert_eq!(broker.token("shop").await, after);
}

/// Runs `script` under node with `env`; its one JSON line.
async fn run_node(script: &str, env: &[(&str, &str)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut command = Command::new(NODE);
    command
        .arg(&script)
        .env_remove("WXBROKER_HOST")
        .env_remove("WXBROKER_APP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("node runs (make test installs it)");
    let output = within(child.wait_with_output()).await.expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed: {stderr}\n{stdout}");
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_gets_tickets_and_signed_wx_configs() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "tickets = [\"jsapi\"]")).await;
    let page = "https://shop.example.com/pay?order=42";
    let socket = broker.socket.to_string_lossy().into_owned();
    let result = run_node(
        "deploy/clients/node/test/tickets.js",
        &[
            ("WXBROKER_SOCKET", &socket),
            ("PAGE_URL", &format!("{page}#frag")),
        ],
    )
    .await;
    let ticket = result["ticket"].as_str().unwrap();
    assert!(sim.sim.ticket_valid(APPID, TicketKind::Jsapi, ticket));
    assert_eq!(result["cachedTicket"], true, "{result}");
    let config = &result["config"];
    assert_eq!(config["appId"], APPID);
    let expected = expected_signature(ticket, config, page);
    assert_eq!(config["signature"], expected.as_str());
    assert_eq!(result["notConfigured"]["status"], 404);
    assert_eq!(result["notConfigured"]["code"], "ticket_not_configured");
    assert_eq!(result["badUrl"]["code"], "bad_request");
}
