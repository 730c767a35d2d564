//! The forwarding benchmark's hyper baseline: the least a proxy built on
//! hyper 1 does to put a token in a call and relay the answer, and nothing
//! the broker must do besides (routing, client names, path rules, audit,
//! metrics, peeking at the answer for a rejection, the one retry).
//!
//! Same shape as the daemon's request path: one current-thread runtime,
//! a task per client connection, an upstream connection per client
//! connection kept open and driven inside that task, `TCP_NODELAY` both
//! ways. The answer is collected whole (it is small) and relayed with its
//! `content-type`.
//!
//! ```text
//! cargo run --release --example reference_proxy -- \
//!     --listen 127.0.0.1:8932 --upstream 127.0.0.1:8931
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
struct Args {
    /// TCP address to serve on.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream every call goes to.
    #[arg(long)]
    upstream: SocketAddr,
}

const TOKEN: &str = "reference-token-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// One client connection's upstream connection, opened on its first call.
struct Upstream {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<client::SendRequest<Full<Bytes>>>,
}

impl Upstream {
    async fn sender(&mut self) -> std::io::Result<&mut client::SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|sender| sender.is_closed()) {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = client::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::task::spawn_local(connection);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("opened above"))
    }

    async fn forward(&mut self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.try_forward(request).await {
            Ok(response) => response,
            Err(err) => {
                eprintln!("forward: {err}");
                let mut response = Response::new(Full::new(Bytes::from_static(b"bad gateway")));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response
            }
        }
    }

    async fn try_forward(
        &mut self,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error>> {
        let path = request.uri().path();
        let target = match request.uri().query() {
            Some(query) => format!("{path}?{query}&access_token={TOKEN}"),
            None => format!("{path}?access_token={TOKEN}"),
        };
        let mut outgoing = Request::new(Full::new(Bytes::new()));
        *outgoing.method_mut() = request.method().clone();
        *outgoing.uri_mut() = Uri::try_from(target)?;
        outgoing.headers_mut().insert(HOST, self.host.clone());
        let sender = self.sender().await?;
        sender.ready().await?;
        let answer = sender.send_request(outgoing).await?;
        let status = answer.status();
        let content_type = answer.headers().get(CONTENT_TYPE).cloned();
        let body = answer.into_body().collect().await?.to_bytes();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        if let Some(content_type) = content_type {
            response.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        Ok(response)
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(args.listen).await?;
        let host =
            HeaderValue::from_str(&args.upstream.to_string()).expect("an address is a header");
        eprintln!("reference proxy on {} to {}", args.listen, args.upstream);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    eprintln!("tcp accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            let upstream = Rc::new(Mutex::new(Upstream {
                addr: args.upstream,
                host: host.clone(),
                sender: None,
            }));
            let service = service_fn(move |request: Request<Incoming>| {
                let upstream = upstream.clone();
                async move { Ok::<_, Infallible>(upstream.lock().await.forward(request).await) }
            });
            tokio::task::spawn_local(async move {
                // One buffer a write, as the daemon's listeners do.
                let _ = server::Builder::new()
                    .writev(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
