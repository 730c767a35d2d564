//! One accept loop for TCP and Unix listeners: a slot of the listener's
//! own connection budget before each accept (backpressure at its limit),
//! a short deadline for a TLS handshake, HTTP/1.1 with deadlines on every
//! part of an exchange that a client paces (the head, the body, each
//! write), idle keep-alive connections that hold little more than their
//! socket ([`keep_alive`]), and graceful draining on cancellation.

mod keep_alive;

use std::convert::Infallible;
use std::future::{poll_fn, ready, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either as FutureEither, FutureExt, OptionFuture};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::accept_errors::AcceptErrors;
use super::budget::Budget;
use super::respond::Body;
use super::tcp_peer::TcpOrigin;
use super::workers::RequestThreads;
use super::write_stall::WriteStall;
use crate::http_io::RequestBody;
use crate::identity::Peer;
use keep_alive::{BoxError, Readable};

/// The request line and headers together; token requests need a few
/// hundred bytes, proxied SDK requests a few KiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long in-flight requests get to finish once shutdown starts.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// A TLS handshake is a few round trips: a peer that has not finished one
/// in this long (or never sent its ClientHello) gives its slot back,
/// whatever `idle_timeout` allows a request head.
pub const TLS_HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a keep-alive connection waits for its next request with its
/// HTTP state (hyper's buffers) in hand before putting it down: a busy
/// client's next request comes much sooner and finds it ready, an idle
/// client's costs only its socket until it sends again. Putting it down
/// and taking it up again costs about a microsecond, so a client slower
/// than four requests a second per connection pays that on each request;
/// a flood of connections that each ask once holds the state of a
/// quarter second's worth of them at a time, not of all of them.
const PARK_AFTER: Duration = Duration::from_millis(250);
/// Pause after a failed accept (EMFILE and friends) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one `accept failed` line per listener this often: out of file
/// descriptors, every accept fails, ten times a second.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A listening socket of either family.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Readable + Unpin + Send + Sync + 'static;
    /// An accepted connection's socket, between two runtimes.
    type Socket: Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// The connection's socket, taken from the runtime that accepted it.
    fn detach(io: Self::Io) -> io::Result<Self::Socket>;

    /// The connection on the calling thread's runtime.
    fn attach(socket: Self::Socket) -> io::Result<Self::Io>;

    /// Who is at the other end, where the kernel says (Unix sockets); each
    /// request on the connection carries it as an extension.
    fn peer(_io: &Self::Io) -> Option<Peer> {
        None
    }

    /// Both ends of a TCP connection, for a handler that identifies
    /// loopback peers when it needs to ([`TcpOrigin::peer`]).
    fn origin(_io: &Self::Io) -> Option<TcpOrigin> {
        None
    }
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    type Socket = std::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Token answers are one small write; waiting to coalesce only adds latency.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn detach(io: Self::Io) -> io::Result<Self::Socket> {
        io.into_std()
    }

    fn attach(socket: Self::Socket) -> io::Result<Self::Io> {
        tokio::net::TcpStream::from_std(socket)
    }

    fn origin(io: &Self::Io) -> Option<TcpOrigin> {
        TcpOrigin::of(io)
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    type Socket = std::os::unix::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }

    fn detach(io: Self::Io) -> io::Result<Self::Socket> {
        io.into_std()
    }

    fn attach(socket: Self::Socket) -> io::Result<Self::Io> {
        tokio::net::UnixStream::from_std(socket)
    }

    fn peer(io: &Self::Io) -> Option<Peer> {
        // SO_PEERCRED: the credentials the peer had when it connected.
        let cred = io.peer_cred().ok()?;
        Some(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }
}

/// An answer still being worked out, boxed so that hyper's slot for the
/// answer in progress, which every connection holds, stays small.
type Pending = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Answers one request; one value is shared by all of a listener's connections.
pub trait Handler: Clone + Send + Sync + Unpin + 'static {
    /// The answer, when it can be given at once (a token read while a
    /// valid token is held): no future to build, and no clone of the
    /// handler's shared state, whose reference count every request would
    /// otherwise bounce between the runtime's workers. `None` means
    /// [`Handler::call`] answers, and that nothing was counted yet.
    fn answer_now(&self, _request: &Request<RequestBody>) -> Option<Response<Body>> {
        None
    }

    fn call(&self, request: Request<RequestBody>) -> impl Future<Output = Response<Body>> + Send;

    /// The handler of one accepted connection, kept for the connection's
    /// life, so what it learns of the peer is learnt once. `origin` tells
    /// where a TCP connection comes from, for a handler that asks.
    fn for_connection(&self, _origin: impl FnOnce() -> Option<TcpOrigin>) -> Self {
        self.clone()
    }
}

/// How long a client may take over each part of an exchange it paces.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// To send a complete request head, counted from the moment the
    /// connection waits for one: slow senders and idle keep-alive alike.
    pub idle: Duration,
    /// To send the whole body, counted from its head.
    pub body: Duration,
    /// For a write (an answer going out) to make any progress.
    pub write_stall: Duration,
}

