//! The readers' table of a parent's children: one small slot per child,
//! its token in an atomic cell, swapped whole only when a child comes or
//! goes (rare); a token change touches one slot's cell and the token
//! index. Only the scheduler writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;

use super::index::{Recent, TokenDigest, TokenIndex};
use crate::secret::AccessToken;

/// A child's access token as readers see it.
#[derive(Debug)]
pub struct ChildToken {
    pub value: AccessToken,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    pub fetched_at_ms: u64,
}

impl ChildToken {
    pub fn is_valid(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Whole seconds left at `now_ms`.
    pub fn expires_in(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms) / 1000
    }

    pub fn expires_at(&self) -> u64 {
        self.expires_at_ms / 1000
    }
}

/// Why a child is held: no fetch until an operator, its owner or the
/// next Beijing day can have fixed the cause (DESIGN.md section 4, rules
/// 5 and 6). Its token, while valid, is still served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Hold {
    None = 0,
    /// A configuration errcode: one attempt per 10 minutes.
    Config = 1,
    /// WeChat's daily quota (45009): until Beijing midnight.
    Quota = 2,
    /// The parent's daily budget is spent: until Beijing midnight.
    Budget = 3,
}

impl Hold {
    /// Every hold, as the `reason` label of the held gauge.
    pub const REASONS: [Hold; 3] = [Hold::Config, Hold::Quota, Hold::Budget];

    pub fn label(self) -> &'static str {
        match self {
            Hold::None => "none",
            Hold::Config => "config",
            Hold::Quota => "quota",
            Hold::Budget => "budget",
        }
    }

    fn from_u8(value: u8) -> Hold {
        match value {
            1 => Hold::Config,
            2 => Hold::Quota,
            3 => Hold::Budget,
            _ => Hold::None,
        }
    }
}

/// One child in the readers' table.
pub struct Slot {
    pub id: Box<str>,
    token: ArcSwapOption<ChildToken>,
    /// What upstream calls the child, for a kind with names.
    name: ArcSwapOption<String>,
    authorized_at: AtomicU64,
    hold: AtomicU8,
}

impl Slot {
    pub(crate) fn new(id: &str, authorized_at: u64) -> Self {
        Slot {
            id: id.into(),
            token: ArcSwapOption::empty(),
            name: ArcSwapOption::empty(),
            authorized_at: AtomicU64::new(authorized_at),
            hold: AtomicU8::new(Hold::None as u8),
        }
    }

    pub fn token(&self) -> Option<Arc<ChildToken>> {
        self.token.load_full()
    }

    /// What upstream calls the child, when its kind has names and one
    /// is known.
    pub fn name(&self) -> Option<Arc<String>> {
        self.name.load_full()
    }

    /// Names the child; an empty name keeps the one held.
    pub(crate) fn set_name(&self, name: &str) {
        let same = self.name.load().as_deref().is_some_and(|held| held == name);
        if !name.is_empty() && !same {
            self.name.store(Some(Arc::new(name.to_owned())));
        }
    }

    pub fn authorized_at(&self) -> u64 {
        self.authorized_at.load(Ordering::Relaxed)
    }

    pub(crate) fn set_authorized_at(&self, at: u64) {
        self.authorized_at.store(at, Ordering::Relaxed);
    }

    pub fn hold(&self) -> Hold {
        Hold::from_u8(self.hold.load(Ordering::Relaxed))
    }

    pub(crate) fn set_hold(&self, hold: Hold) {
        self.hold.store(hold as u8, Ordering::Relaxed);
    }

    fn current_digest(&self) -> Option<TokenDigest> {
        self.token
            .load()
            .as_ref()
            .map(|token| TokenDigest::of(token.value.expose()))
    }
}

/// The readers' view: id to slot, and token to slot.
#[derive(Default)]
pub struct Table {
    slots: ArcSwap<HashMap<Box<str>, Arc<Slot>>>,
    index: TokenIndex<Slot>,
    /// Woken whenever a token is published or a child removed.
    pub changed: Notify,
    /// Set once the stored (or recovered) children are in: until then an
    /// unknown id may be one not loaded yet.
    loaded: AtomicBool,
}

