//! The systemd notification protocol (`sd_notify(3)`), without libsystemd:
//! one datagram of `KEY=VALUE` lines sent to the Unix socket named by
//! `$NOTIFY_SOCKET`, a path or, when it starts with `@`, a Linux abstract
//! socket. With `Type=notify`, systemd holds the unit in "activating"
//! until `READY=1` arrives, and shows `STATUS=` in `systemctl status`.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1\nSTATUS=serving"`) to the socket named by
/// `$NOTIFY_SOCKET`. Returns `Ok(false)` when the variable is unset or
/// empty, as when not run by systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => {
            let socket = socket.into_string().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8")
            })?;
            notify_to(&socket, state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` to `socket`, a filesystem path or `@abstract-name`.
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    // The daemon's runtime must never wait on systemd: a full receive
    // queue is an error to log, not a reason to stall.
    sender.set_nonblocking(true)?;
    let sent = match socket.strip_prefix('@') {
        Some(name) => send_abstract(&sender, name, state.as_bytes())?,
        None if socket.starts_with('/') => sender.send_to(state.as_bytes(), socket)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {socket:?} is neither an absolute path nor @abstract"),
            ))
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification datagram was truncated",
        ));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sender: &UnixDatagram, name: &str, bytes: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;

    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    sender.send_to_addr(bytes, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sender: &UnixDatagram, _name: &str, _bytes: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET addresses exist only on Linux",
    ))
}

/// One `STATUS=` value: a single line, as systemd shows only that.
pub fn status_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(receiver: &UnixDatagram) -> String {
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buffer = [0u8; 512];
        let len = receiver.recv(&mut buffer).expect("a datagram arrives");
        String::from_utf8(buffer[..len].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\nSTATUS=ok").unwrap();
        assert_eq!(receive(&receiver), "READY=1\nSTATUS=ok");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;

        let name = format!("wxbroker-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "STOPPING=1").unwrap();
        assert_eq!(receive(&receiver), "STOPPING=1");
    }

    #[test]
    fn refuses_a_relative_socket_and_reports_a_missing_one() {
        assert_eq!(
            notify_to("relative/path", "READY=1").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        assert!(notify_to(missing.to_str().unwrap(), "READY=1").is_err());
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_line("a\nb\tc"), "a b c");
    }
}
