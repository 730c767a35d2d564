//! What only Sentinel needs: the primary asked of the sentinels (the
//! first that answers is believed, and the node it names must say it is
//! the primary), and the `+switch-master` announcements heard, one
//! sentinel at a time, so a failover forgets the connection at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, RedisResult, Value};
use tracing::{debug, info, warn};

use super::connector::Connector;
use super::{LinkCore, LOG_TARGET};
use crate::config::{RedisNode as Node, Topology};

/// One sentinel's answer; a dead sentinel must leave time to ask another.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause before listening to the next sentinel for failovers.
const SENTINEL_RETRY: Duration = Duration::from_secs(1);

/// Follows `+switch-master` on one sentinel at a time, moving on when one
/// goes away.
pub(super) async fn listen_for_failovers(
    shared: Arc<LinkCore>,
    sentinels: Vec<Node>,
    master: String,
) {
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
                debug!(target: LOG_TARGET, %sentinel, "listening for failovers");
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let payload: String = message.get_payload().unwrap_or_default();
                    // "<master> <old ip> <old port> <new ip> <new port>"
                    let mut words = payload.split(' ');
                    if words.next() == Some(master.as_str()) {
                        let new: Vec<&str> = words.skip(2).collect();
                        info!(target: LOG_TARGET, %master, primary = %new.join(":"), "the sentinels switched the primary; reconnecting");
                        shared.forget(None);
                    }
                }
                debug!(target: LOG_TARGET, %sentinel, "lost the sentinel's failover announcements");
            }
            Ok(Err(err)) => {
                debug!(target: LOG_TARGET, %sentinel, error = %err, "cannot listen to the sentinel")
            }
            Err(_) => debug!(target: LOG_TARGET, %sentinel, "the sentinel did not answer in time"),
        }
        tokio::time::sleep(SENTINEL_RETRY).await;
    }
}

impl Connector {
    fn sentinel_client(&self, sentinel: &Node) -> RedisResult<Client> {
        // Sentinels are asked without credentials first: most run without
        // a password of their own.
        self.client(self.info(sentinel, 0, false))
    }

    /// A connection to the primary the sentinels name, once it says it
    /// is the primary.
    pub(super) async fn connect_primary(
        &self,
        db: i64,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let primary = self.primary().await?;
        let client = self.client(self.info(&primary, db, true))?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        // The sentinels' view may be a moment old: a node they
        // still name may have been demoted already.
        let role: Value = redis::cmd("ROLE").query_async(&mut connection).await?;
        if !is_primary(&role) {
            warn!(target: LOG_TARGET, %primary, "the node the sentinels name is not a primary (yet); asking again");
            return Err(RedisError::from((
                ErrorKind::ReadOnly,
                "not the primary",
                primary.to_string(),
            )));
        }
        debug!(target: LOG_TARGET, %primary, "connected to the primary");
        Ok(connection)
    }

    /// Where the sentinels say the primary is: the first sentinel that
    /// answers is believed.
    pub(super) async fn primary(&self) -> RedisResult<Node> {
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
