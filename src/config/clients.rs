//! `[[clients]]` and `[server] remote_listen` / `remote_tls` (DESIGN.md
//! sections 15, 20 and 21): who may read which apps and platforms, call
//! which APIs through the forwarding routes, and take operator actions.
//! A client is known by a bearer credential (on the remote listener,
//! stored as its SHA-256 only) or by a local uid or gid (on the Unix
//! socket from SO_PEERCRED; on loopback TCP, the token API's and the
//! compatible listeners, by the user owning the caller's socket and that
//! user's primary group).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::api_patterns::ApiPattern;
use super::error::Problem;
use super::fields::is_loopback;
use super::raw::{RawClient, RawTls};
use super::{AppConfig, PlatformConfig, TlsFiles};

/// One `[[clients]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// For logs and messages: `[A-Za-z0-9._-]{1,64}` as configured, or
    /// from the identity when none is (`uid:1001`, `gid:50`).
    pub name: String,
    pub identity: ClientIdentity,
    /// The apps this client may read, by name.
    pub apps: Vec<String>,
    /// The Open Platform platforms this client may read, by name.
    pub platforms: Vec<String>,
    /// The WeCom suites this client may read, by name.
    pub suites: Vec<String>,
    /// The paths it may call through the forwarding routes; `None`: every
    /// path.
    pub apis: Option<Vec<ApiPattern>>,
    /// It may take operator actions (`clear_quota`) on the apps it reads.
    pub admin: bool,
}

/// How a client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A bearer credential on the remote listener, kept as its SHA-256:
    /// the configuration never holds the credential itself.
    Bearer { sha256: [u8; 32] },
    /// A local user, on the Unix socket and loopback TCP.
    Uid(u32),
    /// A local group: the peer's gid on the Unix socket, the primary group
    /// of its user in the passwd database on loopback TCP.
    Gid(u32),
}

impl ClientIdentity {
    /// The name of a client configured without one: `uid:1001`,
    /// `gid:50`. A bearer credential has none to give.
    pub fn default_name(&self) -> Option<String> {
        match self {
            ClientIdentity::Bearer { .. } => None,
            ClientIdentity::Uid(uid) => Some(format!("uid:{uid}")),
            ClientIdentity::Gid(gid) => Some(format!("gid:{gid}")),
        }
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The digest is not the credential, but it is no one's business.
            ClientIdentity::Bearer { .. } => f.write_str("Bearer(***)"),
            ClientIdentity::Uid(uid) => write!(f, "Uid({uid})"),
            ClientIdentity::Gid(gid) => write!(f, "Gid({gid})"),
        }
    }
}

/// `remote_listen` and `remote_tls`: both or neither.
pub(super) fn remote(
    listen: Option<SocketAddr>,
    tls: Option<RawTls>,
) -> Result<Option<TlsFiles>, Problem> {
    match (listen, tls) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Problem::new(
            "server.remote_tls",
            "applies only with server.remote_listen",
        )),
        (Some(_), None) => Err(Problem::new(
            "server.remote_tls",
            "required with server.remote_listen: the remote listener serves tokens over TLS only",
        )),
        (Some(_), Some(raw)) => Ok(Some(remote_tls(raw)?)),
    }
}

/// Connections the remote listener serves at once: followers and their
/// watches, a few per client, never the local API's budget.
const DEFAULT_REMOTE_MAX_CONNECTIONS: usize = 256;
/// A follower holds one watch per credential it follows (an app's token
/// and each ticket); a fleet of followers may share one client entry.
const DEFAULT_REMOTE_MAX_WATCHES_PER_CLIENT: usize = 64;

/// `remote_max_connections` and `remote_max_watches_per_client`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RemoteLimits {
    pub connections: usize,
    pub watches_per_client: usize,
}

