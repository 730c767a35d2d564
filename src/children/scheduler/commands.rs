//! What the scheduler is asked to do from outside (a pushed
//! authorization or revocation, a changed child, a client's report of a
//! rejected token) and how it answers each: by starting a task, dropping
//! the child, or moving its refresh forward.

use tracing::{info, warn, Instrument};

use super::tasks::{AuthorizeTask, DescribeTask};
use super::Scheduler;
use crate::children::index::Recent;
use crate::children::table::Hold;
use crate::errors::Chain;

/// What the scheduler is asked to do.
pub enum Command {
    /// A pushed authorization: exchange the code. `id` is the child the
    /// push named, or empty when the push names none (the exchange's
    /// answer says whose code it was).
    Authorized { id: String, code: String },
    /// Upstream says the child changed: re-read what it is called.
    Describe { id: String },
    /// A pushed revocation: the child's tokens are dead.
    Unauthorized { id: String },
    /// A client reports `reported` rejected by WeChat; `reply` says
    /// whether a refresh was scheduled for it.
    Invalidate {
        id: String,
        reported: String,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
}

impl Scheduler {
    pub(super) async fn command(&mut self, command: Command) {
        match command {
            Command::Authorized { id, code } => {
                let task = AuthorizeTask {
                    source: self.source.clone(),
                    store: self.store.clone(),
                    clock: self.clock,
                    cancel: self.cancel.clone(),
                    id,
                    code,
                };
                self.in_flight
                    .spawn(task.run().instrument(self.span.clone()));
            }
            Command::Describe { id } => {
                let Some(entry) = self.entries.get(id.as_str()) else {
                    return;
                };
                let task = DescribeTask {
                    source: self.source.clone(),
                    id: id.into(),
                    refresh_token: entry.refresh_token.clone(),
                };
                self.in_flight
                    .spawn(task.run().instrument(self.span.clone()));
            }
            Command::Unauthorized { id } => {
                let recent = match self.entries.remove(id.as_str()) {
                    Some(entry) => {
                        self.due.remove(&(entry.due_ms, id.as_str().into()));
                        self.short_lifetimes.forget(&entry.short_lifetimes);
                        entry.recent
                    }
                    None => Recent::default(),
                };
                self.table.remove(&id, &recent);
                if let Err(err) = self.store.remove_child(&id).await {
                    warn!(id = %id, error = %Chain(&err), "could not remove an unauthorized {} from the store", self.kind);
                }
                info!(id = %id, "{} unauthorized; dropped", self.kind);
            }
            Command::Invalidate {
                id,
                reported,
                reply,
            } => {
                let now = self.now_ms();
                let token = self.table.get(&id).and_then(|slot| slot.token());
                // A held child stays held: a report cannot buy an attempt
                // that the hold refuses.
                let held = self
                    .entries
                    .get(id.as_str())
                    .is_some_and(|entry| entry.hold != Hold::None);
                let refresh = !held
                    && token.as_ref().is_some_and(|token| {
                        token.value.expose() == reported
                            && now.saturating_sub(token.fetched_at_ms)
                                >= self.tuning.min_forced_interval.as_millis() as u64
                    });
                let _ = reply.send(refresh);
                if let Some(token) = token.filter(|_| refresh) {
                    info!(id = %id, token = %token.value.fingerprint(), "{} token reported rejected; refreshing", self.kind);
                    self.schedule(&id, now);
                }
            }
        }
    }
}
