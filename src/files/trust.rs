//! How every durable file is opened (DESIGN.md sections 17 and 21): app
//! records, the platforms' verify tickets and authorizer journals, the
//! quota-reset ledger. The name is never followed if it is a symlink, the
//! open never blocks (a FIFO planted under the name would otherwise hang
//! the reader, and with it shutdown), the file actually opened is judged
//! by `super::ownership`'s rules, and at most a bound is read. A file
//! holding secrets that other users may read is narrowed to 0600, loudly.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tracing::error;

use super::ownership::{own_uid, Doubt, Facts};

/// Why a durable file was not read or opened.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file this broker could not have written alone: never opened as
    /// is.
    #[error("untrusted state {path}: {doubt}")]
    Untrusted { path: PathBuf, doubt: Doubt },
}

/// Whether a file holds secrets (tokens, tickets, refresh tokens), which
/// no other user may read either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contents {
    Plain,
    Secrets,
}

/// The permission bits that let someone other than the owner read a file.
const SHARED_READ: u32 = 0o044;

/// Opens `path` for reading if this uid alone could have written it and it
/// is no larger than `limit` bytes; `None` if there is no such file.
pub(crate) fn open(path: &Path, contents: Contents, limit: u64) -> Result<Option<File>, FileError> {
    let flags = OFlags::RDONLY;
    let Some(file) = open_with(path, flags, None)? else {
        return Ok(None);
    };
    let meta = vet(path, &file, contents)?;
    if meta.len() > limit {
        return Err(untrusted(path, Doubt::TooLarge { limit }));
    }
    Ok(Some(file))
}

/// Reads the whole of `path` (see [`open`]), at most `limit` bytes.
pub(crate) fn read(
    path: &Path,
    contents: Contents,
    limit: u64,
) -> Result<Option<Vec<u8>>, FileError> {
    let Some(file) = open(path, contents, limit)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io(path, "read"))?;
    // It grew after it was measured: not the file that was judged.
    if bytes.len() as u64 > limit {
        return Err(untrusted(path, Doubt::TooLarge { limit }));
    }
    Ok(Some(bytes))
}

/// Opens `path` for appending, creating it (mode 0600) if there is none;
/// says whether it was created. An existing file is judged like one read.
pub(crate) fn open_append(path: &Path, contents: Contents) -> Result<(File, bool), FileError> {
    let flags = OFlags::WRONLY | OFlags::APPEND;
    if let Some(file) = open_with(path, flags, None)? {
        vet(path, &file, contents)?;
        return Ok((file, false));
    }
    // `O_EXCL`: a name someone creates meanwhile, a symlink included, is
    // never opened through.
    let created = open_with(path, flags | OFlags::CREATE | OFlags::EXCL, Some(0o600))?
        .ok_or_else(|| io(path, "write")(ErrorKind::NotFound.into()))?;
    // The mode at creation is narrowed by the umask; set it exactly.
    created
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(path, "write"))?;
    Ok((created, true))
}

/// Renames a refused file out of the way (`{name}.untrusted-{unix ms}`
/// beside it), so that it is kept for the operator but never read or
/// written again; the link itself moves, never what it points to.
pub(crate) fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".untrusted-{now_ms}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// `open(2)` without following a final symlink, without blocking, and
/// without taking a terminal; a name that is not a file we could open
/// that way is refused as not regular.
fn open_with(
    path: &Path,
    flags: OFlags,
    create_mode: Option<u32>,
) -> Result<Option<File>, FileError> {
    // Judged before opening too: a device is never opened at all.
    match std::fs::symlink_metadata(path) {
        Ok(named) if !named.file_type().is_file() => {
            return Err(untrusted(path, Doubt::NotRegular))
        }
        Err(err) if err.kind() == ErrorKind::NotFound && create_mode.is_none() => return Ok(None),
        Err(err) if err.kind() != ErrorKind::NotFound => return Err(io(path, op_of(flags))(err)),
        _ => {}
    }
    let flags = flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(create_mode.unwrap_or(0));
    match rustix::fs::open(path, flags, mode) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(Errno::NOENT) if create_mode.is_none() => Ok(None),
        // A symlink (`O_NOFOLLOW`), or a FIFO with no reader or a socket
        // (`O_NONBLOCK` for writing).
        Err(Errno::LOOP | Errno::NXIO) => Err(untrusted(path, Doubt::NotRegular)),
        Err(errno) => Err(io(path, op_of(flags))(errno.into())),
    }
}

