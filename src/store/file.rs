//! The file store: one JSON file per app in the state directory, replaced
//! atomically (temp file, fsync, rename, directory fsync) so a crash at any
//! point leaves either the old record or the new one, never half of either.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Store, StoreError, StoreKey, StoredApp};

pub struct FileStore {
    dir: Arc<Path>,
}

impl FileStore {
    /// Opens (creating, mode 0700) the state directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |op, source| StoreError::Io {
            op,
            path: dir.to_path_buf(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io("create", source))?;
        remove_leftover_temp_files(dir);
        Ok(FileStore {
            dir: Arc::from(dir),
        })
    }

    pub fn record_path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.name))
    }
}

impl Store for FileStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredApp>, StoreError>> {
        let path = self.record_path(key);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || read_record(&path))
                .await
                .expect("file store read panicked")
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        state: &'a StoredApp,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let path = self.record_path(key);
        let bytes = serde_json::to_vec_pretty(state).expect("a stored record always serializes");
        Box::pin(async move {
            tokio::task::spawn_blocking(move || write_record(&path, &bytes))
                .await
                .expect("file store write panicked")
        })
    }
}

/// A crash between creating a temp file and renaming it leaves the temp
/// file behind; the record itself is intact, so the leftover just goes.
fn remove_leftover_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().contains(".json.tmp.") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn read_record(path: &Path) -> Result<Option<StoredApp>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })
}

fn write_record(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomically(path, bytes, 0o600).map_err(|err| StoreError::Io {
        op: err.op,
        path: path.to_path_buf(),
        source: err.source,
    })
}

/// Which step of [`write_atomically`] failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub(crate) struct AtomicWriteError {
    /// `write`, `rename` or `sync`.
    pub op: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes` (mode `mode`) so that a reader, or a
/// crash, sees the old content or the new, never part of either: a temp
/// file in the same directory, fsync, rename over `path`, directory fsync.
/// The token sinks use it too.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), AtomicWriteError> {
    let fail = |op: &'static str| move |source| AtomicWriteError { op, source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp_name = path.file_name().unwrap_or_default().to_owned();
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = dir.join(temp_name);
    let write_temp = || -> std::io::Result<()> {
        // A temp file left by a crash may carry other bits, or deny the
        // owner write access: start from a fresh one.
        match fs::remove_file(&temp) {
            Err(err) if err.kind() != ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // `mode` at creation is narrowed by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(source) = write_temp() {
        let _ = fs::remove_file(&temp);
        return Err(fail("write")(source));
    }
    fs::rename(&temp, path).map_err(|source| {
        let _ = fs::remove_file(&temp);
        fail("rename")(source)
    })?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(fail("sync"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::AccessToken;
    use crate::store::StoredToken;

    fn key() -> StoreKey {
        StoreKey {
            name: "shop".into(),
            appid: "wx1".into(),
            grant: "classic",
            cluster_grant: "classic".into(),
        }
    }

    fn record() -> StoredApp {
        StoredApp {
            appid: "wx1".into(),
            grant: "classic".into(),
            token: Some(StoredToken {
                access_token: AccessToken::new("tok"),
                expires_at: 100,
                fetched_at: 10,
                fetched_at_ms: 0,
            }),
            day: 20260101,
            fetches: 3,
        }
    }

    #[tokio::test]
    async fn round_trips_with_private_modes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(store.load(&key()).await.unwrap(), None);
        store.save(&key(), &record()).await.unwrap();
        assert_eq!(store.load(&key()).await.unwrap(), Some(record()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&store.record_path(&key())), 0o600);
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[tokio::test]
    async fn corrupt_file_is_an_error_then_replaced() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        fs::write(store.record_path(&key()), b"{\"appid\": \"wx1\", \"tok").unwrap();
        assert!(matches!(
            store.load(&key()).await,
            Err(StoreError::Corrupt { .. })
        ));
        store.save(&key(), &record()).await.unwrap();
        assert_eq!(store.load(&key()).await.unwrap(), Some(record()));
    }

    #[test]
    fn leftover_temp_files_are_removed_on_open() {
        let root = tempfile::tempdir().unwrap();
        let leftover = root.path().join("shop.json.tmp.4242");
        fs::write(&leftover, b"{\"half").unwrap();
        FileStore::open(root.path()).unwrap();
        assert!(!leftover.exists());
    }
}
