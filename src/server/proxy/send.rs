//! How a forwarded call reaches upstream: on the proxy's own kept-alive
//! connections ([`crate::upstream::Pool`]), which a call drives in its own
//! task, or, when the environment names an HTTP proxy (`HTTPS_PROXY` and
//! the like, which the broker's other clients honour), through reqwest,
//! so that every call leaves by the same way.

use bytes::Bytes;
use http::header::HeaderMap;
use http::Method;

use super::answer::{peek, Answer};
use super::target::NOT_A_TARGET;
use super::Destination;
use super::ProxyError;
use crate::config::UpstreamConfig;
use crate::errors::Chain;
use crate::upstream::{CallError, ClientError, Connector, Http1Error, Outgoing, Pool};

/// The variables reqwest takes a system proxy from.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub enum Upstream {
    Pool(Box<Pool>),
    /// Redirects are passed back to the caller, never followed (a
    /// redirect would carry the token to another host).
    ViaProxy(reqwest::Client, std::time::Duration),
}

impl Upstream {
    /// The way calls leave, as `[upstream]` and the environment say;
    /// `timeout` bounds a connection's opening.
    pub fn new(
        config: &UpstreamConfig,
        timeout: std::time::Duration,
    ) -> Result<Upstream, ClientError> {
        let proxied = PROXY_VARIABLES
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
        if !proxied {
            return Ok(Upstream::Pool(Box::new(Pool::new(Connector::new(
                config, timeout,
            )?))));
        }
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(timeout)
            .read_timeout(timeout);
        Ok(Upstream::ViaProxy(
            crate::upstream::build(builder, config)?,
            timeout,
        ))
    }

    /// One call to `destination`, with `credential` (a query parameter's name
    /// and the token) added to its query; its answer read whole when at
    /// most `whole` bytes.
    pub(super) async fn call(
        &self,
        method: &Method,
        destination: &Destination,
        credential: Option<(&str, &str)>,
        headers: &HeaderMap,
        body: &Bytes,
        whole: usize,
    ) -> Result<Answer, ProxyError> {
        match self {
            Upstream::Pool(pool) => {
                let target = destination.origin_form(credential);
                let call = Outgoing {
                    method,
                    target: &target,
                    host: destination.host()?,
                    headers,
                    body,
                };
                pool.call(destination.origin()?, call, |response| {
                    peek(response, whole)
                })
                .await
                .map_err(|err| match err {
                    CallError::Http(Http1Error::Target) => NOT_A_TARGET,
                    err => ProxyError::Upstream(Chain(&err).to_string()),
                })
            }
            Upstream::ViaProxy(client, timeout) => {
                let failed = |err| reqwest_error(err, *timeout);
                let response = client
                    .request(method.clone(), destination.url(credential)?)
                    .headers(headers.clone())
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(failed)?;
                peek(http::Response::from(response), whole)
                    .await
                    .map_err(failed)
            }
        }
    }
}

fn reqwest_error(err: reqwest::Error, timeout: std::time::Duration) -> ProxyError {
    // The URL holds the token: never let it into a message.
    let err = err.without_url();
    if err.is_timeout() {
        ProxyError::Timeout(timeout)
    } else {
        ProxyError::Upstream(Chain(&err).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each request with its own head, lowercased,
    /// as a small JSON-less body; one request per connection.
    async fn echo_head() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{head}",
                        head.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn both_ways_out_send_the_token_host_and_headers_alike() {
        let addr = echo_head().await;
        let no_headers = HeaderMap::new();
        let asked = super::super::Forward::new(&Method::GET, "cgi-bin/x", Some("a=1"), &no_headers);
        let destination = super::super::forward_target(
            &format!("http://{addr}"),
            &asked,
            asked.query,
            crate::wechat_path::Carries::AppToken,
        )
        .unwrap();
        let config = UpstreamConfig {
            resolve: crate::config::Resolve::System,
            connect_to: Vec::new(),
        };
        let timeout = std::time::Duration::from_secs(10);
        let pool = Upstream::new(&config, timeout).unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let via_proxy = Upstream::ViaProxy(client, timeout);
        let empty = Bytes::new();
        let mut asked_headers = HeaderMap::new();
        asked_headers.insert("x-request-id", HeaderValue::from_static("r1"));
        for upstream in [pool, via_proxy] {
            let headers = super::super::headers::forwarded_headers(&asked_headers);
            let call = upstream.call(
                &Method::GET,
                &destination,
                Some(("access_token", "T")),
                &headers,
                &empty,
                64 * 1024,
            );
            let answer = tokio::time::timeout(timeout, call).await.unwrap().unwrap();
            let Answer::Whole { body, .. } = answer else {
                panic!("a small answer is read whole")
            };
            let head = String::from_utf8_lossy(&body).into_owned();
            assert!(
                head.starts_with("get /cgi-bin/x?a=1&access_token=t http/1.1\r\n"),
                "{head}"
            );
            assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
            assert!(head.contains("x-request-id: r1\r\n"), "{head}");
            assert!(head.contains("accept: */*\r\n"), "{head}");
        }
    }
}
