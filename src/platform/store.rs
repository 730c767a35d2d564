//! A platform's durable state: the latest `component_verify_ticket` and
//! every authorizer's record, above all its refresh token, the one thing
//! whose loss makes a merchant authorize again by hand. (The component
//! token itself is an engine credential and lives in the app [`Store`].)
//!
//! Backends: memory (nothing survives), file and Redis. The file backend
//! keeps one journal per platform, `{name}.authorizers.jsonl`: each change
//! is one appended, fsynced line, so a refresh costs a few hundred bytes of
//! writing rather than a rewrite of ten thousand records (one file per
//! authorizer would cost ten thousand opens on every start, and one JSON
//! document per platform megabytes of writing a second at the fleet's
//! refresh rate). The journal is rewritten atomically, compacted, once
//! dead lines outnumber live ones; a torn last line (a crash mid-append)
//! is skipped on load, and every earlier line is intact.
//!
//! A record with an empty refresh token is never written: an empty value
//! must never replace the last good one.
//!
//! [`Store`]: crate::store::Store

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::store::{write_atomically, StoreError};

/// One authorizer as stored. Tokens are plain strings here: the record
/// never reaches a log (`Debug` is masked by hand).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizerRecord {
    pub appid: String,
    pub refresh_token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_token: String,
    /// Unix milliseconds; 0 when no access token is held.
    #[serde(default)]
    pub expires_at_ms: u64,
    #[serde(default)]
    pub fetched_at_ms: u64,
    /// Unix seconds of the authorization (or of its recovery).
    #[serde(default)]
    pub authorized_at: u64,
}

impl std::fmt::Debug for AuthorizerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizerRecord")
            .field("appid", &self.appid)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// The latest verify ticket WeChat pushed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTicket {
    pub component_appid: String,
    pub ticket: String,
    /// Unix seconds.
    pub received_at: u64,
}

impl std::fmt::Debug for StoredTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTicket")
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

/// A platform's durable state. One instance per platform.
pub trait PlatformStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<StoredTicket>, StoreError>>;

    fn save_ticket<'a>(&'a self, ticket: &'a StoredTicket)
        -> BoxFuture<'a, Result<(), StoreError>>;

    fn load_authorizers(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>>;

    /// Inserts or replaces these authorizers' records, durably before it
    /// returns. Records with an empty refresh token are refused.
    fn save_authorizers<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn remove_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores records recovered from `api_get_authorizer_list`, keeping
    /// any record already there: in a fleet, another broker may have
    /// rotated a refresh token since the list was read, and the listed
    /// one is then dead.
    fn save_recovered<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.save_authorizers(records)
    }

    /// Whether [`PlatformStore::compact`] would pay off now, with `live`
    /// authorizers held.
    fn wants_compaction(&self, _live: usize) -> bool {
        false
    }

    /// Replaces everything with exactly `records`.
    fn compact<'a>(
        &'a self,
        _records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// One authorizer's record as the shared store holds it now, for a
    /// fleet whose members refresh the same authorizers; `None` outside a
    /// shared store.
    fn shared_authorizer<'a>(
        &'a self,
        _appid: &'a str,
    ) -> BoxFuture<'a, Result<Option<AuthorizerRecord>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// Whether several brokers share this store.
    fn is_shared(&self) -> bool {
        false
    }

    /// A fleet-wide permit for one authorizer fetch in the current second
    /// (at most `per_second` a second across the fleet); always granted
    /// outside a shared store, where the local limiter is the fleet's.
    fn fetch_permit(&self, _per_second: u32) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    /// Takes a short lock on refreshing `appid` across the fleet.
    fn lock_authorizer<'a>(&'a self, _appid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn unlock_authorizer<'a>(&'a self, _appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

fn refuse_empty(records: &[AuthorizerRecord]) -> Result<(), StoreError> {
    match records.iter().find(|r| r.refresh_token.is_empty()) {
        Some(record) => Err(StoreError::Corrupt {
            path: PathBuf::from(&record.appid),
            reason: "refusing to store an empty refresh token".into(),
        }),
        None => Ok(()),
    }
}

/// Nothing survives the process.
#[derive(Default)]
pub struct MemoryPlatformStore {
    ticket: Mutex<Option<StoredTicket>>,
    authorizers: Mutex<HashMap<String, AuthorizerRecord>>,
}

