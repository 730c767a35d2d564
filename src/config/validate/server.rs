//! `[server]`: the listeners (TCP, Unix socket, metrics, compatible,
//! remote, callback), each on an address of its own, their connection
//! budgets and timeouts, and the compatible listeners' TLS.

use std::net::SocketAddr;
use std::time::Duration;

use super::remote;
use crate::config::error::Problem;
use crate::config::fields::{
    at_most, duration, is_loopback, octal_mode, path, positive, socket_addr, word,
};
use crate::config::raw::{Loose, RawServer, RawTls};
use crate::config::{AppConfig, ServerConfig, TlsFiles};

const DEFAULT_SOCKET_MODE: u32 = 0o660;

const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// More request threads than this would be a typo: each is a thread and a
/// runtime, and a connection is served by one alone.
const MAX_REQUEST_THREADS: usize = 256;

const DEFAULT_TOKEN_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers blocked longer than this are better served by a 503 they can
/// retry than by a hung request.
const MAX_TOKEN_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Long enough for pooled keep-alive clients, short enough that idle and
/// slow-header connections do not pile up against `max_connections`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A proxied body may be 10 MiB: a minute allows 170 KiB/s, far below
/// what a local client sends, while a client trickling bytes to hold a
/// connection is cut off.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

const MAX_BODY_TIMEOUT: Duration = Duration::from_secs(3600);

/// As long as the proxy waits on a silent upstream: a client that reads
/// nothing for this long (not merely slowly) has stopped reading.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

const MAX_WRITE_TIMEOUT: Duration = Duration::from_secs(3600);

/// `sun_path` holds 108 bytes on Linux, including the terminating NUL.
/// Checked here because bind()'s own error does not say what is wrong.
const MAX_SOCKET_PATH: usize = 107;

/// Per-app `compat_listen` addresses are distinct from every other
/// listener, and `compat_tls` has a compatible listener to serve.
pub(super) fn compat_listeners(server: &ServerConfig, apps: &[AppConfig]) -> Result<(), Problem> {
    let mut taken: Vec<(String, SocketAddr)> = [
        ("server.listen", server.listen),
        ("server.metrics_listen", server.metrics_listen),
        ("server.wechat_compat_listen", server.wechat_compat_listen),
    ]
    .into_iter()
    .filter_map(|(key, addr)| Some((key.to_owned(), addr?)))
    .collect();
    for app in apps {
        let Some(addr) = app.compat_listen else {
            continue;
        };
        let key = format!("apps.{}.compat_listen", app.name);
        if addr.port() != 0 {
            if let Some((other, _)) = taken.iter().find(|(_, used)| *used == addr) {
                return Err(Problem::new(key, format!("{addr} is already {other}")));
            }
        }
        taken.push((key, addr));
    }
    let any_compat =
        server.wechat_compat_listen.is_some() || apps.iter().any(|app| app.compat_listen.is_some());
    if server.compat_tls.is_some() && !any_compat {
        return Err(Problem::new(
            "server.compat_tls",
            "applies only with server.wechat_compat_listen or an app's compat_listen",
        ));
    }
    Ok(())
}

/// `[server.compat_tls]`: both files required, and loaded here so that a
/// bad certificate is a configuration error naming the key.
fn compat_tls(raw: RawTls) -> Result<TlsFiles, Problem> {
    let cert_file = path("server.compat_tls.cert_file", raw.cert_file)?
        .ok_or_else(|| Problem::new("server.compat_tls.cert_file", "required"))?;
    let key_file = path("server.compat_tls.key_file", raw.key_file)?
        .ok_or_else(|| Problem::new("server.compat_tls.key_file", "required"))?;
    if let Err(err) = crate::tls::server_config(&cert_file, &key_file) {
        let key = match &err {
            crate::tls::TlsError::Read { key, .. }
            | crate::tls::TlsError::NoCertificate { key, .. } => *key,
            _ => "server.compat_tls",
        };
        return Err(Problem::new(key, format!("{:#}", anyhow::Error::from(err))));
    }
    Ok(TlsFiles {
        cert_file,
        key_file,
    })
}

