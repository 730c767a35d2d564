//! The audit file (`[log] audit_file`): JSON lines appended by the audit
//! writer alone, mode 0600, rotated by size into one previous file
//! (`audit.jsonl.1`). Section 17's trust rules hold as for the store's
//! records: a file is appended to only if this uid alone could have
//! written it (a regular file of ours, one link, not writable by group or
//! others), checked on the file actually opened, never through a symlink;
//! its directory must be ours or root's and closed to others.
//!
//! Every call here blocks: the writer runs it off the async threads.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::files::{own_uid, Doubt, Facts, SHARED_WRITE};

/// The mode of an audit file: who called what is the operator's business.
const MODE: u32 = 0o600;

/// Why the audit file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditFileError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing {}: {doubt}", path.display())]
    Untrusted { path: PathBuf, doubt: Doubt },
}

/// The audit file and its size bound; opened when first written, and
/// again after a failure or a rotation.
pub(super) struct AuditFile {
    path: PathBuf,
    max_bytes: u64,
    open: Option<Open>,
}

struct Open {
    file: File,
    size: u64,
}

impl AuditFile {
    pub(super) fn new(path: PathBuf, max_bytes: u64) -> Self {
        AuditFile {
            path,
            max_bytes,
            open: None,
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file now, so a file that cannot be used is reported when
    /// the daemon starts rather than at the first call.
    pub(super) fn prepare(&mut self) -> Result<(), AuditFileError> {
        self.ensure_open().map(|_| ())
    }

    /// Appends `lines`, each whole: before a line that would take the file
    /// past `max_bytes`, the file becomes `<name>.1` (replacing the one
    /// before) and a fresh file is begun. A failure closes the file; the
    /// next call opens it again.
    pub(super) fn append(&mut self, lines: &[Vec<u8>]) -> Result<(), AuditFileError> {
        let result = self.try_append(lines);
        if result.is_err() {
            self.open = None;
        }
        result
    }

    fn try_append(&mut self, lines: &[Vec<u8>]) -> Result<(), AuditFileError> {
        let mut pending: Vec<u8> = Vec::new();
        for line in lines {
            let size = self.ensure_open()?.size + pending.len() as u64;
            if size > 0 && size + line.len() as u64 > self.max_bytes {
                self.write(&pending)?;
                pending.clear();
                self.rotate()?;
            }
            pending.extend_from_slice(line);
        }
        self.write(&pending)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), AuditFileError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let open = self.open.as_mut().expect("opened before writing");
        open.file
            .write_all(bytes)
            .map_err(|source| AuditFileError::Io {
                op: "writing",
                path: path.clone(),
                source,
            })?;
        open.size += bytes.len() as u64;
        Ok(())
    }

    fn ensure_open(&mut self) -> Result<&mut Open, AuditFileError> {
        if self.open.is_none() {
            self.open = Some(open_trusted(&self.path)?);
        }
        Ok(self.open.as_mut().expect("just opened"))
    }

    /// The current file becomes the previous one; a fresh one begins.
    fn rotate(&mut self) -> Result<(), AuditFileError> {
        self.open = None;
        let previous = previous_path(&self.path);
        fs::rename(&self.path, &previous).map_err(|source| AuditFileError::Io {
            op: "rotating",
            path: self.path.clone(),
            source,
        })?;
        self.open = Some(create_fresh(&self.path)?);
        Ok(())
    }
}

/// `audit.jsonl` → `audit.jsonl.1`.
pub(super) fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    path.with_file_name(name)
}

/// Opens the audit file for appending, creating it (and its directory,
/// one level) when missing, if this uid alone could have written it.
fn open_trusted(path: &Path) -> Result<Open, AuditFileError> {
    let io = |op| {
        move |source| AuditFileError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let untrusted = |path: &Path, doubt| AuditFileError::Untrusted {
        path: path.to_path_buf(),
        doubt,
    };
    let uid = own_uid();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Err(err) = fs::DirBuilder::new().mode(0o700).create(dir) {
        if err.kind() != ErrorKind::AlreadyExists {
            return Err(io("creating the directory of")(err));
        }
    }
    let dir_meta = fs::metadata(dir).map_err(io("reading the directory of"))?;
    if let Some(doubt) = dir_doubt(&Facts::of(&dir_meta), uid) {
        return Err(untrusted(dir, doubt));
    }
    let named = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return create_fresh(path),
        Err(err) => return Err(io("reading")(err)),
    };
    // Before opening: a FIFO planted under the name would block the open.
    if let Some(doubt) = Facts::of(&named).record_doubt(uid) {
        return Err(untrusted(path, doubt));
    }
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(no_follow())
        .open(path)
        .map_err(io("opening"))?;
    let opened = file.metadata().map_err(io("reading"))?;
    if (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
        return Err(untrusted(path, Doubt::Replaced));
    }
    if let Some(doubt) = Facts::of(&opened).record_doubt(uid) {
        return Err(untrusted(path, doubt));
    }
    if opened.mode() & 0o7777 != MODE {
        file.set_permissions(fs::Permissions::from_mode(MODE))
            .map_err(io("narrowing the mode of"))?;
    }
    Ok(Open {
        size: opened.len(),
        file,
    })
}

