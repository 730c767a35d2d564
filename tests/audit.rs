//! The call audit (DESIGN.md section 20), end to end: calls forwarded
//! through the `/v1` proxy (over TCP, and over the Unix socket as a
//! configured client running as another uid) and through the compatible
//! listener each leave exactly one record in `[log] audit_file` and one
//! `wxbroker::audit` event, with nothing secret in either; the file is
//! private and rotates past its size bound; the calls answered from the
//! caches leave none.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use http::Method;
use serde_json::Value;
use support::as_user::{self, As};
use support::*;
use wxbroker::simulator::SimConfig;

/// A query value no record may quote.
const QUERY_MARKER: &str = "query-value-7f3a9c";

fn audit_section(path: &Path, extra: &str) -> String {
    format!("[log]\naudit_file = \"{}\"\n{extra}\n", path.display())
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

async fn wait_for_lines(path: &Path, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} audit records"), || {
        lines(path).len() >= count
    })
    .await;
    lines(path)
}

/// `GET path` on the Unix socket as uid 65534, through `setpriv` and
/// `curl`: a real non-root peer. Returns the status and the body.
fn get_as_nobody(socket: &Path, path: &str) -> (u16, Value) {
    as_user::get_blocking(As::User(65534), socket, path)
}

/// Lets uid 65534 reach the broker's socket (its directory and the
/// socket are root's and private by default).
fn open_socket_to_others(broker: &Broker) {
    let dir = broker.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&broker.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_forwarded_call_leaves_one_record_and_nothing_secret() {
    captured_logs();
    let sim = simulator(SimConfig::default()).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.jsonl");
    let apps = format!(
        "{}\n[[clients]]\nname = \"orders\"\nuid = 65534\napps = [\"shop\"]\n\n{}",
        classic_app("shop", &sim, ""),
        audit_section(&audit, "")
    );
    let options = Options {
        compat: true,
        ..Options::default()
    };
    let broker = Broker::start_with(&apps, options).await;
    open_socket_to_others(&broker);
    let token = broker.token("shop").await;
    let quota =
        format!("cgi-bin/openapi/quota/get?cgi_path=%2Fcgi-bin%2Ftoken&marker={QUERY_MARKER}");

    // Over TCP: two answered calls, one answered with an errcode (no
    // cgi_path: 40097 with a rid).
    for _ in 0..2 {
        let (status, _, body) = broker
            .send(
                Method::GET,
                &format!("/v1/apps/shop/proxy/{quota}"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let (_, _, body) = broker
        .send(
            Method::GET,
            &format!("/v1/apps/shop/proxy/cgi-bin/openapi/quota/get?marker={QUERY_MARKER}"),
            &[],
            None,
        )
        .await;
    let errored: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(errored["errcode"], 40097, "{errored}");
    let rid = errored["errmsg"]
        .as_str()
        .and_then(|errmsg| errmsg.rsplit_once("rid: "))
        .map(|(_, rid)| rid.to_owned())
        .expect("the errmsg carries a rid");

    // Over the Unix socket, as the configured client "orders".
    for _ in 0..2 {
        let (status, body) = get_as_nobody(&broker.socket, &format!("/v1/apps/shop/proxy/{quota}"));
        assert_eq!(status, 200, "{body}");
    }

    // The compatible listener: the token call is answered from the cache
    // (no record), the API call is forwarded (one record).
    let cached = within(
        broker
            .http()
            .get(broker.compat_url(&format!(
                "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=client-sent-secret"
            )))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(cached.status(), 200);
    for _ in 0..2 {
        let forwarded = within(
            broker
                .http()
                .get(broker.compat_url(&format!("/{quota}&access_token={token}")))
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(forwarded.status(), 200);
    }

    // A path the broker never forwards: refused, and recorded as such.
    let (status, _, _) = broker
        .send(Method::GET, "/v1/apps/shop/proxy/cgi-bin/token", &[], None)
        .await;
    assert_eq!(status, 403);

    let records = wait_for_lines(&audit, 8).await;
    assert_eq!(records.len(), 8, "{records:#?}");
    for record in &records {
        assert_eq!(record["app"], "shop", "{record}");
        assert!(
            record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{record}"
        );
        assert!(record["duration_ms"].is_u64(), "{record}");
        assert_eq!(record["method"], "GET");
    }
    let by = |listener: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|record| record["listener"] == listener)
            .collect()
    };
    let (tcp, unix, compat) = (by("tcp"), by("unix"), by("compat"));
    assert_eq!(
        (tcp.len(), unix.len(), compat.len()),
        (4, 2, 2),
        "{records:#?}"
    );
    for record in unix {
        assert_eq!(record["client"], "orders", "{record}");
        assert_eq!(record["outcome"], "ok");
    }
    for record in tcp.iter().chain(&compat) {
        assert_eq!(record["client"], "unknown", "{record}");
    }
    for record in records.iter().filter(|r| r["outcome"] == "ok") {
        assert_eq!(record["path"], "/cgi-bin/openapi/quota/get", "{record}");
        assert_eq!(record["status"], 200);
        assert_eq!(record["errcode"], 0);
        assert!(record["rid"].is_null());
    }
    let errcode: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "errcode")
        .collect();
    assert_eq!(errcode.len(), 1, "{records:#?}");
    assert_eq!(errcode[0]["errcode"], 40097);
    assert_eq!(errcode[0]["rid"], rid.as_str());
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{records:#?}");
    assert_eq!(refused[0]["path"], "/cgi-bin/token");
    assert!(refused[0]["status"].is_null());

    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [
        token.as_str(),
        SECRET,
        QUERY_MARKER,
        "client-sent-secret",
        "marker",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} in the audit file:\n{text}"
        );
    }
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    let metric = |client: &str, outcome: &str| {
        format!(
            r#"wxbroker_proxied_calls_total{{app="shop",client="{client}",outcome="{outcome}"}}"#
        )
    };
    assert_eq!(broker.metric(&metric("orders", "ok")).await, 2.0);
    assert_eq!(broker.metric(&metric("unknown", "ok")).await, 4.0);
    assert_eq!(broker.metric(&metric("unknown", "errcode")).await, 1.0);
    assert_eq!(broker.metric(&metric("unknown", "refused")).await, 1.0);
    assert_eq!(broker.metric("wxbroker_audit_dropped_total").await, 0.0);

    // Each record is an event on target wxbroker::audit too, as secret-free.
    let logs = captured_logs();
    let events: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("wxbroker::audit") && line.contains(&rid))
        .collect();
    assert_eq!(events.len(), 1, "{logs}");
    assert!(events[0].contains("errcode=40097"), "{}", events[0]);
    assert!(!logs.contains(QUERY_MARKER));

    // A shutdown adds nothing and loses nothing.
    broker.stop().await;
    assert_eq!(lines(&audit).len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_rotates_past_its_size_bound() {
    let sim = simulator(SimConfig::default()).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.jsonl");
    let previous = PathBuf::from(format!("{}.1", audit.display()));
    let bound = 4096;
    let apps = format!(
        "{}\n{}",
        classic_app("shop", &sim, ""),
        audit_section(&audit, &format!("audit_max_bytes = {bound}"))
    );
    let broker = Broker::start(&apps).await;
    let call = "/v1/apps/shop/proxy/cgi-bin/openapi/quota/get?cgi_path=%2Fcgi-bin%2Ftoken";
    let (status, _, _) = broker.send(Method::GET, call, &[], None).await;
    assert_eq!(status, 200);
    let first = wait_for_lines(&audit, 1).await;
    let line_len = serde_json::to_string(&first[0]).unwrap().len() + 1;
    // Enough records for one and a half files.
    let total = (bound * 3 / 2) / line_len + 1;
    for _ in 1..total {
        let (status, _, _) = broker.send(Method::GET, call, &[], None).await;
        assert_eq!(status, 200);
    }
    wait_until("every record, across the rotation", || {
        lines(&audit).len() + lines(&previous).len() == total
    })
    .await;
    for path in [&audit, &previous] {
        let meta = std::fs::metadata(path).unwrap();
        assert!(
            meta.len() <= bound as u64,
            "{}: {} bytes",
            path.display(),
            meta.len()
        );
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o600,
            "{}",
            path.display()
        );
    }
    assert!(lines(&previous).len() > lines(&audit).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_audit_to_the_new_file_at_once() {
    let sim = simulator(SimConfig::default()).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        audit_dir.path().join("first.jsonl"),
        audit_dir.path().join("second.jsonl"),
    );
    let apps = format!(
        "{}\n{}",
        classic_app("shop", &sim, ""),
        audit_section(&first, "")
    );
    let broker = Broker::start(&apps).await;
    let call = "/v1/apps/shop/proxy/cgi-bin/openapi/quota/get?cgi_path=%2Fcgi-bin%2Ftoken";
    let (status, _, _) = broker.send(Method::GET, call, &[], None).await;
    assert_eq!(status, 200);
    wait_for_lines(&first, 1).await;

    let mut config = broker.config.clone();
    config.log.audit_file = Some(second.clone());
    broker
        .daemon()
        .reload(&config)
        .await
        .expect("the reload is accepted");
    let (status, _, _) = broker.send(Method::GET, call, &[], None).await;
    assert_eq!(status, 200);
    wait_for_lines(&second, 1).await;
    assert_eq!(lines(&first).len(), 1);
}
