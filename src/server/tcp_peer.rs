//! Who is at the other end of a loopback TCP connection, found the way
//! identd finds it: the client's socket is the one in the kernel's TCP
//! tables (`/proc/net/tcp`, `/proc/net/tcp6`) whose local address is our
//! peer's and whose remote address is ours, and the table names the uid
//! that created it. The group is that uid's primary group in the passwd
//! database (`/etc/passwd`): unlike SO_PEERCRED on the Unix socket, the
//! table tells no gid.
//!
//! Only a loopback peer is looked up: a peer on another address may be
//! another host, whose sockets no table here holds. A socket no process
//! holds any more (its inode is 0: TIME_WAIT, or closed by its owner after
//! sending) is not trusted either, since the kernel shows such sockets as
//! uid 0. Either way the peer is unidentified, and a caller that asks
//! [`crate::identity::Clients::local`] with `None` gets nothing.
//!
//! The lookup runs once per connection, at its first request that needs
//! it, on the blocking pool (a busy host's tables are megabytes), with
//! every read bounded.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use arc_swap::ArcSwap;
use http::Request;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use crate::http_io::RequestBody;
use crate::identity::{Clients, Peer};

/// The kernel's TCP tables, IPv4 then IPv6.
const TCP4_TABLE: &str = "/proc/net/tcp";
const TCP6_TABLE: &str = "/proc/net/tcp6";
const PASSWD: &str = "/etc/passwd";
/// How much of a table is read at most: about 200,000 sockets.
const MAX_TABLE_BYTES: u64 = 32 * 1024 * 1024;
/// How much of the passwd database is read at most.
const MAX_PASSWD_BYTES: u64 = 16 * 1024 * 1024;
/// The longest line looked at; the tables' lines are about 150 bytes.
const MAX_LINE_BYTES: usize = 4096;
/// The gid of a uid the passwd database does not know: `(gid_t)-1`, which
/// no `[[clients]] gid` can be, so no group entry matches it.
pub const NO_GROUP: u32 = u32::MAX;

/// One accepted TCP connection's two ends, and who the peer turned out
/// to be once asked.
#[derive(Debug)]
pub struct TcpOrigin {
    /// Our end: the address the client connected to.
    local: SocketAddr,
    /// The client's end.
    peer: SocketAddr,
    resolved: OnceCell<Option<Peer>>,
}

impl TcpOrigin {
    /// The two ends of `stream`, when the kernel tells them.
    pub fn of(stream: &TcpStream) -> Option<TcpOrigin> {
        Some(TcpOrigin::new(
            stream.local_addr().ok()?,
            stream.peer_addr().ok()?,
        ))
    }

    pub fn new(local: SocketAddr, peer: SocketAddr) -> TcpOrigin {
        TcpOrigin {
            local,
            peer,
            resolved: OnceCell::new(),
        }
    }

    /// Who the peer is: looked up the first time, off the async threads,
    /// and kept for the connection's life (a socket's owner never changes).
    pub async fn peer(&self) -> Option<Peer> {
        let (local, peer) = (self.local, self.peer);
        *self
            .resolved
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || identify(peer, local))
                    .await
                    .unwrap_or(None)
            })
            .await
    }
}

/// Puts the peer of a TCP connection in `request`'s extensions, as the
/// Unix listener does with SO_PEERCRED's, when uid or gid clients limit
/// local callers: only then is it looked up. Left out when it cannot be
/// identified, so the request gets what an unknown peer gets: nothing.
pub async fn identify_request(
    clients: &ArcSwap<Clients>,
    origin: Option<&TcpOrigin>,
    request: &mut Request<RequestBody>,
) {
    let Some(origin) = origin else {
        return;
    };
    if !clients.load().limits_local() {
        return;
    }
    if let Some(peer) = origin.peer().await {
        request.extensions_mut().insert(peer);
    }
}

/// The local user who owns the socket at `client` connected to `server`,
/// with that user's primary group; `None` when the peer is not on
/// loopback or no live socket of the tables matches.
pub fn identify(client: SocketAddr, server: SocketAddr) -> Option<Peer> {
    let uid = socket_owner(client, server, Path::new(TCP4_TABLE), Path::new(TCP6_TABLE))?;
    let gid = if uid == 0 {
        0
    } else {
        primary_group(Path::new(PASSWD), uid).unwrap_or(NO_GROUP)
    };
    Some(Peer { uid, gid })
}

