//! Counter families a busy path counts into with the same labels again
//! and again (a forwarded call: one app, one client, `ok`). Looking a
//! counter up hashes its label values and takes the family's lock; a
//! thread keeps the counter it used last in each family instead, and
//! looks it up only when the labels change. Counts are the family's own:
//! the kept counter is the one the family exports.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntCounter, IntCounterVec};

/// Families a thread keeps a counter of; a process has two busy ones.
const KEPT_PER_THREAD: usize = 8;

/// A counter family with a kept counter per thread.
#[derive(Clone)]
pub struct KeptCounterVec {
    family: IntCounterVec,
    /// Never reused, so a kept counter is known to be this family's (a
    /// test process holds several daemons' families).
    id: u64,
}

/// A thread's last counter of one family.
struct Kept {
    family: u64,
    labels: Vec<String>,
    counter: IntCounter,
}

impl KeptCounterVec {
    pub fn new(family: IntCounterVec) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        KeptCounterVec {
            family,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The family, to register or read.
    pub fn family(&self) -> &IntCounterVec {
        &self.family
    }

    /// Adds one to the counter of `labels`.
    pub fn inc(&self, labels: &[&str]) {
        thread_local! {
            static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
        }
        KEPT.with_borrow_mut(|kept| {
            let slot = kept.iter().position(|slot| slot.family == self.id);
            if let Some(slot) = slot.map(|at| &kept[at]) {
                if slot
                    .labels
                    .iter()
                    .map(String::as_str)
                    .eq(labels.iter().copied())
                {
                    slot.counter.inc();
                    return;
                }
            }
            let counter = self.family.with_label_values(labels);
            counter.inc();
            let fresh = Kept {
                family: self.id,
                labels: labels.iter().map(|label| (*label).to_owned()).collect(),
                counter,
            };
            match slot {
                Some(at) => kept[at] = fresh,
                None if kept.len() < KEPT_PER_THREAD => kept.push(fresh),
                // More families than a thread keeps: one makes way.
                None => kept[self.id as usize % KEPT_PER_THREAD] = fresh,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    fn family() -> KeptCounterVec {
        KeptCounterVec::new(IntCounterVec::new(Opts::new("t", "t"), &["a", "b"]).unwrap())
    }

    #[test]
    fn every_count_lands_on_its_labels_whatever_was_kept() {
        let families: Vec<_> = (0..KEPT_PER_THREAD + 3).map(|_| family()).collect();
        let labels = [
            ["x", "ok"],
            ["x", "ok"],
            ["y", "ok"],
            ["x", "err"],
            ["x", "ok"],
        ];
        for round in 0..3 {
            for (at, family) in families.iter().enumerate() {
                for labels in labels.iter().skip(at % 2) {
                    family.inc(labels);
                }
            }
            for (at, family) in families.iter().enumerate() {
                let count = |labels: [&str; 2]| family.family().with_label_values(&labels).get();
                let rounds = round + 1;
                let ok_x = if at % 2 == 0 { 3 } else { 2 };
                assert_eq!(count(["x", "ok"]), ok_x * rounds, "family {at}");
                assert_eq!(count(["y", "ok"]), rounds, "family {at}");
                assert_eq!(count(["x", "err"]), rounds, "family {at}");
            }
        }
    }
}
