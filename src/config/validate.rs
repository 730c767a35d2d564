//! Turns the raw, as-written configuration into a [`Config`]: fills in
//! defaults, resolves secrets, and refuses anything the daemon could not run
//! with. Each key type has one small helper, so a rule (and its message) is
//! written once.
//!
//! Errors are [`Problem`]s (key + message); the caller attaches the source
//! name. Messages never contain a secret, and not the values of
//! `secret_env`/`secret_file` either when those look like a pasted secret.

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use humantime::format_duration;

mod redis;

use super::error::Problem;
use super::raw::{
    InlineSecret, Loose, RawApp, RawConfig, RawLog, RawServer, RawSink, RawStore, RawTls,
    RawUpstream,
};
use super::urls;
use super::{
    AppConfig, AppKind, Config, Grant, LogConfig, LogFormat, Resolve, SecretSource, ServerConfig,
    SinkConfig, SinkFormat, StoreBackend, StoreConfig, TlsFiles, UpstreamConfig,
};
use crate::secret::Secret;

/// Looks up an environment variable; injectable so tests need not touch the
/// process environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// WeChat and WeCom both issue tokens for 7200 s.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(7200);

const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// A token file is as sensitive as the token: owner only unless widened.
const DEFAULT_SINK_MODE: u32 = 0o600;
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
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
const DEFAULT_KEY_PREFIX: &str = "wxbroker";
const DEFAULT_LOG_LEVEL: &str = "info";
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);
const DEFAULT_DAILY_BUDGET: u32 = 1000;
const DEFAULT_MIN_FORCED_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A token call that takes longer than this is not going to succeed; the
/// retry with backoff does better.
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
pub(crate) const WECOM_API_BASE: &str = "https://qyapi.weixin.qq.com";
/// `sun_path` holds 108 bytes on Linux, including the terminating NUL.
/// Checked here because bind()'s own error does not say what is wrong.
const MAX_SOCKET_PATH: usize = 107;
/// A secret is a few dozen bytes; refusing big files keeps a mistaken
/// `secret_file` (a log, an archive) from eating memory.
const MAX_SECRET_FILE: u64 = 4096;

pub(crate) fn config(source: &str, raw: RawConfig, env: Env<'_>) -> Result<Config, Problem> {
    let server = server(raw.server)?;
    let platforms = super::platforms::platforms(raw.platforms.unwrap_or_default(), env)?;
    let raw_apps = raw.apps.unwrap_or_default();
    // A broker may own platforms alone; with neither, it has nothing to do.
    let apps = if raw_apps.is_empty() && !platforms.is_empty() {
        Vec::new()
    } else {
        apps(raw_apps, env)?
    };
    compat_listeners(&server, &apps)?;
    let store = store(raw.store.unwrap_or_default(), env)?;
    redis::lock_fits(&store, &apps)?;
    let clients =
        super::clients::clients(raw.clients.unwrap_or_default(), &apps, server.remote_listen)?;
    super::platforms::callback_listener(&server, &platforms)?;
    redis::platforms_fit(&store, &platforms)?;
    Ok(Config {
        source: source.to_owned(),
        server,
        store,
        log: log(raw.log.unwrap_or_default())?,
        upstream: upstream(raw.upstream.unwrap_or_default())?,
        apps,
        clients,
        platforms,
    })
}

