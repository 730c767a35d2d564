//! The readers' way from a token to the child it belongs to, in O(1):
//! the compatible listener recognises a child's calls by the token the
//! client holds, and with ten thousand children a scan per call would be
//! the listener's cost. The scheduler, the table's only writer, keeps it
//! on every adoption, replacement and removal.
//!
//! Keys are a 128-bit prefix of the token's SHA-256, not the token: the
//! index holds no second copy of any secret and stays small (a few dozen
//! bytes per token), and a token that is not one of ours cannot be made
//! to match one that is. The current token and the [`REMEMBERED`] before
//! it are found: a client may still hold a replaced token, which WeChat
//! honours for a few minutes and which still tells whose calls these are.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};

/// How many replaced tokens of each child stay findable.
pub const REMEMBERED: usize = 2;

/// Shards, so concurrent readers and the writer rarely meet on a lock.
const SHARDS: usize = 16;

/// A token's key in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 16]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        TokenDigest(digest[..16].try_into().expect("16 bytes"))
    }

    fn shard(&self) -> usize {
        usize::from(self.0[0]) % SHARDS
    }
}

/// The tokens a child held before its current one, newest first; kept by
/// the writer beside its own state of the child.
#[derive(Debug, Default, Clone)]
pub struct Recent([Option<TokenDigest>; REMEMBERED]);

impl Recent {
    /// Remembers `replaced`; answers the one that falls out.
    fn push(&mut self, replaced: TokenDigest) -> Option<TokenDigest> {
        let evicted = self.0[REMEMBERED - 1].take();
        self.0.rotate_right(1);
        self.0[0] = Some(replaced);
        evicted
    }

    fn iter(&self) -> impl Iterator<Item = TokenDigest> + '_ {
        self.0.iter().flatten().copied()
    }
}

/// Token digest to the slot holding it: generic over the slot, which the
/// index only keeps and compares by address.
pub struct TokenIndex<Slot> {
    shards: [RwLock<HashMap<TokenDigest, Arc<Slot>>>; SHARDS],
}

impl<Slot> Default for TokenIndex<Slot> {
    fn default() -> Self {
        TokenIndex {
            shards: std::array::from_fn(|_| RwLock::default()),
        }
    }
}

impl<Slot> TokenIndex<Slot> {
    /// The child holding `token` now or lately.
    pub fn owner_of(&self, token: &str) -> Option<Arc<Slot>> {
        let digest = TokenDigest::of(token);
        self.shards[digest.shard()]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned()
    }

    /// Makes `current` findable as `slot`'s; `replaced`, the token it
    /// replaces (if another), joins `recent`, and the one falling out of
    /// `recent` is forgotten.
    pub(crate) fn replace(
        &self,
        slot: &Arc<Slot>,
        current: TokenDigest,
        replaced: Option<TokenDigest>,
        recent: &mut Recent,
    ) {
        self.shards[current.shard()]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(current, slot.clone());
        let Some(replaced) = replaced.filter(|old| *old != current) else {
            return;
        };
        if let Some(evicted) = recent.push(replaced) {
            self.forget(slot, evicted);
        }
    }

    /// Forgets every token of `slot`: `current` and `recent`.
    pub(crate) fn remove(&self, slot: &Arc<Slot>, current: Option<TokenDigest>, recent: &Recent) {
        for digest in current.into_iter().chain(recent.iter()) {
            self.forget(slot, digest);
        }
    }

    /// Drops `digest` if it is `slot`'s.
    fn forget(&self, slot: &Arc<Slot>, digest: TokenDigest) {
        let mut shard = self.shards[digest.shard()]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard
            .get(&digest)
            .is_some_and(|owner| Arc::ptr_eq(owner, slot))
        {
            shard.remove(&digest);
        }
    }

    /// Tokens findable, for tests and the memory figures.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
