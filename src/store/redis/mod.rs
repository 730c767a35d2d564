//! The Redis store: what makes a fleet of brokers behave like one
//! (DESIGN.md sections 9 and 14), on one Redis, a Sentinel-managed primary
//! or a Redis Cluster. Per credential it keeps, under one hash tag
//! ([`keys`]): the current record (JSON, expiring with the credential),
//! the refresh lock ([`lock`]), the Beijing day's upstream calls (the
//! fleet's shared budget), and an `updated` channel published after every
//! new record. Records of Part I's untagged layout are moved over on first
//! read ([`migrate`]).
//!
//! Every command is bounded by a short timeout, so a frozen Redis makes
//! the broker fall back to its local state rather than hang; and no lock
//! is held across an `.await` ([`connect`]).

mod connect;
mod keys;
mod lock;
mod migrate;
mod neighbours;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use connect::Access;
pub use neighbours::{Neighbour, Neighbours};

use super::{Cluster, LockToken, Store, StoreError, StoreKey, StoredCredential};
use crate::config::{RedisConfig, RedisTarget, Topology};
use connect::{Conn, Link};
use keys::Keys;

/// The longest any one Redis command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the per-day counter outlives its day.
const COUNTER_TTL_SECS: i64 = 3 * 86_400;
/// How long a write of a crown jewel waits for a replica to confirm it:
/// well inside [`COMMAND_TIMEOUT`].
const REPLICA_WAIT: Duration = Duration::from_millis(300);
/// Pause between attempts to resubscribe after Redis went away.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

/// Stores the record only if its token was fetched strictly later than the
/// stored one's. Brokers that fetched on their own while Redis was away
/// thus converge on one token when it returns (see
/// [`crate::store::StoredToken::supersedes`]), and rewriting the same token
/// is a no-op: no publish, so brokers never wake each other in a loop.
/// Publishes on a change. Both keys share the credential's hash tag.
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

/// Counts one fetch and keeps the counter a few days; a script rather
/// than MULTI so it runs alike on one Redis and on Cluster.
const COUNT: &str = r"
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return count
";

pub struct RedisStore {
    core: Arc<Core>,
}

/// What the store's background work (lock renewals) shares with it.
struct Core {
    link: Link,
    prefix: String,
    /// A Sentinel-managed primary: its writes reach a replica before a
    /// failover can promote it, so crown jewels wait for one
    /// ([`RedisStore::replicated_write`]).
    replicated: bool,
    /// [`RedisTarget::kind`]: single, sentinel or cluster.
    topology: &'static str,
    owner: String,
    /// Locks asked for whose answer never came: a frozen Redis runs the
    /// command once it thaws, leaving a lock nobody knows it holds (for
    /// one lease). Each is released (if still ours) before the next lock
    /// attempt.
    unanswered_locks: Mutex<Vec<(String, String)>>,
    /// Locks held now, by owner id: renewed until released, and
    /// released on close.
    held_locks: Mutex<HashMap<String, lock::Held>>,
    /// Credentials whose Part I keys were looked for already.
    migrated: Mutex<HashSet<String>>,
}

impl RedisStore {
    /// Does not connect: the broker must start, and serve a stored or
    /// locally fetched token, even while Redis is down.
    pub fn new(target: RedisTarget, access: Access, prefix: &str) -> Result<Self, StoreError> {
        let replicated = matches!(target.topology, Topology::Sentinel { .. });
        Ok(RedisStore {
            core: Arc::new(Core {
                replicated,
                topology: target.kind(),
                link: Link::new(target, access)?,
                prefix: prefix.to_owned(),
                unanswered_locks: Mutex::new(Vec::new()),
                held_locks: Mutex::new(HashMap::new()),
                migrated: Mutex::new(HashSet::new()),
                owner: format!(
                    "{}-{}-{:016x}",
                    hostname(),
                    std::process::id(),
                    rand::random::<u64>()
                ),
            }),
        })
    }

    /// The store `[store]` describes; reads the CA file, if any.
    pub fn configured(config: &RedisConfig, prefix: &str) -> Result<Self, StoreError> {
        let ca_pem = config
            .ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path).map_err(|source| StoreError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })
            })
            .transpose()?;
        let access = Access {
            password: config
                .password
                .as_ref()
                .map(|(password, _)| password.clone()),
            ca_pem,
        };
        RedisStore::new(config.target.clone(), access, prefix)
    }

    /// Counts one event on the counter `key`, kept `ttl_secs` from the
    /// last count; returns the new count. For counters beside the
    /// credentials (quota resets), on the store's own connection, so they
    /// follow a failover like everything else.
    pub async fn count(&self, key: &str, ttl_secs: i64) -> Result<u32, StoreError> {
        let mut command = eval(COUNT, &[key]);
        command.arg(1).arg(ttl_secs);
        self.core.query("count", &command).await
    }

    /// The counter `key`, 0 when there is none.
    pub async fn counted(&self, key: &str) -> Result<u32, StoreError> {
        let count: Option<u32> = self.core.query("read", redis::cmd("GET").arg(key)).await?;
        Ok(count.unwrap_or(0))
    }

    fn keys(&self, key: &StoreKey) -> Keys {
        Keys::new(&self.core.prefix, key)
    }

    /// The configured `key_prefix`: state kept beside the credentials (a
    /// platform's authorizers) is keyed under it too.
    pub fn prefix(&self) -> &str {
        &self.core.prefix
    }

    /// Runs one command on the store's connection, with its timeout and
    /// its failover handling: every kind's durable state goes through this
    /// one connection, so what holds for tokens on Sentinel and Cluster
    /// holds for it too. Keys of one command must share a hash tag.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.core.query(op, command).await
    }

    /// Runs `pipeline` (all its keys under one hash tag) as [`Self::query`]
    /// runs a command.
    pub async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipeline: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.core
            .run(op, async |mut c| pipeline.query_async(&mut c).await)
            .await
    }

    /// Runs `pipeline`, a write of something that cannot be fetched again
    /// (a refresh token, a permanent code), and on a Sentinel-managed
    /// primary waits until a replica has it too (`WAIT`, bounded by
    /// `REPLICA_WAIT`), so a failover right after cannot take it along.
    /// A replica that does not confirm in time is logged, not an error:
    /// the write is on the primary, and the broker keeps it in memory.
    pub async fn replicated_write(
        &self,
        op: &'static str,
        pipeline: &redis::Pipeline,
    ) -> Result<(), StoreError> {
        if !self.core.replicated {
            return self.query_pipeline(op, pipeline).await;
        }
        let mut waited = pipeline.clone();
        waited
            .cmd("WAIT")
            .arg(1)
            .arg(REPLICA_WAIT.as_millis() as u64);
        let answers: Vec<redis::Value> = self.query_pipeline(op, &waited).await?;
        let confirmed = matches!(answers.last(), Some(redis::Value::Int(n)) if *n >= 1);
        if !confirmed {
            warn!(
                op,
                "no replica confirmed a write within {REPLICA_WAIT:?}; it is on the primary only"
            );
        }
        Ok(())
    }
}