/// Per-app `compat_listen` addresses are distinct from every other
/// listener, and `compat_tls` has a compatible listener to serve.
fn compat_listeners(server: &ServerConfig, apps: &[AppConfig]) -> Result<(), Problem> {
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

/// `[upstream]`.
fn upstream(raw: RawUpstream) -> Result<UpstreamConfig, Problem> {
    let resolve = match raw.resolve.as_deref() {
        None | Some("system") => Resolve::System,
        Some("dns") => Resolve::Dns,
        Some(other) => {
            return Err(Problem::new(
                "upstream.resolve",
                format!("\"{other}\" is not one of system, dns"),
            ))
        }
    };
    let mut connect_to = Vec::new();
    for (host, addr) in raw.connect_to.unwrap_or_default() {
        let key = format!("upstream.connect_to.{host}");
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !valid_host {
            return Err(Problem::new(key, "is not a host name"));
        }
        let addr = socket_addr(&key, Some(addr))?.expect("a value was given");
        connect_to.push((host.to_ascii_lowercase(), addr));
    }
    Ok(UpstreamConfig {
        resolve,
        connect_to,
    })
}

fn server(raw: Option<RawServer>) -> Result<ServerConfig, Problem> {
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

    let metrics_listen = socket_addr("server.metrics_listen", raw.metrics_listen)?;
    let wechat_compat_listen =
        socket_addr("server.wechat_compat_listen", raw.wechat_compat_listen)?;
    let remote_listen = socket_addr("server.remote_listen", raw.remote_listen)?;
    let remote_tls = super::clients::remote(remote_listen, raw.remote_tls)?;
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
        callback_listen,
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

#[derive(Clone, Copy)]
enum BackendKind {
    Memory,
    File,
    Redis,
}

fn store(raw: RawStore, env: Env<'_>) -> Result<StoreConfig, Problem> {
    let kind = choice(
        "store.backend",
        raw.backend.as_deref(),
        BackendKind::Memory,
        &[
            ("memory", BackendKind::Memory),
            ("file", BackendKind::File),
            ("redis", BackendKind::Redis),
        ],
    )?;
    let path = path("store.path", raw.path)?;
    let url = raw.url;
    let redis_only = [
        ("store.url", url.is_some()),
        ("store.password_env", raw.password_env.is_some()),
        ("store.password_file", raw.password_file.is_some()),
        ("store.ca_file", raw.ca_file.is_some()),
    ];
    let backend = match kind {
        BackendKind::Memory => {
            only_with("store.path", path.is_some(), "file")?;
            for (key, set) in redis_only {
                only_with(key, set, "redis")?;
            }
            StoreBackend::Memory
        }
        BackendKind::File => {
            for (key, set) in redis_only {
                only_with(key, set, "redis")?;
            }
            let path = path.ok_or_else(|| {
                Problem::new(
                    "store.path",
                    "required with backend \"file\" (a state directory)",
                )
            })?;
            StoreBackend::File { path }
        }
        BackendKind::Redis => {
            only_with("store.path", path.is_some(), "file")?;
            let url =
                url.ok_or_else(|| Problem::new("store.url", "required with backend \"redis\""))?;
            StoreBackend::Redis(redis::redis(
                url,
                raw.password_env,
                raw.password_file,
                raw.ca_file,
                env,
            )?)
        }
    };
    let key_prefix =
        word("store.key_prefix", raw.key_prefix)?.unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    Ok(StoreConfig {
        backend,
        key_prefix,
    })
}

/// A key that belongs to another backend is refused rather than ignored: the
/// operator likely meant to use that backend.
fn only_with(key: &str, set: bool, backend: &str) -> Result<(), Problem> {
    if set {
        return Err(Problem::new(
            key,
            format!("applies only to backend \"{backend}\"; set store.backend or remove this key"),
        ));
    }
    Ok(())
}

fn log(raw: RawLog) -> Result<LogConfig, Problem> {
    let format = choice(
        "log.format",
        raw.format.as_deref(),
        LogFormat::Pretty,
        &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
    )?;
    let level = log_level("log.level", raw.level)?;
    Ok(LogConfig { format, level })
}

/// A level name, or an `EnvFilter` directive list such as
/// `info,wxbroker=debug`. EnvFilter alone would accept a typo like
/// `verbose` (as a target name), so a single word must be a level.
fn log_level(key: &str, value: Option<String>) -> Result<String, Problem> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = value.map_or_else(|| DEFAULT_LOG_LEVEL.to_owned(), |v| v.trim().to_owned());
    let single_word = !level.contains(['=', ',', '[']);
    if level.is_empty() || (single_word && !LEVELS.contains(&level.to_ascii_lowercase().as_str())) {
        return Err(Problem::new(
            key,
            format!(
                "\"{level}\" is not a level; use trace, debug, info, warn, error or off, \
                 or directives such as \"info,wxbroker=debug\""
            ),
        ));
    }
    tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| Problem::new(key, format!("\"{level}\" is not a valid filter: {e}")))?;
    Ok(level)
}