/// The remote listener's limits: at least 1 each, and set only with
/// `remote_listen` (without it they would limit nothing).
pub(super) fn remote_limits(
    listen: Option<SocketAddr>,
    connections: Option<i64>,
    watches_per_client: Option<i64>,
) -> Result<RemoteLimits, Problem> {
    let limit = |key: &str, value: Option<i64>, default: usize| match value {
        None => Ok(default),
        Some(_) if listen.is_none() => {
            Err(Problem::new(key, "applies only with server.remote_listen"))
        }
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| Problem::new(key, "must be at least 1")),
    };
    Ok(RemoteLimits {
        connections: limit(
            "server.remote_max_connections",
            connections,
            DEFAULT_REMOTE_MAX_CONNECTIONS,
        )?,
        watches_per_client: limit(
            "server.remote_max_watches_per_client",
            watches_per_client,
            DEFAULT_REMOTE_MAX_WATCHES_PER_CLIENT,
        )?,
    })
}

/// Both files required, and loaded here so a bad certificate is a
/// configuration error naming the key.
fn remote_tls(raw: RawTls) -> Result<TlsFiles, Problem> {
    const CERT: &str = "server.remote_tls.cert_file";
    const KEY: &str = "server.remote_tls.key_file";
    let required = |value: Option<String>, key: &str| {
        value
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| Problem::new(key, "required"))
    };
    let files = TlsFiles {
        cert_file: required(raw.cert_file, CERT)?,
        key_file: required(raw.key_file, KEY)?,
    };
    if let Err(err) = crate::tls::server_config_for(&files.cert_file, &files.key_file, (CERT, KEY))
    {
        let key = match &err {
            crate::tls::TlsError::Read { key, .. }
            | crate::tls::TlsError::NoCertificate { key, .. } => *key,
            _ => "server.remote_tls",
        };
        return Err(Problem::new(key, format!("{:#}", anyhow::Error::from(err))));
    }
    Ok(files)
}

/// What a client may name as readable: the configured apps, platforms
/// and suites, by name.
pub(super) struct Owners<'a> {
    pub apps: &'a [AppConfig],
    pub platforms: &'a [PlatformConfig],
    /// The configured `[[suites]]`, by name.
    pub suites: &'a [&'a str],
}

/// Every `[[clients]]` entry; `remote_listen` tells whether a bearer
/// client has anywhere to connect, and the remote listener anyone to serve.
pub(super) fn clients(
    raw: Vec<RawClient>,
    owners: &Owners<'_>,
    remote_listen: Option<SocketAddr>,
) -> Result<Vec<ClientConfig>, Problem> {
    let mut clients: Vec<ClientConfig> = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let client = client(index, raw, owners)?;
        let key = |field: &str| format!("clients[{index}].{field}");
        if let Some(twin) = clients.iter().find(|c| c.identity == client.identity) {
            let what = match client.identity {
                ClientIdentity::Bearer { .. } => "credential_sha256",
                ClientIdentity::Uid(_) => "uid",
                ClientIdentity::Gid(_) => "gid",
            };
            return Err(Problem::new(
                key(what),
                format!("is the same as client \"{}\"'s", twin.name),
            ));
        }
        if clients.iter().any(|c| c.name == client.name) {
            return Err(Problem::new(
                key("name"),
                format!("\"{}\" is already the name of another client", client.name),
            ));
        }
        if matches!(client.identity, ClientIdentity::Bearer { .. }) && remote_listen.is_none() {
            return Err(Problem::new(
                key("credential_sha256"),
                "a bearer credential is only accepted on server.remote_listen, which is not set",
            ));
        }
        clients.push(client);
    }
    let any_bearer = clients
        .iter()
        .any(|c| matches!(c.identity, ClientIdentity::Bearer { .. }));
    if remote_listen.is_some() && !any_bearer {
        return Err(Problem::new(
            "server.remote_listen",
            "serves [[clients]] with a credential_sha256 only, and none is configured",
        ));
    }
    Ok(clients)
}

/// With `[[clients]]` limiting local users by uid or gid, a TCP peer is
/// known by the local user owning its socket, which only a peer on
/// loopback can be: a local listener bound beyond loopback answers every
/// other host with nothing, worth a warning.
pub(super) fn unidentified_listeners(config: &super::Config) -> Option<String> {
    let local = config
        .clients
        .iter()
        .any(|c| !matches!(c.identity, ClientIdentity::Bearer { .. }));
    let beyond = |addr: Option<SocketAddr>| addr.is_some_and(|addr| !is_loopback(&addr));
    let server = &config.server;
    let open: Vec<String> = [
        ("server.listen".to_owned(), beyond(server.listen)),
        (
            "server.wechat_compat_listen".to_owned(),
            beyond(server.wechat_compat_listen),
        ),
    ]
    .into_iter()
    .chain(config.apps.iter().map(|app| {
        (
            format!("apps.{}.compat_listen", app.name),
            beyond(app.compat_listen),
        )
    }))
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if !local || open.is_empty() {
        return None;
    }
    Some(format!(
        "uid/gid clients limit local callers, and a TCP caller is known only on loopback (by the \
         user owning its socket): {} answer every other host with nothing (403, or errcode -1); \
         serve other hosts on server.remote_listen with bearer clients",
        open.join(" and ")
    ))
}

