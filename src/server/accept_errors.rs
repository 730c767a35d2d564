//! How often a listener reports failed accepts. When file descriptors run
//! out every accept fails, and a line for each would bury the log (and
//! cost a write each) while nothing changes; one line per interval, with
//! how many were left out, says the same.

use std::time::Duration;

use tokio::time::Instant;

/// Decides which accept failures get a log line.
#[derive(Debug)]
pub struct AcceptErrors {
    interval: Duration,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    pub fn new(interval: Duration) -> Self {
        AcceptErrors {
            interval,
            last_logged: None,
            suppressed: 0,
        }
    }

    /// Counts a failure at `now`; `Some(n)` when it should be logged, `n`
    /// being the failures left out since the last line.
    pub fn record(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        if !due {
            self.suppressed += 1;
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let start = Instant::now();
        let mut errors = AcceptErrors::new(Duration::from_secs(10));
        assert_eq!(errors.record(start), Some(0));
        let logged: Vec<_> = (1..=250)
            .filter_map(|i| errors.record(start + Duration::from_millis(100) * i))
            .collect();
        // At 10 s and 20 s, each after the 99 failures in between.
        assert_eq!(logged, vec![99, 99]);
        assert_eq!(errors.record(start + Duration::from_secs(60)), Some(50));
    }
}