/// Judges the file actually opened (not only the name, which could have
/// been swapped meanwhile) and narrows a secret-holding one others may
/// read to 0600.
fn vet(path: &Path, file: &File, contents: Contents) -> Result<Metadata, FileError> {
    let meta = file.metadata().map_err(io(path, "stat"))?;
    if let Some(doubt) = Facts::of(&meta).record_doubt(own_uid()) {
        return Err(untrusted(path, doubt));
    }
    let mode = meta.mode() & 0o7777;
    if contents == Contents::Secrets && mode & SHARED_READ != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path, "chmod"))?;
        error!(
            path = %path.display(),
            mode = %format_args!("{mode:04o}"),
            "a file holding secrets was readable by other users; narrowed to 0600 (what it holds may have been read)"
        );
    }
    Ok(meta)
}

fn op_of(flags: OFlags) -> &'static str {
    if flags.contains(OFlags::WRONLY) {
        "write"
    } else {
        "read"
    }
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn untrusted(path: &Path, doubt: Doubt) -> FileError {
    FileError::Untrusted {
        path: path.to_path_buf(),
        doubt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn doubt(result: Result<impl std::fmt::Debug, FileError>) -> Doubt {
        match result {
            Err(FileError::Untrusted { doubt, .. }) => doubt,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_secret_file_others_may_read_is_narrowed_to_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        fs::write(&path, b"token").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&path, Contents::Plain, 64).unwrap().unwrap(), b"token");
        assert_eq!(mode(&path), 0o644, "a plain file may stay readable");
        assert_eq!(
            read(&path, Contents::Secrets, 64).unwrap().unwrap(),
            b"token"
        );
        assert_eq!(mode(&path), 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        open_append(&path, Contents::Secrets).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_file_others_may_write_is_refused_not_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        fs::write(&path, b"token").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            doubt(read(&path, Contents::Secrets, 64)),
            Doubt::SharedWrite { mode: 0o666 }
        );
        assert_eq!(
            doubt(open_append(&path, Contents::Secrets)),
            Doubt::SharedWrite { mode: 0o666 }
        );
        assert_eq!(mode(&path), 0o666);
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'x'; 65]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            doubt(read(&path, Contents::Plain, 64)),
            Doubt::TooLarge { limit: 64 }
        );
        assert_eq!(read(&path, Contents::Plain, 65).unwrap().unwrap().len(), 65);
    }

    #[test]
    fn a_symlink_is_neither_read_nor_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"theirs").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert_eq!(doubt(read(&path, Contents::Secrets, 64)), Doubt::NotRegular);
        assert_eq!(
            doubt(open_append(&path, Contents::Secrets)),
            Doubt::NotRegular
        );
        // A dangling link is not a missing file to create through.
        fs::remove_file(&target).unwrap();
        assert_eq!(
            doubt(open_append(&path, Contents::Secrets)),
            Doubt::NotRegular
        );
        assert!(!target.exists());
        let aside = set_aside(&path).unwrap();
        assert!(fs::symlink_metadata(&aside)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!path.exists() && fs::symlink_metadata(&path).is_err());
        let (_, created) = open_append(&path, Contents::Secrets).unwrap();
        assert!(created);
        assert_eq!(mode(&path), 0o600);
        assert!(!target.exists());
    }

    #[test]
    fn a_fifo_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let probe = path.clone();
        std::thread::spawn(move || {
            let read = doubt(read(&probe, Contents::Secrets, 64));
            let append = doubt(open_append(&probe, Contents::Secrets));
            let _ = done.send((read, append));
        });
        let (read, append) = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("opening a FIFO returned at once");
        assert_eq!((read, append), (Doubt::NotRegular, Doubt::NotRegular));
    }

    #[test]
    fn an_io_error_states_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let path = blocker.join("record");
        let err = read(&path, Contents::Plain, 64).expect_err("a file is no directory");
        assert!(matches!(err, FileError::Io { op: "read", .. }), "{err:?}");
        let cause = std::error::Error::source(&err)
            .expect("the io error is the source")
            .to_string();
        assert_eq!(err.to_string(), format!("read {}", path.display()));
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
    }

    #[test]
    fn a_missing_file_is_none_or_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none");
        assert!(read(&path, Contents::Secrets, 64).unwrap().is_none());
        let (_, created) = open_append(&path, Contents::Secrets).unwrap();
        assert!(created);
        let (_, created) = open_append(&path, Contents::Secrets).unwrap();
        assert!(!created);
    }
}