/// [`identify`]'s table lookup, the tables' paths given.
fn socket_owner(client: SocketAddr, server: SocketAddr, tcp4: &Path, tcp6: &Path) -> Option<u32> {
    let client = canonical(client);
    let server = canonical(server);
    if !client.ip().is_loopback() || !server.ip().is_loopback() {
        return None;
    }
    // An IPv4 client may hold an IPv6 socket connected to a mapped
    // address (a dual-stack client), so both tables are searched for it.
    let tables: &[&Path] = match client {
        SocketAddr::V4(_) => &[tcp4, tcp6],
        SocketAddr::V6(_) => &[tcp6],
    };
    tables.iter().find_map(|table| {
        let file = File::open(table).ok()?;
        find_owner(BufReader::new(file.take(MAX_TABLE_BYTES)), client, server)
    })
}

/// The uid of the live socket whose local end is `client` and whose
/// remote end is `server`, in a table read from `table`.
fn find_owner(mut table: impl BufRead, client: SocketAddr, server: SocketAddr) -> Option<u32> {
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let read = (&mut table)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
            .ok()?;
        if read == 0 {
            return None;
        }
        if line.last() != Some(&b'\n') && read == MAX_LINE_BYTES {
            // Not a table line: skip the rest of it.
            table.skip_until(b'\n').ok()?;
            continue;
        }
        let Some(entry) = std::str::from_utf8(&line).ok().and_then(Entry::parse) else {
            continue;
        };
        if canonical(entry.local) == client && canonical(entry.remote) == server {
            // The 4-tuple is unique while our end is open: this is the
            // client's socket, trusted only while a process holds it.
            return (entry.inode != 0).then_some(entry.uid);
        }
    }
}

/// The fields of one table line that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    local: SocketAddr,
    remote: SocketAddr,
    uid: u32,
    inode: u64,
}

impl Entry {
    /// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`;
    /// `None` for the header line and anything malformed.
    fn parse(line: &str) -> Option<Entry> {
        let mut fields = line.split_ascii_whitespace();
        fields.next()?.strip_suffix(':')?;
        let local = endpoint(fields.next()?)?;
        let remote = endpoint(fields.next()?)?;
        let mut rest = fields.skip(4);
        let uid = rest.next()?.parse().ok()?;
        let inode = rest.nth(1)?.parse().ok()?;
        Some(Entry {
            local,
            remote,
            uid,
            inode,
        })
    }
}

