//! Access control across every kind and forwarding route (DESIGN.md
//! sections 15, 20 and 21), against real sockets: `[[clients]]` with a
//! uid name the apps and platforms a local user reads, the API paths it
//! may forward (`apis`) and whether it may take operator actions
//! (`admin`); no forwarding route reaches `clear_quota` or an answer
//! carrying refresh tokens or permanent codes, however the path is
//! spelled. The tests run as root and ask as other uids through
//! `setpriv` and `curl` (`--path-as-is`, so dot segments reach the
//! broker as written), so the broker sees real non-root peers; the
//! simulator's request counts show that nothing refused went upstream.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::as_user::{self, As};
use support::{APPID, SECRET};
use wxbroker::config::Config;
use wxbroker::simulator::{AccountKind, Endpoint, SimConfig, SimHandle, Simulator};
use wxbroker::{Daemon, Listeners, Tuning};

const COMPONENT: &str = "wxcomponent0000001";
const COMPONENT_SECRET: &str = "component-s3cr3t-0123456789";
const MSG_TOKEN: &str = "message-token-01";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// Names the app and the platform, no `apis`, no name of its own.
const READER: u32 = 65534;
/// Names both, forwards `/cgi-bin/message/*` only.
const LIMITED: u32 = 65533;
/// Names the app only, and is `admin`.
const OPERATOR: u32 = 65532;
/// Matches no client entry.
const STRANGER: u32 = 65531;

