//! Coordination, a strategy of the refresher: whose turn it is to call
//! upstream, where a fetch is counted, and what others sharing the store
//! did. A broker alone ([`Local`]) always has the turn and keeps its own
//! count; a broker of a fleet ([`Fleet`], DESIGN.md section 9) takes the
//! fleet's lock, counts on the fleet's counter and adopts the fleet's
//! tokens. The refresher runs either the same way.

mod fleet;
mod local;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::Refresher;
use crate::secret::AccessToken;
use crate::store::{LockToken, Store};

pub(in crate::engine) use fleet::Fleet;
pub(in crate::engine) use local::Local;

/// Whose turn it is to call upstream.
pub(in crate::engine) enum Turn {
    /// Ours: call upstream, then hand the pass to
    /// [`Coordination::end_turn`].
    Mine(Pass),
    /// Another broker's fetch made ours unnecessary; its token is adopted.
    Settled,
    /// Not now: the refresher's next attempt is rescheduled.
    Later,
}

/// A turn to call upstream: under the fleet's lock, or without one (a
/// broker alone, or a fleet's broker while the shared store is away).
pub(in crate::engine) struct Pass {
    lock: Option<LockToken>,
}

impl Pass {
    fn unlocked() -> Pass {
        Pass { lock: None }
    }
}

/// How a refresher shares its credential with others, if it does. Each
/// method takes the refresher whose turn, count and token it governs.
pub(in crate::engine) trait Coordination: Send {
    /// Before the warm start.
    fn start<'a>(&'a mut self, refresher: &'a mut Refresher) -> BoxFuture<'a, ()>;

    /// On a warm start, once the stored record's count is taken: brings
    /// the day's count up to where it is kept.
    fn restore_count<'a>(&'a mut self, refresher: &'a mut Refresher) -> BoxFuture<'a, ()>;

    /// Decides whether this broker calls upstream now. `reported` is the
    /// token an invalidation names; `None` for a scheduled refresh.
    fn take_turn<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        reported: Option<&'a AccessToken>,
    ) -> BoxFuture<'a, Turn>;

    /// Ends a turn: the refresher's state is stored (under the turn's
    /// lock, if it has one), and the turn released. `fetched` says
    /// whether the turn brought a new token.
    fn end_turn<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        pass: Pass,
        fetched: bool,
    ) -> BoxFuture<'a, ()>;

    /// Counts one upstream call against the day's budget, before it is
    /// made; `false` when the budget is spent.
    fn count_fetch<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        now_secs: u64,
    ) -> BoxFuture<'a, bool>;

    /// Resolves when others sharing the store may have a result of their
    /// own (a published update, or the time to look anyway); never for a
    /// broker alone. [`Coordination::adopt_result`] takes it.
    fn next_result(&mut self) -> BoxFuture<'_, ()>;

    /// Adopts what others stored, if it is newer than the held token.
    fn adopt_result<'a>(&'a mut self, refresher: &'a mut Refresher) -> BoxFuture<'a, ()>;
}

/// The coordination `store` offers: a fleet's, if others share it.
pub(in crate::engine) fn for_store(store: &Arc<dyn Store>) -> Box<dyn Coordination> {
    match store.cluster() {
        Some(_) => Box::new(Fleet::new(store.clone())),
        None => Box::new(Local),
    }
}