/// `ADDR:PORT` as the tables print it: the address as the 32-bit words
/// the kernel holds in network order, each printed as a native-endian
/// number (8 hex digits for IPv4, 32 for IPv6), the port in plain hex.
fn endpoint(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut octets = [0u8; 16];
    let words = address.len() / 8;
    if address.len() % 8 != 0 || !matches!(words, 1 | 4) {
        return None;
    }
    for (word, out) in address.as_bytes().chunks(8).zip(octets.chunks_mut(4)) {
        let word = std::str::from_utf8(word).ok()?;
        let value = u32::from_str_radix(word, 16).ok()?;
        out.copy_from_slice(&value.to_ne_bytes());
    }
    let ip = if words == 1 {
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Some(SocketAddr::new(ip, port))
}

/// `address` with an IPv4-mapped IPv6 address as the IPv4 one it maps, so
/// either family's spelling of one end compares equal.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// The primary gid of `uid` in a passwd file (`name:pw:uid:gid:...`).
fn primary_group(passwd: &Path, uid: u32) -> Option<u32> {
    let file = File::open(passwd).ok()?;
    let mut lines = BufReader::new(file.take(MAX_PASSWD_BYTES));
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let mut fields = line.split(|b| *b == b':').skip(2);
        let (Some(user), Some(group)) = (fields.next(), fields.next()) else {
            continue;
        };
        let number = |field: &[u8]| std::str::from_utf8(field).ok()?.trim().parse::<u32>().ok();
        if number(user) == Some(uid) {
            return number(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 33333 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 22222 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D432 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   4: 0200007F:D433 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 44444 1 0000000000000000 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:D440 01 00000000:00000000 00:00000000 00000000     0        0 55555 1 0000000000000000 20 4 30 10 -1
   1: 00000000000000000000000001000000:D440 00000000000000000000000001000000:1F91 01 00000000:00000000 00:00000000 00000000  1003        0 66666 1 0000000000000000 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:D441 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1004        0 77777 1 0000000000000000 20 4 30 10 -1
";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn owner(client: &str, server: &str) -> Option<u32> {
        let dir = tempfile::tempdir().unwrap();
        let (tcp4, tcp6) = (dir.path().join("tcp"), dir.path().join("tcp6"));
        std::fs::write(&tcp4, TCP4).unwrap();
        std::fs::write(&tcp6, TCP6).unwrap();
        socket_owner(addr(client), addr(server), &tcp4, &tcp6)
    }

    // The sample tables are printed as a little-endian kernel prints them.
    #[cfg(target_endian = "little")]
    #[test]
    fn the_clients_socket_is_found_by_its_reversed_addresses() {
        // Our own end of the connection (root's, listed first) is not
        // the client's.
        assert_eq!(owner("127.0.0.1:54321", "127.0.0.1:8080"), Some(1001));
        assert_eq!(owner("127.0.0.2:54323", "127.0.0.1:8080"), Some(1002));
        assert_eq!(owner("127.0.0.1:54324", "127.0.0.1:8080"), None);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_and_mapped_addresses_are_found_in_either_table() {
        assert_eq!(owner("[::1]:54336", "[::1]:8081"), Some(1003));
        // A dual-stack client's socket, seen by an IPv6 or IPv4 listener.
        assert_eq!(owner("127.0.0.1:54337", "127.0.0.1:8080"), Some(1004));
        assert_eq!(
            owner("[::ffff:127.0.0.1]:54337", "[::ffff:127.0.0.1]:8080"),
            Some(1004)
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn sockets_no_process_holds_and_other_hosts_are_unidentified() {
        // TIME_WAIT: the kernel prints uid 0 and inode 0.
        assert_eq!(owner("127.0.0.1:54322", "127.0.0.1:8080"), None);
        // Not loopback: never looked up.
        assert_eq!(owner("192.0.2.7:54321", "127.0.0.1:8080"), None);
        assert_eq!(owner("127.0.0.1:54321", "192.0.2.1:8080"), None);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn table_lines_parse() {
        assert_eq!(endpoint("0100007F:1F90"), Some(addr("127.0.0.1:8080")));
        assert_eq!(
            endpoint("00000000000000000000000001000000:0050"),
            Some(addr("[::1]:80"))
        );
        assert_eq!(endpoint("0100007F"), None);
        assert_eq!(endpoint("100007F:1F90"), None);
        assert_eq!(endpoint("0100007G:1F90"), None);
        assert!(Entry::parse("  sl  local_address rem_address   st").is_none());
        assert!(Entry::parse("   1: 0100007F:D431 0100007F:1F90 01").is_none());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn an_overlong_line_is_skipped_not_read_on() {
        let mut table = "x".repeat(MAX_LINE_BYTES * 2);
        table.push('\n');
        table.push_str(TCP4.lines().nth(3).unwrap());
        let found = find_owner(
            table.as_bytes(),
            addr("127.0.0.1:54321"),
            addr("127.0.0.1:8080"),
        );
        assert_eq!(found, Some(1001));
    }

    #[test]
    fn the_primary_group_comes_from_the_passwd_database() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\n# a comment\nbroken\nshop:x:1001:2001::/home/shop:/bin/sh\nnobody:x:65534:65534::/:/usr/sbin/nologin",
        )
        .unwrap();
        assert_eq!(primary_group(&passwd, 1001), Some(2001));
        assert_eq!(primary_group(&passwd, 65534), Some(65534));
        assert_eq!(primary_group(&passwd, 7), None);
        assert_eq!(primary_group(&dir.path().join("missing"), 0), None);
    }

    #[tokio::test]
    async fn a_real_loopback_connection_is_ours() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let origin = TcpOrigin::of(&accepted).unwrap();
        let peer = origin.peer().await.expect("our own socket is in the table");
        assert_eq!(peer.uid, rustix::process::getuid().as_raw());
        // Asked again, the answer is the one kept.
        assert_eq!(origin.peer().await, Some(peer));
        drop(client);
    }
}
