//! A parent's children counted for its gauges, at the moment of a scrape:
//! how many hold a valid token, how many are held and why, and when the
//! first valid token expires. Aggregates only, so ten thousand children
//! make no more series than one.

use super::table::{Hold, Table};

/// The counts of one parent's children at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Children whose token is valid.
    pub valid: u64,
    /// Children with no token, or an expired one.
    pub invalid: u64,
    /// Held children, by [`Hold::REASONS`] in order; a held child is
    /// also counted valid or invalid.
    pub held: [u64; Hold::REASONS.len()],
    /// Unix milliseconds at which the first valid token expires; `None`
    /// while none is valid.
    pub soonest_expiry_ms: Option<u64>,
}

impl Census {
    /// Counts `table`'s children as they are at `now_ms`. Reads only.
    pub fn of(table: &Table, now_ms: u64) -> Census {
        let mut census = Census {
            valid: 0,
            invalid: 0,
            held: [0; Hold::REASONS.len()],
            soonest_expiry_ms: None,
        };
        table.for_each(|slot| {
            match slot.token() {
                Some(token) if token.is_valid(now_ms) => {
                    census.valid += 1;
                    let soonest = census.soonest_expiry_ms.get_or_insert(u64::MAX);
                    *soonest = (*soonest).min(token.expires_at_ms);
                }
                _ => census.invalid += 1,
            }
            if let Some(at) = Hold::REASONS.iter().position(|r| *r == slot.hold()) {
                census.held[at] += 1;
            }
        });
        census
    }

    /// Each hold's `reason` label with its count.
    pub fn held_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Hold::REASONS
            .iter()
            .zip(self.held)
            .map(|(hold, count)| (hold.label(), count))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::children::index::Recent;
    use crate::children::table::{ChildToken, Slot};
    use crate::secret::AccessToken;

    fn child(table: &Table, id: &str, expires_at_ms: Option<u64>, hold: Hold) {
        let slot = Arc::new(Slot::new(id, 1));
        table.insert_many(vec![slot.clone()]);
        if let Some(expires_at_ms) = expires_at_ms {
            let token = Arc::new(ChildToken {
                value: AccessToken::new(format!("token-of-{id}")),
                expires_at_ms,
                fetched_at_ms: 0,
            });
            table.install(&slot, token, &mut Recent::default());
        }
        slot.set_hold(hold);
    }

    #[test]
    fn counts_children_by_state_and_hold_at_the_given_moment() {
        let table = Table::default();
        child(&table, "fresh", Some(5_000), Hold::None);
        child(&table, "soonest", Some(2_000), Hold::Quota);
        child(&table, "expired", Some(900), Hold::Config);
        child(&table, "new", None, Hold::Budget);
        let census = Census::of(&table, 1_000);
        assert_eq!((census.valid, census.invalid), (2, 2));
        assert_eq!(census.soonest_expiry_ms, Some(2_000));
        let held: Vec<_> = census.held_by_reason().collect();
        assert_eq!(held, [("config", 1), ("quota", 1), ("budget", 1)]);

        // The same table later: time alone moves the counts.
        let later = Census::of(&table, 3_000);
        assert_eq!((later.valid, later.invalid), (1, 3));
        assert_eq!(later.soonest_expiry_ms, Some(5_000));
        assert_eq!(Census::of(&table, 5_000).soonest_expiry_ms, None);
    }
}
