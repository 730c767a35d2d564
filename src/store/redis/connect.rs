//! The store's connection to wherever its commands go: one Redis, the
//! primary the sentinels name, or a Redis Cluster (DESIGN.md section 14).
//!
//! Callers never hold a lock across an `.await`: the current connection
//! sits behind a `std` mutex taken only to copy it out. A missing one is
//! made by a single shared attempt that every caller needing it awaits
//! (bounded), so one slow connect costs each waiting refresher at most
//! that bound, never a queue of them.
//!
//! A connection that fails (dropped, refused, a primary demoted to a
//! replica answering READONLY, and with Sentinel one that stops
//! answering) is forgotten; the next command connects again, and for
//! Sentinel first asks the sentinels where the primary is now. The sentinels' `+switch-master` announcement forgets it
//! at once, without waiting for a command to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult,
    TlsCertificates, Value,
};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::COMMAND_TIMEOUT;
use crate::config::{RedisNode as Node, RedisTarget, Topology};
use crate::secret::Secret;
use crate::store::StoreError;

/// The longest one attempt to connect may take, sentinel queries
/// included, before commands fail and the broker falls back on its own
/// state.
const CONNECT_BUDGET: Duration = Duration::from_secs(2);
/// After a failed connect, commands fail at once for this long instead of
/// each waiting out its own connect attempt.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// One sentinel's answer; a dead sentinel must leave time to ask another.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause before listening to the next sentinel for failovers.
const SENTINEL_RETRY: Duration = Duration::from_secs(1);

/// What the store needs to reach Redis, beyond the URL.
#[derive(Clone, Default)]
pub struct Access {
    /// From `password_env` or `password_file`; a URL's own password is
    /// used when this is `None`.
    pub password: Option<Secret>,
    /// PEM certificates of a private CA (`ca_file`), trusted instead of
    /// the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// A connection ready for commands; cheap to clone.
#[derive(Clone)]
pub(super) struct Conn {
    generation: u64,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Node(connection) => connection.req_packed_command(cmd),
            Inner::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Node(connection) => connection.req_packed_commands(cmd, offset, count),
            Inner::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Node(connection) => connection.get_db(),
            Inner::Cluster(connection) => connection.get_db(),
        }
    }
}

type Attempt = Shared<BoxFuture<'static, Result<Inner, Arc<String>>>>;

enum State {
    Idle { failed_at: Option<Instant> },
    Connecting { generation: u64, attempt: Attempt },
    Ready(Conn),
}

struct LinkCore {
    connector: Arc<Connector>,
    state: Mutex<State>,
    next_generation: std::sync::atomic::AtomicU64,
    watching: AtomicBool,
}

/// The store's connection, made on first use and remade after failures.
pub(super) struct Link {
    shared: Arc<LinkCore>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl Link {
    /// Checks what can be checked without a network (the URL, the CA
    /// file's certificates); connects only when first used.
    pub(super) fn new(target: RedisTarget, access: Access) -> Result<Link, StoreError> {
        let connector = Connector::new(target, access).map_err(|err| StoreError::Redis {
            op: "open",
            message: err.to_string(),
        })?;
        let stop = CancellationToken::new();
        Ok(Link {
            shared: Arc::new(LinkCore {
                connector: Arc::new(connector),
                state: Mutex::new(State::Idle { failed_at: None }),
                next_generation: std::sync::atomic::AtomicU64::new(1),
                watching: AtomicBool::new(false),
            }),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        })
    }

    /// The current connection, connecting first if there is none.
    pub(super) async fn connection(&self) -> Result<Conn, StoreError> {
        self.watch_failovers();
        let (generation, attempt) = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            match &*state {
                State::Ready(conn) => return Ok(conn.clone()),
                State::Connecting {
                    generation,
                    attempt,
                } => (*generation, attempt.clone()),
                State::Idle {
                    failed_at: Some(at),
                } if at.elapsed() < RECONNECT_PAUSE => {
                    return Err(StoreError::Redis {
                        op: "connect",
                        message: "unreachable (retrying shortly)".to_owned(),
                    })
                }
                State::Idle { .. } => {
                    let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
                    // The attempt holds the connector, not the state it is
                    // kept in.
                    let connector = self.shared.connector.clone();
                    let attempt = async move {
                        tokio::time::timeout(CONNECT_BUDGET, connector.connect())
                            .await
                            .unwrap_or_else(|_| {
                                Err(RedisError::from((
                                    ErrorKind::IoError,
                                    "connect",
                                    format!("no connection within {CONNECT_BUDGET:?}"),
                                )))
                            })
                            .map_err(|err| Arc::new(err.to_string()))
                    }
                    .boxed()
                    .shared();
                    *state = State::Connecting {
                        generation,
                        attempt: attempt.clone(),
                    };
                    (generation, attempt)
                }
            }
        };
        let outcome = attempt.await;
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let current =
            matches!(&*state, State::Connecting { generation: g, .. } if *g == generation);
        match outcome {
            Ok(inner) => {
                let conn = Conn { generation, inner };
                if current {
                    *state = State::Ready(conn.clone());
                }
                Ok(conn)
            }
            Err(message) => {
                if current {
                    *state = State::Idle {
                        failed_at: Some(Instant::now()),
                    };
                }
                Err(StoreError::Redis {
                    op: "connect",
                    message: message.to_string(),
                })
            }
        }
    }

