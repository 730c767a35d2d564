//! The simulator's clock: tokio's monotonic clock (so a paused test runtime
//! drives it) plus a manual offset that [`advance`](super::Simulator::advance)
//! moves forward, anchored to the wall clock at construction so quota days
//! follow Beijing midnight.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A point on the simulator's timeline: time since the simulator was built,
/// including every manual advance. Token expiries are kept as `SimTime`, so
/// an advance expires tokens exactly as waiting would.
pub(crate) type SimTime = Duration;

/// Seconds in the UTC+8 offset that defines WeChat's quota day.
const BEIJING_OFFSET_SECS: u64 = 8 * 3600;

#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    wall_at_start: Duration,
    offset: Duration,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            start: Instant::now(),
            // A clock before 1970 is a broken host; day 0 is as good as any.
            wall_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            offset: Duration::ZERO,
        }
    }

    pub(crate) fn now(&self) -> SimTime {
        self.start.elapsed() + self.offset
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.offset += by;
    }

    /// Unix seconds on the simulator's wall clock.
    pub(crate) fn unix_secs(&self) -> u64 {
        (self.wall_at_start + self.now()).as_secs()
    }

    /// The Beijing (UTC+8) day number that WeChat's daily quotas reset on.
    pub(crate) fn beijing_day(&self) -> u64 {
        (self.unix_secs() + BEIJING_OFFSET_SECS) / 86_400
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_time_and_day() {
        let mut clock = Clock::new();
        let day = clock.beijing_day();
        let before = clock.now();
        clock.advance(Duration::from_secs(86_400));
        assert!(clock.now() >= before + Duration::from_secs(86_400));
        assert_eq!(clock.beijing_day(), day + 1);
    }
}
