//! `wxbroker_client_requests_total{client}`: requests by their
//! `Wxbroker-Client` name, counted on per-thread shards as every request is, and
//! written as text. The first [`MAX_NAMED`] names get their own series;
//! later names, and the name `other` itself, count as `other`, so a
//! hostile client cannot grow the label set.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::shards::Shards;
use super::text::{Kind, TextFamily};

pub const CLIENT_REQUESTS: (&str, &str, &[&str]) = (
    "wxbroker_client_requests_total",
    "Requests by Wxbroker-Client name (64 names, then \"other\").",
    &["client"],
);

/// How many names get a series of their own.
pub const MAX_NAMED: usize = 64;

/// The slot of `other`, after the named ones.
const OTHER: usize = MAX_NAMED;

const OTHER_NAME: &str = "other";

thread_local! {
    /// The last name this thread counted, and its slot: a service's
    /// requests mostly follow each other under one name, so most counts
    /// compare one string instead of hashing it. Keyed by the counts'
    /// [`ClientCounts::id`] too, for the several brokers a test process
    /// holds.
    static LAST: RefCell<Option<(u64, Box<str>, usize)>> = const { RefCell::new(None) };
}

/// The next [`ClientCounts::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub struct ClientCounts {
    /// Never reused within a process, unlike an address.
    id: u64,
    /// Each known name's slot: read with an atomic load on every request,
    /// replaced whole (at most 64 times) when a new name arrives.
    slots: ArcSwap<HashMap<Box<str>, usize>>,
    /// The named slots' names, in slot order; held while a name is added.
    names: Mutex<Vec<Box<str>>>,
    counts: Shards<Slots>,
}

/// One shard's count of each slot.
struct Slots([AtomicU64; MAX_NAMED + 1]);

impl Default for Slots {
    fn default() -> Self {
        Slots(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Default for ClientCounts {
    fn default() -> Self {
        ClientCounts {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            slots: ArcSwap::default(),
            names: Mutex::default(),
            counts: Shards::new(),
        }
    }
}

impl ClientCounts {
    /// Counts a request from `client`.
    pub fn count(&self, client: &str) {
        let slot = LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((of, name, slot)) if *of == self.id && **name == *client => *slot,
                _ => {
                    let slot = match self.slots.load().get(client) {
                        Some(&slot) => slot,
                        None => self.slot_of_new(client),
                    };
                    *last = Some((self.id, client.into(), slot));
                    slot
                }
            }
        });
        self.counts.local().0[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn slot_of_new(&self, client: &str) -> usize {
        if client == OTHER_NAME {
            return OTHER;
        }
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = self.slots.load_full();
        if let Some(&slot) = known.get(client) {
            return slot;
        }
        if names.len() == MAX_NAMED {
            return OTHER;
        }
        let slot = names.len();
        names.push(client.into());
        let mut grown = HashMap::clone(&known);
        grown.insert(client.into(), slot);
        self.slots.store(Arc::new(grown));
        slot
    }

    /// Writes the family: every name that has counted, in name order.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut totals = [0u64; MAX_NAMED + 1];
        for cell in self.counts.all() {
            for (total, count) in totals.iter_mut().zip(&cell.0) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        let names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counted: Vec<(&str, u64)> = names
            .iter()
            .map(|name| &**name)
            .chain([OTHER_NAME])
            .zip(totals.iter().take(names.len()).chain([&totals[OTHER]]))
            .filter(|(_, total)| **total > 0)
            .map(|(name, total)| (name, *total))
            .collect();
        counted.sort_unstable();
        let (name, help, labels) = CLIENT_REQUESTS;
        let mut family = TextFamily::new(name, help, Kind::Counter, labels);
        for (client, total) in counted {
            family.push(&[client], total);
        }
        family.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(counts: &ClientCounts) -> String {
        let mut out = Vec::new();
        counts.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_thread_counting_for_two_brokers_keeps_them_apart() {
        let (a, b) = (ClientCounts::default(), ClientCounts::default());
        for _ in 0..3 {
            a.count("orders");
        }
        b.count("billing");
        b.count("orders");
        a.count("orders");
        assert!(written(&a).contains(r#"{client="orders"} 4"#));
        let b = written(&b);
        assert!(b.contains(r#"{client="billing"} 1"#), "{b}");
        assert!(b.contains(r#"{client="orders"} 1"#), "{b}");
    }

    #[test]
    fn names_past_the_cap_count_as_other() {
        let counts = ClientCounts::default();
        assert_eq!(written(&counts), "");
        for n in 0..MAX_NAMED + 10 {
            counts.count(&format!("svc{n:03}"));
        }
        counts.count("svc000");
        counts.count("other");
        let text = written(&counts);
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(series.len(), MAX_NAMED + 1, "{text}");
        assert!(series.contains(&r#"wxbroker_client_requests_total{client="svc000"} 2"#));
        assert!(series.contains(&r#"wxbroker_client_requests_total{client="other"} 11"#));
        assert!(!text.contains("svc064"));
        let mut sorted = series.clone();
        sorted.sort_unstable();
        assert_eq!(series, sorted);
    }
}