impl PlatformStore for MemoryPlatformStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<StoredTicket>, StoreError>> {
        let ticket = self.ticket.lock().expect("poisoned").clone();
        Box::pin(async move { Ok(ticket) })
    }

    fn save_ticket<'a>(
        &'a self,
        ticket: &'a StoredTicket,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        *self.ticket.lock().expect("poisoned") = Some(ticket.clone());
        Box::pin(async { Ok(()) })
    }

    fn load_authorizers(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        let all = self
            .authorizers
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        Box::pin(async move { Ok(all) })
    }

    fn save_authorizers<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = refuse_empty(records).map(|()| {
            let mut all = self.authorizers.lock().expect("poisoned");
            for record in records {
                all.insert(record.appid.clone(), record.clone());
            }
        });
        Box::pin(async move { result })
    }

    fn remove_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.authorizers.lock().expect("poisoned").remove(appid);
        Box::pin(async { Ok(()) })
    }
}

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    /// The first line: whose journal this is.
    Platform {
        component_appid: String,
    },
    Put(AuthorizerRecord),
    Drop {
        appid: String,
    },
}

/// The file backend (see the module's documentation).
pub struct FilePlatformStore {
    inner: Arc<FileInner>,
}

struct FileInner {
    component_appid: String,
    ticket_path: PathBuf,
    journal_path: PathBuf,
    journal: Mutex<Journal>,
}

#[derive(Default)]
struct Journal {
    file: Option<File>,
    /// Lines in the file, dead ones included.
    lines: usize,
}

/// Compaction waits for this many dead lines at least, so a small
/// platform is not rewritten on every change.
const COMPACTION_SLACK: usize = 1024;

impl FilePlatformStore {
    /// The platform `name`'s files in the state directory `dir`, which the
    /// app store has already created and vetted.
    pub fn new(dir: &Path, name: &str, component_appid: &str) -> Self {
        FilePlatformStore {
            inner: Arc::new(FileInner {
                component_appid: component_appid.to_owned(),
                ticket_path: dir.join(format!("{name}.verify_ticket.json")),
                journal_path: dir.join(format!("{name}.authorizers.jsonl")),
                journal: Mutex::default(),
            }),
        }
    }

    pub fn journal_path(&self) -> &Path {
        &self.inner.journal_path
    }
}

fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens `path` for reading if this uid alone could have written it.
fn open_trusted(path: &Path) -> Result<Option<File>, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("read", path)(err)),
    };
    let meta = file.metadata().map_err(io_error("read", path))?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    if !meta.is_file() || !ours || meta.mode() & 0o022 != 0 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a private file of this user; refusing it".into(),
        });
    }
    Ok(Some(file))
}

impl FileInner {
    fn read_ticket(&self) -> Result<Option<StoredTicket>, StoreError> {
        let Some(file) = open_trusted(&self.ticket_path)? else {
            return Ok(None);
        };
        let ticket: StoredTicket =
            serde_json::from_reader(file).map_err(|err| StoreError::Corrupt {
                path: self.ticket_path.clone(),
                reason: err.to_string(),
            })?;
        Ok((ticket.component_appid == self.component_appid).then_some(ticket))
    }

    fn read_journal(&self) -> Result<Vec<AuthorizerRecord>, StoreError> {
        let path = &self.journal_path;
        let Some(file) = open_trusted(path)? else {
            return Ok(Vec::new());
        };
        let mut records: HashMap<String, AuthorizerRecord> = HashMap::new();
        let mut lines = 0;
        for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line = line.map_err(io_error("read", path))?;
            if line.is_empty() {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<Line>(&line) {
                Ok(Line::Platform { component_appid }) if index == 0 => {
                    if component_appid != self.component_appid {
                        tracing::warn!(path = %path.display(), "ignoring an authorizer journal written for another component appid");
                        return Ok(Vec::new());
                    }
                }
                Ok(Line::Put(record)) if !record.refresh_token.is_empty() => {
                    records.insert(record.appid.clone(), record);
                }
                Ok(Line::Drop { appid }) => {
                    records.remove(&appid);
                }
                // A torn last line (a crash mid-append) or a foreign one:
                // every other line still stands.
                _ => {
                    tracing::warn!(path = %path.display(), line = index + 1, "skipping an unreadable journal line")
                }
            }
        }
        self.journal.lock().expect("poisoned").lines = lines;
        Ok(records.into_values().collect())
    }

    fn append(&self, lines: &[Line]) -> Result<(), StoreError> {
        let path = &self.journal_path;
        let mut journal = self.journal.lock().expect("poisoned");
        if journal.file.is_none() {
            let fresh = !path.exists();
            let mut file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .map_err(io_error("write", path))?;
            if fresh {
                let header = Line::Platform {
                    component_appid: self.component_appid.clone(),
                };
                write_lines(&mut file, std::slice::from_ref(&header))
                    .map_err(io_error("write", path))?;
                journal.lines = 1;
            }
            journal.file = Some(file);
        }
        let file = journal.file.as_mut().expect("opened above");
        write_lines(file, lines).map_err(io_error("write", path))?;
        file.sync_data().map_err(io_error("sync", path))?;
        journal.lines += lines.len();
        Ok(())
    }