fn apps(raw: Vec<RawApp>, env: Env<'_>) -> Result<Vec<AppConfig>, Problem> {
    if raw.is_empty() {
        return Err(Problem::new(
            "apps",
            "no apps configured; add at least one [[apps]] table",
        ));
    }
    let mut apps: Vec<AppConfig> = Vec::with_capacity(raw.len());
    for (index, mut raw) in raw.into_iter().enumerate() {
        let name = app_name(index, raw.name.take())?;
        if let Some(earlier) = apps.iter().position(|a| a.name == name) {
            return Err(Problem::new(
                format!("apps[{index}].name"),
                format!("\"{name}\" is already the name of apps[{earlier}]"),
            ));
        }
        let app = app(name, raw, env)?;
        // Two classic-grant apps with one appid would invalidate each other's
        // tokens: the very bug this daemon exists to prevent. (WeCom apps
        // share a corpid legitimately, each with its own secret.)
        if app.kind == AppKind::Wechat {
            if let Some(twin) = apps
                .iter()
                .find(|a| a.kind == AppKind::Wechat && a.appid == app.appid && a.grant == app.grant)
            {
                return Err(Problem::new(
                    format!("apps.{}.appid", app.name),
                    format!(
                        "app \"{}\" already uses this appid with the same grant; \
                         the two would fetch competing tokens",
                        twin.name
                    ),
                ));
            }
        }
        if let Some(sink) = &app.sink {
            // Two apps writing one file would each overwrite the other's token.
            if let Some(twin) = apps
                .iter()
                .find(|a| a.sink.as_ref().is_some_and(|s| s.path == sink.path))
            {
                return Err(Problem::new(
                    format!("apps.{}.sink.path", app.name),
                    format!(
                        "\"{}\" is already the sink of app \"{}\"",
                        sink.path.display(),
                        twin.name
                    ),
                ));
            }
        }
        apps.push(app);
    }
    Ok(apps)
}

/// Names appear in URLs, metric labels and store keys, hence the strict set.
fn app_name(index: usize, name: Option<String>) -> Result<String, Problem> {
    let key = format!("apps[{index}].name");
    let name = name.ok_or_else(|| Problem::new(&key, "required"))?;
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(Problem::new(
            key,
            format!("\"{name}\" is not a valid name: use 1 to 32 of a-z, 0-9, _ and -"),
        ));
    }
    Ok(name)
}