    /// After a command on `conn` failed: forgets it if the failure means
    /// the connection (or the node behind it) is no longer good.
    pub(super) fn failed(&self, conn: &Conn, error: Option<&RedisError>) {
        let lost = match error {
            // No answer in time: with Sentinel, perhaps a primary cut off
            // from us that the sentinels are replacing; elsewhere a frozen
            // node, which a new connection would wait on just the same.
            None => matches!(
                self.shared.connector.target.topology,
                Topology::Sentinel { .. }
            ),
            Some(err) => {
                err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_timeout()
                    || err.kind() == ErrorKind::ReadOnly
                    || err.code() == Some("READONLY")
            }
        };
        if lost {
            self.shared.forget(Some(conn.generation));
        }
    }

    /// A subscription for `channel`'s messages, on a node where the
    /// store's publishes arrive.
    pub(super) async fn pubsub(&self) -> RedisResult<PubSub> {
        self.shared.connector.pubsub().await
    }

    /// For Sentinel: listens for `+switch-master` from the first use on,
    /// until the store is dropped.
    fn watch_failovers(&self) {
        let Topology::Sentinel {
            sentinels, master, ..
        } = &self.shared.connector.target.topology
        else {
            return;
        };
        if self.shared.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared = self.shared.clone();
        let (sentinels, master) = (sentinels.clone(), master.clone());
        let stop = self.stop.clone();
        tokio::spawn(async move {
            stop.run_until_cancelled(listen_for_failovers(shared, sentinels, master))
                .await;
        });
    }
}

impl LinkCore {
    /// Drops the connection numbered `generation` (any, if `None`) so the
    /// next command connects anew, at once.
    fn forget(&self, generation: Option<u64>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let matches = match (&*state, generation) {
            (State::Ready(conn), Some(generation)) => conn.generation == generation,
            (State::Ready(_), None) => true,
            (State::Idle { .. }, None) => true,
            _ => false,
        };
        if matches {
            *state = State::Idle { failed_at: None };
        }
    }
}

/// Follows `+switch-master` on one sentinel at a time, moving on when one
/// goes away.
async fn listen_for_failovers(shared: Arc<LinkCore>, sentinels: Vec<Node>, master: String) {
    let mut next = 0;
    loop {
        let sentinel = &sentinels[next % sentinels.len()];
        next += 1;
        let subscribed = async {
            let client = shared.connector.sentinel_client(sentinel)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(SENTINEL_TIMEOUT * 2, subscribed).await {
            Ok(Ok(pubsub)) => {
                debug!(%sentinel, "listening for failovers");
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let payload: String = message.get_payload().unwrap_or_default();
                    // "<master> <old ip> <old port> <new ip> <new port>"
                    let mut words = payload.split(' ');
                    if words.next() == Some(master.as_str()) {
                        let new: Vec<&str> = words.skip(2).collect();
                        info!(%master, primary = %new.join(":"), "the sentinels switched the primary; reconnecting");
                        shared.forget(None);
                    }
                }
                debug!(%sentinel, "lost the sentinel's failover announcements");
            }
            Ok(Err(err)) => debug!(%sentinel, error = %err, "cannot listen to the sentinel"),
            Err(_) => debug!(%sentinel, "the sentinel did not answer in time"),
        }
        tokio::time::sleep(SENTINEL_RETRY).await;
    }
}

/// How to open a connection to the configured topology.
struct Connector {
    target: RedisTarget,
    username: Option<String>,
    password: Option<String>,
    ca_pem: Option<Vec<u8>>,
    /// One Redis: built once, its URL checked.
    single: Option<Client>,
    cluster: Option<redis::cluster::ClusterClient>,
}

