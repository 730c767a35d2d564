//! A platform's state in the fleet's Redis. Every key shares the hash tag
//! `{prefix:component_appid:authorizers}`, so it works on Redis Cluster:
//! the hash of authorizer records (no expiry: a refresh token must
//! outlive any token), the verify ticket, a short lock per authorizer
//! being refreshed, and a per-second counter that keeps the whole fleet
//! within its authorizer fetch rate.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use super::store::{AuthorizerRecord, PlatformStore, StoredTicket};
use crate::store::StoreError;

/// A refresh holds its authorizer this long at most (a fetch's timeout
/// and then some); a broker that died holding it blocks nobody for long.
const LOCK_TTL: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RedisPlatformStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    tag: String,
    owner: String,
}

fn redis_error(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |err| StoreError::Redis {
        op,
        message: err.to_string(),
    }
}

fn decode_error(op: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |err| StoreError::Redis {
        op,
        message: format!("undecodable record: {err}"),
    }
}

impl RedisPlatformStore {
    /// The store of one platform in the Redis `redis` names, which must be
    /// a single one (configuration refuses a Sentinel or Cluster URL with
    /// platforms).
    pub fn new(
        redis: &crate::config::RedisConfig,
        prefix: &str,
        component_appid: &str,
    ) -> Result<Self, StoreError> {
        let crate::store::Topology::Single { url } = &redis.target.topology else {
            return Err(StoreError::Redis {
                op: "connect",
                message: "[[platforms]] need a single Redis".into(),
            });
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(redis_error("connect"))?;
        if let Some((password, _)) = &redis.password {
            info.redis.password = Some(password.expose().to_owned());
        }
        let client = redis::Client::open(info).map_err(redis_error("connect"))?;
        Ok(RedisPlatformStore {
            client,
            connection: OnceCell::new(),
            tag: format!("{{{prefix}:{component_appid}:authorizers}}"),
            owner: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_connection_manager())
                    .await
                    .map_err(|_| StoreError::Redis {
                        op: "connect",
                        message: "timed out".into(),
                    })?
                    .map_err(redis_error("connect"))
            })
            .await?;
        Ok(manager.clone())
    }

    fn ticket_key(&self) -> String {
        format!("{}:verify_ticket", self.tag)
    }

    fn lock_key(&self, appid: &str) -> String {
        format!("{}:lock:{appid}", self.tag)
    }
}

impl PlatformStore for RedisPlatformStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<StoredTicket>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let raw: Option<String> = connection
                .get(self.ticket_key())
                .await
                .map_err(redis_error("get"))?;
            raw.map(|raw| serde_json::from_str(&raw).map_err(decode_error("get")))
                .transpose()
        })
    }

    fn save_ticket<'a>(
        &'a self,
        ticket: &'a StoredTicket,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let raw = serde_json::to_string(ticket).expect("a ticket serializes");
            connection
                .set_ex::<_, _, ()>(
                    self.ticket_key(),
                    raw,
                    super::component::TICKET_LIFETIME_SECS,
                )
                .await
                .map_err(redis_error("set"))
        })
    }

    fn load_authorizers(&self) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let all: Vec<(String, String)> = connection
                .hgetall(&self.tag)
                .await
                .map_err(redis_error("hgetall"))?;
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
            let mut connection = self.connection().await?;
            let fields: Vec<(String, String)> = records
                .iter()
                .map(|r| {
                    (
                        r.appid.clone(),
                        serde_json::to_string(r).expect("a record serializes"),
                    )
                })
                .collect();
            connection
                .hset_multiple::<_, _, _, ()>(&self.tag, &fields)
                .await
                .map_err(redis_error("hset"))
        })
    }

    fn save_recovered<'a>(
        &'a self,
        records: &'a [AuthorizerRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let mut pipe = redis::pipe();
            for record in records.iter().filter(|r| !r.refresh_token.is_empty()) {
                let raw = serde_json::to_string(record).expect("a record serializes");
                pipe.hset_nx(&self.tag, &record.appid, raw).ignore();
            }
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(redis_error("hsetnx"))
        })
    }

    fn remove_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            connection
                .hdel::<_, _, ()>(&self.tag, appid)
                .await
                .map_err(redis_error("hdel"))
        })
    }

    fn shared_authorizer<'a>(
        &'a self,
        appid: &'a str,
    ) -> BoxFuture<'a, Result<Option<AuthorizerRecord>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let raw: Option<String> = connection
                .hget(&self.tag, appid)
                .await
                .map_err(redis_error("hget"))?;
            raw.map(|raw| serde_json::from_str(&raw).map_err(decode_error("hget")))
                .transpose()
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn fetch_permit(&self, per_second: u32) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let second = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let key = format!("{}:rate:{second}", self.tag);
            let (count,): (u32,) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .expire(&key, 5)
                .ignore()
                .query_async(&mut connection)
                .await
                .map_err(redis_error("incr"))?;
            Ok(count <= per_second)
        })
    }

    fn lock_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let taken: Option<String> = redis::cmd("SET")
                .arg(self.lock_key(appid))
                .arg(&self.owner)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_TTL.as_millis() as u64)
                .query_async(&mut connection)
                .await
                .map_err(redis_error("lock"))?;
            Ok(taken.is_some())
        })
    }

    fn unlock_authorizer<'a>(&'a self, appid: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            )
            .key(self.lock_key(appid))
            .arg(&self.owner)
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(redis_error("unlock"))
        })
    }
}