pub(super) fn server(raw: Option<RawServer>) -> Result<ServerConfig, Problem> {
    // No default listener: a daemon handing out credentials should serve
    // exactly where the operator said, never somewhere implied.
    let raw = raw.ok_or_else(no_listener)?;
    let listen = socket_addr("server.listen", raw.listen)?;
    let unix_socket = path("server.unix_socket", raw.unix_socket)?;
    if listen.is_none() && unix_socket.is_none() {
        return Err(no_listener());
    }
    if let Some(socket) = &unix_socket {
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(Problem::new(
                "server.unix_socket",
                format!("is {len} bytes long; Unix socket paths are limited to {MAX_SOCKET_PATH}"),
            ));
        }
    } else {
        // Both only affect the socket; set without one they are a mistake
        // (perhaps a commented-out unix_socket), not something to ignore.
        for (key, set) in [
            ("server.socket_mode", raw.socket_mode.is_some()),
            ("server.socket_group", raw.socket_group.is_some()),
        ] {
            if set {
                return Err(Problem::new(key, "applies only with server.unix_socket"));
            }
        }
    }
    let socket_mode = socket_mode("server.socket_mode", raw.socket_mode.as_ref())?;
    let socket_group = word("server.socket_group", raw.socket_group)?;

    let require_client_header = raw.require_client_header.unwrap_or(true);
    if let Some(addr) = listen {
        if !is_loopback(&addr) && !require_client_header {
            return Err(Problem::new(
                "server.require_client_header",
                format!(
                    "must be true when server.listen ({addr}) is not a loopback address; \
                     it is what stops forwarded requests from reading tokens"
                ),
            ));
        }
    }

    let max_connections = match raw.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| Problem::new("server.max_connections", "must be at least 1"))?,
    };

    let request_threads = raw
        .request_threads
        .map(|n| {
            usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_REQUEST_THREADS).contains(n))
                .ok_or_else(|| {
                    Problem::new(
                        "server.request_threads",
                        format!("must be from 1 to {MAX_REQUEST_THREADS}"),
                    )
                })
        })
        .transpose()?;

    let metrics_listen = socket_addr("server.metrics_listen", raw.metrics_listen)?;
    let wechat_compat_listen =
        socket_addr("server.wechat_compat_listen", raw.wechat_compat_listen)?;
    let remote_listen = socket_addr("server.remote_listen", raw.remote_listen)?;
    let remote_tls = remote::remote(remote_listen, raw.remote_tls)?;
    let remote_limits = remote::remote_limits(
        remote_listen,
        raw.remote_max_connections,
        raw.remote_max_watches_per_client,
    )?;
    let callback_listen = socket_addr("server.callback_listen", raw.callback_listen)?;
    distinct_listeners(&[
        ("server.listen", listen),
        ("server.metrics_listen", metrics_listen),
        ("server.wechat_compat_listen", wechat_compat_listen),
        ("server.remote_listen", remote_listen),
        ("server.callback_listen", callback_listen),
    ])?;

    let token_wait_timeout = duration(
        "server.token_wait_timeout",
        raw.token_wait_timeout.as_ref(),
        DEFAULT_TOKEN_WAIT_TIMEOUT,
    )?;
    at_most(
        "server.token_wait_timeout",
        token_wait_timeout,
        MAX_TOKEN_WAIT_TIMEOUT,
    )?;

    let idle_timeout = duration(
        "server.idle_timeout",
        raw.idle_timeout.as_ref(),
        DEFAULT_IDLE_TIMEOUT,
    )?;
    positive("server.idle_timeout", idle_timeout)?;
    at_most("server.idle_timeout", idle_timeout, MAX_IDLE_TIMEOUT)?;

    let body_timeout = duration(
        "server.body_timeout",
        raw.body_timeout.as_ref(),
        DEFAULT_BODY_TIMEOUT,
    )?;
    positive("server.body_timeout", body_timeout)?;
    at_most("server.body_timeout", body_timeout, MAX_BODY_TIMEOUT)?;

    let write_timeout = duration(
        "server.write_timeout",
        raw.write_timeout.as_ref(),
        DEFAULT_WRITE_TIMEOUT,
    )?;
    positive("server.write_timeout", write_timeout)?;
    at_most("server.write_timeout", write_timeout, MAX_WRITE_TIMEOUT)?;

    Ok(ServerConfig {
        listen,
        unix_socket,
        socket_mode,
        socket_group,
        require_client_header,
        max_connections,
        metrics_listen,
        wechat_compat_listen,
        token_wait_timeout,
        idle_timeout,
        compat_tls: raw.compat_tls.map(compat_tls).transpose()?,
        body_timeout,
        write_timeout,
        remote_listen,
        remote_tls,
        remote_max_connections: remote_limits.connections,
        remote_max_watches_per_client: remote_limits.watches_per_client,
        callback_listen,
        request_threads,
    })
}

fn no_listener() -> Problem {
    Problem::new("server", "set listen, unix_socket or both")
}

/// Two listeners on one address would fail at bind with "address in use";
/// saying which keys clash is kinder. Port 0 (any free port) never clashes.
fn distinct_listeners(listeners: &[(&str, Option<SocketAddr>)]) -> Result<(), Problem> {
    for (i, (key, addr)) in listeners.iter().enumerate() {
        let Some(addr) = addr.filter(|a| a.port() != 0) else {
            continue;
        };
        if let Some((earlier, _)) = listeners[..i].iter().find(|(_, a)| *a == Some(addr)) {
            return Err(Problem::new(
                *key,
                format!("{addr} is already used by {earlier}"),
            ));
        }
    }
    Ok(())
}

fn socket_mode(key: &str, value: Option<&Loose>) -> Result<u32, Problem> {
    octal_mode(key, value, DEFAULT_SOCKET_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Loose {
        Loose::String(s.to_owned())
    }

    #[test]
    fn socket_mode_is_octal() {
        let mode = |s: &str| socket_mode("k", Some(&string(s)));
        assert_eq!(mode("0660"), Ok(0o660));
        assert_eq!(mode("660"), Ok(0o660));
        assert_eq!(mode("0o600"), Ok(0o600));
        assert_eq!(mode("0777"), Ok(0o777));
        assert_eq!(socket_mode("k", None), Ok(0o660));
        for bad in ["", "0668", "rw-rw----", "04755", "0o", "00660"] {
            assert!(mode(bad).is_err(), "{bad}");
        }
        let err = socket_mode("k", Some(&Loose::Integer(660))).unwrap_err();
        assert!(err.message.contains("quoted octal string"), "{err:?}");
    }
}
