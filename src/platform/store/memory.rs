//! The memory backend of a platform's state: nothing survives the
//! process. For a broker without a durable store, and for tests.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{count_on, next_count, refuse_empty, AuthorizerRecord, PlatformStore, StoredTicket};
use crate::store::StoreError;

/// Nothing survives the process.
#[derive(Default)]
pub struct MemoryPlatformStore {
    ticket: Mutex<Option<StoredTicket>>,
    authorizers: Mutex<HashMap<String, AuthorizerRecord>>,
    /// `(day, used)` of authorizer fetches.
    fetches: Mutex<(u32, u32)>,
}

impl PlatformStore for MemoryPlatformStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<StoredTicket>, StoreError>> {
        let ticket = self.ticket.lock().expect("poisoned").clone();
        Box::pin(async move { Ok(ticket) })
    }

    fn save_ticket<'a>(
        &'a self,
        ticket: &'a StoredTicket,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        *self.ticket.lock().expect("poisoned") = Some(ticket.clone());
        Box::pin(async { Ok(()) })
    }

    fn load_authorizers(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        let all = self
            .authorizers
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        Box::pin(async move { Ok(all) })
    }

    fn save_authorizers<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = refuse_empty(records).map(|()| {
            let mut all = self.authorizers.lock().expect("poisoned");
            for record in records {
                all.insert(record.appid.clone(), record.clone());
            }
        });
        Box::pin(async move { result })
    }

    fn remove_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.authorizers.lock().expect("poisoned").remove(appid);
        Box::pin(async { Ok(()) })
    }

    fn count_authorizer_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let used = next_count(&mut self.fetches.lock().expect("poisoned"), day);
        Box::pin(async move { Ok(used) })
    }

    fn authorizer_fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let used = count_on(*self.fetches.lock().expect("poisoned"), day);
        Box::pin(async move { Ok(used) })
    }
}
