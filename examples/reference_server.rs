//! The benchmark's baseline: a bare hyper 1 HTTP/1.1 server that answers
//! every request with one fixed JSON body and the two headers the broker's
//! token answer carries (`content-type`, `cache-control`). Same runtime
//! shape as the daemon (multi-thread tokio, one task per connection,
//! keep-alive, `TCP_NODELAY`), none of its work (routing, metrics, tokens).
//!
//! ```text
//! cargo run --release --example reference_server -- \
//!     --listen 127.0.0.1:8931 --unix /tmp/ref.sock --body '{"app":"x"}'
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

#[derive(Debug, Parser)]
struct Args {
    /// TCP address to serve on.
    #[arg(long)]
    listen: SocketAddr,
    /// Also serve on this Unix socket (replaced if it exists).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// The body every request gets.
    #[arg(long)]
    body: String,
    /// Also arm hyper's header read timeout (which the daemon uses), to
    /// tell its cost apart from the daemon's own work.
    #[arg(long)]
    header_timeout: bool,
}

fn builder(header_timeout: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    if header_timeout {
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
    }
    builder
}

fn answer(body: &Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.clone()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn serve_connection<I>(io: I, body: Bytes, header_timeout: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |_request: Request<Incoming>| {
        let response = answer(&body);
        async move { Ok::<_, Infallible>(response) }
    });
    tokio::spawn(async move {
        let _ = builder(header_timeout)
            .serve_connection(TokioIo::new(io), service)
            .await;
    });
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let body = Bytes::from(args.body);
    let tcp = TcpListener::bind(args.listen).await?;
    if let Some(path) = &args.unix {
        let _ = std::fs::remove_file(path);
        let unix = UnixListener::bind(path)?;
        let body = body.clone();
        tokio::spawn(async move {
            loop {
                match unix.accept().await {
                    Ok((stream, _)) => serve_connection(stream, body.clone(), args.header_timeout),
                    Err(err) => {
                        eprintln!("unix accept: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    eprintln!("reference server on {}", args.listen);
    loop {
        match tcp.accept().await {
            Ok((stream, _)) => {
                stream.set_nodelay(true)?;
                serve_connection(stream, body.clone(), args.header_timeout);
            }
            Err(err) => {
                eprintln!("tcp accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