impl Core {
    /// Runs one command against Redis with [`COMMAND_TIMEOUT`]; a failure
    /// that means the connection is bad makes the next command reconnect.
    async fn run<T>(
        &self,
        op: &'static str,
        command: impl AsyncFnOnce(Conn) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let connection = self.link.connection().await?;
        match tokio::time::timeout(COMMAND_TIMEOUT, command(connection.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                self.link.failed(&connection, Some(&err));
                Err(redis_error(op, err))
            }
            Err(_) => {
                self.link.failed(&connection, None);
                Err(timeout_error(op))
            }
        }
    }

    /// Runs a prepared command (a script from [`eval`]) with
    /// [`COMMAND_TIMEOUT`].
    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.run(op, async |mut c| command.query_async(&mut c).await)
            .await
    }
}

/// `script` with `keys`, its arguments to be added: EVAL, so there is
/// nothing to load first, and Cluster routes it by its first key.
fn eval(script: &str, keys: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(script).arg(keys.len()).arg(keys);
    command
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Core {
    /// Stores `state` under `keys` if its token is newer than the stored
    /// one; returns whether it was stored.
    async fn save(&self, keys: &Keys, state: &StoredCredential) -> Result<bool, StoreError> {
        let Some(token) = &state.token else {
            return Ok(false);
        };
        let ttl_ms = token.expires_ms().saturating_sub(now_ms());
        if ttl_ms == 0 {
            return Ok(false);
        }
        let json = serde_json::to_string(state).expect("a stored record always serializes");
        let mut command = eval(SAVE_IF_NEWER, &[&keys.token(), &keys.updated()]);
        command.arg(&json).arg(ttl_ms).arg(token.fetched_ms());
        let stored: i64 = self.query("save", &command).await?;
        Ok(stored == 1)
    }
}

impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>> {
        Box::pin(async move {
            let keys = self.keys(key);
            let token_key = keys.token();
            let raw: Option<String> = self
                .core
                .run("get", async |mut c| c.get(&token_key).await)
                .await?;
            let raw = match raw {
                Some(raw) => Some(raw),
                None => self.core.migrate_record(&keys).await?,
            };
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
        state: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.core.save(&self.keys(key), state).await?;
            Ok(())
        })
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.core.release_held_locks().await })
    }
}

impl Cluster for RedisStore {
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        hold: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
        Box::pin(async move { lock::try_lock(&self.core, &self.keys(key), hold).await })
    }

    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        lock: LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { lock::unlock(&self.core, &self.keys(key), lock).await })
    }

    fn count_fetch<'a>(
        &'a self,
        key: &'a StoreKey,
        day: u32,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        Box::pin(async move {
            let keys = self.keys(key);
            self.core.migrate_counter(&keys, day).await?;
            let mut command = eval(COUNT, &[&keys.fetches(day)]);
            command.arg(1).arg(COUNTER_TTL_SECS);
            self.core.query("count", &command).await
        })
    }

    fn fetches<'a>(
        &'a self,
        key: &'a StoreKey,
        day: u32,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        Box::pin(async move {
            let keys = self.keys(key);
            self.core.migrate_counter(&keys, day).await?;
            let counter = keys.fetches(day);
            let count: Option<u32> = self
                .core
                .run("count", async |mut c| c.get(&counter).await)
                .await?;
            Ok(count.unwrap_or(0))
        })
    }

    fn watch(&self, key: &StoreKey, cancel: CancellationToken) -> mpsc::Receiver<()> {
        let (notify, updates) = mpsc::channel(1);
        let channel = self.keys(key).updated();
        let core = self.core.clone();
        tokio::spawn(async move {
            cancel
                .run_until_cancelled(subscribe_forever(core, channel, notify))
                .await;
        });
        updates
    }
}

/// Forwards every message on `channel` as a wake-up, resubscribing after
/// Redis goes away (on Sentinel, to wherever the primary is now); each
/// (re)subscription is a wake-up too, since updates may have been missed
/// meanwhile.
async fn subscribe_forever(core: Arc<Core>, channel: String, notify: mpsc::Sender<()>) {
    loop {
        let subscribed = async {
            let mut pubsub = core.link.pubsub().await?;
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
