//! The writer core: what every writer of a credential does with it,
//! whatever the credential comes from (upstream for a refresher, a leader
//! for a follower). It publishes to the readers' lock-free cell and the
//! view in one step, warm-starts from the store (rule 7, with the store's
//! state judged before anything is served), and saves the record
//! (rules 6 and 8).

use std::sync::Arc;

use tracing::{error, warn};

use super::{CredentialHandle, CredentialRecord, CredentialSpec, CredentialView, EngineContext};
use crate::clock::Clock;
use crate::errors::Chain;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, StoredCredential, UNTRUSTED_LABEL};

/// The writer's side of one credential: its handle's cells, its store
/// and its record. One writer, always: only the task that owns the
/// credential (its refresher, or its follower) holds its `Writer`.
pub struct Writer {
    handle: CredentialHandle,
    store: Arc<dyn Store>,
    metrics: Metrics,
    clock: Clock,
}

impl Writer {
    /// The writer of `handle`'s credential, storing into `context.store`.
    pub fn new(handle: CredentialHandle, context: &EngineContext) -> Writer {
        Writer {
            handle,
            store: context.store.clone(),
            metrics: context.metrics.clone(),
            clock: context.clock,
        }
    }

    pub fn handle(&self) -> &CredentialHandle {
        &self.handle
    }

    pub fn spec(&self) -> &CredentialSpec {
        self.handle.spec()
    }

    /// Publishes a change of the view; the token goes into the readers'
    /// lock-free cell in the same step, so the two never differ.
    pub fn publish(&self, change: impl FnOnce(&mut CredentialView)) {
        let shared = &self.handle.shared;
        shared.view.send_modify(|view| {
            change(view);
            shared.current.store(view.token.clone());
        });
    }

    /// The credential held, valid or not.
    pub fn current(&self) -> Option<Arc<CredentialRecord>> {
        self.handle.shared.view.borrow().token.clone()
    }

    /// The credential held, if it is valid now: a writer holding one
    /// (a reload carried it over) needs nothing from the store.
    pub fn valid(&self) -> Option<Arc<CredentialRecord>> {
        let now = self.clock.now_ms();
        self.current().filter(|token| token.is_valid(now))
    }

    /// The warm start (rule 7): the stored record, if this credential's
    /// and readable, with its token if that may be served now. State this
    /// broker could not have written, an unreadable record, one written
    /// for another app or grant and a token with impossible times are
    /// logged, counted and never served. Publishes nothing.
    pub async fn warm_start(&self) -> Option<(StoredCredential, Option<CredentialRecord>)> {
        let spec = self.spec();
        let record = match self.store.load(&spec.key).await {
            Ok(record) => record?,
            Err(err) if err.is_untrusted() => {
                error!(error = %Chain(&err), "refusing stored state this broker could not have written; fetching anew");
                self.count_store_error(err.op_label());
                return None;
            }
            Err(err) => {
                warn!(error = %Chain(&err), "ignoring unreadable stored state");
                self.count_store_error(err.op_label());
                return None;
            }
        };
        if !record.belongs_to(&spec.key) {
            warn!(
                stored_appid = %record.appid,
                stored_grant = %record.grant,
                "ignoring stored state written for another app or grant"
            );
            return None;
        }
        let now = self.clock.now_ms();
        let token = record
            .token
            .clone()
            .filter(|stored| match stored.implausible(now / 1000) {
                None => true,
                Some(problem) => {
                    error!(%problem, "refusing a stored token no broker could have written; fetching anew");
                    self.count_store_error(UNTRUSTED_LABEL);
                    false
                }
            })
            .map(CredentialRecord::from_stored)
            .filter(|token| token.is_valid(now));
        Some((record, token))
    }

    /// The record as the store holds it now, if it is this credential's
    /// (another broker sharing the store may have written it). A failure
    /// is counted and returned.
    pub async fn read(&self) -> Result<Option<StoredCredential>, StoreError> {
        let key = &self.spec().key;
        match self.store.load(key).await {
            Ok(record) => Ok(record.filter(|record| record.belongs_to(key))),
            Err(err) => {
                self.count_store_error(err.op_label());
                Err(err)
            }
        }
    }

    /// Stores the credential held and the day's count (`fetches` upstream
    /// calls on the Beijing day `day`). A failure is counted and returned
    /// for the caller to judge.
    pub async fn save(&self, day: u32, fetches: u32) -> Result<(), StoreError> {
        let key = &self.spec().key;
        let record = StoredCredential {
            appid: key.appid.clone(),
            grant: key.grant.to_owned(),
            token: self.current().map(|token| token.to_stored()),
            day,
            fetches,
        };
        let saved = self.store.save(key, &record).await;
        if let Err(err) = &saved {
            self.count_store_error(err.op_label());
        }
        saved
    }

    /// Counts a failure of the store, by operation.
    pub fn count_store_error(&self, op: &str) {
        self.metrics
            .store_errors
            .with_label_values(&[self.store.backend(), op])
            .inc();
    }
}
