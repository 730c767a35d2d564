//! A broker alone with its store (memory or file): every turn is its own,
//! and the day's count in memory is the authority, saved before each call
//! and retried until the store takes it.

use futures_util::future::BoxFuture;

use super::{Coordination, Pass, Refresher, Turn};
use crate::secret::AccessToken;

/// The coordination of a broker that shares its store with nobody.
pub(in crate::engine) struct Local;

impl Coordination for Local {
    fn start<'a>(&'a mut self, refresher: &'a mut Refresher) -> BoxFuture<'a, ()> {
        // A count carried over by a reload: the store may lag it (a save
        // that failed), never lead it.
        if refresher.budget.used() > 0 {
            refresher.unsaved.save_now();
        }
        Box::pin(async {})
    }

    fn restore_count<'a>(&'a mut self, _refresher: &'a mut Refresher) -> BoxFuture<'a, ()> {
        // The stored record's count is this broker's own.
        Box::pin(async {})
    }

    fn take_turn<'a>(
        &'a mut self,
        _refresher: &'a mut Refresher,
        _reported: Option<&'a AccessToken>,
    ) -> BoxFuture<'a, Turn> {
        Box::pin(async { Turn::Mine(Pass::unlocked()) })
    }

    fn end_turn<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        _pass: Pass,
        _fetched: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(refresher.persist())
    }

    fn count_fetch<'a>(
        &'a mut self,
        refresher: &'a mut Refresher,
        now_secs: u64,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            if !refresher.budget.try_spend(now_secs) {
                return false;
            }
            // Counted durably before the call: a crash right after it
            // must not hand the next start an unspent budget.
            refresher.persist().await;
            true
        })
    }

    fn next_result(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    fn adopt_result<'a>(&'a mut self, _refresher: &'a mut Refresher) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}
