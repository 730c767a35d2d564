//! The Redis store: what makes a fleet of brokers behave like one
//! (DESIGN.md section 9). Per app (appid and grant) it keeps
//!
//! - `{prefix}:{appid}:{grant}:token`: the current record, as JSON,
//!   expiring with the token;
//! - `…:lock`: who is fetching (SET NX PX, an owner id, released by
//!   compare-and-delete);
//! - `…:fetches:{YYYYMMDD}`: the Beijing day's upstream calls, the fleet's
//!   shared budget;
//! - the `…:updated` channel, published after every new token.
//!
//! Every command is bounded by a short timeout, so a frozen Redis makes
//! the broker fall back to its local state rather than hang.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Cluster, LockToken, Store, StoreError, StoreKey, StoredApp};

/// The longest any one Redis command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the per-day counter outlives its day.
const COUNTER_TTL_SECS: i64 = 3 * 86_400;
/// Pause between attempts to resubscribe after Redis went away.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);
/// After a failed connect, commands fail at once for this long instead of
/// each waiting out its own connect timeout.
const RECONNECT_PAUSE: Duration = Duration::from_secs(2);

/// Stores the record only if its token was fetched strictly later than the
/// stored one's. Brokers that fetched on their own while Redis was away
/// thus converge on one token when it returns (see
/// [`crate::store::StoredToken::supersedes`]), and rewriting the same token
/// is a no-op: no publish, so brokers never wake each other in a loop.
/// Publishes on a change.
const SAVE_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and type(decoded.token) == 'table' then
    local stored_ms = tonumber(decoded.token.fetched_at_ms) or 0
    if stored_ms == 0 then
      stored_ms = (tonumber(decoded.token.fetched_at) or 0) * 1000
    end
    if stored_ms >= tonumber(ARGV[3]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', KEYS[2], '1')
return 1
";

/// Deletes the lock only if we still own it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    connection: Mutex<Connection>,
    owner: String,
    /// Locks asked for whose answer never came: a frozen Redis runs the
    /// command once it thaws, leaving a lock nobody knows it holds. Each is
    /// released (if still ours) before the next lock attempt.
    unanswered_locks: Mutex<Vec<(String, String)>>,
}

#[derive(Default)]
struct Connection {
    manager: Option<ConnectionManager>,
    failed_at: Option<tokio::time::Instant>,
}

impl RedisStore {
    /// Does not connect: the broker must start, and serve a stored or
    /// locally fetched token, even while Redis is down.
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|err| StoreError::Redis {
            op: "open",
            message: err.to_string(),
        })?;
        Ok(RedisStore {
            client,
            prefix: prefix.to_owned(),
            connection: Mutex::new(Connection::default()),
            unanswered_locks: Mutex::new(Vec::new()),
            owner: format!(
                "{}-{}-{:016x}",
                hostname(),
                std::process::id(),
                rand::random::<u64>()
            ),
        })
    }

    fn key(&self, key: &StoreKey, suffix: &str) -> String {
        format!(
            "{}:{}:{}:{suffix}",
            self.prefix,
            key.appid,
            key.cluster_grant()
        )
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(manager) = slot.manager.as_ref() {
            return Ok(manager.clone());
        }
        if slot
            .failed_at
            .is_some_and(|at| at.elapsed() < RECONNECT_PAUSE)
        {
            return Err(StoreError::Redis {
                op: "connect",
                message: "unreachable (retrying shortly)".to_owned(),
            });
        }
        // Once created, the manager reconnects by itself; only the first
        // connection needs this.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT)
            .set_number_of_retries(1)
            .set_factor(50)
            .set_max_delay(200);
        let connected = tokio::time::timeout(
            COMMAND_TIMEOUT * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| timeout_error("connect"))
        .and_then(|result| result.map_err(|err| redis_error("connect", err)));
        match connected {
            Ok(manager) => {
                slot.manager = Some(manager.clone());
                slot.failed_at = None;
                Ok(manager)
            }
            Err(err) => {
                slot.failed_at = Some(tokio::time::Instant::now());
                Err(err)
            }
        }
    }

    /// Runs one command against Redis with [`COMMAND_TIMEOUT`].
    async fn run<T>(
        &self,
        op: &'static str,
        command: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let connection = self.connection().await?;
        tokio::time::timeout(COMMAND_TIMEOUT, command(connection))
            .await
            .map_err(|_| timeout_error(op))?
            .map_err(|err| redis_error(op, err))
    }
}