impl Connector {
    fn new(target: RedisTarget, access: Access) -> RedisResult<Connector> {
        let password = access
            .password
            .or_else(|| target.password.clone())
            .map(|password| password.expose().to_owned());
        let mut connector = Connector {
            username: target.username.clone(),
            password,
            ca_pem: access.ca_pem,
            single: None,
            cluster: None,
            target,
        };
        match &connector.target.topology {
            Topology::Single { url } => {
                let mut info = url.as_str().into_connection_info()?;
                info.redis.password.clone_from(&connector.password);
                connector.single = Some(connector.client(info)?);
            }
            Topology::Cluster { seeds } => {
                let seeds: Vec<ConnectionInfo> = seeds
                    .iter()
                    .map(|node| connector.info(node, 0, true))
                    .collect();
                let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(200);
                if let Some(pem) = &connector.ca_pem {
                    builder = builder.certs(TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    });
                }
                connector.cluster = Some(builder.build()?);
            }
            Topology::Sentinel { .. } => {}
        }
        Ok(connector)
    }

    fn info(&self, node: &Node, db: i64, authenticated: bool) -> ConnectionInfo {
        let addr = if self.target.tls {
            ConnectionAddr::TcpTls {
                host: node.host.clone(),
                port: node.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(node.host.clone(), node.port)
        };
        ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db,
                username: self.username.clone().filter(|_| authenticated),
                password: self.password.clone().filter(|_| authenticated),
                ..RedisConnectionInfo::default()
            },
        }
    }

    fn client(&self, info: ConnectionInfo) -> RedisResult<Client> {
        match (
            &self.ca_pem,
            matches!(info.addr, ConnectionAddr::TcpTls { .. }),
        ) {
            (Some(pem), true) => Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => Client::open(info),
        }
    }

    fn sentinel_client(&self, sentinel: &Node) -> RedisResult<Client> {
        // Sentinels are asked without credentials first: most run without
        // a password of their own.
        self.client(self.info(sentinel, 0, false))
    }

    async fn connect(&self) -> RedisResult<Inner> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT);
        match &self.target.topology {
            Topology::Single { .. } => {
                let client = self.single.as_ref().expect("built with the connector");
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Inner::Node(connection))
            }
            Topology::Cluster { .. } => {
                let client = self.cluster.as_ref().expect("built with the connector");
                Ok(Inner::Cluster(client.get_async_connection().await?))
            }
            Topology::Sentinel { db, .. } => {
                let primary = self.primary().await?;
                let client = self.client(self.info(&primary, *db, true))?;
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                // The sentinels' view may be a moment old: a node they
                // still name may have been demoted already.
                let role: Value = redis::cmd("ROLE").query_async(&mut connection).await?;
                if !is_primary(&role) {
                    warn!(%primary, "the node the sentinels name is not a primary (yet); asking again");
                    return Err(RedisError::from((
                        ErrorKind::ReadOnly,
                        "not the primary",
                        primary.to_string(),
                    )));
                }
                debug!(%primary, "connected to the primary");
                Ok(Inner::Node(connection))
            }
        }
    }

    /// Where the sentinels say the primary is: the first sentinel that
    /// answers is believed.
    async fn primary(&self) -> RedisResult<Node> {
        let Topology::Sentinel {
            sentinels, master, ..
        } = &self.target.topology
        else {
            unreachable!("only Sentinel has sentinels");
        };
        let mut last_error = None;
        for sentinel in sentinels {
            match tokio::time::timeout(SENTINEL_TIMEOUT, self.ask_sentinel(sentinel, master)).await
            {
                Ok(Ok(Some(primary))) => return Ok(primary),
                Ok(Ok(None)) => {
                    last_error = Some(format!("sentinel {sentinel} knows no master {master}"));
                }
                Ok(Err(err)) => last_error = Some(format!("sentinel {sentinel}: {err}")),
                Err(_) => last_error = Some(format!("sentinel {sentinel} did not answer")),
            }
        }
        Err(RedisError::from((
            ErrorKind::IoError,
            "no sentinel named the primary",
            last_error.unwrap_or_default(),
        )))
    }

    async fn ask_sentinel(&self, sentinel: &Node, master: &str) -> RedisResult<Option<Node>> {
        let ask = |client: Client| async move {
            let mut connection = client.get_multiplexed_async_connection().await?;
            let answer: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async(&mut connection)
                .await?;
            RedisResult::Ok(answer.map(|(host, port)| Node { host, port }))
        };
        match ask(self.sentinel_client(sentinel)?).await {
            Err(err) if err.code() == Some("NOAUTH") && self.password.is_some() => {
                ask(self.client(self.info(sentinel, 0, true))?).await
            }
            other => other,
        }
    }

    /// A subscription connection on a node that sees the store's
    /// publishes: the one Redis, the current primary, or any cluster node
    /// (Redis Cluster forwards every publish to all nodes).
    async fn pubsub(&self) -> RedisResult<PubSub> {
        match &self.target.topology {
            Topology::Single { .. } => {
                let client = self.single.as_ref().expect("built with the connector");
                client.get_async_pubsub().await
            }
            Topology::Sentinel { db, .. } => {
                let primary = self.primary().await?;
                self.client(self.info(&primary, *db, true))?
                    .get_async_pubsub()
                    .await
            }
            Topology::Cluster { seeds } => {
                let mut last = None;
                for seed in seeds {
                    match self
                        .client(self.info(seed, 0, true))?
                        .get_async_pubsub()
                        .await
                    {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.expect("a cluster URL names at least two nodes"))
            }
        }
    }
}

/// Whether a `ROLE` answer starts with `master`.
fn is_primary(role: &Value) -> bool {
    let Value::Array(parts) = role else {
        return false;
    };
    match parts.first() {
        Some(Value::BulkString(word)) => word.as_slice() == b"master",
        Some(Value::SimpleString(word)) => word == "master",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_master_role_is_a_primary() {
        let role = |word: &str| Value::Array(vec![Value::BulkString(word.as_bytes().to_vec())]);
        assert!(is_primary(&role("master")));
        assert!(!is_primary(&role("slave")));
        assert!(!is_primary(&role("sentinel")));
        assert!(!is_primary(&Value::Nil));
    }
}
