//! The scheduler's records in and out: records (stored, recovered or
//! freshly fetched) taken into the table, the token index and the
//! schedule, and the state it holds written back to the store (a child's
//! current record, the journal's compaction).

use std::sync::Arc;

use tracing::{error, warn};

use super::{Entry, Scheduler};
use crate::children::index::Recent;
use crate::children::record::ChildRecord;
use crate::children::table::{ChildToken, Hold, Slot};
use crate::engine::backoff::Backoff;
use crate::engine::schedule::{self, Renewal};
use crate::errors::Chain;
use crate::secret::AccessToken;

impl Scheduler {
    /// Takes records (stored, recovered or freshly fetched) into the
    /// table, the token index and the schedule. A token whose times no
    /// broker could have written is dropped and its child refreshed at
    /// once with the record's durable grant, which is kept: it is the one
    /// thing that cannot be had again without the merchant. A child whose
    /// record arrives with a token is no longer held.
    pub(super) fn adopt_all(&mut self, records: Vec<ChildRecord>) {
        let now = self.now_ms();
        let mut new_slots = Vec::new();
        let (mut implausible, mut problem) = (0usize, None);
        for record in records {
            if record.refresh_token.is_empty() {
                continue;
            }
            let record = match record.token_implausible(now) {
                None => record,
                Some(found) => {
                    implausible += 1;
                    problem.get_or_insert((record.appid.clone(), found));
                    record.without_token()
                }
            };
            let token = (!record.access_token.is_empty()).then(|| {
                Arc::new(ChildToken {
                    value: AccessToken::new(record.access_token.clone()),
                    expires_at_ms: record.expires_at_ms,
                    fetched_at_ms: record.fetched_at_ms,
                })
            });
            let slot = match self.table.get(&record.appid) {
                Some(slot) => slot,
                None => {
                    let slot = Arc::new(Slot::new(&record.appid, record.authorized_at));
                    new_slots.push(slot.clone());
                    slot
                }
            };
            slot.set_authorized_at(record.authorized_at);
            slot.set_name(&record.name);
            let held = slot.token();
            // Upstream answered with the token already held (WeCom hands
            // out its cached token until it expires): asking again before
            // it dies would get it again, so the next fetch is when it has
            // died upstream too. It is no anomaly, whatever time it has left.
            let repeated = token
                .as_ref()
                .zip(held.as_ref())
                .is_some_and(|(new, held)| new.value == held.value);
            let due = self.due_for(&record.appid, token.as_deref().or(held.as_deref()));
            let id: Box<str> = record.appid.as_str().into();
            let entry = self.entries.entry(id.clone()).or_insert_with(|| Entry {
                refresh_token: Box::default(),
                due_ms: due,
                in_flight: false,
                hold: Hold::None,
                backoff: Backoff::default(),
                short_lifetimes: Backoff::default(),
                recent: Recent::default(),
            });
            entry.refresh_token = record.refresh_token.into();
            let due = match token {
                Some(token) => {
                    self.table.install(&slot, token.clone(), &mut entry.recent);
                    entry.backoff.reset();
                    entry.hold = Hold::None;
                    slot.set_hold(Hold::None);
                    if repeated {
                        schedule::due_ms(
                            Renewal::AtExpiry,
                            self.refresh_before,
                            token.fetched_at_ms,
                            token.expires_at_ms,
                        )
                    } else {
                        self.short_lifetimes
                            .pace(&id, &mut entry.short_lifetimes, &token, now, due)
                    }
                }
                None => due,
            };
            self.schedule(&id, due);
        }
        if let Some((id, problem)) = problem {
            error!(
                children = implausible, first = %id, %problem,
                "refusing stored {} tokens no broker could have written; refreshing them with their refresh tokens",
                self.kind
            );
        }
        self.table.insert_many(new_slots);
        self.table.changed.notify_waiters();
    }

    pub(super) async fn maybe_compact(&mut self) {
        if !self.store.wants_compaction(self.entries.len()) {
            return;
        }
        let records: Vec<ChildRecord> = self
            .entries
            .keys()
            .filter_map(|id| self.current_record(id))
            .collect();
        if let Err(err) = self.store.compact(&records).await {
            warn!(error = %Chain(&err), "could not compact the {} journal", self.kind);
        }
    }

    /// Child `id`'s record as the scheduler and the table hold it now.
    pub(super) fn current_record(&self, id: &str) -> Option<ChildRecord> {
        let entry = self.entries.get(id)?;
        let slot = self.table.get(id);
        let token = slot.as_ref().and_then(|slot| slot.token());
        Some(ChildRecord {
            appid: id.to_owned(),
            refresh_token: entry.refresh_token.to_string(),
            access_token: token
                .as_ref()
                .map(|t| t.value.expose().to_owned())
                .unwrap_or_default(),
            expires_at_ms: token.as_ref().map_or(0, |t| t.expires_at_ms),
            fetched_at_ms: token.as_ref().map_or(0, |t| t.fetched_at_ms),
            authorized_at: slot.as_ref().map_or(0, |slot| slot.authorized_at()),
            name: slot
                .and_then(|slot| slot.name())
                .map(|name| name.to_string())
                .unwrap_or_default(),
        })
    }
}
