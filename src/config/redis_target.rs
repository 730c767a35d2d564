//! What `store.url` names (DESIGN.md section 14): one Redis
//! (`redis://`, `rediss://`, `redis+unix://`), a primary managed by
//! Sentinel (`redis+sentinel://h1:26379,h2:26379/MASTER[/DB]`), or a Redis
//! Cluster (`redis+cluster://h1:7000,h2:7001,h3:7002`). The `rediss+…`
//! forms speak TLS to every node.
//!
//! Parsed by configuration validation (whose messages name `store.url`);
//! the store connects to what it names. Messages never repeat the URL: it
//! may carry a password.

use std::fmt;

use percent_encoding::percent_decode_str;

use super::urls;
use crate::secret::Secret;

const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

/// A parsed `store.url`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub topology: Topology,
    /// TLS to every node (`rediss`).
    pub tls: bool,
    /// From the URL's userinfo, if any.
    pub username: Option<String>,
    /// From the URL's userinfo, if any.
    pub password: Option<Secret>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis: the URL as the redis crate reads it.
    Single { url: String },
    /// The primary the sentinels name `master`.
    Sentinel {
        sentinels: Vec<Node>,
        master: String,
        db: i64,
    },
    /// A Redis Cluster, found from any of these seed nodes.
    Cluster { seeds: Vec<Node> },
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Hand-written: a URL's password must not show.
impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Single { url } => f
                .debug_struct("Single")
                .field("url", &urls::masked(url))
                .finish(),
            Topology::Sentinel {
                sentinels,
                master,
                db,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("db", db)
                .finish(),
            Topology::Cluster { seeds } => f.debug_struct("Cluster").field("seeds", seeds).finish(),
        }
    }
}

/// Hand-written: the password must not show.
impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("topology", &self.topology)
            .field("tls", &self.tls)
            // Written alone, userinfo may well be a password.
            .field("username", &self.username.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RedisTarget {
    /// Parses `url`; the error says what is wrong without repeating it.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(schemes)?;
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => single(url, scheme, rest),
            "redis+sentinel" | "rediss+sentinel" => {
                let (auth, hosts, path) = split_authority(rest);
                let (username, password) = userinfo(auth)?;
                let sentinels = nodes(hosts, SENTINEL_PORT)?;
                let mut parts = path.split('/').filter(|part| !part.is_empty());
                let master = parts.next().ok_or_else(|| {
                    "names no master: write redis+sentinel://HOST:26379,HOST:26379/MASTER_NAME"
                        .to_owned()
                })?;
                let db = match parts.next() {
                    None => 0,
                    Some(db) => db
                        .parse::<i64>()
                        .ok()
                        .filter(|db| *db >= 0)
                        .ok_or_else(|| {
                            "the part after the master name must be a database number".to_owned()
                        })?,
                };
                if parts.next().is_some() {
                    return Err("has more than /MASTER_NAME/DB after the sentinels".to_owned());
                }
                Ok(RedisTarget {
                    topology: Topology::Sentinel {
                        sentinels,
                        master: decode(master)?,
                        db,
                    },
                    tls: scheme.starts_with("rediss"),
                    username,
                    password,
                })
            }
            "redis+cluster" | "rediss+cluster" => {
                let (auth, hosts, path) = split_authority(rest);
                let (username, password) = userinfo(auth)?;
                let seeds = nodes(hosts, REDIS_PORT)?;
                if seeds.len() < 2 {
                    return Err(
                        "names one node; list at least two cluster nodes (h1:7000,h2:7001), \
                         so the broker finds the cluster while one of them is down"
                            .to_owned(),
                    );
                }
                if !matches!(path, "" | "/" | "/0") {
                    return Err("a Redis Cluster has only database 0; remove the path".to_owned());
                }
                Ok(RedisTarget {
                    topology: Topology::Cluster { seeds },
                    tls: scheme.starts_with("rediss"),
                    username,
                    password,
                })
            }
            _ => Err(schemes()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.topology {
            Topology::Single { .. } => "single",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster { .. } => "cluster",
        }
    }
}

fn schemes() -> String {
    "must start with redis://, rediss://, redis+unix://, redis+sentinel://, \
     rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        .to_owned()
}

/// One Redis: checked by the redis crate's own parser, the one the store
/// connects with; its password taken out so that it is handled in one
/// place with `password_env`/`password_file`.
fn single(url: &str, scheme: &str, rest: &str) -> Result<RedisTarget, String> {
    if rest.is_empty() || rest == "/" {
        return Err("names no host (or socket path)".to_owned());
    }
    let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| {
        "is not a Redis URL the client can use (check the host, port and database)".to_owned()
    })?;
    Ok(RedisTarget {
        topology: Topology::Single {
            url: url.to_owned(),
        },
        tls: scheme == "rediss",
        username: info.redis.username,
        password: info.redis.password.map(Secret::new),
    })
}

