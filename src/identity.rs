//! Who a request comes from, and what it may do (DESIGN.md sections 15,
//! 20 and 21): which apps, platforms and suites it reads, which API paths
//! it may call through the forwarding routes, and whether it may take an
//! operator action. Every route asks [`Access::check`].
//!
//! On the remote listener a client proves itself with a bearer
//! credential, checked against the SHA-256 the configuration holds; on
//! the Unix socket the kernel tells the peer's uid and gid (SO_PEERCRED);
//! on loopback TCP (the token API and the compatible listeners) the
//! kernel's socket tables tell the uid owning the peer's socket, and the
//! passwd database that user's primary group. The `Wxbroker-Client`
//! header is none of these: any caller can write any name in it, so it
//! only names callers in logs and metrics.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{ApiPattern, ClientConfig, ClientIdentity};
use crate::wechat_path::ForwardPath;

/// The local user at the other end of a connection: on the Unix socket
/// as the kernel reports it when the connection is accepted, on loopback
/// TCP as the owner of the peer's socket and its primary group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
}

/// What a request asks of an app, platform or suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    App(&'a str),
    Platform(&'a str),
    Suite(&'a str),
}

impl Resource<'_> {
    /// `app`, `platform` or `suite`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::App(_) => "app",
            Resource::Platform(_) => "platform",
            Resource::Suite(_) => "suite",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::App(name) | Resource::Platform(name) | Resource::Suite(name) => name,
        }
    }
}

/// What a request does with the resource.
#[derive(Debug, Clone, Copy)]
pub enum Act<'a> {
    /// Read or refresh its credentials, list its state.
    Read,
    /// Call this path upstream through a forwarding route with its token.
    Forward(&'a ForwardPath),
    /// An operator action (`clear_quota`).
    Operate,
}

/// Why [`Access::check`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No client entry of the caller names the resource.
    NotListed,
    /// The entries naming it do not list the path in their `apis`.
    ApiNotAllowed,
    /// None of the entries naming it is `admin`.
    AdminOnly,
}

/// What a request may do: the one check every route asks before it
/// touches an app's, a platform's or a suite's credentials.
#[derive(Debug, Clone)]
pub enum Access {
    /// Everything: root and, while no `[[clients]]` names a uid or gid,
    /// every local peer (the behaviour before clients existed).
    All,
    /// What the caller's client entries allow; `client` names the caller
    /// in logs and metrics.
    Only {
        client: Arc<str>,
        entries: Arc<[Arc<Entry>]>,
    },
}

impl Access {
    /// Whether the caller may do `act` on `resource`: some entry of the
    /// caller's names the resource and allows the act (lists the path in
    /// its `apis`, or has none; is `admin` for an operator action).
    pub fn check(&self, resource: Resource<'_>, act: Act<'_>) -> Result<(), Denied> {
        let Access::Only { entries, .. } = self else {
            return Ok(());
        };
        let mut naming = entries
            .iter()
            .filter(|entry| entry.names(resource))
            .peekable();
        if naming.peek().is_none() {
            return Err(Denied::NotListed);
        }
        match act {
            Act::Read => Ok(()),
            Act::Forward(path) => naming
                .any(|entry| entry.may_call(path))
                .then_some(())
                .ok_or(Denied::ApiNotAllowed),
            Act::Operate => naming
                .any(|entry| entry.admin)
                .then_some(())
                .ok_or(Denied::AdminOnly),
        }
    }

    /// Whether the caller may read app `app`.
    pub fn allows(&self, app: &str) -> bool {
        self.check(Resource::App(app), Act::Read).is_ok()
    }

    /// The authenticated client's name, if the request has one.
    pub fn client(&self) -> Option<&str> {
        match self {
            Access::All => None,
            Access::Only { client, .. } => Some(client),
        }
    }
}

/// One `[[clients]]` entry, ready to match requests against.
#[derive(Debug)]
pub struct Entry {
    name: Arc<str>,
    identity: ClientIdentity,
    apps: Vec<String>,
    platforms: Vec<String>,
    suites: Vec<String>,
    apis: Option<Vec<ApiPattern>>,
    admin: bool,
}