fn app(name: String, raw: RawApp, env: Env<'_>) -> Result<AppConfig, Problem> {
    let key = |field: &str| format!("apps.{name}.{field}");

    let kind = choice(
        &key("kind"),
        raw.kind.as_deref(),
        AppKind::Wechat,
        &[("wechat", AppKind::Wechat), ("wecom", AppKind::Wecom)],
    )?;
    let grant = match kind {
        AppKind::Wechat => choice(
            &key("grant"),
            raw.grant.as_deref(),
            Grant::Classic,
            &[("classic", Grant::Classic), ("stable", Grant::Stable)],
        )?,
        // WeCom has one token endpoint, which behaves like the classic one.
        AppKind::Wecom if raw.grant.is_some() => {
            return Err(Problem::new(
                key("grant"),
                "grant applies to wechat apps only",
            ));
        }
        AppKind::Wecom => Grant::Classic,
    };

    let appid = raw
        .appid
        .ok_or_else(|| Problem::new(key("appid"), "required"))?;
    if appid.is_empty() || !appid.bytes().all(|b| b.is_ascii_graphic()) {
        // Goes into URLs, store keys and logs; WeChat appids and WeCom
        // corpids are plain ASCII, so anything else is a paste error.
        return Err(Problem::new(
            key("appid"),
            "must be non-empty printable ASCII without spaces",
        ));
    }

    let secret_keys: Vec<&str> = [
        ("secret_env", raw.secret_env.is_some()),
        ("secret_file", raw.secret_file.is_some()),
        ("secret", raw.secret.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let follow = super::follow::follow(
        &key,
        super::follow::RawFollow {
            url: raw.follow,
            credential_file: raw.follow_credential_file,
            ca_file: raw.follow_ca_file,
        },
        &secret_keys,
    )?;
    let (secret, secret_source) = match follow {
        Some(_) => (Secret::new(""), SecretSource::Leader),
        None => secret(&name, raw.secret_env, raw.secret_file, raw.secret, env)?,
    };

    let refresh_before = duration(
        &key("refresh_before"),
        raw.refresh_before.as_ref(),
        DEFAULT_REFRESH_BEFORE,
    )?;
    positive(&key("refresh_before"), refresh_before)?;
    if refresh_before >= TOKEN_LIFETIME {
        return Err(Problem::new(
            key("refresh_before"),
            format!(
                "must be shorter than the token lifetime ({})",
                format_duration(TOKEN_LIFETIME)
            ),
        ));
    }

    let daily_budget = match raw.daily_budget {
        None => DEFAULT_DAILY_BUDGET,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| Problem::new(key("daily_budget"), "must be at least 1"))?,
    };

    let min_forced_interval = duration(
        &key("min_forced_interval"),
        raw.min_forced_interval.as_ref(),
        DEFAULT_MIN_FORCED_INTERVAL,
    )?;

    let default_base = match kind {
        AppKind::Wechat => WECHAT_API_BASE,
        AppKind::Wecom => WECOM_API_BASE,
    };
    let api_base = api_base(&key("api_base"), raw.api_base, default_base)?;

    let fetch_timeout = duration(
        &key("fetch_timeout"),
        raw.fetch_timeout.as_ref(),
        DEFAULT_FETCH_TIMEOUT,
    )?;
    positive(&key("fetch_timeout"), fetch_timeout)?;
    at_most(&key("fetch_timeout"), fetch_timeout, MAX_FETCH_TIMEOUT)?;

    let sink = raw.sink.map(|raw| sink(&key("sink"), raw)).transpose()?;
    let compat_listen = socket_addr(&key("compat_listen"), raw.compat_listen)?;
    let (tickets, agentid) =
        super::tickets::tickets(&key, kind, raw.tickets, raw.agentid, raw.ticket_budget)?;

    Ok(AppConfig {
        name,
        kind,
        grant,
        appid,
        secret,
        secret_source,
        refresh_before,
        daily_budget,
        min_forced_interval,
        api_base,
        fetch_timeout,
        sink,
        compat_listen,
        tickets,
        agentid,
        follow,
    })
}

/// `sink = { path, format, mode }`; `key` is `apps.{name}.sink`.
fn sink(key: &str, raw: RawSink) -> Result<SinkConfig, Problem> {
    let path_key = format!("{key}.path");
    let path = path(&path_key, raw.path)?
        .ok_or_else(|| Problem::new(&path_key, "required (the file to write the token to)"))?;
    // The daemon's working directory is wherever it was started (`/` under
    // systemd), so a relative path would land somewhere unexpected.
    if !path.is_absolute() {
        return Err(Problem::new(
            path_key,
            format!("\"{}\" must be an absolute path", path.display()),
        ));
    }
    if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(Problem::new(
            path_key,
            format!("\"{}\" must name a file, not a directory", path.display()),
        ));
    }
    let format = choice(
        &format!("{key}.format"),
        raw.format.as_deref(),
        SinkFormat::Json,
        &[("json", SinkFormat::Json), ("raw", SinkFormat::Raw)],
    )?;
    let mode = octal_mode(&format!("{key}.mode"), raw.mode.as_ref(), DEFAULT_SINK_MODE)?;
    if mode & 0o600 != 0o600 {
        // The broker replaces the file as its owner; a mode without owner
        // read and write is a typo (e.g. "0060"), not a policy.
        return Err(Problem::new(
            format!("{key}.mode"),
            format!("\"{mode:04o}\" must give the owner read and write (0600 or wider)"),
        ));
    }
    Ok(SinkConfig { path, format, mode })
}

