//! `[server] remote_listen`, `remote_tls` and the remote listener's limits
//! (DESIGN.md sections 15 and 21): the token API over TLS for
//! authenticated `[[clients]]`, with a connection budget of its own and a
//! bound on each client's watches.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::error::Problem;
use crate::config::raw::RawTls;
use crate::config::TlsFiles;

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
