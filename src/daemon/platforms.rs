//! The daemon's WeChat Open Platforms: each `[[platforms]]` entry
//! started with its durable state (verify ticket, authorizers) in the
//! backend of the configured store, and attached to the broker.

use std::sync::Arc;

use super::StartError;
use crate::broker::Broker;
use crate::config::{Config, StoreBackend};
use crate::store::RedisStore;

/// Starts every `[[platforms]]` entry, its durable state in the
/// configured store's backend.
pub(super) fn start_platforms(
    config: &Config,
    broker: &Broker,
    http: &reqwest::Client,
    redis: Option<Arc<RedisStore>>,
    tuning: crate::platform::authorizers::SchedulerTuning,
) -> Result<(), StartError> {
    use crate::platform::store::{FilePlatformStore, MemoryPlatformStore, PlatformStore};
    if config.platforms.is_empty() {
        return Ok(());
    }
    let context = broker.context();
    let metrics = crate::platform::metrics::PlatformMetrics::new(&context.metrics);
    let mut platforms = Vec::with_capacity(config.platforms.len());
    for platform in &config.platforms {
        let store: Arc<dyn PlatformStore> = match (&config.store.backend, &redis) {
            (_, Some(redis)) => Arc::new(crate::platform::redis_store::RedisPlatformStore::new(
                redis.clone(),
                &platform.component_appid,
            )),
            (StoreBackend::File { path }, None) => Arc::new(FilePlatformStore::new(
                path,
                &platform.name,
                &platform.component_appid,
            )),
            _ => Arc::new(MemoryPlatformStore::default()),
        };
        platforms.push(crate::platform::PlatformHandle::spawn(
            platform.clone(),
            http.clone(),
            store,
            context,
            &metrics,
            tuning,
        ));
    }
    broker.attach_platforms(platforms);
    Ok(())
}
