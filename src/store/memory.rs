//! The memory store: state lives as long as the process.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{Store, StoreError, StoreKey, StoredCredential};

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, StoredCredential>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>> {
        let record = self
            .records
            .lock()
            .expect("memory store poisoned")
            .get(&key.name)
            .cloned();
        Box::pin(async move { Ok(record) })
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        state: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.records
            .lock()
            .expect("memory store poisoned")
            .insert(key.name.clone(), state.clone());
        Box::pin(async { Ok(()) })
    }
}