/// Exactly one of `secret_env`, `secret_file`, `secret`.
fn secret(
    app: &str,
    env_name: Option<String>,
    file: Option<String>,
    inline: Option<InlineSecret>,
    env: Env<'_>,
) -> Result<(Secret, SecretSource), Problem> {
    secret_of(
        &format!("apps.{app}"),
        "secret",
        env_name,
        file,
        inline,
        env,
    )
}

/// Exactly one of `{field}_env`, `{field}_file`, `{field}` of the table
/// `table` (`apps.shop`, `platforms.saas`): a secret, with the same rules
/// and masking wherever it is configured.
pub(super) fn secret_of(
    table: &str,
    field: &str,
    env_name: Option<String>,
    file: Option<String>,
    inline: Option<InlineSecret>,
    env: Env<'_>,
) -> Result<(Secret, SecretSource), Problem> {
    let (env_key, file_key) = (format!("{field}_env"), format!("{field}_file"));
    match (env_name, file, inline) {
        (Some(name), None, None) => {
            let key = format!("{table}.{env_key}");
            let value = env_secret(&key, &name, env)?;
            let described = format!("the {field} in environment variable {name}");
            let secret = checked_secret(&key, &described, value)?;
            Ok((secret, SecretSource::Env(name)))
        }
        (None, Some(file), None) => {
            let key = format!("{table}.{file_key}");
            let shown = if looks_like_secret(&file) {
                "the file (its name looks like a secret, so it is not shown)".to_owned()
            } else {
                file.clone()
            };
            let path = PathBuf::from(file);
            let value = read_secret_file(&key, &path, &shown)?;
            let described = format!("the {field} in {shown}");
            let secret = checked_secret(&key, &described, value)?;
            Ok((secret, SecretSource::File(path)))
        }
        (None, None, Some(InlineSecret(inline))) => {
            let key = format!("{table}.{field}");
            let described = format!("the {field}");
            let secret = checked_secret(&key, &described, inline.expose().to_owned())?;
            Ok((secret, SecretSource::Inline))
        }
        (env_name, file, inline) => {
            let set: Vec<&str> = [
                (env_key.as_str(), env_name.is_some()),
                (file_key.as_str(), file.is_some()),
                (field, inline.is_some()),
            ]
            .into_iter()
            .filter_map(|(key, set)| set.then_some(key))
            .collect();
            let found = if set.is_empty() {
                "none is set".to_owned()
            } else {
                format!("{} are set", set.join(" and "))
            };
            Err(Problem::new(
                table,
                format!("set exactly one of {env_key}, {file_key} or {field} ({found})"),
            ))
        }
    }
}

fn env_secret(key: &str, name: &str, env: Env<'_>) -> Result<String, Problem> {
    let valid_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    // A common slip is pasting the secret itself here; do not echo it back.
    if !valid_name || looks_like_secret(name) {
        return Err(Problem::new(
            key,
            "is not a plausible environment variable name (not shown, in case it is the \
             secret itself); the key takes the name of the variable holding the secret",
        ));
    }
    match env(name) {
        None => Err(Problem::new(
            key,
            format!("environment variable {name} is not set"),
        )),
        Some(value) if value.is_empty() => Err(Problem::new(
            key,
            format!("environment variable {name} is empty"),
        )),
        Some(value) => Ok(value),
    }
}

