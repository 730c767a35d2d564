//! The daily budget: upstream token calls counted per Beijing day (when
//! WeChat's own quota resets), capped at the credential's daily budget
//! (its spec's `daily_budget`).

use crate::clock::beijing_day;

#[derive(Debug, Clone)]
pub struct DailyBudget {
    limit: u32,
    day: u32,
    used: u32,
}

impl DailyBudget {
    pub fn new(limit: u32, now_secs: u64) -> Self {
        DailyBudget {
            limit,
            day: beijing_day(now_secs),
            used: 0,
        }
    }

    /// Takes over a count persisted earlier, if it is for today.
    pub fn restore(&mut self, day: u32, used: u32) {
        if day == self.day {
            self.used = used;
        }
    }

    /// Takes over a count kept elsewhere (the store, or the credential's
    /// previous settings on a reload) if it is for today, never lowering
    /// this one: a copy that lags memory must not undercount the day.
    pub fn at_least(&mut self, day: u32, used: u32) {
        if day == self.day {
            self.used = self.used.max(used);
        }
    }

    /// Starts a new count when the Beijing day has changed.
    pub fn roll(&mut self, now_secs: u64) {
        let today = beijing_day(now_secs);
        if today != self.day {
            self.day = today;
            self.used = 0;
        }
    }

    /// Counts one upstream call, or refuses it when the day's budget is spent.
    pub fn try_spend(&mut self, now_secs: u64) -> bool {
        self.roll(now_secs);
        if self.used >= self.limit {
            return false;
        }
        self.used += 1;
        true
    }

    pub fn used(&self) -> u32 {
        self.used
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn day(&self) -> u32 {
        self.day
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::next_beijing_midnight;

    #[test]
    fn refuses_past_the_limit_until_the_next_beijing_day() {
        let now = 1_763_990_000;
        let mut budget = DailyBudget::new(2, now);
        assert!(budget.try_spend(now));
        assert!(budget.try_spend(now));
        assert!(!budget.try_spend(now + 1));
        assert_eq!(budget.used(), 2);
        let midnight = next_beijing_midnight(now);
        assert!(!budget.try_spend(midnight - 1));
        assert!(budget.try_spend(midnight));
        assert_eq!(budget.used(), 1);
    }

    #[test]
    fn restores_only_todays_count() {
        let now = 1_763_990_000;
        let mut budget = DailyBudget::new(10, now);
        budget.restore(beijing_day(now) - 1, 9);
        assert_eq!(budget.used(), 0);
        budget.restore(beijing_day(now), 9);
        assert_eq!(budget.used(), 9);
    }

    #[test]
    fn at_least_never_lowers_the_count() {
        let now = 1_763_990_000;
        let mut budget = DailyBudget::new(10, now);
        budget.at_least(beijing_day(now), 3);
        assert_eq!(budget.used(), 3);
        budget.at_least(beijing_day(now), 2);
        assert_eq!(budget.used(), 3, "a lagging copy does not undercount");
        budget.at_least(beijing_day(now) - 1, 9);
        assert_eq!(budget.used(), 3, "yesterday's count is not today's");
    }
}
