//! The monthly count of quota resets (`clear_quota`) per appid, kept where
//! the store keeps its state so it survives restarts and is shared by a
//! fleet: a small file beside the app records (file store), a counter key
//! (Redis), or memory. It sits apart from the token [`Store`] trait: a
//! reset is an operator action that no refresher reads.
//!
//! WeChat allows 10 resets a calendar month per account and counts those
//! made in its web console too, so this count is a floor, not WeChat's:
//! WeChat's 48006 decides.
//!
//! [`Store`]: crate::store::Store

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{StoreBackend, StoreConfig};
use crate::files::trust::{self, Contents};
use crate::files::write_atomically;
use crate::store::{RedisStore, StoreError};

/// Resets WeChat allows per account and calendar month.
pub const RESETS_PER_MONTH: u32 = 10;

/// The file beside the app records (file store).
const FILE_NAME: &str = "quota-resets.json";

/// How long a month's Redis counter is kept: past the month's end.
const REDIS_TTL_SECS: i64 = 40 * 86_400;

/// The Beijing calendar month of `unix_secs`, as `YYYYMM`: WeChat's month.
pub fn beijing_month(unix_secs: u64) -> u32 {
    crate::clock::beijing_day(unix_secs) / 100
}

/// Where the counts live.
pub enum ResetLedger {
    Memory(std::sync::Mutex<Months>),
    /// The state directory; one writer at a time within the process.
    File {
        path: PathBuf,
        writer: tokio::sync::Mutex<()>,
    },
    /// The store's own connection (one Redis, Sentinel or Cluster), its
    /// commands bounded like the store's.
    Redis {
        store: Arc<RedisStore>,
        prefix: String,
    },
}

/// appid -> (month, resets that month)
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Months(HashMap<String, MonthCount>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct MonthCount {
    month: u32,
    resets: u32,
}

impl Months {
    fn get(&self, appid: &str, month: u32) -> u32 {
        self.0
            .get(appid)
            .filter(|count| count.month == month)
            .map_or(0, |count| count.resets)
    }

    fn count(&mut self, appid: &str, month: u32) -> u32 {
        let resets = self.get(appid, month) + 1;
        self.0
            .insert(appid.to_owned(), MonthCount { month, resets });
        resets
    }
}

impl ResetLedger {
    /// The ledger that goes with the configured store; `redis` is the
    /// Redis store when that is the backend.
    pub fn for_store(store: &StoreConfig, redis: Option<Arc<RedisStore>>) -> Self {
        match (&store.backend, redis) {
            (StoreBackend::File { path }, _) => ResetLedger::File {
                path: path.join(FILE_NAME),
                writer: Default::default(),
            },
            (StoreBackend::Redis(_), Some(redis)) => ResetLedger::Redis {
                store: redis,
                prefix: store.key_prefix.clone(),
            },
            _ => ResetLedger::Memory(Default::default()),
        }
    }

    /// Counts one reset of `appid` in `month`; returns the month's count.
    pub async fn count(&self, appid: &str, month: u32) -> Result<u32, StoreError> {
        match self {
            ResetLedger::Memory(months) => Ok(months
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .count(appid, month)),
            ResetLedger::File { path, writer } => {
                let _one_writer = writer.lock().await;
                let path = path.clone();
                let appid = appid.to_owned();
                tokio::task::spawn_blocking(move || {
                    let mut months = read_file(&path)?;
                    let count = months.count(&appid, month);
                    let bytes = serde_json::to_vec_pretty(&months).expect("counts serialize");
                    write_atomically(&path, &bytes, 0o600).map_err(|err| StoreError::Io {
                        op: err.op,
                        path: path.clone(),
                        source: err.source,
                    })?;
                    Ok(count)
                })
                .await
                .expect("reset ledger write panicked")
            }
            ResetLedger::Redis { store, prefix } => {
                store
                    .count(&redis_key(prefix, appid, month), REDIS_TTL_SECS)
                    .await
            }
        }
    }

    /// The resets counted for `appid` in `month`.
    pub async fn get(&self, appid: &str, month: u32) -> Result<u32, StoreError> {
        match self {
            ResetLedger::Memory(months) => Ok(months
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(appid, month)),
            ResetLedger::File { path, .. } => {
                let path = path.clone();
                let appid = appid.to_owned();
                tokio::task::spawn_blocking(move || Ok(read_file(&path)?.get(&appid, month)))
                    .await
                    .expect("reset ledger read panicked")
            }
            ResetLedger::Redis { store, prefix } => {
                store.counted(&redis_key(prefix, appid, month)).await
            }
        }
    }
}

fn redis_key(prefix: &str, appid: &str, month: u32) -> String {
    format!("{prefix}:{appid}:quota_resets:{month}")
}

/// The largest ledger read: a few dozen bytes an app.
const MAX_LEDGER_BYTES: u64 = 1024 * 1024;

/// The counts on disk; none yet is an empty ledger. Only a regular file
/// this uid alone could have written is believed (DESIGN.md section 17,
/// through [`trust`]): a planted one could hide resets from the operator.
fn read_file(path: &Path) -> Result<Months, StoreError> {
    let Some(bytes) = trust::read(path, Contents::Plain, MAX_LEDGER_BYTES)? else {
        return Ok(Months::default());
    };
    serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn file_ledger(dir: &Path) -> ResetLedger {
        ResetLedger::File {
            path: dir.join(FILE_NAME),
            writer: Default::default(),
        }
    }

    #[tokio::test]
    async fn file_counts_survive_a_new_ledger_and_start_over_each_month() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = file_ledger(dir.path());
        assert_eq!(ledger.get("wx1", 202611).await.unwrap(), 0);
        assert_eq!(ledger.count("wx1", 202611).await.unwrap(), 1);
        assert_eq!(ledger.count("wx1", 202611).await.unwrap(), 2);
        assert_eq!(ledger.count("wx2", 202611).await.unwrap(), 1);
        let reopened = file_ledger(dir.path());
        assert_eq!(reopened.get("wx1", 202611).await.unwrap(), 2);
        assert_eq!(reopened.count("wx1", 202612).await.unwrap(), 1);
        assert_eq!(reopened.get("wx1", 202611).await.unwrap(), 0);
        let mode = fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_file_others_may_write_is_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, br#"{"wx1":{"month":202611,"resets":0}}"#).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = file_ledger(dir.path())
            .get("wx1", 202611)
            .await
            .unwrap_err();
        assert!(err.is_untrusted(), "{err}");
    }

    #[test]
    fn months_are_beijing_months() {
        // 2026-11-30T16:00:00Z is 2026-12-01 00:00 in Beijing.
        assert_eq!(beijing_month(1_796_054_400 - 1), 202611);
        assert_eq!(beijing_month(1_796_054_400), 202612);
    }
}