/// Reads a secret file without ever blocking: the file is opened with
/// `O_NONBLOCK`, so a FIFO with no writer cannot hang `check-config` or a
/// reload in `open`, and anything but a regular file is refused by the
/// metadata of what was opened (not of the path, which could be swapped
/// between the check and the open). The read is bounded by size.
pub(super) fn read_secret_file(key: &str, path: &Path, shown: &str) -> Result<String, Problem> {
    use rustix::fs::{Mode, OFlags};

    let cannot = |e: std::io::Error| Problem::new(key, format!("cannot read {shown}: {e}"));
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file =
        File::from(rustix::fs::open(path, flags, Mode::empty()).map_err(|e| cannot(e.into()))?);
    let file_type = file.metadata().map_err(cannot)?.file_type();
    if !file_type.is_file() {
        return Err(Problem::new(
            key,
            format!(
                "{shown} is {}, not a regular file; secret_file must name a file holding only \
                 the secret",
                describe_file_type(file_type)
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(Problem::new(
            key,
            format!(
                "{shown} is larger than {MAX_SECRET_FILE} bytes; it should hold only the secret"
            ),
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Problem::new(key, format!("{shown} is not UTF-8 text")))?;
    if text.trim_end_matches(['\r', '\n']).is_empty() {
        return Err(Problem::new(key, format!("{shown} is empty")));
    }
    Ok(text)
}

/// What a non-regular file is, for messages ("is a FIFO").
fn describe_file_type(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Drops the trailing newline editors and `echo` add, then insists on what
/// Tencent issues: printable ASCII without spaces. A secret with a stray
/// space would otherwise fail upstream as "wrong secret" (40001), far from
/// its cause.
pub(super) fn checked_secret(key: &str, described: &str, value: String) -> Result<Secret, Problem> {
    let trimmed = value.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(Problem::new(key, format!("{described} is empty")));
    }
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            key,
            format!("{described} contains spaces or non-printable characters"),
        ));
    }
    Ok(Secret::new(trimmed))
}

/// Whether a value written where a name or path belongs looks like a
/// WeChat AppSecret (32 hex digits) or a WeCom corpsecret (about 43
/// mixed-case base64url characters), so that messages do not repeat it.
pub(crate) fn looks_like_secret(value: &str) -> bool {
    let bytes = value.as_bytes();
    let app_secret = bytes.len() == 32 && bytes.iter().all(u8::is_ascii_hexdigit);
    let corp_secret = bytes.len() >= 40
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes.iter().any(u8::is_ascii_uppercase)
        && bytes.iter().any(u8::is_ascii_digit);
    app_secret || corp_secret
}

/// `http(s)://host[:port][/prefix]`, returned without trailing slashes so
/// callers can append `/cgi-bin/...`. No userinfo: WeChat never asks for
/// one, and a `user:password@` written here would travel with every call
/// and hide the real host (`http://localhost:x@example.com` is
/// `example.com`). Messages show the value with any userinfo masked.
pub(super) fn api_base(key: &str, value: Option<String>, default: &str) -> Result<String, Problem> {
    let Some(value) = value else {
        return Ok(default.to_owned());
    };
    let shown = urls::masked(&value);
    let base = value.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| {
            Problem::new(
                key,
                format!("\"{shown}\" must start with https:// (or http:// for a local simulator)"),
            )
        })?;
    if rest.split('/').next().unwrap_or("").is_empty() {
        return Err(Problem::new(key, format!("\"{shown}\" names no host")));
    }
    if base.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(Problem::new(
            key,
            format!("\"{shown}\" must be a plain base URL, without spaces, query or fragment"),
        ));
    }
    // Any '@', not only the one the URL parser would take for the end of
    // a userinfo: the parser ends the authority at the first '/', so
    // `https://user:pa/ss@host` parses as a path, yet was meant as a
    // password. No WeChat path holds an '@'.
    if base.contains('@') {
        return Err(Problem::new(
            key,
            format!(
                "\"{shown}\" must not hold a user name or password (\"user:password@\"); \
                 WeChat never needs one"
            ),
        ));
    }
    // The parse reqwest will do on every call, done once here.
    url::Url::parse(base)
        .map_err(|e| Problem::new(key, format!("\"{shown}\" is not a valid URL ({e})")))?;
    Ok(base.to_owned())
}