/// How a listener's connections run: over TLS or in clear, and on the
/// request threads ([`RequestThreads`]) or on the accept loop's runtime.
#[derive(Clone, Default)]
pub struct Connections {
    pub tls: Option<TlsAcceptor>,
    pub threads: Option<Arc<RequestThreads>>,
}

/// Serves `listener` until `cancel`, then drains open connections for up
/// to [`DRAIN_DEADLINE`]. No client holds a connection longer than the
/// [`Deadlines`] allow without making progress: hyper's header read timer
/// (or, for a parked keep-alive connection, [`keep_alive`]'s) bounds the
/// head, [`RequestBody`] the body, [`WriteStall`] each write.
pub async fn serve<L: Accept, H: Handler>(
    name: &'static str,
    listener: L,
    handler: H,
    budget: Budget,
    deadlines: Deadlines,
    connections: Connections,
    cancel: CancellationToken,
) {
    // Fired once to drain; closed once every connection is gone.
    let (drain, _) = watch::channel(());
    let mut accept_errors = AcceptErrors::new(ACCEPT_ERROR_LOG_INTERVAL);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(deadlines.idle)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true)
        // An answer's head and body go out in one buffer: a `send` costs
        // the kernel less than a `writev` of two (measured: 0.3–0.5 µs a
        // token read), and copying a small body costs less than that. A
        // large body (a scrape of `/metrics`) is copied once; the session
        // keeps the grown buffer until it parks, 250 ms after its last
        // request.
        .writev(false);
    let http = Arc::new(http);
    loop {
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = budget.acquire() => slot,
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors or a reset before accept: keep
                    // serving, and keep the log readable while it lasts.
                    if let Some(suppressed) = accept_errors.record(Instant::now()) {
                        warn!(listener = name, error = %err, suppressed, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let slot = slot.open();
        let handler = handler.for_connection(|| L::origin(&stream));
        let peer = L::peer(&stream);
        let service = service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(|body| RequestBody::new(body, deadlines.body));
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            match handler.answer_now(&request) {
                Some(response) => FutureEither::Left(ready(Ok::<_, Infallible>(response))),
                None => {
                    let handler = handler.clone();
                    let pending: Pending = Box::pin(async move { Ok(handler.call(request).await) });
                    FutureEither::Right(pending)
                }
            }
        });
        let (http, mut drain) = (http.clone(), drain.subscribe());
        let tls = connections.tls.clone();
        // Made on the runtime the connection runs on: its write deadline's
        // timer is that runtime's.
        let connection = move |stream| {
            let io = WriteStall::new(stream, deadlines.write_stall);
            match tls {
                // Not an async block: it would store every value it captures
                // beside the future it hands them to, twice over for each
                // idle connection.
                None => FutureEither::Left(
                    keep_alive::serve(io, service, http, deadlines.idle, PARK_AFTER, drain).map(
                        move |ended| {
                            drop(slot);
                            if let Err(err) = ended {
                                debug!(listener = name, error = %err, "connection ended with an error");
                            }
                        },
                    ),
                ),
                // Boxed: the clear connection, held by many idle clients,
                // must not be as large as this one.
                Some(tls) => FutureEither::Right(Box::pin(async move {
                    let _slot = slot;
                    // The handshake runs in the connection's own task, so a
                    // client that stalls it holds only its own slot, and
                    // only briefly.
                    let handshake = TLS_HANDSHAKE_DEADLINE.min(deadlines.idle);
                    let stream = match tokio::time::timeout(handshake, tls.accept(io)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            debug!(listener = name, error = %err, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(listener = name, "tls handshake timed out");
                            return;
                        }
                    };
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    if let Err(err) = until_drained(connection, &mut drain).await {
                        debug!(listener = name, error = %err, "connection ended with an error");
                    }
                })),
            }
        };
        match &connections.threads {
            None => {
                tokio::spawn(connection(stream));
            }
            Some(threads) => match L::detach(stream) {
                Ok(socket) => threads.spawn(move || {
                    // Registered with this thread's reactor; a socket that
                    // cannot be is a connection closed at once.
                    OptionFuture::from(L::attach(socket).ok().map(connection)).map(drop)
                }),
                Err(err) => {
                    debug!(listener = name, error = %err, "could not hand a connection over")
                }
            },
        }
    }
    drop(listener);
    let _ = drain.send(());
    if tokio::time::timeout(DRAIN_DEADLINE, drain.closed())
        .await
        .is_err()
    {
        warn!(
            listener = name,
            "connections still open after the drain deadline"
        );
    }
}

/// Runs `connection` to its end, shut down gracefully (the answer in
/// progress finished, then closed) once `drain` fires.
async fn until_drained<I, S, B>(
    connection: http1::Connection<I, S>,
    drain: &mut watch::Receiver<()>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + 'static,
    B::Error: Into<BoxError>,
{
    let mut connection = pin!(connection);
    let mut drained = pin!(drain.changed());
    let mut draining = false;
    poll_fn(|cx| {
        if !draining && drained.as_mut().poll(cx).is_ready() {
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
        connection.as_mut().poll(cx)
    })
    .await
}
