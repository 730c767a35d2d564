//! Local identity on the Unix socket (DESIGN.md section 15): the peer's
//! uid and gid come from the kernel (SO_PEERCRED), and `[[clients]]` with
//! a uid or gid limit which apps a local user reads. The test runs as
//! root and asks as `nobody` (65534) through `setpriv` and `curl`, so the
//! broker sees a real non-root peer.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use support::as_user::{self, As};
use support::{free_port, simulator, ChildBroker, APPID, OTHER_APPID, OTHER_SECRET, SECRET};
use wxbroker::simulator::SimConfig;

const NOBODY: &str = "65534";

/// `GET path` over the socket as `uid` (None: as this process, root),
/// with a `Wxbroker-Client` header claiming to be root: a name, not an
/// identity. Returns the status and the JSON body.
fn get_as(uid: Option<&str>, socket: &Path, path: &str) -> (u16, Value) {
    let uid = uid.map(|uid| uid.parse().expect("a numeric uid"));
    as_user::get_blocking(As::uid(uid), socket, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_reads_only_the_apps_its_client_entry_allows() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // The socket's directory and the socket itself are open to every
    // local user: only the broker's own rule stands between them.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("wxbroker.sock");
    let ops_port = free_port();
    let config = format!(
        r#"[server]
unix_socket = "{socket}"
socket_mode = "0666"
metrics_listen = "127.0.0.1:{ops_port}"

[[apps]]
name = "shop"
appid = "{APPID}"
secret = "{SECRET}"
api_base = "{base}"

[[apps]]
name = "crm"
appid = "{OTHER_APPID}"
secret = "{OTHER_SECRET}"
api_base = "{base}"

[[clients]]
name = "deploy-user"
uid = {NOBODY}
apps = ["shop"]
"#,
        socket = socket.display(),
        base = sim.base_url(),
    );
    let path = dir.path().join("wxbroker.toml");
    std::fs::write(&path, config).unwrap();
    let mut broker = ChildBroker::spawn(&path, "info");
    broker
        .wait_ready(&format!("http://127.0.0.1:{ops_port}/readyz"))
        .await;

    let (status, body) = get_as(Some(NOBODY), &socket, "/v1/apps/shop/token");
    assert_eq!(status, 200, "{body}\n{}", broker.log());
    assert!(sim.sim.token_valid(body["access_token"].as_str().unwrap()));

    let (status, body) = get_as(Some(NOBODY), &socket, "/v1/apps/crm/token");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    for path in [
        "/v1/apps/crm/tickets/jsapi",
        "/v1/apps/crm/proxy/cgi-bin/openapi/quota/get",
    ] {
        let (status, body) = get_as(Some(NOBODY), &socket, path);
        assert_eq!(status, 403, "{path}: {body}");
    }

    let (status, apps) = get_as(Some(NOBODY), &socket, "/v1/apps");
    assert_eq!(status, 200);
    let names: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop"]);

    // Another unprivileged user matches no client: nothing.
    let (status, _) = get_as(Some("65533"), &socket, "/v1/apps/shop/token");
    assert_eq!(status, 403);

    // Root reads everything.
    let (status, body) = get_as(None, &socket, "/v1/apps/crm/token");
    assert_eq!(status, 200, "{body}");
}
