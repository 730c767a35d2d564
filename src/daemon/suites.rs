//! The daemon's WeCom suites: each `[[suites]]` entry started with its
//! durable state (`suite_ticket`, installed corps) in the backend of the
//! configured store, and attached to the broker.

use std::sync::Arc;

use crate::broker::Broker;
use crate::config::{Config, StoreBackend};
use crate::store::RedisStore;

/// Starts every `[[suites]]` entry, its durable state (its `suite_ticket`
/// and every corp's permanent code) in the configured store's backend:
/// `{name}.suite_ticket.json` and `{name}.corps.jsonl` beside the app
/// records, or the hash tag `{prefix:suite_id:corps}` in Redis.
pub(super) fn start_suites(
    config: &Config,
    broker: &Broker,
    http: &reqwest::Client,
    redis: Option<Arc<RedisStore>>,
    tuning: crate::platform::authorizers::SchedulerTuning,
) {
    use crate::platform::store::{FilePlatformStore, MemoryPlatformStore, PlatformStore};
    if config.suites.is_empty() {
        return;
    }
    let context = broker.context();
    let metrics = crate::suite::metrics::SuiteMetrics::new(&context.metrics);
    let ticket = ("suite_ticket", crate::suite::ticket::TICKET_LIFETIME_SECS);
    let suites = config
        .suites
        .iter()
        .map(|suite| {
            let store: Arc<dyn PlatformStore> = match (&config.store.backend, &redis) {
                (_, Some(redis)) => Arc::new(
                    crate::platform::redis_store::RedisPlatformStore::for_parent(
                        redis.clone(),
                        &suite.suite_id,
                        "corps",
                        ticket,
                    ),
                ),
                (StoreBackend::File { path }, None) => Arc::new(FilePlatformStore::with_files(
                    path.join(format!("{}.suite_ticket.json", suite.name)),
                    path.join(format!("{}.corps.jsonl", suite.name)),
                    &suite.suite_id,
                )),
                _ => Arc::new(MemoryPlatformStore::default()),
            };
            crate::suite::SuiteHandle::spawn(
                suite.clone(),
                http.clone(),
                store,
                context,
                &metrics,
                tuning,
            )
        })
        .collect();
    broker.attach_suites(suites);
}
