//! Who a request comes from, and which apps it may read (DESIGN.md
//! section 15). On the remote listener a client proves itself with a
//! bearer credential, checked against the SHA-256 the configuration
//! holds; on the Unix socket the kernel tells the peer's uid and gid
//! (SO_PEERCRED). The `Wxbroker-Client` header is neither: any caller can
//! write any name in it, so it only names callers in logs and metrics.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{ClientConfig, ClientIdentity};

/// The process at the other end of a Unix socket connection, as the
/// kernel reports it when the connection is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
}

/// Which apps a request may read.
#[derive(Debug, Clone)]
pub enum Access {
    /// Every app: TCP on loopback, and the Unix socket while no
    /// `[[clients]]` names a uid or gid (the behaviour before clients
    /// existed).
    All,
    /// Only these apps; `client` names the caller in logs and metrics.
    Only {
        client: Arc<str>,
        apps: Arc<[String]>,
    },
}

impl Access {
    pub fn allows(&self, app: &str) -> bool {
        match self {
            Access::All => true,
            Access::Only { apps, .. } => apps.iter().any(|allowed| allowed == app),
        }
    }

    /// The authenticated client's name, if the request has one.
    pub fn client(&self) -> Option<&str> {
        match self {
            Access::All => None,
            Access::Only { client, .. } => Some(client),
        }
    }
}

struct Known {
    name: Arc<str>,
    identity: ClientIdentity,
    apps: Arc<[String]>,
}

/// The configured `[[clients]]`, ready to match requests against.
#[derive(Default)]
pub struct Clients {
    known: Vec<Known>,
    /// Some client names a uid or gid: local peers are limited.
    local_limits: bool,
}

impl Clients {
    pub fn new(clients: &[ClientConfig]) -> Clients {
        Clients {
            known: clients
                .iter()
                .map(|client| Known {
                    name: client.name.as_str().into(),
                    identity: client.identity.clone(),
                    apps: client.apps.clone().into(),
                })
                .collect(),
            local_limits: clients
                .iter()
                .any(|client| !matches!(client.identity, ClientIdentity::Bearer { .. })),
        }
    }

    /// Whether local peers are limited to some apps; without it, every
    /// peer reads every app and needs no lookup.
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
                        apps: known.apps.clone(),
                    });
                }
            }
        }
        found
    }

    /// What a local peer on the Unix socket may read. With no uid or gid
    /// client configured, everything, as before clients existed. Root may
    /// read everything too: it can read the broker's state and secrets
    /// anyway. Anyone else gets the apps of every client matching their
    /// uid or primary gid, and none when nothing matches.
    pub fn local(&self, peer: Option<Peer>) -> Access {
        if !self.local_limits {
            return Access::All;
        }
        let local: Vec<&Known> = self
            .known
            .iter()
            .filter(|known| !matches!(known.identity, ClientIdentity::Bearer { .. }))
            .collect();
        let Some(peer) = peer else {
            return Access::Only {
                client: "unknown".into(),
                apps: Arc::new([]),
            };
        };
        if peer.uid == 0 {
            return Access::All;
        }
        let matching: Vec<&&Known> = local
            .iter()
            .filter(|known| match known.identity {
                ClientIdentity::Uid(uid) => uid == peer.uid,
                ClientIdentity::Gid(gid) => gid == peer.gid,
                ClientIdentity::Bearer { .. } => false,
            })
            .collect();
        let mut apps: Vec<String> = Vec::new();
        for known in &matching {
            for app in known.apps.iter() {
                if !apps.contains(app) {
                    apps.push(app.clone());
                }
            }
        }
        let client = match matching.as_slice() {
            [only] => only.name.clone(),
            _ => format!("uid-{}", peer.uid).into(),
        };
        Access::Only {
            client,
            apps: apps.into(),
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

    fn clients() -> Clients {
        let digest: [u8; 32] = Sha256::digest(b"staging-credential").into();
        Clients::new(&[
            ClientConfig {
                name: "staging".into(),
                identity: ClientIdentity::Bearer { sha256: digest },
                apps: vec!["shop".into()],
            },
            ClientConfig {
                name: "deploy".into(),
                identity: ClientIdentity::Uid(1001),
                apps: vec!["shop".into()],
            },
            ClientConfig {
                name: "ops".into(),
                identity: ClientIdentity::Gid(2000),
                apps: vec!["crm".into()],
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
    fn local_peers_read_their_clients_apps() {
        let clients = clients();
        let peer = |uid, gid| Some(Peer { uid, gid });
        assert!(clients.local(peer(0, 0)).allows("crm"));
        let deploy = clients.local(peer(1001, 1001));
        assert!(deploy.allows("shop") && !deploy.allows("crm"));
        let both = clients.local(peer(1001, 2000));
        assert!(both.allows("shop") && both.allows("crm"));
        let stranger = clients.local(peer(65534, 65534));
        assert!(!stranger.allows("shop") && !stranger.allows("crm"));
        assert!(!clients.local(None).allows("shop"));
    }

    #[test]
    fn without_local_clients_everyone_reads_everything() {
        assert!(Clients::default()
            .local(Some(Peer { uid: 7, gid: 7 }))
            .allows("shop"));
    }
}
