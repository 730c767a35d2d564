//! Configuration: the TOML file as written (`raw`: serde, unknown keys
//! rejected) and the validated [`Config`] the daemon runs on. Every error
//! names the file, the app and the key (see [`ConfigError`]).
//!
//! Loading is split in steps that each do one thing: `raw` parses,
//! `validate` applies defaults and rules section by section (platforms,
//! suites and clients in their own modules), `render` shows the effective
//! settings for `check-config`, `warnings` lists what is allowed but
//! risky. Below them all, imported by every section and importing none:
//! `fields` reads each key type, `secrets` reads a secret from where it is
//! kept, `urls` masks the passwords URLs may carry and finds the host a
//! URL really names, `redis_target` parses `store.url`, `fleet_lock` holds
//! the timings each app's refresh window is checked against. Secrets live in [`Secret`] from the
//! moment they are read, so neither `Debug` nor any message can show one.

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::credential::TicketKind;
use crate::secret::Secret;

mod api_patterns;
mod clients;
mod error;
mod fields;
mod fleet_lock;
mod follow;
mod platforms;
mod pushed;
mod raw;
mod redis_target;
mod render;
mod secrets;
mod self_calls;
mod suites;
mod tickets;
mod urls;
mod validate;
mod warnings;

pub use api_patterns::ApiPattern;
pub use clients::{ClientConfig, ClientIdentity};
pub use error::{ConfigError, Location};
pub use fleet_lock::{fleet_refresh_window, lock_hold, LOCK_LEASE};
pub use follow::FollowConfig;
pub use platforms::{PlatformConfig, AES_KEY_LEN};
pub use redis_target::{Node as RedisNode, RedisTarget, Topology};
pub use self_calls::OwnListener;
pub use suites::SuiteConfig;

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for error messages.
    pub source: String,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub upstream: UpstreamConfig,
    pub apps: Vec<AppConfig>,
    /// `[[clients]]`: who may read which apps and platforms, and call
    /// which APIs (DESIGN.md sections 15, 20 and 21).
    pub clients: Vec<ClientConfig>,
    /// WeChat Open Platform component apps (`[[platforms]]`).
    pub platforms: Vec<PlatformConfig>,
    /// WeCom service providers' suites (`[[suites]]`).
    pub suites: Vec<SuiteConfig>,
}

/// `[upstream]`: how the broker's own calls reach WeChat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamConfig {
    pub resolve: Resolve,
    /// Connections for these host names go to these addresses instead;
    /// the URL's scheme and `Host` stay as `api_base` says.
    pub connect_to: Vec<(String, SocketAddr)>,
}

/// How upstream host names are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolve {
    /// The system resolver (the hosts file first).
    #[default]
    System,
    /// The broker's own DNS client, nameservers from /etc/resolv.conf,
    /// never the hosts file: transparent mode maps WeChat's hosts to the
    /// broker there, and the broker must not call itself.
    Dns,
}

/// `[server.compat_tls]`: the compatible listeners speak HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    pub require_client_header: bool,
    /// The connection budget of each local listener: the TCP API, the
    /// Unix socket and the compatible listeners each have this many.
    pub max_connections: usize,
    pub metrics_listen: Option<SocketAddr>,
    pub wechat_compat_listen: Option<SocketAddr>,
    /// How long a reader waits for a token when none is valid (then 503).
    pub token_wait_timeout: Duration,
    /// A connection that sends no complete request head for this long is
    /// closed: slow senders (slowloris) and idle keep-alive connections.
    pub idle_timeout: Duration,
    /// Serve every compatible listener over TLS.
    pub compat_tls: Option<TlsFiles>,
    /// A request body (up to 10 MiB through the proxy) must arrive whole
    /// within this of its head, else 408 and the connection is closed.
    pub body_timeout: Duration,
    /// A write to a client that makes no progress for this long (the
    /// client stopped reading) closes the connection.
    pub write_timeout: Duration,
    /// The token API over TLS for authenticated `[[clients]]` (leaders).
    pub remote_listen: Option<SocketAddr>,
    /// Set exactly when `remote_listen` is.
    pub remote_tls: Option<TlsFiles>,
    /// The remote listener's own connection budget (TLS handshakes and
    /// long-poll watches included), apart from the local API's.
    pub remote_max_connections: usize,
    /// How many watches one remote client may hold open at once.
    pub remote_max_watches_per_client: usize,
    /// Where WeChat's Open Platform and WeCom's suite pushes arrive
    /// (`callback_listen`).
    pub callback_listen: Option<SocketAddr>,
    /// The threads serving request connections (the token API, the Unix
    /// socket, the compatible and remote listeners); `None` is one per
    /// two cores.
    pub request_threads: Option<usize>,
}

/// `Debug` is written by hand: a Redis URL may carry a password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreBackend {
    Memory,
    File { path: PathBuf },
    Redis(RedisConfig),
}

