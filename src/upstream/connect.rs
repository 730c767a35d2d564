//! Opening a connection to an upstream origin as `[upstream]` says: a host
//! pinned by `connect_to` goes to its address, others are resolved by the
//! system or, with `resolve = "dns"`, by DNS alone; `https` is TLS with
//! the web's roots (as the broker's other clients), SNI and the
//! certificate checked against the URL's host, never the pinned address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use super::{DnsOnly, ResolverError};
use crate::config::{Resolve, UpstreamConfig};

/// A connection's byte stream: plain, or TLS for an `https` origin.
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Where a call goes: what a pooled connection is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of `url`, when it is `http` or `https` with a host.
    pub fn of(url: &url::Url) -> Option<Origin> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        Some(Origin {
            tls,
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }
}

/// Why no connection could be opened. Names the host, never a URL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot connect to {host}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {host} timed out")]
    TimedOut { host: String },
    #[error("{host} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("TLS handshake with {host} failed")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// Opens connections as `[upstream]` says.
pub struct Connector {
    pinned: Vec<(String, SocketAddr)>,
    dns: Option<DnsOnly>,
    tls: TlsConnector,
    timeout: Duration,
}

impl Connector {
    pub fn new(config: &UpstreamConfig, timeout: Duration) -> Result<Self, ResolverError> {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::trusting(config, timeout, roots)
    }

    /// A connector that trusts `roots` instead of the web's (a test's
    /// local CA).
    pub(super) fn trusting(
        config: &UpstreamConfig,
        timeout: Duration,
        roots: rustls::RootCertStore,
    ) -> Result<Self, ResolverError> {
        let dns = match config.resolve {
            Resolve::Dns => Some(DnsOnly::new()?),
            Resolve::System => None,
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector {
            pinned: config.connect_to.clone(),
            dns,
            tls: TlsConnector::from(Arc::new(tls)),
            timeout,
        })
    }

    /// A new connection to `origin`, within the connect timeout.
    pub async fn connect(&self, origin: &Origin) -> Result<Stream, ConnectError> {
        let host = || origin.host.clone();
        let tcp = tokio::time::timeout(self.timeout, self.tcp(origin))
            .await
            .map_err(|_| ConnectError::TimedOut { host: host() })??;
        // Calls are small writes answered at once; coalescing adds latency.
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return Ok(Either::Left(tcp));
        }
        let name = ServerName::try_from(origin.host.clone())
            .map_err(|_| ConnectError::ServerName { host: host() })?;
        let tls = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::TimedOut { host: host() })?
            .map_err(|source| ConnectError::Tls {
                host: host(),
                source,
            })?;
        Ok(Either::Right(tls))
    }

    /// A TCP connection to the first address of `origin` that accepts.
    async fn tcp(&self, origin: &Origin) -> Result<TcpStream, ConnectError> {
        let addrs = self.addresses(origin).await?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = Some(err),
            }
        }
        Err(match last {
            Some(source) => ConnectError::Connect {
                host: origin.host.clone(),
                source,
            },
            None => ConnectError::NoAddress {
                host: origin.host.clone(),
            },
        })
    }

    /// `origin`'s addresses: a pinned one (its port, unless 0), else what
    /// the resolver finds.
    async fn addresses(&self, origin: &Origin) -> Result<Vec<SocketAddr>, ConnectError> {
        let pinned = self
            .pinned
            .iter()
            .find(|(host, _)| host.eq_ignore_ascii_case(&origin.host));
        if let Some((_, addr)) = pinned {
            let port = if addr.port() == 0 {
                origin.port
            } else {
                addr.port()
            };
            return Ok(vec![SocketAddr::new(addr.ip(), port)]);
        }
        // An address literal needs no resolver (and `url` brackets IPv6).
        let bare = origin.host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse() {
            return Ok(vec![SocketAddr::new(ip, origin.port)]);
        }
        let resolve_error =
            |source: Box<dyn std::error::Error + Send + Sync>| ConnectError::Resolve {
                host: origin.host.clone(),
                source,
            };
        match &self.dns {
            Some(dns) => Ok(dns
                .lookup(&origin.host)
                .await
                .map_err(|err| resolve_error(err.into()))?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, origin.port))
                .collect()),
            None => Ok(tokio::net::lookup_host((origin.host.as_str(), origin.port))
                .await
                .map_err(|err| resolve_error(err.into()))?
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pinned_host_goes_to_its_address_and_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = UpstreamConfig {
            resolve: Resolve::System,
            connect_to: vec![("api.weixin.qq.com".to_owned(), addr)],
        };
        let connector = Connector::new(&config, Duration::from_secs(5)).unwrap();
        let origin = Origin {
            tls: false,
            host: "API.weixin.qq.com".into(),
            port: 80,
        };
        let (connected, accepted) = tokio::join!(connector.connect(&origin), listener.accept());
        connected.expect("connected to the pinned address");
        accepted.unwrap();
        // Port 0 keeps the URL's port.
        let zero = UpstreamConfig {
            resolve: Resolve::System,
            connect_to: vec![(
                "api.weixin.qq.com".to_owned(),
                "127.0.0.1:0".parse().unwrap(),
            )],
        };
        let connector = Connector::new(&zero, Duration::from_secs(5)).unwrap();
        let origin = Origin {
            port: addr.port(),
            ..origin
        };
        let (connected, accepted) = tokio::join!(connector.connect(&origin), listener.accept());
        connected.expect("connected on the URL's port");
        accepted.unwrap();
    }

    #[test]
    fn origins_are_http_or_https_with_their_default_ports() {
        let origin = |url: &str| Origin::of(&url::Url::parse(url).unwrap());
        let https = origin("https://api.weixin.qq.com/cgi-bin/x").unwrap();
        assert_eq!((https.tls, https.port), (true, 443));
        let http = origin("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (http.tls, http.host.as_str(), http.port),
            (false, "127.0.0.1", 8080)
        );
        assert!(origin("ftp://example.com/").is_none());
    }
}
