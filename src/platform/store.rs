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
//! Both files hold secrets and are opened through `files::trust`
//! (DESIGN.md sections 17 and 21): never through a symlink, never blocking
//! on a FIFO, narrowed to 0600 if others could read them. One this broker
//! could not have written alone is set aside and never loaded; the
//! platform then recovers its authorizers from WeChat.
//!
//! [`Store`]: crate::store::Store

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use tracing::error;

use crate::errors::Chain;
use crate::files::trust::{self, Contents};
use crate::files::write_atomically;
use crate::store::{implausible_times, Implausible, StoreError};

/// One authorizer as stored: the family's record (see [`crate::children`]),
/// its `appid` the authorizer's and its `refresh_token` WeChat's.
pub use crate::children::ChildRecord as AuthorizerRecord;

/// The latest verify ticket WeChat pushed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTicket {
    pub component_appid: String,
    pub ticket: String,
    /// Unix seconds.
    pub received_at: u64,
}

impl StoredTicket {
    /// Why the ticket cannot have been received by a broker whose clock
    /// reads `now_secs` (pushed in the future), or `None`. A ticket dated
    /// ahead would never age out.
    pub fn implausible(&self, now_secs: u64) -> Option<Implausible> {
        let received_ms = self.received_at.saturating_mul(1000);
        implausible_times(received_ms, received_ms, now_secs)
    }
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

    /// Counts one authorizer fetch on the Beijing day `day` (`YYYYMMDD`)
    /// against `authorizer_daily_budget`, durably before it returns;
    /// answers the day's count, the whole fleet's in a shared store.
    fn count_authorizer_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>>;

    /// The day's count of authorizer fetches as stored (0 for another
    /// day).
    fn authorizer_fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>>;
}

/// The next count of a per-day counter holding `(day, used)`.
fn next_count(count: &mut (u32, u32), day: u32) -> u32 {
    *count = if count.0 == day {
        (day, count.1.saturating_add(1))
    } else {
        (day, 1)
    };
    count.1
}