struct Broker {
    daemon: Option<Daemon>,
    sim: SimHandle,
    socket: PathBuf,
    api: SocketAddr,
    compat: SocketAddr,
    /// The authorizer the broker recovered at start.
    appid: String,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Broker {
    let sim = Simulator::new(SimConfig::default());
    sim.add_account(APPID, SECRET, AccountKind::Wechat);
    sim.add_component(COMPONENT, COMPONENT_SECRET, MSG_TOKEN, AES_KEY);
    let appid = sim.add_authorizers(COMPONENT, 1).remove(0);
    let sim = sim.spawn().await.expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    // The socket's directory and the socket itself are open to every
    // local user: only the broker's own rules stand between them.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("wxbroker.sock");
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
unix_socket = "{socket}"
socket_mode = "0666"
callback_listen = "127.0.0.1:0"
wechat_compat_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
token_wait_timeout = "5s"

[[apps]]
name = "shop"
appid = "{APPID}"
secret = "{SECRET}"
api_base = "{base}"

[[platforms]]
name = "saas"
component_appid = "{COMPONENT}"
secret = "{COMPONENT_SECRET}"
token = "{MSG_TOKEN}"
aes_key = "{AES_KEY}"
api_base = "{base}"

[[clients]]
uid = {READER}
apps = ["shop"]
platforms = ["saas"]

[[clients]]
name = "limited"
uid = {LIMITED}
apps = ["shop"]
platforms = ["saas"]
apis = ["/cgi-bin/message/*"]

[[clients]]
name = "operator"
uid = {OPERATOR}
apps = ["shop"]
admin = true

[[clients]]
gid = 50
apps = ["shop"]
"#,
        socket = socket.display(),
        base = sim.base_url(),
    );
    let config_path = dir.path().join("wxbroker.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::from_toml_str("access.toml", &text).expect("valid config");
    let listeners = Listeners::bind(&config).await.expect("binds");
    let api = listeners.api_tcp_addr().unwrap();
    let compat = listeners.compat_addr().unwrap();
    let callback = listeners.callback_addr().unwrap();
    sim.sim.set_callback_url(
        COMPONENT,
        &format!("http://{callback}/wechat/platforms/saas/callback"),
    );
    // No quota poll: its calls would show in the simulator's counts.
    let tuning = Tuning {
        quota_poll: None,
        ..Tuning::default()
    };
    let daemon = wxbroker::start_with(&config, listeners, tuning)
        .await
        .expect("broker starts");
    let broker = Broker {
        daemon: Some(daemon),
        sim,
        socket,
        api,
        compat,
        appid,
        config_path,
        _dir: dir,
    };
    // Settled: the component token and the recovered authorizer's token
    // are held, so no fetch runs behind the counts the tests compare.
    let token_path = format!("/v1/platforms/saas/authorizers/{}/token", broker.appid);
    support::within(async {
        loop {
            let (component, _) = broker
                .unix(None, "GET", "/v1/platforms/saas/component_token", None)
                .await;
            let (authorizer, _) = broker.unix(None, "GET", &token_path, None).await;
            let (app, _) = broker.unix(None, "GET", "/v1/apps/shop/token", None).await;
            if (component, authorizer, app) == (200, 200, 200) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    broker
}

impl Broker {
    /// `method path` on the Unix socket as `uid` (None: as root).
    async fn unix(
        &self,
        uid: Option<u32>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("http://localhost{path}");
        curl(uid, Some(&self.socket), method, &url, body).await
    }

    /// `method path` on the loopback TCP token API.
    async fn tcp(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("http://{}{path}", self.api);
        curl(None, None, method, &url, body).await
    }

    /// `method path` on the WeChat-compatible listener.
    async fn compat(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("http://{}{path}", self.compat);
        curl(None, None, method, &url, body).await
    }

    async fn stop(mut self) {
        self.daemon.take().unwrap().shutdown().await;
    }
}

/// One request through `curl`, as `uid` through `setpriv` when given.
/// Returns the status and the body as JSON (Null when it is not).
async fn curl(
    uid: Option<u32>,
    socket: Option<&Path>,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    as_user::curl(As::uid(uid), socket, method, url, body).await
}

/// The seven routes below `/v1/platforms/{p}/`, each with its body.
fn platform_routes(
    appid: &str,
    authorizer_token: &str,
) -> Vec<(&'static str, String, Option<Value>)> {
    let base = "/v1/platforms/saas";
    vec![
        ("GET", format!("{base}/component_token"), None),
        ("GET", format!("{base}/component_token?format=text"), None),
        ("GET", format!("{base}/authorizers"), None),
        ("GET", format!("{base}/authorizers/{appid}/token"), None),
        (
            "POST",
            format!("{base}/authorizers/{appid}/token/invalidate"),
            Some(json!({ "access_token": authorizer_token })),
        ),
        ("POST", format!("{base}/pre_auth_code"), None),
        (
            "GET",
            format!("{base}/authorizers/{appid}/proxy/cgi-bin/getcallbackip"),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_platform_route_needs_a_client_naming_the_platform() {
    let broker = start().await;
    let token_path = format!("/v1/platforms/saas/authorizers/{}/token", broker.appid);
    let (_, token) = broker.unix(None, "GET", &token_path, None).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let routes = platform_routes(&broker.appid, &token);

    // No entry, or an entry naming only an app: nothing, as JSON, and
    // nothing upstream (no pre-auth code, no proxied call, no refresh).
    let before = broker.sim.sim.requests_by_path();
    for uid in [STRANGER, OPERATOR] {
        for (method, path, body) in &routes {
            let (status, answer) = broker.unix(Some(uid), method, path, body.as_ref()).await;
            assert_eq!(status, 403, "uid {uid}: {method} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "forbidden", "{path}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains("platform 'saas'"), "{message}");
        }
    }
    // An unknown platform is refused alike: the answer does not say
    // which platforms exist.
    let (status, _) = broker
        .unix(
            Some(STRANGER),
            "GET",
            "/v1/platforms/other/component_token",
            None,
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(broker.sim.sim.requests_by_path(), before);

    // An entry naming the platform reads every route, as root does.
    for uid in [Some(READER), None] {
        for (method, path, body) in &routes {
            let (status, answer) = broker.unix(uid, method, path, body.as_ref()).await;
            assert_eq!(status, 200, "uid {uid:?}: {method} {path}: {answer}");
        }
    }
    let (_, answer) = broker.unix(Some(READER), "GET", &routes[0].1, None).await;
    let component = answer["component_access_token"].as_str().unwrap();
    assert!(!component.is_empty());
    broker.stop().await;
}

/// Paths below a proxy route that no forwarding route may pass upstream.
const WITHHELD: [&str; 15] = [
    "cgi-bin/clear_quota",
    "cgi-bin/%63lear_quota",
    "cgi-bin/%2563lear_quota",
    "CGI-BIN/Clear_Quota/",
    "cgi-bin/x/../clear_quota",
    "cgi-bin//clear_quota",
    "cgi-bin%2fclear_quota",
    "cgi-bin/clear_quota/v2",
    "cgi-bin/component/clear_quota",
    "cgi-bin/service/clear_quota",
    "cgi-bin/component/api_get_authorizer_list",
    "cgi-bin/component/api_query_auth",
    "cgi-bin/service/get_permanent_code",
    "cgi-bin/service/v2/get_permanent_code",
    "cgi-bin/service/get_auth_info",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_forwarding_route_reaches_clear_quota_or_refresh_tokens() {
    let broker = start().await;
    let token_path = format!("/v1/platforms/saas/authorizers/{}/token", broker.appid);
    let (_, token) = broker.unix(None, "GET", &token_path, None).await;
    let authorizer_token = token["access_token"].as_str().unwrap().to_owned();
    let before = broker.sim.sim.requests_by_path();
    let body = json!({ "component_appid": COMPONENT, "offset": 0, "count": 500 });

    for path in WITHHELD {
        // The app proxy and the authorizer proxy, on TCP and as root on
        // the socket: whoever asks.
        let app_proxy = format!("/v1/apps/shop/proxy/{path}");
        let authorizer_proxy = format!(
            "/v1/platforms/saas/authorizers/{}/proxy/{path}",
            broker.appid
        );
        for route in [&app_proxy, &authorizer_proxy] {
            for (status, answer) in [
                broker.tcp("POST", route, Some(&body)).await,
                broker.unix(None, "POST", route, Some(&body)).await,
            ] {
                assert_eq!(status, 403, "{route}: {answer}");
                assert_eq!(
                    answer["error"]["code"], "proxied_request_refused",
                    "{route}: {answer}"
                );
            }
        }
        // The compatible listener: with an app's token, an authorizer's,
        // a component token, or none.
        for query in [
            "access_token=anything".to_owned(),
            format!("access_token={authorizer_token}"),
            "component_access_token=anything".to_owned(),
            String::new(),
        ] {
            let url = format!("/{path}?{query}");
            let (status, answer) = broker.compat("POST", &url, Some(&body)).await;
            assert_eq!(status, 200, "{url}: {answer}");
            assert_eq!(answer["errcode"], -1, "{url}: {answer}");
            let errmsg = answer["errmsg"].as_str().unwrap();
            assert!(errmsg.contains("wxbroker"), "{errmsg}");
            assert!(!errmsg.contains(&authorizer_token), "{errmsg}");
        }
    }
    // Nothing reached the simulator: no reset spent, no list of refresh
    // tokens handed out, no token fetched behind a refusal.
    assert_eq!(broker.sim.sim.requests_by_path(), before);
    assert_eq!(broker.sim.sim.calls(Endpoint::ClearQuota), 0);
    assert_eq!(broker.sim.sim.calls(Endpoint::ClearQuotaV2), 0);
    assert_eq!(broker.sim.sim.quota_resets(APPID), 0);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_quota_needs_an_admin_client_or_root() {
    let broker = start().await;
    let confirm = json!({ "confirm": true });
    let path = "/v1/apps/shop/clear_quota";

    // Listed for the app, not admin: refused, and no reset spent.
    let (status, answer) = broker
        .unix(Some(READER), "POST", path, Some(&confirm))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "admin_only", "{answer}");
    let (status, answer) = broker
        .unix(Some(STRANGER), "POST", path, Some(&confirm))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::ClearQuota), 0);

    // The admin client, and root.
    let (status, answer) = broker
        .unix(Some(OPERATOR), "POST", path, Some(&confirm))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cleared"], true);
    let (status, answer) = broker.unix(None, "POST", path, Some(&confirm)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::ClearQuota), 2);
    assert_eq!(broker.sim.sim.quota_resets(APPID), 2);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apis_limit_what_a_client_forwards_however_the_path_is_spelled() {
    let broker = start().await;
    let seen = |sim: &SimHandle| -> BTreeMap<String, u64> { sim.sim.requests_by_path() };
    let before = seen(&broker.sim);

    // A path on the list goes upstream.
    let message = json!({ "touser": "o1", "msgtype": "text", "text": { "content": "hi" } });
    let (status, answer) = broker
        .unix(
            Some(LIMITED),
            "POST",
            "/v1/apps/shop/proxy/cgi-bin/message/custom/send",
            Some(&message),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(broker.sim.sim.calls(Endpoint::CustomSend), 1);

    // Any other path, however spelled, is refused before any upstream
    // call, on the app proxy and on the authorizer proxy.
    let spellings = [
        "cgi-bin/getcallbackip",
        "CGI-BIN/getcallbackip",
        "%63gi-bin/getcallbackip",
        "cgi-bin/message/../getcallbackip",
        "cgi-bin/message/./../getcallbackip",
        "cgi-bin/message/%2e%2e/getcallbackip",
        "cgi-bin/message/%252e%252e/getcallbackip",
        "cgi-bin/message/..%2fgetcallbackip",
        "cgi-bin/message%2f..%2fgetcallbackip",
        "cgi-bin//message/../getcallbackip",
        "cgi-bin/messagex/getcallbackip",
        "cgi-bin/message",
    ];
    let routes = [
        "/v1/apps/shop/proxy".to_owned(),
        format!("/v1/platforms/saas/authorizers/{}/proxy", broker.appid),
    ];
    let after_allowed = seen(&broker.sim);
    for route in &routes {
        for spelling in spellings {
            let path = format!("{route}/{spelling}");
            let (status, answer) = broker.unix(Some(LIMITED), "GET", &path, None).await;
            assert_eq!(status, 403, "{path}: {answer}");
            assert_eq!(
                answer["error"]["code"], "api_not_allowed",
                "{path}: {answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains("/cgi-bin/"), "names the path: {message}");
        }
    }
    assert_eq!(seen(&broker.sim), after_allowed);
    assert_eq!(broker.sim.sim.calls(Endpoint::GetCallbackIp), 0);
    assert_eq!(
        after_allowed.values().sum::<u64>(),
        before.values().sum::<u64>() + 1,
        "only the allowed call went upstream"
    );

    // A client without apis forwards any path.
    let (status, answer) = broker
        .unix(
            Some(READER),
            "GET",
            "/v1/apps/shop/proxy/cgi-bin/getcallbackip",
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["ip_list"].is_array(), "{answer}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nameless_clients_are_named_by_their_identity_and_shown_by_check_config() {
    let broker = start().await;
    // The nameless uid entry reads its app; check-config names it from
    // its uid and shows every client's lists.
    let (status, answer) = broker
        .unix(Some(READER), "GET", "/v1/apps/shop/token", None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wxbroker"))
        .arg("check-config")
        .arg("--config")
        .arg(&broker.config_path)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    // Loopback TCP and the compatible listener know their callers too:
    // nothing to warn about on loopback.
    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(!warnings.contains("uid/gid clients"), "{warnings}");
    for line in [
        "# name: uid:65534 (from its identity)",
        "# name: gid:50 (from its identity)",
        "name = \"limited\"",
        "platforms = [\"saas\"]",
        "apis = [\"/cgi-bin/message/*\"]",
        "admin = true",
    ] {
        assert!(shown.contains(line), "{line} in\n{shown}");
    }
    broker.stop().await;
}
