//! A platform's authorizers on disk: one journal per platform, each
//! change one appended, fsynced line, so a refresh costs a few hundred
//! bytes of writing rather than a rewrite of ten thousand records (one
//! file per authorizer would cost ten thousand opens on every start, and
//! one JSON document per platform megabytes of writing a second at the
//! fleet's refresh rate). The journal is rewritten atomically, compacted,
//! once dead lines outnumber live ones; a torn last line (a crash
//! mid-append) is skipped on load, and every earlier line is intact. The
//! day's count of authorizer fetches is journalled too.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{io_error, vetted, FileInner};
use crate::files::trust::{self, Contents};
use crate::files::write_atomically;
use crate::platform::store::{next_count, AuthorizerRecord};
use crate::store::StoreError;

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Line {
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

/// The journal as this process holds it open.
#[derive(Default)]
pub(super) struct Journal {
    /// The append handle, opened at the first write.
    file: Option<File>,
    /// Lines in the file, dead ones included.
    lines: usize,
}

/// Compaction waits for this many dead lines at least, so a small
/// platform is not rewritten on every change.
pub(super) const COMPACTION_SLACK: usize = 1024;

/// The largest journal read: ten thousand authorizers take a few MB
/// even just before a compaction; this leaves room for many times that.
const MAX_JOURNAL_BYTES: u64 = 256 * 1024 * 1024;

impl FileInner {
    pub(super) fn read_journal(&self) -> Result<Vec<AuthorizerRecord>, StoreError> {
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

    pub(super) fn append(&self, lines: &[Line]) -> Result<(), StoreError> {
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

    pub(super) fn rewrite(&self, records: &[AuthorizerRecord]) -> Result<(), StoreError> {
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

    /// Counts one fetch, appended (and synced) before it is answered.
    pub(super) fn count_fetch(&self, day: u32) -> Result<u32, StoreError> {
        let used = next_count(&mut self.fetches.lock().expect("poisoned"), day);
        self.append(&[Line::Count { day, used }])?;
        Ok(used)
    }

    /// Whether the journal's dead lines are enough to rewrite it holding
    /// `live` authorizers.
    pub(super) fn wants_compaction(&self, live: usize) -> bool {
        let journal = self.journal.lock().expect("poisoned");
        journal.lines > 2 * live + COMPACTION_SLACK
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