// ----- helpers for one key type each -----

/// One of a fixed set of words; `None` means the default.
fn choice<T: Copy>(
    key: &str,
    value: Option<&str>,
    default: T,
    options: &[(&str, T)],
) -> Result<T, Problem> {
    let Some(value) = value else {
        return Ok(default);
    };
    options
        .iter()
        .find(|(word, _)| *word == value)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            Problem::new(
                key,
                format!("\"{value}\" is not one of {}", names.join(", ")),
            )
        })
}

pub(super) fn socket_addr(key: &str, value: Option<String>) -> Result<Option<SocketAddr>, Problem> {
    value
        .map(|v| {
            v.trim().parse().map_err(|_| {
                Problem::new(
                    key,
                    format!(
                        "\"{v}\" is not an IP:PORT address such as 127.0.0.1:8930 or [::1]:8930 \
                         (host names are not resolved)"
                    ),
                )
            })
        })
        .transpose()
}

/// Loopback, including IPv4-mapped IPv6 (`::ffff:127.0.0.1`).
pub(crate) fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

fn path(key: &str, value: Option<String>) -> Result<Option<PathBuf>, Problem> {
    match value {
        Some(v) if v.is_empty() => Err(Problem::new(key, "must not be empty")),
        v => Ok(v.map(PathBuf::from)),
    }
}

/// A non-empty token without whitespace (group names, key prefixes).
fn word(key: &str, value: Option<String>) -> Result<Option<String>, Problem> {
    match value {
        Some(v) if v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic()) => Err(Problem::new(
            key,
            "must be non-empty printable ASCII without spaces",
        )),
        v => Ok(v),
    }
}

pub(super) fn duration(
    key: &str,
    value: Option<&Loose>,
    default: Duration,
) -> Result<Duration, Problem> {
    match value {
        None => Ok(default),
        Some(Loose::String(text)) => humantime::parse_duration(text.trim()).map_err(|e| {
            Problem::new(
                key,
                format!(
                    "\"{text}\" is not a duration ({e}); write e.g. \"300s\", \"5m\" or \"1h\""
                ),
            )
        }),
        Some(other) => Err(Problem::new(
            key,
            format!(
                "expected a quoted duration such as \"300s\" or \"5m\", found a TOML {}",
                other.type_str()
            ),
        )),
    }
}

pub(super) fn positive(key: &str, value: Duration) -> Result<(), Problem> {
    if value.is_zero() {
        return Err(Problem::new(key, "must be greater than zero"));
    }
    Ok(())
}

pub(super) fn at_most(key: &str, value: Duration, max: Duration) -> Result<(), Problem> {
    if value > max {
        return Err(Problem::new(
            key,
            format!(
                "must be at most {} (found {})",
                format_duration(max),
                format_duration(value)
            ),
        ));
    }
    Ok(())
}

fn socket_mode(key: &str, value: Option<&Loose>) -> Result<u32, Problem> {
    octal_mode(key, value, DEFAULT_SOCKET_MODE)
}