fn client(index: usize, raw: RawClient, owners: &Owners<'_>) -> Result<ClientConfig, Problem> {
    let key = |field: &str| format!("clients[{index}].{field}");
    let identity = match (raw.credential_sha256, raw.uid, raw.gid) {
        (Some(hex), None, None) => ClientIdentity::Bearer {
            sha256: sha256_hex(&hex).ok_or_else(|| {
                // Not echoed: someone may have pasted the credential itself.
                Problem::new(
                    key("credential_sha256"),
                    "must be 64 hex digits, the SHA-256 of the credential (e.g. \
                     `printf %s \"$CREDENTIAL\" | sha256sum`); the value is not shown",
                )
            })?,
        },
        (None, Some(uid), None) => ClientIdentity::Uid(id(&key("uid"), uid)?),
        (None, None, Some(gid)) => ClientIdentity::Gid(id(&key("gid"), gid)?),
        _ => {
            return Err(Problem::new(
                format!("clients[{index}]"),
                "set exactly one of credential_sha256, uid or gid",
            ))
        }
    };
    let name = match raw.name {
        Some(name) => valid_name(name).ok_or_else(|| {
            Problem::new(
                key("name"),
                "must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
            )
        })?,
        None => identity.default_name().ok_or_else(|| {
            Problem::new(
                key("name"),
                "required for a credential_sha256 client: a bearer credential has no \
                 identity to name it by, and the name labels its requests in logs and metrics",
            )
        })?,
    };
    let apps = names(
        &key("apps"),
        raw.apps,
        "app",
        owners.apps.iter().map(|a| a.name.as_str()),
    )?;
    let platforms = names(
        &key("platforms"),
        raw.platforms,
        "platform",
        owners.platforms.iter().map(|p| p.name.as_str()),
    )?;
    let suites = names(
        &key("suites"),
        raw.suites,
        "suite",
        owners.suites.iter().copied(),
    )?;
    if apps.is_empty() && platforms.is_empty() && suites.is_empty() {
        return Err(Problem::new(
            key("apps"),
            "required: the apps (or platforms, or suites) this client may read",
        ));
    }
    let apis = match raw.apis {
        None => None,
        Some(listed) => {
            let mut patterns = Vec::with_capacity(listed.len());
            for (at, text) in listed.iter().enumerate() {
                let pattern = ApiPattern::parse(text)
                    .map_err(|why| Problem::new(format!("clients[{index}].apis[{at}]"), why))?;
                patterns.push(pattern);
            }
            Some(patterns)
        }
    };
    let admin = raw.admin.unwrap_or(false);
    if admin && matches!(identity, ClientIdentity::Bearer { .. }) {
        return Err(Problem::new(
            key("admin"),
            "applies to uid and gid clients only: operator actions are served on the Unix socket, never on the remote listener",
        ));
    }
    Ok(ClientConfig {
        name,
        identity,
        apps,
        platforms,
        suites,
        apis,
        admin,
    })
}

/// `name` if it is one a header or a log line can carry.
fn valid_name(name: String) -> Option<String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid.then_some(name)
}

/// A list of names at `key`, each one of `configured` and listed once;
/// empty when the key is absent.
fn names<'a>(
    key: &str,
    listed: Option<Vec<String>>,
    what: &str,
    configured: impl Iterator<Item = &'a str> + Clone,
) -> Result<Vec<String>, Problem> {
    let listed = listed.unwrap_or_default();
    let mut names: Vec<String> = Vec::with_capacity(listed.len());
    for name in listed {
        if !configured.clone().any(|known| known == name) {
            let configured: Vec<&str> = configured.clone().collect();
            let configured = if configured.is_empty() {
                "none is configured".to_owned()
            } else {
                format!("configured: {}", configured.join(", "))
            };
            return Err(Problem::new(
                key,
                format!("\"{name}\" is not a configured {what} ({configured})"),
            ));
        }
        if names.contains(&name) {
            return Err(Problem::new(key, format!("\"{name}\" is listed twice")));
        }
        names.push(name);
    }
    Ok(names)
}