impl Entry {
    fn names(&self, resource: Resource<'_>) -> bool {
        let listed = match resource {
            Resource::App(_) => &self.apps,
            Resource::Platform(_) => &self.platforms,
            Resource::Suite(_) => &self.suites,
        };
        listed.iter().any(|name| name == resource.name())
    }

    /// Every spelling of the path must be listed: a hop that decodes
    /// fewer times than the broker routes on one of the others.
    fn may_call(&self, path: &ForwardPath) -> bool {
        let Some(apis) = &self.apis else {
            return true;
        };
        path.spellings()
            .iter()
            .all(|spelling| apis.iter().any(|api| api.matches(spelling)))
    }
}

/// The configured `[[clients]]`, ready to match requests against.
#[derive(Default)]
pub struct Clients {
    known: Vec<Arc<Entry>>,
    /// Some client names a uid or gid: local peers are limited.
    local_limits: bool,
}

impl Clients {
    pub fn new(clients: &[ClientConfig]) -> Clients {
        Clients {
            known: clients
                .iter()
                .map(|client| {
                    Arc::new(Entry {
                        name: client.name.as_str().into(),
                        identity: client.identity.clone(),
                        apps: client.apps.clone(),
                        platforms: client.platforms.clone(),
                        suites: client.suites.clone(),
                        apis: client.apis.clone(),
                        admin: client.admin,
                    })
                })
                .collect(),
            local_limits: clients
                .iter()
                .any(|client| !matches!(client.identity, ClientIdentity::Bearer { .. })),
        }
    }

    /// Whether local peers are limited; without it, every peer may do
    /// everything and needs no lookup.
    pub fn limits_local(&self) -> bool {
        self.local_limits
    }

    /// The client whose credential `presented` is, if any. The presented
    /// value is hashed and compared with every configured digest in
    /// constant time, all of them each time: neither the timing of one
    /// comparison nor how many ran says how close a guess came.
    pub fn bearer(&self, presented: &str) -> Option<Access> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for known in &self.known {
            if let ClientIdentity::Bearer { sha256 } = &known.identity {
                if constant_time_eq(sha256, &digest) {
                    found = Some(Access::Only {
                        client: known.name.clone(),
                        entries: Arc::new([known.clone()]),
                    });
                }
            }
        }
        found
    }

    /// What a local peer (on the Unix socket or loopback TCP) may do;
    /// `None` is a peer that could not be identified. With no uid or gid
    /// client configured, everything, as before clients existed. Root may
    /// do everything too: it can read the broker's state and secrets
    /// anyway. Anyone else gets what the clients matching their uid or
    /// primary gid allow, and nothing when none matches.
    pub fn local(&self, peer: Option<Peer>) -> Access {
        if !self.local_limits {
            return Access::All;
        }
        let Some(peer) = peer else {
            return Access::Only {
                client: "unknown".into(),
                entries: Arc::new([]),
            };
        };
        if peer.uid == 0 {
            return Access::All;
        }
        let matching: Vec<Arc<Entry>> = self
            .known
            .iter()
            .filter(|known| match known.identity {
                ClientIdentity::Uid(uid) => uid == peer.uid,
                ClientIdentity::Gid(gid) => gid == peer.gid,
                ClientIdentity::Bearer { .. } => false,
            })
            .cloned()
            .collect();
        let client = match matching.as_slice() {
            [only] => only.name.clone(),
            _ => format!("uid:{}", peer.uid).into(),
        };
        Access::Only {
            client,
            entries: matching.into(),
        }
    }

    /// Whether `name` is a configured client's name: only those become
    /// metric labels, so the label set is bounded by the configuration.
    pub fn has_name(&self, name: &str) -> bool {
        self.known.iter().any(|known| &*known.name == name)
    }
}