/// An octal permission string such as "0660" (or "660", "0o660"). A bare
/// TOML integer is refused: `660` would silently mean 0o1224.
fn octal_mode(key: &str, value: Option<&Loose>, default: u32) -> Result<u32, Problem> {
    let text = match value {
        None => return Ok(default),
        Some(Loose::String(text)) => text,
        Some(other) => {
            return Err(Problem::new(
                key,
                format!(
                    "write the mode as a quoted octal string such as \"0660\", not a TOML {}",
                    other.type_str()
                ),
            ))
        }
    };
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let octal = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let mode = octal
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .ok_or_else(|| {
            Problem::new(
                key,
                format!("\"{text}\" is not an octal mode such as \"0660\""),
            )
        })?;
    if mode > 0o777 {
        return Err(Problem::new(
            key,
            format!("\"{text}\" sets setuid, setgid or sticky bits; use permission bits only, e.g. \"0660\""),
        ));
    }
    Ok(mode)
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

    #[test]
    fn durations_are_human_strings() {
        let d = |s: &str| duration("k", Some(&string(s)), Duration::ZERO);
        assert_eq!(d("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert!(d("five minutes").is_err());
        assert!(d("").is_err());
        let err = duration("k", Some(&Loose::Integer(300)), Duration::ZERO).unwrap_err();
        assert!(err.message.contains("found a TOML integer"), "{err:?}");
        assert_eq!(
            duration("k", None, Duration::from_secs(7)),
            Ok(Duration::from_secs(7))
        );
    }

    #[test]
    fn loopback_includes_v6_and_mapped_v4() {
        for (addr, expected) in [
            ("127.0.0.1:1", true),
            ("127.9.9.9:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("0.0.0.0:1", false),
            ("[::]:1", false),
            ("10.0.0.1:1", false),
        ] {
            assert_eq!(is_loopback(&addr.parse().unwrap()), expected, "{addr}");
        }
    }

    #[test]
    fn secret_lookalikes_are_recognised() {
        assert!(looks_like_secret("0123456789abcdef0123456789ABCDEF"));
        assert!(looks_like_secret(
            "Xy3_kP9-qR2sT5uV8wZ1aB4cD7eF0gH3iJ6kL9mN2oP"
        ));
        assert!(!looks_like_secret("SHOP_SECRET"));
        assert!(!looks_like_secret(
            "WXBROKER_PRODUCTION_SHOP_APP_SECRET_VALUE_1"
        ));
        assert!(!looks_like_secret("/run/secrets/shop"));
    }

    #[test]
    fn api_base_drops_trailing_slashes() {
        let base = |s: &str| api_base("k", Some(s.to_owned()), "unused");
        assert_eq!(
            base("https://example.com/").as_deref(),
            Ok("https://example.com")
        );
        assert_eq!(
            base("http://127.0.0.1:9/wx//").as_deref(),
            Ok("http://127.0.0.1:9/wx")
        );
        for bad in [
            "ftp://x",
            "example.com",
            "https://",
            "https:///x",
            "https://a b",
            "https://x?y=1",
            "https://host:99999",
            "https://user:pw@example.com",
            "https://token@example.com",
            "http://localhost:x@example.com",
            "https://u:p/w@example.com",
        ] {
            assert!(base(bad).is_err(), "{bad}");
        }
        assert_eq!(api_base("k", None, "https://d").as_deref(), Ok("https://d"));
    }

    #[test]
    fn log_level_accepts_levels_and_directives() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,wxbroker=debug",
            "wxbroker=trace",
        ] {
            assert!(log_level("k", Some(ok.to_owned())).is_ok(), "{ok}");
        }
        for bad in ["verbose", "", "infoo", "info,wxbroker=loud"] {
            assert!(log_level("k", Some(bad.to_owned())).is_err(), "{bad}");
        }
        assert_eq!(log_level("k", None).as_deref(), Ok("info"));
    }

    #[test]
    fn checked_secret_trims_newlines_only() {
        assert_eq!(
            checked_secret("k", "s", "abc\r\n".into()).unwrap().expose(),
            "abc"
        );
        assert!(checked_secret("k", "s", "\n".into()).is_err());
        assert!(checked_secret("k", "s", "ab c".into()).is_err());
        assert!(checked_secret("k", "s", " abc".into()).is_err());
        assert!(checked_secret("k", "s", "abcé".into()).is_err());
    }
}
