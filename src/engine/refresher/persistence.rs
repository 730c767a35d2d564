//! What survives a restart (rules 6, 7 and 8): the warm start from the
//! stored token and count, the day's count published to readers, and the
//! save of token and count, retried while the store fails.

use std::sync::Arc;

use tracing::{info, warn};

use super::coordination::Coordination;
use super::{Refresher, LOG_TARGET};
use crate::errors::Chain;

impl Refresher {
    /// Rule 7: a stored token with more than `refresh_before` left means no
    /// upstream call at all on start.
    pub(super) async fn warm_start(&mut self, coordination: &mut dyn Coordination) {
        if let Some(token) = self.writer.valid() {
            self.next_attempt = self.refresh_due(&token);
            return;
        }
        let Some((record, token)) = self.writer.warm_start().await else {
            return;
        };
        self.budget.at_least(record.day, record.fetches);
        coordination.restore_count(self).await;
        if let Some(token) = token {
            info!(
                target: LOG_TARGET,
                token = %token.value.fingerprint(),
                expires_in = token.expires_in(self.now_ms()),
                "loaded stored token"
            );
            self.next_attempt = self.refresh_due(&token);
            self.publish(|view| view.install(Arc::new(token)));
        }
        self.publish_budget();
    }

    pub(super) fn publish_budget(&self) {
        let (used, day) = (self.budget.used(), self.budget.day());
        self.publish(|view| {
            view.fetches_today = used;
            view.fetches_day = day;
        });
    }

    /// Rule 6 and 8: the token and the day's count survive restarts. A
    /// failure is counted.
    pub(super) async fn save(&mut self) -> Result<(), crate::store::StoreError> {
        let (day, fetches) = (self.budget.day(), self.budget.used());
        self.writer.save(day, fetches).await?;
        self.unsaved.saved();
        Ok(())
    }

    /// [`Refresher::save`] of a count kept here: the count in memory stays
    /// the authority, and a store that failed gets it again soon.
    pub(super) async fn persist(&mut self) {
        if let Err(err) = self.save().await {
            let retry_in = self.unsaved.failed();
            warn!(target: LOG_TARGET, error = %Chain(&err), ?retry_in, fetches_today = self.budget.used(), "could not persist token state; keeping it in memory");
        }
    }
}
