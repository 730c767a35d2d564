//! Configuration: the TOML file as written (`Raw*`, serde, unknown keys
//! rejected) and the validated [`Config`] the daemon runs on. Every error
//! names the file, the app and the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for error messages.
    pub source: String,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    pub require_client_header: bool,
    pub max_connections: usize,
    pub metrics_listen: Option<SocketAddr>,
    pub wechat_compat_listen: Option<SocketAddr>,
    /// How long a reader waits for a token when none is valid (then 503).
    pub token_wait_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    Memory,
    File { path: PathBuf },
    Redis { url: String },
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Inline,
}

#[derive(Debug, Clone)]
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
}

impl Config {
    pub fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}
