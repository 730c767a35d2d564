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

#[derive(Debug, Default)]
pub(crate) struct Quotas {
    /// (appid, counter) -> (Beijing day, uses that day)
    used: HashMap<(String, Counter), (u64, u32)>,
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
}