/// A new, empty file of ours at `path`; fails if anything (a symlink
/// planted there) took the name first.
fn create_fresh(path: &Path) -> Result<Open, AuditFileError> {
    let io = |op| {
        move |source| AuditFileError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(no_follow())
        .open(path)
        .map_err(io("creating"))?;
    // The mode at creation is narrowed by the umask; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(MODE))
        .map_err(io("setting the mode of"))?;
    Ok(Open { file, size: 0 })
}

fn no_follow() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

/// Why a directory with these facts may let someone else swap the audit
/// file: not a directory, owned by neither this uid nor root, or open to
/// writes by group or others.
fn dir_doubt(facts: &Facts, uid: u32) -> Option<Doubt> {
    if !facts.is_dir {
        Some(Doubt::NotDirectory)
    } else if facts.owner != uid && facts.owner != 0 {
        Some(Doubt::Owner {
            owner: facts.owner,
            uid,
        })
    } else if facts.mode & SHARED_WRITE != 0 {
        Some(Doubt::SharedWrite { mode: facts.mode })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Vec<u8> {
        let mut line = format!("{{\"n\":{n}}}").into_bytes();
        line.resize(49, b' ');
        line.push(b'\n');
        line
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn lines_are_appended_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut file = AuditFile::new(path.clone(), 1 << 20);
        file.append(&[line(1), line(2)]).unwrap();
        file.append(&[line(3)]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn past_the_bound_the_file_becomes_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Room for four 50-byte lines.
        let mut file = AuditFile::new(path.clone(), 200);
        let lines: Vec<Vec<u8>> = (0..10).map(line).collect();
        file.append(&lines[..3]).unwrap();
        file.append(&lines[3..]).unwrap();
        let current = fs::read_to_string(&path).unwrap();
        let previous = fs::read_to_string(previous_path(&path)).unwrap();
        assert_eq!(current.lines().count(), 2, "lines 8 and 9");
        assert_eq!(previous.lines().count(), 4, "lines 4 to 7");
        assert!(current.len() <= 200 && previous.len() <= 200);
        assert!(current.starts_with("{\"n\":8}"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&previous_path(&path)), 0o600);
    }

    #[test]
    fn an_existing_file_of_ours_is_appended_to_and_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, line(0)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut file = AuditFile::new(path.clone(), 1 << 20);
        file.append(&[line(1)]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_symlink_or_a_shared_file_is_refused_and_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, "").unwrap();
        let path = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let mut file = AuditFile::new(path.clone(), 1 << 20);
        let err = file.append(&[line(1)]).unwrap_err();
        assert!(
            matches!(
                err,
                AuditFileError::Untrusted {
                    doubt: Doubt::NotRegular,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "");

        fs::remove_file(&path).unwrap();
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = file.append(&[line(1)]).unwrap_err();
        assert!(
            matches!(
                err,
                AuditFileError::Untrusted {
                    doubt: Doubt::SharedWrite { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_file_another_uid_owns_is_refused() {
        if own_uid() != 0 {
            eprintln!("skipped: giving a file to another uid needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let err = AuditFile::new(path.clone(), 1 << 20).prepare().unwrap_err();
        assert!(
            matches!(
                err,
                AuditFileError::Untrusted {
                    doubt: Doubt::Owner { owner: 65534, .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let mut file = AuditFile::new(shared.join("audit.jsonl"), 1 << 20);
        let err = file.prepare().unwrap_err();
        assert!(
            matches!(
                err,
                AuditFileError::Untrusted {
                    doubt: Doubt::SharedWrite { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(!shared.join("audit.jsonl").exists());
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxbroker").join("audit.jsonl");
        AuditFile::new(path.clone(), 1 << 20).prepare().unwrap();
        assert!(path.exists());
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
}
