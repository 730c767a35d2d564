//! Exponential backoff with full jitter for transient upstream failures:
//! the ceiling doubles from 1 s to 60 s, and each wait is drawn uniformly
//! below it, so a fleet that failed together does not retry together.

use std::time::Duration;

use rand::Rng;

const BASE: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The upper bound of the next wait.
    pub fn ceiling(&self) -> Duration {
        BASE.saturating_mul(1u32 << self.failures.min(16)).min(CAP)
    }

    /// The wait before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }

    /// The wait before the next attempt when upstream answered but the
    /// answer cannot pace the refresher itself: the ceiling, unjittered, so
    /// it never drops below 1 s. Counts one more failure, like
    /// [`Backoff::next_delay`].
    pub fn next_pace(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling
    }

    /// Whether no failure is counted since the last reset.
    pub fn is_reset(&self) -> bool {
        self.failures == 0
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_the_cap_and_delays_stay_below_it() {
        let mut backoff = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            let ceiling = backoff.ceiling();
            assert!(backoff.next_delay() <= ceiling);
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), BASE);
    }

    #[test]
    fn pace_doubles_from_one_second_without_jitter() {
        let mut backoff = Backoff::default();
        let paces: Vec<u64> = (0..8).map(|_| backoff.next_pace().as_secs()).collect();
        assert_eq!(paces, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
