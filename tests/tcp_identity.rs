//! Loopback TCP callers are known by the local user owning their socket
//! (DESIGN.md sections 15, 20 and 21): with uid or gid clients
//! configured, the token API's TCP listener and every compatible
//! listener (shared, per-app, and their Open Platform calls) apply the
//! same access rules as the Unix socket. A uid reads only the apps its
//! entry names, forwards only the paths its `apis` list however they are
//! spelled, a uid with no entry gets nothing, and root gets everything.
//! Without uid or gid clients nothing changes. The tests run as root and
//! ask as other uids through `setpriv` and `curl` (`--path-as-is`, so dot
//! segments reach the broker as written); the simulator's request counts
//! show that nothing refused went upstream.
//!
//! The authorizer's profile (`api_get_authorizer_info`) is forwarded for
//! SDKs, its refresh token taken out of the answer.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};
use support::as_user::{self, As};
use support::{APPID, OTHER_APPID, OTHER_SECRET, SECRET};
use wxbroker::config::Config;
use wxbroker::simulator::{AccountKind, Endpoint, SimConfig, SimHandle, Simulator};
use wxbroker::{Daemon, Listeners, Tuning};

const COMPONENT: &str = "wxcomponent0000001";
const COMPONENT_SECRET: &str = "component-s3cr3t-0123456789";
const MSG_TOKEN: &str = "message-token-01";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// Names app `shop` only.
const SHOP_READER: u32 = 65532;
/// Names `shop` and platform `saas`, forwards `/cgi-bin/message/*` only.
const LIMITED: u32 = 65533;
/// Names platform `saas` only, no `apis`.
const PLATFORM_READER: u32 = 65530;
/// Matches no client entry.
const STRANGER: u32 = 65531;
/// The process gid a group member runs with: not its primary group, which
/// is what a TCP caller's group is taken from.
const OTHER_GID: u32 = 65529;

/// A local user of the passwd database with a primary group other than
/// root's: on TCP, a gid client matches this user by that group.
fn group_member() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("a passwd database");
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let uid: u32 = fields.get(2)?.parse().ok()?;
            let gid: u32 = fields.get(3)?.parse().ok()?;
            Some((uid, gid))
        })
        .find(|&(uid, gid)| {
            (1..60000).contains(&uid) && gid != 0 && !(65529..=65534).contains(&gid)
        })
        .expect("a non-root user in /etc/passwd")
}

