//! The Unix socket: replacing a stale socket file safely, applying
//! `socket_mode` and `socket_group` right after bind, removing the file on
//! shutdown.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// The longest path `sun_path` holds on Linux, less the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum UnixBindError {
    #[error(
        "unix_socket {path}: path is {len} bytes; a socket path holds at most {MAX_SOCKET_PATH}"
    )]
    PathTooLong { path: PathBuf, len: usize },
    #[error("unix_socket {0}: a file that is not a socket is in the way; remove it or choose another path")]
    NotASocket(PathBuf),
    #[error("unix_socket {0}: another broker is listening on it")]
    InUse(PathBuf),
    #[error("unix_socket {path}: {op}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("socket_group {0}: no such group")]
    UnknownGroup(String),
}

/// A bound Unix socket; the server removes its file on shutdown.
#[derive(Debug)]
pub struct UnixSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
}

impl UnixSocket {
    pub async fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<Self, UnixBindError> {
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(UnixBindError::PathTooLong {
                path: path.to_path_buf(),
                len,
            });
        }
        let io = |op| {
            move |source| UnixBindError::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        remove_stale(path).await?;
        let listener = UnixListener::bind(path).map_err(io("bind"))?;
        let socket = UnixSocket {
            listener,
            path: path.to_path_buf(),
        };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("chmod"))?;
        if let Some(group) = group {
            let gid = group_id(group)?;
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("chown"))?;
        }
        Ok(socket)
    }

    /// Removes the socket file (the listener itself is dropped by its loop).
    pub fn remove_file(path: &Path) {
        let _ = fs::remove_file(path);
    }
}

/// A leftover socket file from a crashed broker is replaced; a live broker's
/// socket, or any other kind of file, is left alone.
async fn remove_stale(path: &Path) -> Result<(), UnixBindError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(UnixBindError::Io {
                path: path.to_path_buf(),
                op: "stat",
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(UnixBindError::NotASocket(path.to_path_buf()));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(UnixBindError::InUse(path.to_path_buf()));
    }
    fs::remove_file(path).map_err(|source| UnixBindError::Io {
        path: path.to_path_buf(),
        op: "remove stale socket",
        source,
    })
}

/// Looks a group up in /etc/group (or takes a numeric gid), so no libc
/// binding is needed for one lookup at start-up.
fn group_id(group: &str) -> Result<u32, UnixBindError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .find(|(name, _)| *name == group)
        .map(|(_, gid)| gid)
        .ok_or_else(|| UnixBindError::UnknownGroup(group.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let first = UnixSocket::bind(&path, 0o660, None).await.unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(
            UnixSocket::bind(&path, 0o660, None).await,
            Err(UnixBindError::InUse(_))
        ));
        drop(first);
        // The file is still there but nobody listens: stale, so replaced.
        UnixSocket::bind(&path, 0o600, Some("0")).await.unwrap();

        let plain = dir.path().join("plain");
        fs::write(&plain, b"data").unwrap();
        assert!(matches!(
            UnixSocket::bind(&plain, 0o660, None).await,
            Err(UnixBindError::NotASocket(_))
        ));
        assert_eq!(fs::read(&plain).unwrap(), b"data");
    }

    #[tokio::test]
    async fn too_long_a_path_is_a_clear_error() {
        let path = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let err = UnixSocket::bind(&path, 0o660, None).await.unwrap_err();
        assert!(err.to_string().contains("at most 107"), "{err}");
    }
}
