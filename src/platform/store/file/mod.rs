//! The file backend of a platform's state, in the directory the app
//! store has created and vetted: the latest verify ticket in
//! `{name}.verify_ticket.json`, rewritten atomically, and every
//! authorizer in the journal `{name}.authorizers.jsonl` (`journal`).
//! Blocking file work runs off the runtime's threads.
//!
//! Both files hold secrets and are opened through `files::trust`
//! (DESIGN.md sections 17 and 21): never through a symlink, never blocking
//! on a FIFO, narrowed to 0600 if others could read them. One this broker
//! could not have written alone is set aside and never loaded; the
//! platform then recovers its authorizers from WeChat.

mod journal;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tracing::error;

use super::{count_on, refuse_empty, AuthorizerRecord, PlatformStore, StoredTicket};
use crate::errors::Chain;
use crate::files::trust::{self, Contents};
use crate::files::write_atomically;
use crate::store::StoreError;
use journal::{Journal, Line};

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
        self.inner.wants_compaction(live)
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
