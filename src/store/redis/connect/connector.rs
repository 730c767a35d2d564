//! How a connection is opened for the configured topology: the one
//! Redis's client, built once with its URL checked; a Redis Cluster's
//! client; or, for Sentinel, the primary the sentinels name
//! ([`super::sentinel`]). Credentials and a private CA apply to every
//! node.

use redis::aio::PubSub;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    RedisConnectionInfo, RedisResult, TlsCertificates,
};

use super::Inner;
use crate::config::{RedisNode as Node, RedisTarget, Topology};
use crate::secret::Secret;
use crate::store::redis::COMMAND_TIMEOUT;

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

/// How to open a connection to the configured topology.
pub(super) struct Connector {
    pub(super) target: RedisTarget,
    username: Option<String>,
    pub(super) password: Option<String>,
    ca_pem: Option<Vec<u8>>,
    /// One Redis: built once, its URL checked.
    single: Option<Client>,
    cluster: Option<redis::cluster::ClusterClient>,
}

impl Connector {
    pub(super) fn new(target: RedisTarget, access: Access) -> RedisResult<Connector> {
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

    pub(super) fn info(&self, node: &Node, db: i64, authenticated: bool) -> ConnectionInfo {
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

    pub(super) fn client(&self, info: ConnectionInfo) -> RedisResult<Client> {
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

    pub(super) async fn connect(&self) -> RedisResult<Inner> {
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
                let connection = self.connect_primary(*db, &config).await?;
                Ok(Inner::Node(connection))
            }
        }
    }

    /// A subscription connection on a node that sees the store's
    /// publishes: the one Redis, the current primary, or any cluster node
    /// (Redis Cluster forwards every publish to all nodes).
    pub(super) async fn pubsub(&self) -> RedisResult<PubSub> {
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