impl RedisStore {
    /// Deletes `lock_key` if `owner` still holds it.
    async fn release(&self, lock_key: &str, owner: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .run("unlock", async |mut c| {
                redis::Script::new(UNLOCK)
                    .key(lock_key)
                    .arg(owner)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn release_unanswered_locks(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.unanswered_locks.lock().await);
        for (index, (lock_key, owner)) in pending.iter().enumerate() {
            if let Err(err) = self.release(lock_key, owner).await {
                self.unanswered_locks
                    .lock()
                    .await
                    .extend(pending[index..].iter().cloned());
                return Err(err);
            }
        }
        Ok(())
    }
}

fn redis_error(op: &'static str, err: redis::RedisError) -> StoreError {
    StoreError::Redis {
        op,
        message: err.to_string(),
    }
}

fn timeout_error(op: &'static str) -> StoreError {
    StoreError::Redis {
        op,
        message: format!("no answer within {COMMAND_TIMEOUT:?}"),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredApp>, StoreError>> {
        Box::pin(async move {
            let token_key = self.key(key, "token");
            let raw: Option<String> = self
                .run("get", async |mut c| c.get(&token_key).await)
                .await?;
            let Some(raw) = raw else { return Ok(None) };
            serde_json::from_str(&raw)
                .map(Some)
                .map_err(|err| StoreError::Corrupt {
                    path: token_key.into(),
                    reason: err.to_string(),
                })
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        state: &'a StoredApp,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let Some(token) = &state.token else {
                return Ok(());
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let ttl_ms = token.expires_ms().saturating_sub(now_ms);
            if ttl_ms == 0 {
                return Ok(());
            }
            let json = serde_json::to_string(state).expect("a stored record always serializes");
            let (token_key, channel) = (self.key(key, "token"), self.key(key, "updated"));
            let fetched_ms = token.fetched_ms();
            let _: i64 = self
                .run("save", async |mut c| {
                    redis::Script::new(SAVE_IF_NEWER)
                        .key(&token_key)
                        .key(&channel)
                        .arg(&json)
                        .arg(ttl_ms)
                        .arg(fetched_ms)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(())
        })
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }
}

impl Cluster for RedisStore {
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
        Box::pin(async move {
            self.release_unanswered_locks().await?;
            let lock_key = self.key(key, "lock");
            let owner = format!("{}-{:08x}", self.owner, rand::random::<u32>());
            let options = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
            let taken: Result<Option<String>, StoreError> = self
                .run("lock", async |mut c| {
                    c.set_options(&lock_key, &owner, options).await
                })
                .await;
            if taken.is_err() {
                self.unanswered_locks
                    .lock()
                    .await
                    .push((lock_key, owner.clone()));
            }
            Ok(taken?.map(|_| LockToken(owner)))
        })
    }

    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        lock: LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.release(&self.key(key, "lock"), &lock.0).await })
    }

    fn count_fetch<'a>(
        &'a self,
        key: &'a StoreKey,
        day: u32,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        Box::pin(async move {
            let counter = self.key(key, &format!("fetches:{day}"));
            let (count, _): (u32, bool) = self
                .run("count", async |mut c| {
                    redis::pipe()
                        .atomic()
                        .incr(&counter, 1)
                        .expire(&counter, COUNTER_TTL_SECS)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            Ok(count)
        })
    }

    fn fetches<'a>(
        &'a self,
        key: &'a StoreKey,
        day: u32,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        Box::pin(async move {
            let counter = self.key(key, &format!("fetches:{day}"));
            let count: Option<u32> = self
                .run("count", async |mut c| c.get(&counter).await)
                .await?;
            Ok(count.unwrap_or(0))
        })
    }

    fn watch(&self, key: &StoreKey, cancel: CancellationToken) -> mpsc::Receiver<()> {
        let (notify, updates) = mpsc::channel(1);
        let channel = self.key(key, "updated");
        let client = self.client.clone();
        tokio::spawn(async move {
            cancel
                .run_until_cancelled(subscribe_forever(client, channel, notify))
                .await;
        });
        updates
    }
}

/// Forwards every message on `channel` as a wake-up, resubscribing after
/// Redis goes away; each (re)subscription is a wake-up too, since updates
/// may have been missed meanwhile.
async fn subscribe_forever(client: redis::Client, channel: String, notify: mpsc::Sender<()>) {
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, subscribed).await {
            Ok(Ok(pubsub)) => {
                debug!(%channel, "subscribed to token updates");
                let _ = notify.try_send(());
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    if notify.is_closed() {
                        return;
                    }
                    let _ = notify.try_send(());
                }
                warn!(%channel, "lost the token update subscription; resubscribing");
            }
            Ok(Err(err)) => debug!(%channel, error = %err, "cannot subscribe to token updates"),
            Err(_) => debug!(%channel, "subscribing to token updates timed out"),
        }
        if notify.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
    }
}
