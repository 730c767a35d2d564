//! When a child is refreshed: its due time inside the refresh window,
//! spread by a jitter every broker of a fleet agrees on, and the pacing
//! of tokens upstream grants too short a life (DESIGN.md section 17).

use std::time::Duration;

use tracing::{error, info};

use crate::children::table::ChildToken;
use crate::engine::backoff::Backoff;
use crate::engine::schedule::{self, Renewal};

/// When a child token fetched at `fetched_ms`, dying at `expires_ms`, is
/// refreshed: when the engine would refresh an access token
/// (`refresh_before` ahead, never in the first half of its life), moved
/// earlier by a random part of a quarter of its life so that tokens
/// fetched together are not all refreshed together.
pub fn due_ms(refresh_before: Duration, fetched_ms: u64, expires_ms: u64, jitter: f64) -> u64 {
    let lifetime = expires_ms.saturating_sub(fetched_ms);
    let latest = schedule::due_ms(Renewal::Ahead, refresh_before, fetched_ms, expires_ms);
    let spread = (lifetime / 4).min(latest.saturating_sub(fetched_ms + lifetime / 2));
    latest.saturating_sub((spread as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// A fraction in [0, 1) that spreads refresh moments: a hash of the
/// child and its token's fetch time, not a random draw, so every broker
/// of a fleet holding the same token picks the same moment. One of them
/// then refreshes; the others find the lock taken, and adopt the new
/// token from the shared store seconds later instead of serving the
/// replaced one until their own, later moment.
pub fn jitter(id: &str, fetched_ms: u64) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(id.as_bytes())
        .chain_update(fetched_ms.to_be_bytes())
        .finalize();
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// DESIGN.md section 17 for children: a token living no longer than
/// `refresh_before` is served while it lives, but its child's next fetch
/// is paced by the error backoff (1 s doubling to 60 s), never by the
/// lifetime. The anomaly is logged once per parent, when the first child
/// meets it, and its end once, when the last is past it: ten thousand
/// children given short tokens make two lines, not one each.
pub(super) struct ShortLifetimes {
    kind: &'static str,
    refresh_before: Duration,
    /// Children whose latest token was short-lived.
    children: usize,
}

impl ShortLifetimes {
    pub(super) fn new(kind: &'static str, refresh_before: Duration) -> Self {
        ShortLifetimes {
            kind,
            refresh_before,
            children: 0,
        }
    }

    /// When the child holding `token` (just adopted, due at `due`) is
    /// fetched next; `pace` is its own backoff.
    pub(super) fn pace(
        &mut self,
        id: &str,
        pace: &mut Backoff,
        token: &ChildToken,
        now_ms: u64,
        due: u64,
    ) -> u64 {
        let lifetime =
            Duration::from_millis(token.expires_at_ms.saturating_sub(token.fetched_at_ms));
        if !schedule::is_short_lifetime(lifetime, self.refresh_before) {
            self.forget(pace);
            pace.reset();
            return due;
        }
        let first = pace.is_reset();
        let wait = pace.next_pace();
        if first {
            self.children += 1;
            if self.children == 1 {
                error!(
                    first = id,
                    lifetime = ?lifetime, refresh_before = ?self.refresh_before,
                    "upstream granted a {} token a lifetime no longer than refresh_before; serving such tokens while they live, pacing their next fetches by the error backoff",
                    self.kind
                );
            }
        }
        schedule::paced_due_ms(due, now_ms, wait)
    }

    /// A child past the anomaly, or gone.
    pub(super) fn forget(&mut self, pace: &Backoff) {
        if !pace.is_reset() {
            self.children = self.children.saturating_sub(1);
            if self.children == 0 {
                info!(
                    "{} token lifetimes are longer than refresh_before again",
                    self.kind
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::AccessToken;

    #[test]
    fn due_times_spread_inside_the_window_and_never_early() {
        let before = Duration::from_secs(300);
        let (fetched, expires) = (0, 7_200_000);
        assert_eq!(due_ms(before, fetched, expires, 0.0), 6_900_000);
        assert_eq!(due_ms(before, fetched, expires, 1.0), 6_900_000 - 1_800_000);
        let mid = due_ms(before, fetched, expires, 0.5);
        assert!(mid > 5_100_000 && mid < 6_900_000);
        // A short lifetime never refreshes in its first half.
        assert!(due_ms(before, 0, 400_000, 1.0) >= 200_000);
    }

    #[test]
    fn jitter_is_the_same_on_every_broker_and_spreads() {
        assert_eq!(jitter("wxa", 1_000), jitter("wxa", 1_000));
        let values: Vec<f64> = (0..1000).map(|i| jitter(&format!("wx{i}"), 7)).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below a half");
    }

    #[test]
    fn short_lifetimes_are_paced_and_counted_once_per_child() {
        let mut short = ShortLifetimes {
            kind: "authorizer",
            refresh_before: Duration::from_secs(8),
            children: 0,
        };
        let token = |fetched_at_ms, lifetime_ms| ChildToken {
            value: AccessToken::new("at"),
            expires_at_ms: fetched_at_ms + lifetime_ms,
            fetched_at_ms,
        };
        let (mut a, mut b) = (Backoff::default(), Backoff::default());
        // A 2 s token is due after 1 s by its lifetime; the pace decides.
        assert_eq!(short.pace("a", &mut a, &token(0, 2_000), 0, 1_000), 1_000);
        assert_eq!(
            short.pace("a", &mut a, &token(1_000, 2_000), 1_000, 2_000),
            3_000
        );
        assert_eq!(
            short.pace("a", &mut a, &token(3_000, 2_000), 3_000, 4_000),
            7_000
        );
        assert_eq!(short.pace("b", &mut b, &token(0, 2_000), 0, 1_000), 1_000);
        assert_eq!(short.children, 2, "each child counted once");
        // A normal lifetime ends the anomaly for its child.
        let normal = token(10_000, 7_200_000);
        assert_eq!(
            short.pace("a", &mut a, &normal, 10_000, 5_000_000),
            5_000_000
        );
        assert!(a.is_reset());
        assert_eq!(short.children, 1);
        short.forget(&b);
        assert_eq!(short.children, 0);
    }
}
