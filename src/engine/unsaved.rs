//! A record the store has not taken yet. The daily count in memory is the
//! authority, so it never undercounts; the store holds its copy for the
//! next start. When a save fails (a full disk), the copy is brought up to
//! date at the next opportunity: a retry on a timer, doubling from 1 s to
//! 60 s so a long outage costs one log line a minute, and a last try when
//! the credential's writer stops.

use std::time::Duration;

use tokio::time::Instant;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// When the record should be saved again, if the store lags memory.
#[derive(Debug, Default)]
pub struct Unsaved {
    due: Option<Instant>,
    failures: u32,
}

impl Unsaved {
    /// The store holds what memory holds.
    pub fn saved(&mut self) {
        self.due = None;
        self.failures = 0;
    }

    /// A save failed; returns the wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let wait = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        self.due = Some(Instant::now() + wait);
        wait
    }

    /// Memory holds something the store may not have (a count carried
    /// over by a reload): save at the first chance.
    pub fn save_now(&mut self) {
        self.due = Some(Instant::now());
    }

    pub fn pending(&self) -> bool {
        self.due.is_some()
    }

    /// Resolves when the next save is due; never while nothing is unsaved.
    pub async fn due(&self) {
        match self.due {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_to_a_minute_and_a_save_clears_them() {
        let mut unsaved = Unsaved::default();
        assert!(!unsaved.pending());
        let waits: Vec<u64> = (0..9).map(|_| unsaved.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(unsaved.pending());
        unsaved.saved();
        assert!(!unsaved.pending());
        assert_eq!(unsaved.failed(), FIRST_RETRY);
    }
}
