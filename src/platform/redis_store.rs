//! A platform's state in the fleet's Redis, through the store's own
//! connection ([`RedisStore`]), so a platform runs on one Redis, a
//! Sentinel-managed primary and a Redis Cluster alike, and follows a
//! failover as the credentials do. Every key shares the hash tag
//! `{prefix:component_appid:authorizers}`, so each command lands on one
//! Cluster node: the hash of authorizer records (no expiry: a refresh
//! token must outlive any token), the verify ticket, a short lock per
//! authorizer being refreshed, a per-second counter that keeps the whole
//! fleet within its authorizer fetch rate, and the fleet's count of
//! authorizer fetches per Beijing day (`authorizer_daily_budget`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::store::{AuthorizerRecord, PlatformStore, StoredTicket};
use crate::store::RedisStore;
use crate::store::StoreError;

/// A refresh holds its authorizer this long at most (a fetch's timeout
/// and then some); a broker that died holding it blocks nobody for long.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long one second's fetch counter is kept.
const RATE_WINDOW_SECS: i64 = 5;
/// How long a Beijing day's count of authorizer fetches is kept: past
/// the day's end, whatever the clocks of the fleet say.
const DAY_COUNT_SECS: i64 = 2 * 86_400;

/// Deletes the lock only if this broker still holds it.
const UNLOCK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

pub struct RedisPlatformStore {
    redis: Arc<RedisStore>,
    tag: String,
    owner: String,
    /// The pushed ticket's key, after the tag, and how long it is kept.
    ticket: &'static str,
    ticket_ttl_secs: u64,
}

fn decode_error(op: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |err| StoreError::Redis {
        op,
        message: format!("undecodable record: {err}"),
    }
}

impl RedisPlatformStore {
    /// The state of the platform `component_appid` in `redis`, the
    /// store the credentials use.
    pub fn new(redis: Arc<RedisStore>, component_appid: &str) -> Self {
        RedisPlatformStore::for_parent(
            redis,
            component_appid,
            "authorizers",
            ("verify_ticket", super::component::TICKET_LIFETIME_SECS),
        )
    }

    /// Another parent's state (a WeCom suite's `suite_ticket` and corps)
    /// under the hash tag `{prefix:owner_id:children}`, its pushed ticket
    /// at `{tag}:{ticket.0}` kept `ticket.1` seconds.
    pub fn for_parent(
        redis: Arc<RedisStore>,
        owner_id: &str,
        children: &str,
        ticket: (&'static str, u64),
    ) -> Self {
        RedisPlatformStore {
            tag: format!("{{{}:{owner_id}:{children}}}", redis.prefix()),
            owner: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            redis,
            ticket: ticket.0,
            ticket_ttl_secs: ticket.1,
        }
    }

    fn ticket_key(&self) -> String {
        format!("{}:{}", self.tag, self.ticket)
    }

    fn lock_key(&self, appid: &str) -> String {
        format!("{}:lock:{appid}", self.tag)
    }

    /// The fleet's count of authorizer fetches on the Beijing day `day`.
    fn fetches_key(&self, day: u32) -> String {
        format!("{}:fetches:{day}", self.tag)
    }
}

impl PlatformStore for RedisPlatformStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<StoredTicket>, StoreError>> {
        Box::pin(async move {
            let raw: Option<String> = self
                .redis
                .query("get", redis::cmd("GET").arg(self.ticket_key()))
                .await?;
            raw.map(|raw| serde_json::from_str(&raw).map_err(decode_error("get")))
                .transpose()
        })
    }

    fn save_ticket<'a>(
        &'a self,
        ticket: &'a StoredTicket,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let raw = serde_json::to_string(ticket).expect("a ticket serializes");
            let mut set = redis::pipe();
            set.cmd("SET")
                .arg(self.ticket_key())
                .arg(raw)
                .arg("EX")
                .arg(self.ticket_ttl_secs)
                .ignore();
            self.redis.replicated_write("set", &set).await
        })
    }

    fn load_authorizers(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        Box::pin(async move {
            let all: Vec<(String, String)> = self
                .redis
                .query("hgetall", redis::cmd("HGETALL").arg(&self.tag))
                .await?;
            Ok(all
                .into_iter()
                .filter_map(|(_, raw)| serde_json::from_str::<AuthorizerRecord>(&raw).ok())
                .filter(|record| !record.refresh_token.is_empty())
                .collect())
        })
    }

    fn save_authorizers<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if records.iter().any(|r| r.refresh_token.is_empty()) {
                return Err(StoreError::Redis {
                    op: "hset",
                    message: "refusing to store an empty refresh token".into(),
                });
            }
            if records.is_empty() {
                return Ok(());
            }
            let mut hset = redis::pipe();
            let command = hset.cmd("HSET").arg(&self.tag);
            for record in records {
                let raw = serde_json::to_string(record).expect("a record serializes");
                command.arg(&record.appid).arg(raw);
            }
            command.ignore();
            self.redis.replicated_write("hset", &hset).await
        })
    }

    fn save_recovered<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for record in records.iter().filter(|r| !r.refresh_token.is_empty()) {
                let raw = serde_json::to_string(record).expect("a record serializes");
                pipe.hset_nx(&self.tag, &record.appid, raw).ignore();
            }
            self.redis.replicated_write("hsetnx", &pipe).await
        })
    }

    fn remove_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.redis
                .query("hdel", redis::cmd("HDEL").arg(&self.tag).arg(appid))
                .await
        })
    }

    fn shared_authorizer<'a>(
        &'a self,
        appid: &'a str,
    ) -> BoxFuture<'a, Result<Option<AuthorizerRecord>, StoreError>> {
        Box::pin(async move {
            let raw: Option<String> = self
                .redis
                .query("hget", redis::cmd("HGET").arg(&self.tag).arg(appid))
                .await?;
            raw.map(|raw| serde_json::from_str(&raw).map_err(decode_error("hget")))
                .transpose()
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn fetch_permit(&self, per_second: u32) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let second = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let key = format!("{}:rate:{second}", self.tag);
            let count = self.redis.count(&key, RATE_WINDOW_SECS).await?;
            Ok(count <= per_second)
        })
    }

    fn lock_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let taken: Option<String> = self
                .redis
                .query(
                    "lock",
                    redis::cmd("SET")
                        .arg(self.lock_key(appid))
                        .arg(&self.owner)
                        .arg("NX")
                        .arg("PX")
                        .arg(LOCK_TTL.as_millis() as u64),
                )
                .await?;
            Ok(taken.is_some())
        })
    }

    fn unlock_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut unlock = redis::cmd("EVAL");
            unlock
                .arg(UNLOCK)
                .arg(1)
                .arg(self.lock_key(appid))
                .arg(&self.owner);
            self.redis.query("unlock", &unlock).await
        })
    }

    fn count_authorizer_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        Box::pin(async move {
            self.redis
                .count(&self.fetches_key(day), DAY_COUNT_SECS)
                .await
        })
    }

    fn authorizer_fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        Box::pin(async move { self.redis.counted(&self.fetches_key(day)).await })
    }
}