/// `[store]` for backend `redis` (DESIGN.md section 14).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// As written; may hold a password, shown only masked.
    pub url: String,
    /// What the URL names: one Redis, a Sentinel-managed primary, a
    /// Redis Cluster.
    pub target: RedisTarget,
    /// From `password_env` or `password_file`, and where it came from; a
    /// password written in the URL stays in [`RedisConfig::target`].
    pub password: Option<(Secret, SecretSource)>,
    /// PEM certificates of a private CA trusted for `rediss` instead of
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// Where each forwarded call's audit record is appended, as a JSON
    /// line; `None`: the log alone carries them.
    pub audit_file: Option<PathBuf>,
    /// The audit file's size past which it becomes `<file>.1`.
    pub audit_max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppKind {
    Wechat,
    Wecom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grant {
    Classic,
    Stable,
}

/// Where an app's secret came from (the value itself is in [`AppConfig::secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Inline,
    /// None: the app follows a leader, which owns the secret.
    Leader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    pub name: String,
    pub kind: AppKind,
    pub grant: Grant,
    pub appid: String,
    pub secret: Secret,
    pub secret_source: SecretSource,
    pub refresh_before: Duration,
    pub daily_budget: u32,
    pub min_forced_interval: Duration,
    /// Without a trailing slash, e.g. `https://api.weixin.qq.com`.
    pub api_base: String,
    /// Upper bound for one upstream token call.
    pub fetch_timeout: Duration,
    /// A file kept holding the current token, if configured.
    pub sink: Option<SinkConfig>,
    /// A compatible listener serving this app alone, whatever appid or
    /// token a call carries.
    pub compat_listen: Option<SocketAddr>,
    /// The JS-SDK tickets the broker owns for this app, each with its own
    /// daily budget, in configuration order.
    pub tickets: Vec<TicketConfig>,
    /// WeCom: the agent's id, which `wx.agentConfig` carries.
    pub agentid: Option<u64>,
    /// Set when another broker owns this app's credentials: this one
    /// reads them from there and never calls WeChat for the app.
    pub follow: Option<FollowConfig>,
}

/// One configured ticket kind of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketConfig {
    pub kind: TicketKind,
    /// Upstream calls a Beijing day for this ticket.
    pub daily_budget: u32,
}

impl AppConfig {
    /// The settings of `kind`, if this app owns that ticket.
    pub fn ticket(&self, kind: TicketKind) -> Option<&TicketConfig> {
        self.tickets.iter().find(|ticket| ticket.kind == kind)
    }
}

/// `[[apps]] sink`: a file the broker rewrites atomically with the app's
/// current token, for programs that can only read a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// An absolute path; its directory must exist.
    pub path: PathBuf,
    pub format: SinkFormat,
    /// Permission bits of the file, e.g. `0o600`.
    pub mode: u32,
}

/// What a sink file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// `{"access_token":..,"expires_at":..,"expires_in":..,"app":..}`.
    Json,
    /// The bare token and a newline.
    Raw,
}

impl fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreBackend::Memory => f.write_str("Memory"),
            StoreBackend::File { path } => f.debug_struct("File").field("path", path).finish(),
            StoreBackend::Redis(redis) => f
                .debug_struct("Redis")
                .field("url", &urls::masked(&redis.url))
                .field("password", &redis.password.as_ref().map(|(_, from)| from))
                .field("ca_file", &redis.ca_file)
                .finish(),
        }
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`, taking
    /// `secret_env` values from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, &process_env)
    }

    /// [`Config::load`] with an injected environment lookup.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str_with_env(&path.display().to_string(), &text, env)
    }

    /// Parses and validates TOML `text`. `source` names it in messages
    /// (usually the file path); if it names an existing file, [`warnings`]
    /// also checks that file's permissions.
    ///
    /// [`warnings`]: Config::warnings
    pub fn from_toml_str(source: &str, text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_with_env(source, text, &process_env)
    }

    /// [`Config::from_toml_str`] with an injected environment lookup, so
    /// tests (which run in parallel threads) need not mutate the process
    /// environment.
    pub fn from_toml_str_with_env(
        source: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = raw::RawConfig::parse(text).map_err(|e| syntax_error(source, text, &e))?;
        validate::config(source, raw, env).map_err(|p| p.into_error(source))
    }

    /// The app named `name`, if configured.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The platform named `name`, if configured.
    pub fn platform(&self, name: &str) -> Option<&PlatformConfig> {
        self.platforms.iter().find(|p| p.name == name)
    }

    /// The suite named `name`, if configured.
    pub fn suite(&self, name: &str) -> Option<&SuiteConfig> {
        self.suites.iter().find(|s| s.name == name)
    }

    /// The effective settings, defaults included, as TOML for
    /// `check-config`. Secrets and Redis passwords are masked.
    pub fn render_effective(&self) -> String {
        render::effective(self)
    }

    /// Settings that are accepted but risky (inline secrets, non-loopback
    /// listeners, files readable by every user, ...), one line each, in
    /// the same `{source}: {key}: {message}` form as errors.
    pub fn warnings(&self) -> Vec<String> {
        warnings::collect(self)
    }
}

fn process_env(name: &str) -> Option<String> {
    // A non-UTF-8 value is kept (lossily) rather than reported as unset;
    // validation then refuses it as containing non-printable characters.
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Keeps the toml crate's message and position but not its source
/// snippet: the quoted line could be `secret = "..."`.
fn syntax_error(source: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    ConfigError::Syntax {
        origin: source.to_owned(),
        location: err
            .span()
            .map(|span| Location::of_offset(text, span.start))
            .unwrap_or_default(),
        message: err.message().trim_end().replace('\n', "; "),
    }
}
