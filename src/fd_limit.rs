//! The process's file-descriptor budget. Every connection costs a
//! descriptor, and a proxied request a second one upstream; when they run
//! out, accept fails on every listener alike, the operations listener
//! included, and `/livez` goes dark while the process is healthy. So at
//! start the soft `RLIMIT_NOFILE` is raised to the hard limit, and the
//! token API's connections are capped to what the limit leaves after a
//! reserve for the operations listener, state writes, the store and the
//! refreshers' upstream connections.

use tracing::{info, warn};

/// Descriptors kept for what is not a client connection: the listeners,
/// stdio, state files and their temporary copies, Redis, the refreshers'
/// upstream connections, sinks.
pub const RESERVE: u64 = 64;

/// Descriptors one token API connection may hold: its socket, and the
/// upstream connection of a request it has the proxy forward.
pub const PER_CONNECTION: u64 = 2;

/// What to ask for when the hard limit is "unlimited", which Linux refuses
/// for `RLIMIT_NOFILE` (the kernel's `nr_open` default).
const UNLIMITED_STANDIN: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard one and logs what changed;
/// on failure it logs why and leaves the limit as it is. Called once, by
/// the binary, before anything is opened.
pub fn raise() {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    if soft >= hard {
        return;
    }
    let wanted = hard.min(UNLIMITED_STANDIN);
    match rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, hard) {
        Ok(()) => info!(from = soft, to = wanted, "raised the open-file limit"),
        Err(err) => warn!(
            soft,
            hard,
            error = %err,
            "could not raise the open-file limit"
        ),
    }
}

/// The soft open-file limit in force, `None` when it is unlimited or
/// cannot be read.
pub fn soft_limit() -> Option<u64> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    (soft != rlimit::INFINITY).then_some(soft)
}

/// How many token API connections may be open at once: `configured`
/// (`max_connections`, shared by the API listeners), lowered when the
/// open-file limit `soft` cannot hold them besides `ops` operations
/// connections and the [`RESERVE`]. Never below 1: a daemon that serves
/// one client at a time beats one that serves none.
pub fn connection_cap(configured: usize, ops: usize, soft: Option<u64>) -> usize {
    let Some(soft) = soft else {
        return configured;
    };
    let available = soft.saturating_sub(RESERVE + ops as u64) / PER_CONNECTION;
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    configured.min(available).max(1)
}

/// [`connection_cap`] against the limit in force, warning when it lowers
/// `configured`.
pub fn cap_connections(configured: usize, ops: usize) -> usize {
    let soft = soft_limit();
    let cap = connection_cap(configured, ops, soft);
    if cap < configured {
        warn!(
            max_connections = configured,
            open_file_limit = soft,
            serving_at_most = cap,
            "max_connections exceeds what the open-file limit allows \
             ({PER_CONNECTION} per connection, {ops} for the operations listener, \
             {RESERVE} in reserve); raise the limit (LimitNOFILE=) or lower max_connections"
        );
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_limit_after_the_reserve() {
        // 256 - 64 reserve - 64 ops = 128 descriptors, two a connection.
        assert_eq!(connection_cap(1024, 64, Some(256)), 64);
        assert_eq!(connection_cap(20, 64, Some(256)), 20);
        assert_eq!(connection_cap(1024, 64, None), 1024);
        assert_eq!(connection_cap(1024, 64, Some(100)), 1);
        assert_eq!(connection_cap(1024, 64, Some(1 << 20)), 1024);
    }
}