    fn rewrite(&self, records: &[AuthorizerRecord]) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(records.len() * 320);
        let header = Line::Platform {
            component_appid: self.component_appid.clone(),
        };
        let mut lines = vec![header];
        lines.extend(records.iter().cloned().map(Line::Put));
        write_lines(&mut bytes, &lines).expect("writing into a Vec");
        let mut journal = self.journal.lock().expect("poisoned");
        write_atomically(&self.journal_path, &bytes, 0o600).map_err(|err| StoreError::Io {
            op: err.op,
            path: self.journal_path.clone(),
            source: err.source,
        })?;
        // The old handle points at the replaced file.
        journal.file = None;
        journal.lines = lines.len();
        Ok(())
    }
}

fn write_lines(out: &mut impl Write, lines: &[Line]) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(lines.len() * 320);
    for line in lines {
        serde_json::to_writer(&mut buffer, line).expect("a line always serializes");
        buffer.push(b'\n');
    }
    out.write_all(&buffer)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("platform store work panicked")
}

impl PlatformStore for FilePlatformStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<StoredTicket>, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(blocking(move || inner.read_ticket()))
    }

    fn save_ticket<'a>(
        &'a self,
        ticket: &'a StoredTicket,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let path = self.inner.ticket_path.clone();
        let bytes = serde_json::to_vec(ticket).expect("a ticket always serializes");
        Box::pin(blocking(move || {
            write_atomically(&path, &bytes, 0o600).map_err(|err| StoreError::Io {
                op: err.op,
                path: path.clone(),
                source: err.source,
            })
        }))
    }

    fn load_authorizers(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(blocking(move || inner.read_journal()))
    }

    fn save_authorizers<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let inner = self.inner.clone();
        let checked = refuse_empty(records);
        let lines: Vec<Line> = records.iter().cloned().map(Line::Put).collect();
        Box::pin(async move {
            checked?;
            blocking(move || inner.append(&lines)).await
        })
    }

    fn remove_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let inner = self.inner.clone();
        let line = Line::Drop {
            appid: appid.to_owned(),
        };
        Box::pin(blocking(move || inner.append(&[line])))
    }

    fn wants_compaction(&self, live: usize) -> bool {
        let journal = self.inner.journal.lock().expect("poisoned");
        journal.lines > 2 * live + COMPACTION_SLACK
    }

    fn compact<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let inner = self.inner.clone();
        let records = records.to_vec();
        Box::pin(blocking(move || inner.rewrite(&records)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(appid: &str, refresh: &str) -> AuthorizerRecord {
        AuthorizerRecord {
            appid: appid.into(),
            refresh_token: refresh.into(),
            access_token: format!("at-{appid}"),
            expires_at_ms: 10,
            fetched_at_ms: 5,
            authorized_at: 1,
        }
    }

    #[tokio::test]
    async fn the_journal_survives_reopening_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
        store
            .save_authorizers(&[record("a", "r1"), record("b", "r1")])
            .await
            .unwrap();
        store.save_authorizers(&[record("a", "r2")]).await.unwrap();
        store.remove_authorizer("b").await.unwrap();
        assert!(store.save_authorizers(&[record("a", "")]).await.is_err());
        let mut file = OpenOptions::new()
            .append(true)
            .open(store.journal_path())
            .unwrap();
        file.write_all(b"{\"op\":\"put\",\"appid\":\"a\",\"refr")
            .unwrap();
        let reopened = FilePlatformStore::new(dir.path(), "saas", "wxc");
        let all = reopened.load_authorizers().await.unwrap();
        assert_eq!(all, vec![record("a", "r2")]);
        let mode = std::fs::metadata(store.journal_path()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        let foreign = FilePlatformStore::new(dir.path(), "saas", "wxother");
        assert!(foreign.load_authorizers().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn compaction_keeps_exactly_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
        for round in 0..(COMPACTION_SLACK + 10) {
            store
                .save_authorizers(&[record("a", &format!("r{round}"))])
                .await
                .unwrap();
        }
        assert!(store.wants_compaction(1));
        store.compact(&[record("a", "final")]).await.unwrap();
        assert!(!store.wants_compaction(1));
        store.save_authorizers(&[record("b", "rb")]).await.unwrap();
        let mut all = store.load_authorizers().await.unwrap();
        all.sort_by(|x, y| x.appid.cmp(&y.appid));
        assert_eq!(all, vec![record("a", "final"), record("b", "rb")]);
    }

    #[tokio::test]
    async fn the_ticket_is_kept_for_its_own_platform_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
        assert!(store.load_ticket().await.unwrap().is_none());
        let ticket = StoredTicket {
            component_appid: "wxc".into(),
            ticket: "ticket@@@1".into(),
            received_at: 7,
        };
        store.save_ticket(&ticket).await.unwrap();
        assert_eq!(store.load_ticket().await.unwrap(), Some(ticket));
        let other = FilePlatformStore::new(dir.path(), "saas", "wxother");
        assert_eq!(other.load_ticket().await.unwrap(), None);
    }
}
