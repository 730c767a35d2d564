//! One accept loop for TCP and Unix listeners: a connection permit from a
//! semaphore before each accept (backpressure at `max_connections`), HTTP/1.1
//! with a header read timeout, and graceful draining on cancellation.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::respond::Body;

/// The request line and headers together; token requests need a few
/// hundred bytes, proxied SDK requests a few KiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long in-flight requests get to finish once shutdown starts.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE and friends) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A listening socket of either family.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Token answers are one small write; waiting to coalesce only adds latency.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Answers one request; one value is shared by all of a listener's connections.
pub trait Handler: Clone + Send + Sync + 'static {
    fn call(&self, request: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Serves `listener` until `cancel`, then drains open connections for up
/// to [`DRAIN_DEADLINE`]. A connection that sends no complete request head
/// for `idle_timeout` is closed: hyper's header read timer runs from the
/// moment it waits for a request, so it bounds slow senders and idle
/// keep-alive connections alike.
pub async fn serve<L: Accept, H: Handler>(
    name: &'static str,
    listener: L,
    handler: H,
    connections: Arc<Semaphore>,
    idle_timeout: Duration,
    cancel: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors or a reset before accept: keep serving.
                    warn!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.call(request).await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(listener = name, error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            listener = name,
            "connections still open after the drain deadline"
        );
    }
}