impl Table {
    pub fn get(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots.load().get(id).cloned()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub(crate) fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.slots.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every slot, ordered by id (stable pages for listing).
    pub fn sorted(&self) -> Vec<Arc<Slot>> {
        let mut all: Vec<Arc<Slot>> = self.slots.load().values().cloned().collect();
        all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Calls `f` with each slot, without copying the table.
    pub fn for_each(&self, mut f: impl FnMut(&Slot)) {
        for slot in self.slots.load().values() {
            f(slot);
        }
    }

    /// The token a client holds, if it is one of ours (the current token
    /// of a child, or one of the last it replaced): whose it is. One
    /// hash and one map lookup, whatever the number of children.
    pub fn owner_of(&self, token: &str) -> Option<Arc<Slot>> {
        self.index.owner_of(token)
    }

    /// Tokens the index finds, current and replaced.
    pub fn indexed_tokens(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn insert_many(&self, slots: Vec<Arc<Slot>>) {
        if slots.is_empty() {
            return;
        }
        let mut next = HashMap::clone(&self.slots.load());
        for slot in slots {
            next.insert(slot.id.clone(), slot);
        }
        self.slots.store(Arc::new(next));
    }

    /// Publishes `token` as `slot`'s: findable by the index before
    /// readers of the slot see it, the token it replaces remembered in
    /// `recent`.
    pub(crate) fn install(&self, slot: &Arc<Slot>, token: Arc<ChildToken>, recent: &mut Recent) {
        let current = TokenDigest::of(token.value.expose());
        let replaced = slot.current_digest();
        self.index.replace(slot, current, replaced, recent);
        slot.token.store(Some(token));
    }

    /// Drops child `id` and every token of it the index knows.
    pub(crate) fn remove(&self, id: &str, recent: &Recent) {
        let mut next = HashMap::clone(&self.slots.load());
        if let Some(slot) = next.remove(id) {
            self.index.remove(&slot, slot.current_digest(), recent);
            self.slots.store(Arc::new(next));
        }
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str) -> Arc<ChildToken> {
        Arc::new(ChildToken {
            value: AccessToken::new(value),
            expires_at_ms: 10,
            fetched_at_ms: 5,
        })
    }

    fn owner(table: &Table, token: &str) -> Option<String> {
        table.owner_of(token).map(|slot| slot.id.to_string())
    }

    #[test]
    fn the_index_finds_a_child_by_its_current_and_previous_tokens() {
        let table = Table::default();
        let (a, b) = (Arc::new(Slot::new("a", 1)), Arc::new(Slot::new("b", 1)));
        table.insert_many(vec![a.clone(), b.clone()]);
        let (mut recent_a, mut recent_b) = (Recent::default(), Recent::default());
        table.install(&a, token("a1"), &mut recent_a);
        table.install(&b, token("b1"), &mut recent_b);
        assert_eq!(owner(&table, "a1").as_deref(), Some("a"));
        assert_eq!(owner(&table, "b1").as_deref(), Some("b"));
        assert_eq!(owner(&table, "nobody's"), None);

        table.install(&a, token("a2"), &mut recent_a);
        table.install(&a, token("a3"), &mut recent_a);
        for held in ["a1", "a2", "a3"] {
            assert_eq!(owner(&table, held).as_deref(), Some("a"), "{held}");
        }
        // The same token again is no replacement: nothing falls out.
        table.install(&a, token("a3"), &mut recent_a);
        assert_eq!(owner(&table, "a1").as_deref(), Some("a"));
        // A fourth token: the oldest falls out of the index.
        table.install(&a, token("a4"), &mut recent_a);
        assert_eq!(owner(&table, "a1"), None);
        assert_eq!(owner(&table, "a2").as_deref(), Some("a"));
        assert_eq!(table.indexed_tokens(), 4, "a4, a3, a2 and b1");

        table.remove("a", &recent_a);
        for held in ["a2", "a3", "a4"] {
            assert_eq!(owner(&table, held), None, "{held} forgotten");
        }
        assert_eq!(owner(&table, "b1").as_deref(), Some("b"));
        assert_eq!(table.indexed_tokens(), 1);
        assert!(table.get("a").is_none());
    }
}