/// Equal digests, looked at whole whatever differs where.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, identity: ClientIdentity, apps: &[&str]) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            identity,
            apps: apps.iter().map(|app| app.to_string()).collect(),
            platforms: Vec::new(),
            suites: Vec::new(),
            apis: None,
            admin: false,
        }
    }

    fn clients() -> Clients {
        let digest: [u8; 32] = Sha256::digest(b"staging-credential").into();
        Clients::new(&[
            entry(
                "staging",
                ClientIdentity::Bearer { sha256: digest },
                &["shop"],
            ),
            ClientConfig {
                platforms: vec!["saas".into()],
                apis: Some(vec![ApiPattern::parse("/cgi-bin/message/*").unwrap()]),
                ..entry("deploy", ClientIdentity::Uid(1001), &["shop"])
            },
            ClientConfig {
                admin: true,
                ..entry("ops", ClientIdentity::Gid(2000), &["crm"])
            },
        ])
    }

    #[test]
    fn a_bearer_is_known_by_its_digest_only() {
        let clients = clients();
        let access = clients.bearer("staging-credential").expect("known");
        assert!(access.allows("shop") && !access.allows("crm"));
        assert_eq!(access.client(), Some("staging"));
        assert!(clients.bearer("staging-credentiaL").is_none());
        assert!(clients.bearer("").is_none());
    }

    #[test]
    fn local_peers_read_their_clients_apps_and_platforms() {
        let clients = clients();
        let peer = |uid, gid| Some(Peer { uid, gid });
        assert!(clients.local(peer(0, 0)).allows("crm"));
        let deploy = clients.local(peer(1001, 1001));
        assert!(deploy.allows("shop") && !deploy.allows("crm"));
        let saas = Resource::Platform("saas");
        assert_eq!(deploy.check(saas, Act::Read), Ok(()));
        let both = clients.local(peer(1001, 2000));
        assert!(both.allows("shop") && both.allows("crm"));
        let stranger = clients.local(peer(65534, 65534));
        assert!(!stranger.allows("shop") && !stranger.allows("crm"));
        assert_eq!(stranger.check(saas, Act::Read), Err(Denied::NotListed));
        assert!(!clients.local(None).allows("shop"));
        // Apps and platforms are apart: an app's name reads no platform.
        assert_eq!(
            clients
                .local(peer(7, 2000))
                .check(Resource::Platform("crm"), Act::Read),
            Err(Denied::NotListed)
        );
    }

    #[test]
    fn apis_limit_forwarding_in_every_spelling() {
        let deploy = clients().local(Some(Peer {
            uid: 1001,
            gid: 1001,
        }));
        let forward =
            |path: &str| deploy.check(Resource::App("shop"), Act::Forward(&ForwardPath::new(path)));
        assert_eq!(forward("cgi-bin/message/custom/send"), Ok(()));
        assert_eq!(forward("cgi-bin/message/%63ustom/send"), Ok(()));
        for path in [
            "cgi-bin/user/info",
            "cgi-bin/message/../user/info",
            "cgi-bin/message/%2e%2e/user/info",
            "cgi-bin/message/%252e%252e/user/info",
            "cgi-bin%2fmessage/../user/info",
        ] {
            assert_eq!(forward(path), Err(Denied::ApiNotAllowed), "{path}");
        }
        // The apis of one entry do not open another entry's app.
        let crm = Resource::App("crm");
        let any = ForwardPath::new("cgi-bin/message/custom/send");
        assert_eq!(
            deploy.check(crm, Act::Forward(&any)),
            Err(Denied::NotListed)
        );
    }

    #[test]
    fn operator_actions_need_an_admin_entry_naming_the_app() {
        let clients = clients();
        let peer = |uid, gid| Some(Peer { uid, gid });
        let shop = Resource::App("shop");
        let crm = Resource::App("crm");
        assert_eq!(
            clients.local(peer(1001, 1001)).check(shop, Act::Operate),
            Err(Denied::AdminOnly)
        );
        let ops = clients.local(peer(1001, 2000));
        assert_eq!(ops.check(crm, Act::Operate), Ok(()));
        assert_eq!(ops.check(shop, Act::Operate), Err(Denied::AdminOnly));
        assert_eq!(clients.local(peer(0, 0)).check(shop, Act::Operate), Ok(()));
    }

    #[test]
    fn without_local_clients_everyone_may_do_everything() {
        let access = Clients::default().local(Some(Peer { uid: 7, gid: 7 }));
        assert!(access.allows("shop"));
        assert_eq!(access.check(Resource::App("shop"), Act::Operate), Ok(()));
    }
}
