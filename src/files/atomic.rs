//! Replacing a file whole: a reader, or a crash at any point, sees the old
//! content or the new, never part of either. Every file the broker
//! rewrites goes this way: store records, platform journals, token sinks,
//! the certificates of `tls init`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Which step of [`write_atomically`] failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} failed")]
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
