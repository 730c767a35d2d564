//! Counters that each thread adds to on cache lines of its own, summed
//! when read.
//!
//! A counter that every request bumps, shared by the runtime's workers,
//! is one cache line the cores take from each other on every request:
//! on the token read that cost more than the rest of the broker's own
//! work. Here a counted thing keeps a cell per shard, a thread counts
//! into the shard it took the first time it counted (the workers, which
//! do nearly all the counting, each take their own), and a reader adds
//! the shards up. Shards outnumber cores two to one, so the few other
//! threads that count rarely share a worker's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

/// The most shards a counted thing keeps, whatever the core count.
const MAX_SHARDS: usize = 64;

/// How many shards: a power of two, so a thread's shard is a mask away.
static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores * 2).next_power_of_two().min(MAX_SHARDS)
});

/// The shard the next thread to count takes.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

/// A cell on cache lines of its own: 128 bytes, as x86 cores fetch lines
/// in adjacent pairs.
#[repr(align(128))]
#[derive(Default)]
struct Padded<C>(C);

/// One `C` per shard.
pub struct Shards<C> {
    cells: Box<[Padded<C>]>,
}

impl<C: Default> Shards<C> {
    pub fn new() -> Self {
        Shards {
            cells: (0..*SHARDS).map(|_| Padded::default()).collect(),
        }
    }
}

impl<C: Default> Default for Shards<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> Shards<C> {
    /// This thread's cell.
    pub fn local(&self) -> &C {
        let shard = SHARD.with(|shard| *shard) & (self.cells.len() - 1);
        &self.cells[shard].0
    }

    /// Every shard's cell, to be added up.
    pub fn all(&self) -> impl Iterator<Item = &C> {
        self.cells.iter().map(|cell| &cell.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn counts_from_many_threads_add_up() {
        let shards: Arc<Shards<AtomicU64>> = Arc::new(Shards::new());
        assert!(shards.cells.len().is_power_of_two());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let shards = shards.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        shards.local().fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total: u64 = shards.all().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 8000);
    }

    #[test]
    fn shards_sit_on_lines_of_their_own() {
        let shards: Shards<AtomicU64> = Shards::new();
        let at: Vec<usize> = shards
            .all()
            .map(|cell| cell as *const AtomicU64 as usize)
            .collect();
        assert!(at.len() >= 2);
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= 128);
        }
        assert_eq!(at[0] % 128, 0);
    }
}
