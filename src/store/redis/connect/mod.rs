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
//! Sentinel first asks the sentinels where the primary is now. The
//! sentinels' `+switch-master` announcement forgets it at once, without
//! waiting for a command to fail.
//!
//! This file owns the connection's life (made, shared, forgotten); how
//! one is opened for each topology is [`connector`]'s, and what only
//! Sentinel needs (the primary asked for, failovers heard) is
//! [`sentinel`]'s.

mod connector;
mod sentinel;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use self::connector::Access;

use self::connector::Connector;
use self::sentinel::listen_for_failovers;
use crate::config::{RedisTarget, Topology};
use crate::store::StoreError;

/// The longest one attempt to connect may take, sentinel queries
/// included, before commands fail and the broker falls back on its own
/// state.
const CONNECT_BUDGET: Duration = Duration::from_secs(2);
/// After a failed connect, commands fail at once for this long instead of
/// each waiting out its own connect attempt.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// The target of the connection's log lines, whichever of its files
/// writes them: the one name operators filter on.
const LOG_TARGET: &str = "wxbroker::store::redis::connect";

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
