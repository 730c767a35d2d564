//! `[[clients]]` (DESIGN.md sections 15, 20 and 21): who may read which apps and platforms, call
//! which APIs through the forwarding routes, and take operator actions.
//! A client is known by a bearer credential (on the remote listener,
//! stored as its SHA-256 only) or by a local uid or gid (on the Unix
//! socket from SO_PEERCRED; on loopback TCP, the token API's and the
//! compatible listeners, by the user owning the caller's socket and that
//! user's primary group).

use std::net::SocketAddr;

use super::api_patterns::ApiPattern;
use super::error::Problem;
use super::fields::is_loopback;
use super::raw::RawClient;
use super::{AppConfig, PlatformConfig};

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
mod tests;
