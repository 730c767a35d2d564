//! The file store: one JSON file per app in the state directory, replaced
//! atomically (temp file, fsync, rename, directory fsync) so a crash at any
//! point leaves either the old record or the new one, never half of either.
//! Only a directory and records this broker's uid alone could have written
//! are used (see [`crate::files`]).

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tracing::error;

use super::{Store, StoreError, StoreKey, StoredCredential};
use crate::files::trust::{self, Contents};
use crate::files::{own_uid, write_atomically, DirVerdict, Facts};

pub struct FileStore {
    dir: Arc<Path>,
}

impl FileStore {
    /// Opens (creating, mode 0700) the state directory. One owned by
    /// another uid is refused; one of ours that group or others may write
    /// into is narrowed to 0700, with an error log, since its records may
    /// have been planted (each is checked again when read).
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
        let meta = fs::metadata(dir).map_err(|source| io("stat", source))?;
        match Facts::of(&meta).dir_verdict(own_uid()) {
            DirVerdict::Use => {}
            DirVerdict::Repair(doubt) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|source| io("chmod", source))?;
                error!(
                    path = %dir.display(),
                    problem = %doubt,
                    "state directory was open to other users; narrowed to 0700 (records in it are checked one by one)"
                );
            }
            DirVerdict::Refuse(doubt) => {
                return Err(StoreError::Untrusted {
                    path: dir.to_path_buf(),
                    doubt,
                })
            }
        }
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
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>> {
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
        state: &'a StoredCredential,
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

/// The largest record read: a record is a few hundred bytes.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// Reads a record, if this broker's uid alone could have written it (see
/// [`crate::files`]): a regular file of ours, not writable by group or
/// others, with one name, never followed if it is a symlink. It holds a
/// token, so one others may read is narrowed to 0600.
fn read_record(path: &Path) -> Result<Option<StoredCredential>, StoreError> {
    let Some(bytes) = trust::read(path, Contents::Secrets, MAX_RECORD_BYTES)? else {
        return Ok(None);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::AccessToken;
    use crate::store::Doubt;
    use crate::store::StoredToken;
    use std::os::unix::fs::MetadataExt;

    fn key() -> StoreKey {
        StoreKey {
            name: "shop".into(),
            appid: "wx1".into(),
            grant: "classic",
            cluster_grant: "classic".into(),
        }
    }

    fn record() -> StoredCredential {
        StoredCredential {
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

    /// A uid that is not ours, for files another local user planted.
    const NOBODY: u32 = 65534;

    /// Gives `path` to [`NOBODY`]; only root can, so without root the
    /// test that needs it says so and passes vacuously.
    fn plant_as_nobody(path: &Path) -> bool {
        if own_uid() != 0 {
            eprintln!("skipped: giving a file to another uid needs root");
            return false;
        }
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        true
    }

    fn write_record_file(path: &Path, mode: u32) {
        fs::write(path, serde_json::to_vec(&record()).unwrap()).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    async fn refused(store: &FileStore) -> Doubt {
        match store.load(&key()).await {
            Err(StoreError::Untrusted { doubt, .. }) => doubt,
            other => panic!("expected an untrusted record, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_record_another_uid_owns_is_refused_then_replaced() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        let path = store.record_path(&key());
        write_record_file(&path, 0o600);
        if !plant_as_nobody(&path) {
            return;
        }
        assert!(matches!(
            refused(&store).await,
            Doubt::Owner { owner: NOBODY, .. }
        ));
        store.save(&key(), &record()).await.unwrap();
        assert_eq!(fs::metadata(&path).unwrap().uid(), own_uid());
        assert_eq!(store.load(&key()).await.unwrap(), Some(record()));
    }

    #[tokio::test]
    async fn a_record_others_may_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        write_record_file(&store.record_path(&key()), 0o666);
        assert_eq!(refused(&store).await, Doubt::SharedWrite { mode: 0o666 });
    }

    #[tokio::test]
    async fn a_record_others_may_read_is_narrowed_to_0600_and_used() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        let path = store.record_path(&key());
        write_record_file(&path, 0o644);
        assert_eq!(store.load(&key()).await.unwrap(), Some(record()));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }

    #[tokio::test]
    async fn a_symlinked_or_hard_linked_record_is_refused_and_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(&root.path().join("state")).unwrap();
        let elsewhere = root.path().join("elsewhere.json");
        write_record_file(&elsewhere, 0o600);
        let path = store.record_path(&key());
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(refused(&store).await, Doubt::NotRegular);
        // Saving replaces the link itself, never the file it points to.
        let mut newer = record();
        newer.fetches = 4;
        store.save(&key(), &newer).await.unwrap();
        assert_eq!(store.load(&key()).await.unwrap(), Some(newer));
        let untouched: StoredCredential =
            serde_json::from_slice(&fs::read(&elsewhere).unwrap()).unwrap();
        assert_eq!(untouched, record());

        fs::remove_file(&path).unwrap();
        fs::hard_link(&elsewhere, &path).unwrap();
        assert_eq!(refused(&store).await, Doubt::Links { links: 2 });
    }

    #[tokio::test]
    async fn a_directory_open_to_others_is_narrowed_to_0700() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        FileStore::open(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_directory_another_uid_owns_is_refused_naming_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        fs::create_dir(&dir).unwrap();
        if !plant_as_nobody(&dir) {
            return;
        }
        let err = FileStore::open(&dir).err().expect("refused");
        let message = err.to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(message.contains("owned by uid 65534"), "{message}");
        assert!(message.contains("chown it to uid 0"), "{message}");
    }

    #[test]
    fn an_io_error_states_its_cause_once() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let dir = blocker.join("state");
        let err = FileStore::open(&dir)
            .err()
            .expect("no directory under a file");
        let cause = std::error::Error::source(&err)
            .expect("the io error is the source")
            .to_string();
        assert_eq!(err.to_string(), format!("create {}", dir.display()));
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
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
