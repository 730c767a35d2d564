//! Daily call quotas, per app and per counter, reset at Beijing midnight
//! (UTC+8) as WeChat's are.

use std::collections::HashMap;

/// The independent daily counters WeChat keeps per app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Counter {
    /// `/cgi-bin/token` fetches (the famous 2000 a day).
    Classic,
    /// All `stable_token` calls (500,000 a day).
    Stable,
    /// `stable_token` calls with `force_refresh: true` (20 a day).
    StableForce,
    /// WeCom `gettoken` fetches.
    Wecom,
}

/// `clear_quota` resets allowed per account per calendar month, the
/// web console's resets included.
pub(crate) const RESETS_PER_MONTH: u32 = 10;

#[derive(Debug, Default)]
pub(crate) struct Quotas {
    /// (appid, counter) -> (Beijing day, uses that day)
    used: HashMap<(String, Counter), (u64, u32)>,
    /// appid -> (Beijing month as `YYYYMM`, resets that month)
    resets: HashMap<String, (u32, u32)>,
}

impl Quotas {
    /// Uses today so far.
    pub(crate) fn used(&self, appid: &str, counter: Counter, day: u64) -> u32 {
        match self.used.get(&(appid.to_owned(), counter)) {
            Some(&(d, n)) if d == day => n,
            _ => 0,
        }
    }

    /// Whether one more use fits under `limit` today.
    pub(crate) fn has_room(&self, appid: &str, counter: Counter, day: u64, limit: u32) -> bool {
        self.used(appid, counter, day) < limit
    }

    /// Forgets every daily count of `appid`, if a reset is left this
    /// `month`: what `clear_quota` does. Returns the resets used this
    /// month, or `None` when none is left.
    pub(crate) fn clear(&mut self, appid: &str, month: u32) -> Option<u32> {
        let resets = self.resets.entry(appid.to_owned()).or_insert((month, 0));
        if resets.0 != month {
            *resets = (month, 0);
        }
        if resets.1 >= RESETS_PER_MONTH {
            return None;
        }
        resets.1 += 1;
        let used = resets.1;
        self.used.retain(|(owner, _), _| owner != appid);
        Some(used)
    }

    /// `clear_quota` resets `appid` used in `month`.
    pub(crate) fn resets(&self, appid: &str, month: u32) -> u32 {
        match self.resets.get(appid) {
            Some(&(m, n)) if m == month => n,
            _ => 0,
        }
    }

    pub(crate) fn take(&mut self, appid: &str, counter: Counter, day: u64) {
        let entry = self
            .used
            .entry((appid.to_owned(), counter))
            .or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reset_on_a_new_day() {
        let mut q = Quotas::default();
        q.take("a", Counter::Classic, 1);
        q.take("a", Counter::Classic, 1);
        assert!(!q.has_room("a", Counter::Classic, 1, 2));
        assert!(q.has_room("a", Counter::Stable, 1, 2));
        assert!(q.has_room("a", Counter::Classic, 2, 2));
        q.take("a", Counter::Classic, 2);
        assert_eq!(q.used("a", Counter::Classic, 2), 1);
    }

    #[test]
    fn ten_resets_a_month_then_none_until_the_next() {
        let mut q = Quotas::default();
        q.take("a", Counter::Classic, 1);
        q.take("b", Counter::Classic, 1);
        assert_eq!(q.clear("a", 202611), Some(1));
        assert_eq!(q.used("a", Counter::Classic, 1), 0);
        assert_eq!(
            q.used("b", Counter::Classic, 1),
            1,
            "another account keeps its count"
        );
        for n in 2..=RESETS_PER_MONTH {
            assert_eq!(q.clear("a", 202611), Some(n));
        }
        q.take("a", Counter::Classic, 1);
        assert_eq!(q.clear("a", 202611), None);
        assert_eq!(
            q.used("a", Counter::Classic, 1),
            1,
            "a refused reset clears nothing"
        );
        assert_eq!(q.resets("a", 202611), RESETS_PER_MONTH);
        assert_eq!(q.clear("a", 202612), Some(1));
    }
}
