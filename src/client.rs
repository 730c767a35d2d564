//! A minimal HTTP/1.1 client for the broker's own API, over TCP or the Unix
//! socket: what `wxbroker token` uses, and what tests use for the socket.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Where the broker listens.
#[derive(Debug, Clone)]
pub enum Target {
    /// A base URL such as `http://127.0.0.1:8930`.
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid broker url {0:?}: expected http://host:port")]
    BadUrl(String),
    #[error("cannot connect to the broker at {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the broker at {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("http exchange with the broker failed")]
    Http(#[from] hyper::Error),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(url) => f.write_str(url),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Sends one request with `Wxbroker-Client: client` and returns the answer.
pub async fn send(
    target: &Target,
    method: Method,
    path_and_query: &str,
    client: &str,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let exchange = async {
        match target {
            Target::Tcp(url) => {
                let authority = url
                    .strip_prefix("http://")
                    .map(|rest| rest.trim_end_matches('/'))
                    .filter(|authority| !authority.is_empty() && !authority.contains('/'))
                    .ok_or_else(|| ClientError::BadUrl(url.clone()))?;
                let stream = TcpStream::connect(authority)
                    .await
                    .map_err(|source| connect_error(target, source))?;
                exchange(stream, authority, method, path_and_query, client, body).await
            }
            Target::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|source| connect_error(target, source))?;
                exchange(stream, "localhost", method, path_and_query, client, body).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(ClientError::Timeout(target.to_string(), timeout)))
}

fn connect_error(target: &Target, source: std::io::Error) -> ClientError {
    ClientError::Connect {
        target: target.to_string(),
        source,
    }
}

async fn exchange<S>(
    stream: S,
    host: &str,
    method: Method,
    path_and_query: &str,
    client: &str,
    body: Option<Bytes>,
) -> Result<Reply, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, host)
        .header("wxbroker-client", client);
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|_| ClientError::BadUrl(path_and_query.to_owned()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply { status, body })
}
