//! The process's file-descriptor budget. Every connection costs a
//! descriptor, and a proxied request a second one upstream; when they run
//! out, accept fails on every listener alike, the operations listener
//! included, and `/livez` goes dark while the process is healthy. So at
//! start the soft `RLIMIT_NOFILE` is raised to the hard limit, and the
//! token API's connections are capped to what the limit leaves after a
//! reserve for the operations listener, state writes, the store and the
//! refreshers' upstream connections; when the listeners' budgets do not
//! all fit, each gets its share.

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

/// How many connections each listener may hold open at once: the
/// `configured` budgets (one per listener), lowered in proportion when
/// the open-file limit `soft` cannot hold them all besides `ops`
/// operations connections and the [`RESERVE`]. Never below 1 each: a
/// listener that serves one client at a time beats one that serves none.
pub fn share(configured: &[usize], ops: usize, soft: Option<u64>) -> Vec<usize> {
    let Some(soft) = soft else {
        return configured.to_vec();
    };
    let available = soft.saturating_sub(RESERVE + ops as u64) / PER_CONNECTION;
    let wanted: u64 = configured.iter().map(|&n| n as u64).sum();
    if wanted <= available {
        return configured.to_vec();
    }
    configured
        .iter()
        .map(|&n| {
            let fair = (n as u128 * available as u128 / wanted.max(1) as u128) as usize;
            fair.clamp(1, n.max(1))
        })
        .collect()
}

/// [`share`] against the limit in force for the `configured` budgets,
/// by listener; warns when it lowers any.
pub fn fit_budgets(configured: &[(&'static str, usize)], ops: usize) -> Vec<usize> {
    let soft = soft_limit();
    let wanted: Vec<usize> = configured.iter().map(|(_, n)| *n).collect();
    let fitted = share(&wanted, ops, soft);
    if fitted != wanted {
        let budgets: Vec<String> = configured
            .iter()
            .zip(&fitted)
            .map(|((listener, wanted), got)| format!("{listener} {got} of {wanted}"))
            .collect();
        warn!(
            open_file_limit = soft,
            budgets = %budgets.join(", "),
            "max_connections exceeds what the open-file limit allows \
             ({PER_CONNECTION} per connection, {ops} for the operations listener, \
             {RESERVE} in reserve); raise the limit (LimitNOFILE=) or lower max_connections"
        );
    }
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_limit_after_the_reserve() {
        // 256 - 64 reserve - 64 ops = 128 descriptors, two a connection.
        assert_eq!(share(&[1024], 64, Some(256)), [64]);
        assert_eq!(share(&[20], 64, Some(256)), [20]);
        assert_eq!(share(&[1024], 64, None), [1024]);
        assert_eq!(share(&[1024], 64, Some(100)), [1]);
        assert_eq!(share(&[1024], 64, Some(1 << 20)), [1024]);
    }

    #[test]
    fn listeners_share_what_the_limit_leaves_in_proportion() {
        // 64 connections to share among 1024 + 1024 + 256 wanted.
        assert_eq!(share(&[1024, 1024, 256], 64, Some(256)), [28, 28, 7]);
        // Enough for all: each keeps its own.
        assert_eq!(share(&[20, 20, 8], 64, Some(256)), [20, 20, 8]);
        // Never below one each, whatever the limit.
        assert_eq!(share(&[1024, 1], 64, Some(100)), [1, 1]);
    }
}
