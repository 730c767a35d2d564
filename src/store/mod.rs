//! Where each app's token and daily fetch count live between refreshes and
//! across restarts: `memory` (nothing survives), `file` (one JSON file per
//! app), `redis` (shared by a fleet). The refresher is the only caller.

mod file;
mod memory;

use std::path::PathBuf;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{AppConfig, AppKind, Grant};
use crate::secret::AccessToken;

pub use file::FileStore;
pub(crate) use file::{write_atomically, AtomicWriteError};
pub use memory::MemoryStore;

/// Which app a stored record belongs to. Records carry the appid and grant
/// too, so a record written for another app is recognised and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreKey {
    pub name: String,
    pub appid: String,
    pub grant: &'static str,
}

impl StoreKey {
    pub fn for_app(app: &AppConfig) -> Self {
        StoreKey {
            name: app.name.clone(),
            appid: app.appid.clone(),
            grant: grant_label(app.kind, app.grant),
        }
    }
}

/// The grant as stored and as shown: classic and stable tokens are
/// independent upstream, and WeCom has one kind of its own.
pub fn grant_label(kind: AppKind, grant: Grant) -> &'static str {
    match (kind, grant) {
        (AppKind::Wecom, _) => "wecom",
        (AppKind::Wechat, Grant::Classic) => "classic",
        (AppKind::Wechat, Grant::Stable) => "stable",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: AccessToken,
    /// Unix seconds.
    pub expires_at: u64,
    /// Unix seconds.
    pub fetched_at: u64,
}

/// One app's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredApp {
    pub appid: String,
    pub grant: String,
    pub token: Option<StoredToken>,
    /// The Beijing day `fetches` counts, as `YYYYMMDD`.
    pub day: u32,
    pub fetches: u32,
}

impl StoredApp {
    /// Whether the record was written for this app (not a foreign file).
    pub fn belongs_to(&self, key: &StoreKey) -> bool {
        self.appid == key.appid && self.grant == key.grant
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl StoreError {
    /// The `op` label for `wxbroker_store_errors_total`.
    pub fn op_label(&self) -> &'static str {
        match self {
            StoreError::Io { op, .. } => op,
            StoreError::Corrupt { .. } => "decode",
        }
    }
}

/// Durable per-app state.
pub trait Store: Send + Sync + 'static {
    /// The `backend` metric label.
    fn backend(&self) -> &'static str;

    /// The app's record, `None` if there is none.
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredApp>, StoreError>>;

    /// Replaces the app's record, atomically where the backend can.
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        state: &'a StoredApp,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}