/// `user:pass@h1,h2/path` → (`user:pass`, `h1,h2`, `/path`). The last `@`
/// before the path ends the userinfo.
fn split_authority(rest: &str) -> (Option<&str>, &str, &str) {
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts, path),
        None => (None, authority, path),
    }
}

fn userinfo(auth: Option<&str>) -> Result<(Option<String>, Option<Secret>), String> {
    let Some(auth) = auth else {
        return Ok((None, None));
    };
    let (user, password) = match auth.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (auth, None),
    };
    let user = Some(decode(user)?).filter(|user| !user.is_empty());
    let password = password
        .map(decode)
        .transpose()?
        .filter(|password| !password.is_empty())
        .map(Secret::new);
    Ok((user, password))
}

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "holds percent-encoded bytes that are not UTF-8".to_owned())
}

/// `h1:26379,[::1]:26380,h3` with `default_port` where none is written.
fn nodes(hosts: &str, default_port: u16) -> Result<Vec<Node>, String> {
    if hosts.trim().is_empty() {
        return Err("names no host".to_owned());
    }
    let mut nodes = Vec::new();
    for written in hosts.split(',') {
        let node = node(written.trim(), default_port)?;
        if nodes.contains(&node) {
            return Err(format!("names {node} twice"));
        }
        nodes.push(node);
    }
    Ok(nodes)
}

fn node(written: &str, default_port: u16) -> Result<Node, String> {
    let (host, port) = if let Some(bracketed) = written.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "has an IPv6 address without its closing ]".to_owned())?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or_else(|| {
                    "has something other than :PORT after an IPv6 address".to_owned()
                })?),
            ),
        }
    } else {
        match written.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (written, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !valid_host {
        return Err("has an empty or malformed host in its list of nodes".to_owned());
    }
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("has a bad port after {host}"))?,
    };
    Ok(Node {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> Node {
        Node {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn sentinel_urls_name_sentinels_a_master_and_a_database() {
        let target =
            RedisTarget::parse("redis+sentinel://:pw@s1:26379,s2,[::1]:26381/mymaster/2").unwrap();
        assert_eq!(
            target.topology,
            Topology::Sentinel {
                sentinels: vec![node("s1", 26379), node("s2", 26379), node("::1", 26381)],
                master: "mymaster".to_owned(),
                db: 2,
            }
        );
        assert_eq!(target.password, Some(Secret::new("pw")));
        assert!(!target.tls);
        let tls = RedisTarget::parse("rediss+sentinel://s1/m").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.password, None);
    }

    #[test]
    fn cluster_urls_list_seed_nodes() {
        let target = RedisTarget::parse("redis+cluster://u:p%40ss@h1:7000,h2:7001").unwrap();
        assert_eq!(
            target.topology,
            Topology::Cluster {
                seeds: vec![node("h1", 7000), node("h2", 7001)]
            }
        );
        assert_eq!(target.username.as_deref(), Some("u"));
        assert_eq!(target.password, Some(Secret::new("p@ss")));
    }

    #[test]
    fn single_urls_keep_their_text_and_give_up_their_password() {
        let target = RedisTarget::parse("rediss://:pw@h:6380/1").unwrap();
        assert!(target.tls);
        assert_eq!(target.password, Some(Secret::new("pw")));
        assert!(!format!("{target:?}").contains("pw@"));
        assert!(!format!("{:?}", target.topology).contains("pw@"));
    }

    #[test]
    fn bad_urls_are_explained_without_being_repeated() {
        for (url, expected) in [
            ("http://h", "must start with"),
            ("redis+sentinel://s1:26379,s2:26379", "names no master"),
            ("redis+sentinel://s1:26379/", "names no master"),
            ("redis+sentinel://s1/m/x", "database number"),
            ("redis+cluster://:secretpw@h1:7000", "names one node"),
            ("redis+cluster://h1:7000,h2:7001/3", "only database 0"),
            ("redis+cluster://h1:7000,h1:7000", "twice"),
            ("redis+sentinel://s1:99999/m", "bad port"),
            ("redis+sentinel://,/m", "malformed host"),
            ("redis://", "no host"),
        ] {
            let err = RedisTarget::parse(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("secretpw"));
        }
    }
}