/// What a per-day counter holding `(day, used)` says of `day`.
fn count_on(count: (u32, u32), day: u32) -> u32 {
    if count.0 == day {
        count.1
    } else {
        0
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
    /// `(day, used)` of authorizer fetches.
    fetches: Mutex<(u32, u32)>,
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

    fn count_authorizer_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let used = next_count(&mut self.fetches.lock().expect("poisoned"), day);
        Box::pin(async move { Ok(used) })
    }

    fn authorizer_fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let used = count_on(*self.fetches.lock().expect("poisoned"), day);
        Box::pin(async move { Ok(used) })
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
    /// Authorizer fetches counted on a Beijing day so far; the highest
    /// for the latest day stands.
    Count {
        day: u32,
        used: u32,
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
    /// `(day, used)` of authorizer fetches, as the journal holds it.
    fetches: Mutex<(u32, u32)>,
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
        FilePlatformStore::with_files(
            dir.join(format!("{name}.verify_ticket.json")),
            dir.join(format!("{name}.authorizers.jsonl")),
            component_appid,
        )
    }

    /// Another parent's files (a WeCom suite's `suite_ticket` and corps):
    /// the same formats and rules, owned by `owner_id` (its suite id).
    pub fn with_files(ticket_path: PathBuf, journal_path: PathBuf, owner_id: &str) -> Self {
        FilePlatformStore {
            inner: Arc::new(FileInner {
                component_appid: owner_id.to_owned(),
                ticket_path,
                journal_path,
                journal: Mutex::default(),
                fetches: Mutex::default(),
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

/// The largest verify ticket file read: it holds one short ticket.
const MAX_TICKET_BYTES: u64 = 64 * 1024;
/// The largest journal read: ten thousand authorizers take a few MB
/// even just before a compaction; this leaves room for many times that.
const MAX_JOURNAL_BYTES: u64 = 256 * 1024 * 1024;

/// Opens a platform file through [`trust`]; one refused is renamed aside
/// (kept for the operator, never read or written again) and the refusal
/// returned, so the platform starts from what WeChat holds instead.
fn vetted<T>(
    path: &Path,
    open: impl FnOnce(&Path) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let result = open(path);
    if let Err(err @ StoreError::Untrusted { .. }) = &result {
        match trust::set_aside(path) {
            Ok(aside) => {
                error!(path = %path.display(), aside = %aside.display(), error = %Chain(&err), "refusing platform state this broker could not have written; set it aside")
            }
            Err(rename) => {
                error!(path = %path.display(), error = %Chain(&err), rename_error = %Chain(&rename), "refusing platform state this broker could not have written; it could not be set aside, and is neither read nor written")
            }
        }
    }
    result
}

impl FileInner {
    fn read_ticket(&self) -> Result<Option<StoredTicket>, StoreError> {
        let read = |path: &Path| Ok(trust::read(path, Contents::Secrets, MAX_TICKET_BYTES)?);
        let Some(bytes) = vetted(&self.ticket_path, read)? else {
            return Ok(None);
        };
        let ticket: StoredTicket =
            serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
                path: self.ticket_path.clone(),
                reason: err.to_string(),
            })?;
        Ok((ticket.component_appid == self.component_appid).then_some(ticket))
    }

    fn read_journal(&self) -> Result<Vec<AuthorizerRecord>, StoreError> {
        let path = &self.journal_path;
        let open = |path: &Path| Ok(trust::open(path, Contents::Secrets, MAX_JOURNAL_BYTES)?);
        let Some(file) = vetted(path, open)? else {
            return Ok(Vec::new());
        };
        let mut records: HashMap<String, AuthorizerRecord> = HashMap::new();
        let mut lines = 0;
        let bounded = BufReader::new(file.take(MAX_JOURNAL_BYTES));
        for (index, line) in bounded.split(b'\n').enumerate() {
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
                Ok(Line::Count { day, used }) => {
                    let mut fetches = self.fetches.lock().expect("poisoned");
                    if day > fetches.0 || (day == fetches.0 && used > fetches.1) {
                        *fetches = (day, used);
                    }
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
            // Never through a symlink, never into a file someone else
            // could have written: such a journal was set aside on load.
            let (mut file, fresh) = trust::open_append(path, Contents::Secrets)?;
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
        let (day, used) = *self.fetches.lock().expect("poisoned");
        if used > 0 {
            lines.push(Line::Count { day, used });
        }
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

impl FileInner {
    /// Counts one fetch, appended (and synced) before it is answered.
    fn count_fetch(&self, day: u32) -> Result<u32, StoreError> {
        let used = next_count(&mut self.fetches.lock().expect("poisoned"), day);
        self.append(&[Line::Count { day, used }])?;
        Ok(used)
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

    fn count_authorizer_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(blocking(move || inner.count_fetch(day)))
    }

    /// Read by [`PlatformStore::load_authorizers`], which comes first.
    fn authorizer_fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let used = count_on(*self.inner.fetches.lock().expect("poisoned"), day);
        Box::pin(async move { Ok(used) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn record(appid: &str, refresh: &str) -> AuthorizerRecord {
        AuthorizerRecord {
            appid: appid.into(),
            refresh_token: refresh.into(),
            access_token: format!("at-{appid}"),
            expires_at_ms: 10,
            fetched_at_ms: 5,
            authorized_at: 1,
            name: String::new(),
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
    async fn the_days_fetch_count_survives_reopening_and_compaction() {
        let (today, tomorrow) = (20251124, 20251125);
        let dir = tempfile::tempdir().unwrap();
        let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
        store.save_authorizers(&[record("a", "r1")]).await.unwrap();
        for expected in 1..=3 {
            assert_eq!(store.count_authorizer_fetch(today).await.unwrap(), expected);
        }
        let reopened = FilePlatformStore::new(dir.path(), "saas", "wxc");
        assert_eq!(reopened.load_authorizers().await.unwrap().len(), 1);
        assert_eq!(reopened.authorizer_fetches(today).await.unwrap(), 3);
        assert_eq!(reopened.authorizer_fetches(tomorrow).await.unwrap(), 0);
        assert_eq!(reopened.count_authorizer_fetch(today).await.unwrap(), 4);
        reopened.compact(&[record("a", "r2")]).await.unwrap();
        let compacted = FilePlatformStore::new(dir.path(), "saas", "wxc");
        assert_eq!(
            compacted.load_authorizers().await.unwrap(),
            vec![record("a", "r2")]
        );
        assert_eq!(compacted.authorizer_fetches(today).await.unwrap(), 4);
        assert_eq!(compacted.count_authorizer_fetch(tomorrow).await.unwrap(), 1);
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

    fn untrusted(result: Result<impl std::fmt::Debug, StoreError>) -> crate::store::Doubt {
        match result {
            Err(StoreError::Untrusted { doubt, .. }) => doubt,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Names in `dir` starting with `prefix`.
    fn named(dir: &Path, prefix: &str) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(prefix))
            .collect()
    }

    #[tokio::test]
    async fn a_symlinked_journal_is_set_aside_and_never_written_through() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root.path().join("elsewhere.jsonl");
        let planted = FilePlatformStore::new(root.path(), "planted", "wxc");
        planted
            .save_authorizers(&[record("a", "r1")])
            .await
            .unwrap();
        std::fs::rename(planted.journal_path(), &elsewhere).unwrap();
        let before = std::fs::read(&elsewhere).unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let store = FilePlatformStore::new(&dir, "saas", "wxc");
        std::os::unix::fs::symlink(&elsewhere, store.journal_path()).unwrap();
        assert_eq!(
            untrusted(store.load_authorizers().await),
            crate::store::Doubt::NotRegular
        );
        assert_eq!(named(&dir, "saas.authorizers.jsonl.untrusted-").len(), 1);
        store.save_authorizers(&[record("b", "rb")]).await.unwrap();
        assert_eq!(
            std::fs::read(&elsewhere).unwrap(),
            before,
            "never written through"
        );
        let meta = std::fs::symlink_metadata(store.journal_path()).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(
            store.load_authorizers().await.unwrap(),
            vec![record("b", "rb")]
        );
    }

    #[tokio::test]
    async fn a_journal_others_may_read_is_narrowed_to_0600_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
        store.save_authorizers(&[record("a", "r1")]).await.unwrap();
        let path = store.journal_path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let reopened = FilePlatformStore::new(dir.path(), "saas", "wxc");
        assert_eq!(
            reopened.load_authorizers().await.unwrap(),
            vec![record("a", "r1")]
        );
        assert_eq!(std::fs::metadata(path).unwrap().mode() & 0o7777, 0o600);
    }

    #[tokio::test]
    async fn fifos_for_journal_and_ticket_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
        for path in [
            store.journal_path().to_owned(),
            store.inner.ticket_path.clone(),
        ] {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
        }
        let at_once = std::time::Duration::from_secs(10);
        let journal = tokio::time::timeout(at_once, store.load_authorizers()).await;
        assert_eq!(
            untrusted(journal.expect("returns at once")),
            crate::store::Doubt::NotRegular
        );
        let ticket = tokio::time::timeout(at_once, store.load_ticket()).await;
        assert_eq!(
            untrusted(ticket.expect("returns at once")),
            crate::store::Doubt::NotRegular
        );
        assert!(named(dir.path(), "saas.")
            .iter()
            .all(|name| name.contains(".untrusted-")));
        // Set aside: the next start finds nothing, and writes anew.
        assert!(store.load_authorizers().await.unwrap().is_empty());
        assert!(store.load_ticket().await.unwrap().is_none());
    }

    #[test]
    fn implausible_times_distrust_the_token_only() {
        let now_ms = 1_800_000_000_000;
        let year_ms = 365 * 86_400_000;
        let planted = AuthorizerRecord {
            fetched_at_ms: now_ms + year_ms,
            expires_at_ms: now_ms + 10 * year_ms,
            ..record("a", "r1")
        };
        assert!(planted.token_implausible(now_ms).is_some());
        let kept = planted.without_token();
        assert_eq!(kept.refresh_token, "r1");
        assert!(kept.access_token.is_empty());
        assert_eq!(kept.token_implausible(now_ms), None);
        let fresh = AuthorizerRecord {
            fetched_at_ms: now_ms - 1_000,
            expires_at_ms: now_ms + 7_199_000,
            ..record("a", "r1")
        };
        assert_eq!(fresh.token_implausible(now_ms), None);
        let long = AuthorizerRecord {
            fetched_at_ms: now_ms,
            expires_at_ms: now_ms + 2 * 86_400_000,
            ..record("a", "r1")
        };
        assert!(long.token_implausible(now_ms).is_some());
        let ticket = |received_at| StoredTicket {
            component_appid: "wxc".into(),
            ticket: "t".into(),
            received_at,
        };
        assert_eq!(ticket(now_ms / 1000 - 600).implausible(now_ms / 1000), None);
        assert!(ticket(now_ms / 1000 + 3600)
            .implausible(now_ms / 1000)
            .is_some());
    }
}