struct Broker {
    daemon: Option<Daemon>,
    sim: SimHandle,
    api: SocketAddr,
    compat: SocketAddr,
    shop_compat: SocketAddr,
    crm_compat: SocketAddr,
    /// The authorizer the broker recovered at start.
    appid: String,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

/// A broker with two apps, a platform and, unless `clients` is false,
/// uid and gid clients.
async fn start(clients: bool) -> Broker {
    let sim = Simulator::new(SimConfig::default());
    sim.add_account(APPID, SECRET, AccountKind::Wechat);
    sim.add_account(OTHER_APPID, OTHER_SECRET, AccountKind::Wechat);
    sim.add_component(COMPONENT, COMPONENT_SECRET, MSG_TOKEN, AES_KEY);
    let appid = sim.add_authorizers(COMPONENT, 1).remove(0);
    let sim = sim.spawn().await.expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let (_, group) = group_member();
    let entries = format!(
        r#"
[[clients]]
uid = {SHOP_READER}
apps = ["shop"]

[[clients]]
name = "limited"
uid = {LIMITED}
apps = ["shop"]
platforms = ["saas"]
apis = ["/cgi-bin/message/*"]

[[clients]]
name = "platform"
uid = {PLATFORM_READER}
platforms = ["saas"]

[[clients]]
name = "crm-group"
gid = {group}
apps = ["crm"]
"#
    );
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
callback_listen = "127.0.0.1:0"
wechat_compat_listen = "127.0.0.1:0"
token_wait_timeout = "5s"

[log]
audit_file = "{audit}"

[[apps]]
name = "shop"
appid = "{APPID}"
secret = "{SECRET}"
api_base = "{base}"
compat_listen = "127.0.0.1:0"

[[apps]]
name = "crm"
appid = "{OTHER_APPID}"
secret = "{OTHER_SECRET}"
api_base = "{base}"
compat_listen = "127.0.0.1:0"

[[platforms]]
name = "saas"
component_appid = "{COMPONENT}"
secret = "{COMPONENT_SECRET}"
token = "{MSG_TOKEN}"
aes_key = "{AES_KEY}"
api_base = "{base}"
{entries}"#,
        audit = audit.display(),
        base = sim.base_url(),
        entries = if clients { entries.as_str() } else { "" },
    );
    let config = Config::from_toml_str("tcp_identity.toml", &text).expect("valid config");
    let listeners = Listeners::bind(&config).await.expect("binds");
    let api = listeners.api_tcp_addr().unwrap();
    let compat = listeners.compat_addr().unwrap();
    let shop_compat = listeners.app_compat_addr("shop").unwrap();
    let crm_compat = listeners.app_compat_addr("crm").unwrap();
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
        api,
        compat,
        shop_compat,
        crm_compat,
        appid,
        audit,
        _dir: dir,
    };
    // Settled: every token is held, so no fetch runs behind the counts
    // the tests compare.
    let token_path = format!("/v1/platforms/saas/authorizers/{}/token", broker.appid);
    support::within(async {
        loop {
            let mut statuses = Vec::new();
            for path in [
                "/v1/platforms/saas/component_token",
                &token_path,
                "/v1/apps/shop/token",
                "/v1/apps/crm/token",
            ] {
                statuses.push(broker.tcp(None, "GET", path, None).await.0);
            }
            if statuses.iter().all(|status| *status == 200) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    broker
}

/// Who asks: a uid (and the gid it runs with), or root.
impl Broker {
    /// `method path` on the token API's TCP listener.
    async fn tcp(
        &self,
        who: Option<u32>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let who = who.map_or(As::Root, As::User);
        curl(who, method, &format!("http://{}{path}", self.api), body).await
    }

    /// `method path` on the shared compatible listener.
    async fn compat(
        &self,
        who: As,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        curl(who, method, &format!("http://{}{path}", self.compat), body).await
    }

    /// The classic token of `appid` on `listener`, as `who`.
    async fn compat_token(&self, who: As, listener: SocketAddr, appid: &str) -> Value {
        let url = format!(
            "http://{listener}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret=x"
        );
        let (status, answer) = curl(who, "GET", &url, None).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// The authorizer's current token, as root reads it.
    async fn authorizer_token(&self) -> String {
        let path = format!("/v1/platforms/saas/authorizers/{}/token", self.appid);
        let (_, answer) = self.tcp(None, "GET", &path, None).await;
        answer["access_token"].as_str().unwrap().to_owned()
    }

    async fn stop(mut self) {
        self.daemon.take().unwrap().shutdown().await;
    }
}

/// One request through `curl`, as `who`. Returns the status and the body
/// as JSON (Null when it is not).
async fn curl(who: As, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    as_user::curl(who, None, method, url, body).await
}

/// A WeChat-shaped refusal of the broker's access rules.
fn assert_refused(answer: &Value, code: &str, context: &str) {
    assert_eq!(answer["errcode"], -1, "{context}: {answer}");
    let errmsg = answer["errmsg"].as_str().unwrap_or_default();
    assert!(errmsg.contains("wxbroker"), "{context}: {errmsg}");
    assert!(errmsg.contains(code), "{context}: {errmsg}");
    assert!(answer.get("access_token").is_none(), "{context}: {answer}");
}

fn app_names(answer: &Value) -> Vec<String> {
    answer["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_reads_only_the_apps_its_entry_names_over_tcp() {
    let broker = start(true).await;
    let reader = Some(SHOP_READER);
    let (_, root_token) = broker.tcp(None, "GET", "/v1/apps/shop/token", None).await;

    // The token API's TCP listener: shop, and not crm.
    let (status, answer) = broker.tcp(reader, "GET", "/v1/apps/shop/token", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["access_token"], root_token["access_token"]);
    for path in ["/v1/apps/crm/token", "/v1/apps/crm/tickets/jsapi"] {
        let (status, answer) = broker.tcp(reader, "GET", path, None).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
    }
    let (status, answer) = broker.tcp(reader, "GET", "/v1/apps", None).await;
    assert_eq!(status, 200);
    assert_eq!(app_names(&answer), ["shop"]);
    let (status, _) = broker
        .tcp(reader, "GET", "/v1/platforms/saas/component_token", None)
        .await;
    assert_eq!(status, 403);

    // The compatible listeners: the shared one by appid, and each app's own.
    let who = As::User(SHOP_READER);
    let answer = broker.compat_token(who, broker.compat, APPID).await;
    assert_eq!(answer["access_token"], root_token["access_token"]);
    let answer = broker.compat_token(who, broker.shop_compat, "any").await;
    assert_eq!(answer["access_token"], root_token["access_token"]);
    let refused = broker.compat_token(who, broker.compat, OTHER_APPID).await;
    assert_refused(&refused, "app 'crm'", "shared listener, crm");
    let refused = broker.compat_token(who, broker.crm_compat, "any").await;
    assert_refused(&refused, "app 'crm'", "crm's own listener");

    // A gid client: on TCP the group is the caller's primary group in the
    // passwd database, whatever gid the process runs with.
    let (uid, _) = group_member();
    let member = As::UserInGroup(uid, OTHER_GID);
    let answer = broker.compat_token(member, broker.crm_compat, "any").await;
    assert!(answer["access_token"].is_string(), "{answer}");
    let refused = broker.compat_token(member, broker.shop_compat, "any").await;
    assert_refused(&refused, "app 'shop'", "a group member, shop");
    let (status, answer) = curl(
        member,
        "GET",
        &format!("http://{}/v1/apps", broker.api),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app_names(&answer), ["crm"]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apis_limit_the_compatible_listener_however_the_path_is_spelled() {
    let broker = start(true).await;
    let who = As::User(LIMITED);
    let authorizer_token = broker.authorizer_token().await;
    let message = json!({ "touser": "o1", "msgtype": "text", "text": { "content": "hi" } });

    // On the list: forwarded, on the shared listener, the app's own, and
    // with an authorizer's token; the audit names the client.
    let sent = [
        (broker.compat, format!("appid={APPID}")),
        (broker.shop_compat, "access_token=anything".to_owned()),
        (broker.compat, format!("access_token={authorizer_token}")),
    ];
    for (listener, query) in &sent {
        let url = format!("http://{listener}/cgi-bin/message/custom/send?{query}");
        let (status, answer) = curl(who, "POST", &url, Some(&message)).await;
        assert_eq!(status, 200, "{url}: {answer}");
        // WeChat's own answer (the simulator knows no such follower).
        assert_ne!(answer["errcode"], -1, "{url}: {answer}");
    }
    assert_eq!(broker.sim.sim.calls(Endpoint::CustomSend), 3);
    support::wait_until("three audit records", || audit(&broker).len() >= 3).await;
    for record in audit(&broker) {
        assert_eq!(record["client"], "limited", "{record}");
        assert_eq!(record["listener"], "compat", "{record}");
        assert_eq!(record["path"], "/cgi-bin/message/custom/send", "{record}");
    }

    // Off the list, however spelled: refused naming the path, and nothing
    // goes upstream.
    let before = broker.sim.sim.requests_by_path();
    let spellings = [
        "/cgi-bin/user/get",
        "/CGI-BIN/user/get",
        "/%63gi-bin/user/get",
        "/cgi-bin/message/../user/get",
        "/cgi-bin/message/./../user/get",
        "/cgi-bin/message/%2e%2e/user/get",
        "/cgi-bin/message/%252e%252e/user/get",
        "/cgi-bin/message/..%2fuser/get",
        "/cgi-bin/message%2f..%2fuser/get",
        "/cgi-bin//message/../user/get",
    ];
    for spelling in spellings {
        for (listener, query) in &sent {
            let url = format!("http://{listener}{spelling}?{query}");
            let (status, answer) = curl(who, "GET", &url, None).await;
            assert_eq!(status, 200, "{url}: {answer}");
            assert_refused(&answer, "api_not_allowed", &url);
            let errmsg = answer["errmsg"].as_str().unwrap();
            assert!(
                errmsg.contains("/cgi-bin/user/get"),
                "names the path: {errmsg}"
            );
            assert!(!errmsg.contains(&authorizer_token), "{errmsg}");
        }
        // The token API's proxy on TCP alike.
        let path = format!("/v1/apps/shop/proxy{spelling}");
        let (status, answer) = broker.tcp(Some(LIMITED), "GET", &path, None).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "api_not_allowed", "{answer}");
    }
    // A component call off the list.
    let body = json!({ "component_appid": COMPONENT, "authorizer_appid": broker.appid });
    let (_, answer) = broker
        .compat(
            who,
            "POST",
            "/cgi-bin/component/api_get_authorizer_info?component_access_token=x",
            Some(&body),
        )
        .await;
    assert_refused(&answer, "api_not_allowed", "component call");
    assert_eq!(broker.sim.sim.requests_by_path(), before);
    broker.stop().await;
}

fn audit(broker: &Broker) -> Vec<Value> {
    std::fs::read_to_string(&broker.audit)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_with_no_entry_gets_nothing_over_tcp() {
    let broker = start(true).await;
    let before = broker.sim.sim.requests_by_path();
    let stranger = Some(STRANGER);
    for path in [
        "/v1/token",
        "/v1/apps/shop/token",
        "/v1/apps/crm/token",
        "/v1/apps/shop/proxy/cgi-bin/getcallbackip",
        "/v1/platforms/saas/component_token",
    ] {
        let (status, answer) = broker.tcp(stranger, "GET", path, None).await;
        assert!(matches!(status, 403 | 404), "{path}: {status} {answer}");
        assert!(answer.get("access_token").is_none(), "{path}: {answer}");
    }
    let (status, answer) = broker.tcp(stranger, "GET", "/v1/apps", None).await;
    assert_eq!(status, 200);
    assert!(app_names(&answer).is_empty(), "{answer}");

    let who = As::User(STRANGER);
    for listener in [broker.compat, broker.shop_compat, broker.crm_compat] {
        let refused = broker.compat_token(who, listener, APPID).await;
        assert_refused(&refused, "forbidden", "token");
        let url = format!("http://{listener}/cgi-bin/getcallbackip?appid={APPID}");
        let (_, refused) = curl(who, "GET", &url, None).await;
        assert_refused(&refused, "forbidden", &url);
    }
    let body = json!({ "component_appid": COMPONENT, "authorizer_appid": broker.appid });
    for endpoint in [
        "api_component_token",
        "api_authorizer_token",
        "api_get_authorizer_info",
    ] {
        let path = format!("/cgi-bin/component/{endpoint}");
        let (_, refused) = broker.compat(who, "POST", &path, Some(&body)).await;
        assert_refused(&refused, "forbidden", &path);
    }
    assert_eq!(broker.sim.sim.requests_by_path(), before);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_gets_everything_over_tcp() {
    let broker = start(true).await;
    for path in ["/v1/apps/shop/token", "/v1/apps/crm/token"] {
        let (status, answer) = broker.tcp(None, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let (_, answer) = broker.tcp(None, "GET", "/v1/apps", None).await;
    assert_eq!(app_names(&answer), ["shop", "crm"]);
    for (listener, appid) in [(broker.compat, OTHER_APPID), (broker.crm_compat, "any")] {
        let answer = broker.compat_token(As::Root, listener, appid).await;
        assert!(answer["access_token"].is_string(), "{answer}");
    }
    // Any path, with no apis to limit it.
    let url = format!("http://{}/cgi-bin/getcallbackip", broker.crm_compat);
    let (status, answer) = curl(As::Root, "GET", &url, None).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["ip_list"].is_array(), "{answer}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_uid_or_gid_clients_every_local_user_reads_everything() {
    let broker = start(false).await;
    let (status, answer) = broker
        .tcp(Some(STRANGER), "GET", "/v1/apps/crm/token", None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let answer = broker
        .compat_token(As::User(STRANGER), broker.shop_compat, "any")
        .await;
    assert!(answer["access_token"].is_string(), "{answer}");
    let url = format!("http://{}/cgi-bin/getcallbackip", broker.crm_compat);
    let (_, answer) = curl(As::User(STRANGER), "GET", &url, None).await;
    assert!(answer["ip_list"].is_array(), "{answer}");
    support::wait_until("an audit record", || !audit(&broker).is_empty()).await;
    assert_eq!(audit(&broker)[0]["client"], "unknown");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizer_profile_arrives_without_its_refresh_token() {
    let broker = start(true).await;
    let refresh_token = broker
        .sim
        .sim
        .refresh_token_of(&broker.appid)
        .expect("the authorizer has a refresh token");
    let body = json!({ "component_appid": COMPONENT, "authorizer_appid": broker.appid });
    let path = "/cgi-bin/component/api_get_authorizer_info?component_access_token=x";
    for (n, who) in [As::User(PLATFORM_READER), As::Root]
        .into_iter()
        .enumerate()
    {
        let url = format!("http://{}{path}", broker.compat);
        // The body as it arrives, before any JSON parser reads it.
        let raw = who
            .curl_command()
            .args(["--silent", "--max-time", "15"])
            .args(["--header", "Content-Type: application/json", "--data"])
            .arg(body.to_string())
            .arg(&url)
            .output()
            .await
            .expect("curl runs");
        let text = String::from_utf8_lossy(&raw.stdout).into_owned();
        assert!(!text.contains(&refresh_token), "{text}");
        assert!(!text.contains("refresh_token"), "{text}");
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        let info = &answer["authorization_info"];
        assert_eq!(info["authorizer_appid"], broker.appid.as_str(), "{answer}");
        assert_eq!(
            info["func_info"].as_array().map(Vec::len),
            Some(2),
            "{answer}"
        );
        let profile = &answer["authorizer_info"];
        assert_eq!(profile["service_type_info"]["id"], 2, "{answer}");
        assert!(profile["nick_name"].is_string(), "{answer}");
        assert_eq!(
            broker.sim.sim.component_calls("api_get_authorizer_info"),
            n as u64 + 1
        );
    }
    support::wait_until("two audit records", || audit(&broker).len() >= 2).await;
    let records = audit(&broker);
    assert_eq!(records[0]["client"], "platform", "{}", records[0]);
    assert_eq!(
        records[1]["client"], "unknown",
        "root is no client: {}",
        records[1]
    );
    broker.stop().await;
}