fn id(key: &str, value: i64) -> Result<u32, Problem> {
    // u32::MAX is (uid_t)-1, "no user" to the kernel.
    u32::try_from(value)
        .ok()
        .filter(|&id| id != u32::MAX)
        .ok_or_else(|| Problem::new(key, "must be a user or group id (0 to 4294967294)"))
}

fn sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    // from_str_radix alone would take a sign ("+a").
    if text.len() != 64 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(text.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{Config, ConfigError};

    const DIGEST: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    /// A file holding `text`, kept for the test's length.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_with_env("t.toml", text, &|_| None)
    }

    fn key_of(text: &str) -> String {
        parse(text).unwrap_err().key().unwrap().to_owned()
    }

    #[test]
    fn followers_clients_and_the_remote_listener_validate() {
        let dir = tempfile::tempdir().unwrap();
        let credential = file(&dir, "credential", "bearer-credential-value\n");
        let issued = crate::tls::init(&dir.path().join("tls")).unwrap();
        let tls = format!(
            "remote_tls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
            issued.cert.display(),
            issued.key.display()
        );
        let server = |extra: &str| format!("[server]\nlisten = \"127.0.0.1:8930\"\n{extra}\n");
        let follower = |extra: &str| {
            format!(
                "[[apps]]\nname = \"shop\"\nappid = \"wx1\"\nfollow = \"https://prod:8943\"\n\
                 follow_credential_file = \"{credential}\"\n{extra}\n"
            )
        };
        let owned = "[[apps]]\nname = \"crm\"\nappid = \"wx2\"\nsecret = \"s\"\n";
        let bearer = format!(
            "[[clients]]\nname = \"staging\"\ncredential_sha256 = \"{DIGEST}\"\napps = [\"crm\"]\n"
        );

        let config = parse(&format!(
            "{}{}{owned}{bearer}[[clients]]\nname = \"deploy\"\nuid = 1001\napps = [\"shop\"]\n",
            server(&format!("remote_listen = \"0.0.0.0:8943\"\n{tls}")),
            follower(&format!("follow_ca_file = \"{}\"", issued.ca.display())),
        ))
        .unwrap();
        let follow = config.apps[0].follow.as_ref().unwrap();
        assert_eq!(follow.url, "https://prod:8943");
        assert_eq!(follow.credential.expose(), "bearer-credential-value");
        assert_eq!(config.clients.len(), 2);
        let shown = config.render_effective();
        assert!(!shown.contains("bearer-credential-value") && !shown.contains(DIGEST));
        assert!(shown.contains("follow = \"https://prod:8943\""), "{shown}");
        assert!(!format!("{config:?}").contains(DIGEST));
        // The remote listener's own limits, by default and as set.
        let limits = |config: &Config| {
            (
                config.server.remote_max_connections,
                config.server.remote_max_watches_per_client,
            )
        };
        assert_eq!(limits(&config), (256, 64));
        assert!(
            shown.contains("remote_max_watches_per_client = 64"),
            "{shown}"
        );
        let remote = |extra: &str| {
            format!(
                "{}{owned}{bearer}",
                server(&format!(
                    "remote_listen = \"127.0.0.1:8943\"\n{tls}\n{extra}"
                ))
            )
        };
        let set = parse(&remote(
            "remote_max_connections = 32\nremote_max_watches_per_client = 4",
        ))
        .unwrap();
        assert_eq!(limits(&set), (32, 4));
        assert_eq!(
            key_of(&remote("remote_max_connections = 0")),
            "server.remote_max_connections"
        );
        assert_eq!(
            key_of(&remote("remote_max_watches_per_client = -1")),
            "server.remote_max_watches_per_client"
        );

        // Each mistake is named by its key.
        let cases = [
            (
                format!("{}{}", server(""), follower("secret = \"s\"")),
                "apps.shop.secret",
            ),
            (
                format!(
                    "{}{}",
                    server(""),
                    follower("").replace("https://prod", "http://prod")
                ),
                "apps.shop.follow",
            ),
            (
                format!(
                    "{}[[apps]]\nname = \"shop\"\nappid = \"wx1\"\nfollow = \"https://prod\"\n",
                    server("")
                ),
                "apps.shop.follow_credential_file",
            ),
            (
                format!("{}{owned}follow_ca_file = \"/x\"\n", server("")),
                "apps.crm.follow_ca_file",
            ),
            (
                format!("{}{owned}", server("remote_listen = \"127.0.0.1:8943\"")),
                "server.remote_tls",
            ),
            (
                format!(
                    "{}{owned}",
                    server(&format!("remote_listen = \"127.0.0.1:8943\"\n{tls}"))
                ),
                "server.remote_listen",
            ),
            (
                format!("{}{owned}{bearer}", server("")),
                "clients[0].credential_sha256",
            ),
            (
                format!(
                    "{}{owned}[[clients]]\nname = \"x\"\nuid = 5\napps = [\"nope\"]\n",
                    server("")
                ),
                "clients[0].apps",
            ),
            (
                format!(
                    "{}{owned}[[clients]]\nname = \"x\"\nuid = 5\ngid = 5\napps = [\"crm\"]\n",
                    server("")
                ),
                "clients[0]",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(&text), key, "{text}");
        }
        // A pasted credential is not echoed back.
        let pasted = format!(
            "{}{owned}[[clients]]\nname = \"x\"\ncredential_sha256 = \"bearer-credential-value\"\napps = [\"crm\"]\n",
            server(&format!("remote_listen = \"127.0.0.1:8943\"\n{tls}"))
        );
        let message = parse(&pasted).unwrap_err().to_string();
        assert!(!message.contains("bearer-credential-value"), "{message}");
    }

    #[test]
    fn clients_name_platforms_suites_apis_and_admin() {
        let platform =
            "[[platforms]]\nname = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\n\
                        token = \"t\"\naes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n";
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:8930\"\ncallback_listen = \"127.0.0.1:8940\"\n\
             [[apps]]\nname = \"shop\"\nappid = \"wx1\"\nsecret = \"s\"\n{platform}"
        );
        let config = parse(&format!(
            "{base}[[clients]]\nuid = 1001\napps = [\"shop\"]\nplatforms = [\"saas\"]\n\
             apis = [\"/cgi-bin/message/*\", \"/tcb/invokecloudfunction\"]\n\
             [[clients]]\ngid = 50\nplatforms = [\"saas\"]\nadmin = true\n\
             [[clients]]\nname = \"ci\"\nuid = 1002\napps = [\"shop\"]\napis = []\n"
        ))
        .unwrap();
        let names: Vec<&str> = config.clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["uid:1001", "gid:50", "ci"]);
        let first = &config.clients[0];
        assert_eq!(first.platforms, ["saas"]);
        assert_eq!(first.apis.as_ref().map(Vec::len), Some(2));
        assert!(config.clients[1].admin && config.clients[1].apps.is_empty());
        assert_eq!(config.clients[2].apis, Some(Vec::new()));
        // check-config shows each client's lists, and a name taken from
        // the identity as a comment (it is no name one could write).
        let shown = config.render_effective();
        for line in [
            "# name: uid:1001 (from its identity)",
            "platforms = [\"saas\"]",
            "apis = [\"/cgi-bin/message/*\", \"/tcb/invokecloudfunction\"]",
            "admin = true",
            "apis = []",
            "# apis: not set (every path)",
        ] {
            assert!(shown.contains(line), "{line} in\n{shown}");
        }

        let client = |body: &str| format!("{base}[[clients]]\n{body}\n");
        let cases = [
            (
                "uid = 5\napps = [\"shop\"]\nplatforms = [\"nope\"]",
                "clients[0].platforms",
            ),
            (
                "uid = 5\nplatforms = [\"saas\", \"saas\"]",
                "clients[0].platforms",
            ),
            (
                "uid = 5\napps = [\"shop\"]\nsuites = [\"crm\"]",
                "clients[0].suites",
            ),
            ("uid = 5", "clients[0].apps"),
            ("uid = 5\napps = []\nplatforms = []", "clients[0].apps"),
            (
                "uid = 5\napps = [\"shop\"]\napis = [\"/cgi-bin/*\", \"cgi-bin/x\"]",
                "clients[0].apis[1]",
            ),
            (
                "uid = 5\napps = [\"shop\"]\napis = [\"/a/*/b\"]",
                "clients[0].apis[0]",
            ),
            (
                "uid = 5\napps = [\"shop\"]\napis = [\"/a/../b\"]",
                "clients[0].apis[0]",
            ),
            (
                "uid = 5\napps = [\"shop\"]\napis = [\"/a/%62\"]",
                "clients[0].apis[0]",
            ),
            (
                "uid = 5\napps = [\"shop\"]\napis = [\"\"]",
                "clients[0].apis[0]",
            ),
            (
                "name = \"bad name\"\nuid = 5\napps = [\"shop\"]",
                "clients[0].name",
            ),
        ];
        for (body, key) in cases {
            assert_eq!(key_of(&client(body)), key, "{body}");
        }
        let message = parse(&client("uid = 5\napps = [\"shop\"]\nsuites = [\"crm\"]"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("none is configured"), "{message}");
        let message = parse(&client("uid = 5\napps = [\"shop\"]\napis = [\"/a/*/b\"]"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("'*'"), "{message}");
        // Two nameless entries of one uid are twins.
        let twins = client("uid = 5\napps = [\"shop\"]\n[[clients]]\nuid = 5\napps = [\"shop\"]");
        assert_eq!(key_of(&twins), "clients[1].uid");
    }

    #[test]
    fn a_bearer_client_needs_a_name_and_is_never_admin() {
        let dir = tempfile::tempdir().unwrap();
        let issued = crate::tls::init(&dir.path().join("tls")).unwrap();
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:8930\"\nremote_listen = \"127.0.0.1:8943\"\n\
             remote_tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
             [[apps]]\nname = \"shop\"\nappid = \"wx1\"\nsecret = \"s\"\n",
            issued.cert.display(),
            issued.key.display()
        );
        let nameless =
            format!("{base}[[clients]]\ncredential_sha256 = \"{DIGEST}\"\napps = [\"shop\"]\n");
        assert_eq!(key_of(&nameless), "clients[0].name");
        let message = parse(&nameless).unwrap_err().to_string();
        assert!(!message.contains(&DIGEST[..8]), "{message}");
        let admin = format!(
            "{base}[[clients]]\nname = \"staging\"\ncredential_sha256 = \"{DIGEST}\"\n\
             apps = [\"shop\"]\nadmin = true\n"
        );
        assert_eq!(key_of(&admin), "clients[0].admin");
    }

    #[test]
    fn local_listeners_beyond_loopback_are_warned_about_with_uid_clients() {
        let config = |host: &str, clients: &str| {
            parse(&format!(
                "[server]\nlisten = \"{host}:8930\"\nrequire_client_header = true\n\
                 [[apps]]\nname = \"shop\"\nappid = \"wx1\"\nsecret = \"s\"\n\
                 compat_listen = \"{host}:8932\"\n{clients}"
            ))
            .unwrap()
        };
        let uid = "[[clients]]\nuid = 1001\napps = [\"shop\"]\n";
        let warned = |config: &Config| {
            config
                .warnings()
                .into_iter()
                .find(|warning| warning.contains("uid/gid clients"))
        };
        let warning = warned(&config("0.0.0.0", uid)).expect("a warning");
        assert!(
            warning.contains("server.listen and apps.shop.compat_listen"),
            "{warning}"
        );
        assert!(warning.contains("server.remote_listen"), "{warning}");
        // On loopback, or without uid or gid clients, every caller is known.
        assert_eq!(warned(&config("127.0.0.1", uid)), None);
        assert_eq!(warned(&config("0.0.0.0", "")), None);
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(sha256_hex(&hex), Some([0xab; 32]));
        assert_eq!(sha256_hex(&"ab".repeat(31)), None);
        assert_eq!(sha256_hex(&"zz".repeat(32)), None);
        assert_eq!(sha256_hex(&"+a".repeat(32)), None);
    }
}
