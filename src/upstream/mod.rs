//! How the broker's own HTTP clients reach WeChat (`[upstream]`): host
//! names pinned to an address (`connect_to`), and the resolver. In
//! transparent mode the hosts file maps WeChat's names to the broker
//! itself, so `resolve = "dns"` asks the nameservers of /etc/resolv.conf
//! directly and never reads the hosts file: the broker must not call
//! itself.

mod body;
mod conn;
mod connect;
mod http1;
mod pool;

pub use body::AnswerBody;
pub use connect::{ConnectError, Connector, Origin, Stream};
pub use http1::{Http1Error, Outgoing};
pub use pool::{CallError, Pool};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::config::ResolveHosts;
use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Name, Resolve as ReqwestResolve, Resolving};

use crate::config::{Resolve, UpstreamConfig};

#[derive(Debug, thiserror::Error)]
#[error("cannot read the DNS configuration (/etc/resolv.conf) for upstream.resolve = \"dns\"")]
pub struct ResolverError(#[source] hickory_resolver::ResolveError);

/// Why an upstream HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    #[error("cannot build the HTTP client")]
    Build(#[from] reqwest::Error),
}

/// `builder`, set to reach upstream as `config` says, built.
pub fn build(
    builder: reqwest::ClientBuilder,
    config: &UpstreamConfig,
) -> Result<reqwest::Client, ClientError> {
    Ok(configure(builder, config)?.build()?)
}

/// `builder` set to reach upstream as `config` says.
pub fn configure(
    mut builder: reqwest::ClientBuilder,
    config: &UpstreamConfig,
) -> Result<reqwest::ClientBuilder, ResolverError> {
    if config.resolve == Resolve::Dns {
        builder = builder.dns_resolver(Arc::new(DnsOnly::new()?));
    }
    for (host, addr) in &config.connect_to {
        // reqwest takes the port too when it is not 0: the connection
        // goes exactly there, whatever the URL's scheme implies.
        builder = builder.resolve(host, *addr);
    }
    Ok(builder)
}

/// A resolver that asks DNS servers and never the hosts file.
struct DnsOnly {
    resolver: TokioResolver,
}

impl DnsOnly {
    /// `host`'s addresses, from DNS alone.
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, hickory_resolver::ResolveError> {
        Ok(self.resolver.lookup_ip(host).await?.into_iter().collect())
    }

    fn new() -> Result<Self, ResolverError> {
        let mut builder = TokioResolver::builder_tokio().map_err(ResolverError)?;
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        Ok(DnsOnly {
            resolver: builder.build(),
        })
    }
}

impl ReqwestResolve for DnsOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let found = resolver.lookup_ip(name.as_str()).await?;
            let addrs: Addrs = Box::new(
                found
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_to_sends_a_named_host_to_the_pinned_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = UpstreamConfig {
            resolve: Resolve::System,
            connect_to: vec![("api.weixin.qq.com".to_owned(), addr)],
        };
        let client = configure(reqwest::Client::builder().no_proxy(), &config)
            .unwrap()
            .build()
            .unwrap();
        let request = tokio::spawn(async move {
            client
                .get("http://api.weixin.qq.com/cgi-bin/getcallbackip")
                .send()
                .await
        });
        let (mut stream, _) =
            tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept())
                .await
                .expect("the client connected to the pinned address")
                .unwrap();
        let mut head = vec![0; 1024];
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut head)
            .await
            .unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
        assert!(head.contains("host: api.weixin.qq.com"), "{head}");
        drop(stream);
        let _ = request.await;
    }
}
