//! Wall-clock time as the broker sees it: unix seconds derived from tokio's
//! monotonic clock, so a paused test clock moves token expiry too, and a
//! system clock step cannot make a token look older or younger than it is.
//! Also the Beijing day (UTC+8), which is when WeChat's quotas reset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A point of reference between tokio's clock and unix time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_instant: Instant,
    base_unix: Duration,
}

impl Clock {
    pub fn new() -> Self {
        Self::starting_at(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// A clock that reads `unix` now; for tests that need a given date.
    pub fn starting_at(unix: Duration) -> Self {
        Clock {
            base_instant: Instant::now(),
            base_unix: unix,
        }
    }

    pub fn now(&self) -> Duration {
        self.base_unix + self.base_instant.elapsed()
    }

    pub fn now_secs(&self) -> u64 {
        self.now().as_secs()
    }

    pub fn now_ms(&self) -> u64 {
        self.now().as_millis() as u64
    }

    /// The tokio instant at which the clock reads `unix_ms`.
    pub fn instant_at_ms(&self, unix_ms: u64) -> Instant {
        let target = Duration::from_millis(unix_ms);
        match target.checked_sub(self.base_unix) {
            Some(offset) => self.base_instant + offset,
            None => self.base_instant,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

const BEIJING_OFFSET: u64 = 8 * 3600;
const DAY: u64 = 86_400;

/// The Beijing calendar day containing `unix_secs`, as `YYYYMMDD`.
pub fn beijing_day(unix_secs: u64) -> u32 {
    let days = (unix_secs + BEIJING_OFFSET) / DAY;
    let (year, month, day) = civil_from_days(days as i64);
    (year as u32) * 10_000 + month * 100 + day
}

/// The unix second at which the next Beijing day starts.
pub fn next_beijing_midnight(unix_secs: u64) -> u64 {
    ((unix_secs + BEIJING_OFFSET) / DAY + 1) * DAY - BEIJING_OFFSET
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), so no calendar crate is needed for one conversion.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_day_rolls_over_at_16_utc() {
        // 2025-11-24T15:59:59Z is 23:59:59 in Beijing; one second later is the 25th.
        let before = 1_763_999_999;
        assert_eq!(beijing_day(before), 20251124);
        assert_eq!(beijing_day(before + 1), 20251125);
        assert_eq!(next_beijing_midnight(before), before + 1);
        assert_eq!(next_beijing_midnight(before + 1), before + 1 + DAY);
    }

    #[test]
    fn civil_dates_around_leap_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn clock_follows_tokio_time() {
        let clock = Clock::starting_at(Duration::from_secs(1_000));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now_secs(), 1_005);
        assert_eq!(clock.now_ms(), 1_005_000);
        assert_eq!(
            clock.instant_at_ms(1_010_000),
            Instant::now() + Duration::from_secs(5)
        );
    }
}
