//! Idle keep-alive connections hold their socket and little else.
//!
//! hyper keeps a connection's HTTP state for the connection's whole life:
//! an 8 KiB read buffer, an 8 KiB write buffer, the last answer's header
//! map and its own state, some 14 KiB resident for every idle keep-alive
//! client. Here a connection is served in sessions instead. A session (one
//! hyper connection) starts when the client's bytes arrive; once it has
//! waited `park_after` for the next request head it is ended, between
//! requests only, and the bare socket waits for the client's next byte.
//! The deadline for that head (`idle_timeout`) runs on unchanged: it is
//! counted from the moment the connection began to wait, whether the wait
//! is spent in a session or parked.
//!
//! How a session knows it is idle: hyper runs its header read timer
//! exactly while it waits for a request head, on a timer this module gives
//! it ([`HeadTimer`]), so that timer is the signal. A session is cut short
//! only in such a wait, and never in the first one (hyper then holds no
//! request and no answer, and has promised the client nothing): hyper
//! closes an idle connection on `graceful_shutdown` without a byte written
//! and hands the socket back with whatever part of a head it had read,
//! which the next session reads first ([`Socket`]).

use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

use crate::server::write_stall::WriteStall;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A socket that can tell when the client has sent something (or closed)
/// without reading it, so nothing needs a buffer while it waits. A poll
/// rather than a future: the socket keeps the waker, so a parked
/// connection stores no waiter of its own.
pub trait Readable {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Readable for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Readable for UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
}

impl<T: Readable> Readable for WriteStall<T> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }
}

/// Serves HTTP/1.1 on `io` until the client or hyper ends the connection,
/// the head deadline (`idle` after the connection began to wait for a
/// request head) passes, or `drain` fires; in sessions, each ended once it
/// has waited `park_after` for a head.
///
/// The future is what an idle connection costs, so it is kept small: the
/// session (hyper's state) is boxed and dropped while parked, and no value
/// is stored twice (an `async fn` keeps its arguments apart from the
/// locals it moves them into; an `async` block uses what it captured in
/// place).
pub fn serve<T, S, B>(
    io: T,
    mut service: S,
    http: Arc<http1::Builder>,
    idle: Duration,
    park_after: Duration,
    mut drain: watch::Receiver<()>,
) -> impl Future<Output = Result<(), BoxError>> + Send
where
    T: AsyncRead + AsyncWrite + Readable + Unpin + Send + Sync + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin + Send + 'static,
    S::Future: Unpin + Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut socket = Socket {
        io,
        ahead: Bytes::new(),
        signals: Arc::new(Signals::default()),
    };
    let plan = Plan { idle, park_after };
    let mut deadline = now() + idle;
    async move {
        // One wait for the drain, parked or not: it fires once, and the
        // connection ends then.
        let flag = drain.clone();
        let mut drained = pin!(drain.changed());
        let mut waiting = false;
        loop {
            if socket.ahead.is_empty() {
                // Parked: wait for the client without holding any of HTTP.
                let mut head_due = socket.signals.timer_at(deadline);
                let woken = poll_fn(|cx| {
                    if drain_fired(&flag, drained.as_mut(), &mut waiting, cx) {
                        return Poll::Ready(Woken::Drain);
                    }
                    if let Poll::Ready(ready) = socket.io.poll_read_ready(cx) {
                        return Poll::Ready(Woken::Client(ready));
                    }
                    head_due.as_mut().poll(cx).map(|()| Woken::Deadline)
                })
                .await;
                socket.signals.keep_timer(head_due);
                match woken {
                    Woken::Client(ready) => ready?,
                    Woken::Drain => return Ok(socket.shutdown().await?),
                    Woken::Deadline => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request head within idle_timeout",
                        )
                        .into())
                    }
                }
            }
            let signals = socket.signals.clone();
            let mut session = session(&http, plan, deadline, socket, service);
            let mut draining = false;
            let mut parked_until = None;
            let ended = poll_fn(|cx| {
                if !draining && drain_fired(&flag, drained.as_mut(), &mut waiting, cx) {
                    draining = true;
                    Pin::new(&mut *session).graceful_shutdown();
                }
                loop {
                    if let Poll::Ready(ended) = session.poll_without_shutdown(cx) {
                        return Poll::Ready(ended);
                    }
                    if draining || parked_until.is_some() {
                        return Poll::Pending;
                    }
                    // hyper is waiting for a head and has waited long
                    // enough: it closes such a connection at once, with
                    // nothing written, and is polled once more to finish.
                    match signals.take_park() {
                        Some(head_deadline) => {
                            parked_until = Some(head_deadline);
                            Pin::new(&mut *session).graceful_shutdown();
                        }
                        None => return Poll::Pending,
                    }
                }
            })
            .await;
            let parts = session.into_parts();
            ended?;
            socket = parts.io.into_inner();
            service = parts.service;
            match parked_until {
                Some(head_deadline) if !draining => {
                    socket.read_first(parts.read_buf);
                    deadline = head_deadline;
                }
                // hyper is done with the connection (the client closed it
                // or asked to, the server answered without reading the
                // whole body, or it is draining): hyper's own ending,
                // without a session to do it, then what the client still
                // sends read and dropped for a while.
                _ => {
                    socket.shutdown().await?;
                    linger(&mut socket).await;
                    return Ok(());
                }
            }
        }
    }
}

/// How long a connection the server has ended (its answer sent, its side
/// shut) still takes what the client sends, and how much of it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Reads and drops what the client still sends on a connection the server
/// has shut, until the client closes its side, for at most [`LINGER`] and
/// [`LINGER_BYTES`]. A client still writing a body the server refused
/// (413 on its declared length) then finishes, and reads the answer,
/// instead of having the connection reset under it by a close with its
/// bytes unread. A client that is done closes at once, and costs a read.
async fn linger<T: AsyncRead + Unpin>(io: &mut T) {
    let mut buf = vec![0; 8 * 1024];
    let mut dropped = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while dropped < LINGER_BYTES {
            match tokio::io::AsyncReadExt::read(io, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

/// Whether the server has begun to drain: `flag` (a copy of the drain's
/// receiver) is read on every wake, and `waiter` (its `changed()`) polled
/// only until it waits, which wakes this task when the drain fires. The
/// connection's task is the waiter's only poller, so the waker it keeps
/// stays the right one; polling it on every wake cost more than the rest
/// of a wake's own bookkeeping.
fn drain_fired<F: Future>(
    flag: &watch::Receiver<()>,
    waiter: Pin<&mut F>,
    waiting: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    // A dropped sender drains too, as `changed()` then ends.
    if flag.has_changed().unwrap_or(true) {
        return true;
    }
    if *waiting {
        return false;
    }
    *waiting = true;
    waiter.poll(cx).is_ready()
}

#[derive(Clone, Copy)]
struct Plan {
    idle: Duration,
    park_after: Duration,
}

/// What ended a parked wait.
enum Woken {
    Client(io::Result<()>),
    Drain,
    Deadline,
}

/// One session: hyper on `socket`, on a timer that knows the deadline of
/// the head it is started for.
fn session<T, S, B>(
    http: &http1::Builder,
    plan: Plan,
    deadline: Instant,
    socket: Socket<T>,
    service: S,
) -> Box<http1::Connection<TokioIo<Socket<T>>, S>>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    let mut http = http.clone();
    http.timer(HeadTimer {
        signals: socket.signals.clone(),
        first_deadline: deadline,
        idle: plan.idle,
        park_after: plan.park_after,
        waits: AtomicU32::new(0),
    });
    Box::new(http.serve_connection(TokioIo::new(socket), service))
}

/// The time as hyper's tokio timer tells it (tokio's clock, which tests
/// may pause).
fn now() -> Instant {
    tokio::time::Instant::now().into()
}

/// What a connection's sessions and head waits share: a park asked for,
/// and the connection's one timer. A tokio timer made and dropped for
/// every request costs an entry put into the timer wheel and taken out
/// again; one kept and moved later costs an atomic update, the wheel
/// finding the new deadline when the old one comes round.
#[derive(Default)]
struct Signals {
    /// A wait for a head has lasted `park_after`: the session may end.
    /// Withdrawn when that wait ends or the client sends a byte, whichever
    /// comes first.
    park: AtomicBool,
    /// That wait's deadline, for the parked socket to keep.
    head_deadline: Mutex<Option<Instant>>,
    /// The connection's timer, while no wait has borrowed it.
    timer: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
}

impl Signals {
    /// The connection's timer, set for `at`: to be handed back with
    /// [`Signals::keep_timer`] when the wait is over.
    fn timer_at(&self, at: Instant) -> Pin<Box<tokio::time::Sleep>> {
        self.timer_near(at, Duration::ZERO)
    }

    /// [`Signals::timer_at`], left where it is if that is at most `slack`
    /// before `at`: a busy connection, waiting for a head every few
    /// hundred microseconds, then moves its timer once in `slack` rather
    /// than on every request.
    fn timer_near(&self, at: Instant, slack: Duration) -> Pin<Box<tokio::time::Sleep>> {
        let kept = self.timer.lock().expect("never poisoned").take();
        match kept {
            Some(mut timer) => {
                let set = Instant::from(timer.deadline());
                if !(set <= at && at <= set + slack) {
                    timer.as_mut().reset(at.into());
                }
                timer
            }
            None => Box::pin(tokio::time::sleep_until(at.into())),
        }
    }

    fn keep_timer(&self, timer: Pin<Box<tokio::time::Sleep>>) {
        *self.timer.lock().expect("never poisoned") = Some(timer);
    }

    fn ask_to_park(&self, head_deadline: Instant) {
        *self.head_deadline.lock().expect("never poisoned") = Some(head_deadline);
        self.park.store(true, Ordering::Release);
    }

    fn withdraw(&self) {
        if self.park.load(Ordering::Relaxed) {
            self.park.store(false, Ordering::Relaxed);
        }
    }

    /// The head deadline, when the session may end now.
    fn take_park(&self) -> Option<Instant> {
        if !self.park.swap(false, Ordering::Acquire) {
            return None;
        }
        self.head_deadline.lock().expect("never poisoned").take()
    }
}

/// A connection's socket across its sessions: what one session read and
/// did not use (part of a head) is what the next one reads first, and any
/// byte from the client withdraws a pending park, since hyper may be
/// parsing a request by then.
struct Socket<T> {
    io: T,
    ahead: Bytes,
    signals: Arc<Signals>,
}

impl<T> Socket<T> {
    fn read_first(&mut self, unread: Bytes) {
        if unread.is_empty() {
            return;
        }
        self.ahead = if self.ahead.is_empty() {
            unread
        } else {
            let mut joined = BytesMut::with_capacity(unread.len() + self.ahead.len());
            joined.extend_from_slice(&unread);
            joined.extend_from_slice(&self.ahead);
            joined.freeze()
        };
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Socket<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead[..n]);
            self.ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.signals.withdraw();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Socket<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One session's timer. hyper's HTTP/1 server uses its timer for the
/// header read timeout alone, and starts one sleep per wait for a head:
/// the first for the head the session was started for, whose wait began
/// before the session did, then one after each exchange.
struct HeadTimer {
    signals: Arc<Signals>,
    first_deadline: Instant,
    /// `idle_timeout`, which hyper adds to the moment it begins to wait.
    idle: Duration,
    park_after: Duration,
    waits: AtomicU32,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let signals = self.signals.clone();
        if self.waits.fetch_add(1, Ordering::Relaxed) == 0 {
            return Box::pin(HeadWait::new(
                signals,
                deadline.min(self.first_deadline),
                None,
            ));
        }
        let park_at = deadline
            .checked_sub(self.idle)
            .map(|began| began + self.park_after)
            .filter(|park_at| *park_at < deadline);
        // A session may be told to park up to a tenth of `park_after`
        // early.
        let park = park_at.map(|at| (at, self.park_after / 10));
        Box::pin(HeadWait::new(signals, deadline, park))
    }

    fn now(&self) -> Instant {
        now()
    }
}

/// One wait for a request head: fails the connection at its deadline,
/// and first, when asked to, tells the task at `park_at` that the session
/// may end. It borrows the connection's timer and hands it back when
/// dropped.
struct HeadWait {
    /// `Some` until the wait is dropped.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    signals: Arc<Signals>,
    deadline: Instant,
    /// Set while the timer is set for the park point.
    parks: bool,
    asked: bool,
}

impl HeadWait {
    /// `park`: the park point, and how much earlier it may come (the
    /// deadline never comes early).
    fn new(signals: Arc<Signals>, deadline: Instant, park: Option<(Instant, Duration)>) -> Self {
        let timer = match park {
            Some((park_at, slack)) => signals.timer_near(park_at, slack),
            None => signals.timer_at(deadline),
        };
        HeadWait {
            timer: Some(timer),
            signals,
            deadline,
            parks: park.is_some(),
            asked: false,
        }
    }
}

impl Future for HeadWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let timer = this.timer.as_mut().expect("kept until dropped");
        loop {
            ready!(timer.as_mut().poll(cx));
            if !std::mem::take(&mut this.parks) {
                return Poll::Ready(());
            }
            this.signals.ask_to_park(this.deadline);
            this.asked = true;
            timer.as_mut().reset(this.deadline.into());
        }
    }
}

impl Sleep for HeadWait {}

impl Drop for HeadWait {
    fn drop(&mut self) {
        // The wait is over (a head arrived, or the session ended): a park
        // asked for and not taken no longer holds.
        if self.asked {
            self.signals.withdraw();
        }
        if let Some(timer) = self.timer.take() {
            self.signals.keep_timer(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http::{Request, Response};
    use http_body_util::Full;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const ANSWER: &str = "HTTP/1.1 200 OK";

    /// A socket that counts how often it is asked whether the client has
    /// sent anything: only ever while parked.
    struct Counted {
        stream: TcpStream,
        parks: Arc<AtomicUsize>,
    }

    impl Readable for Counted {
        fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.parks.fetch_add(1, Ordering::Relaxed);
            self.stream.poll_read_ready(cx)
        }
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.stream).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }
    }

    struct Served {
        client: TcpStream,
        parks: Arc<AtomicUsize>,
        /// Dropped, it drains the connection as a fired one does.
        drain: watch::Sender<()>,
        ended: tokio::task::JoinHandle<Result<(), BoxError>>,
    }

    /// One connection served by [`serve`], answering every request with
    /// its path.
    async fn served(idle: Duration, park_after: Duration) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let parks = Arc::new(AtomicUsize::new(0));
        let io = Counted {
            stream,
            parks: parks.clone(),
        };
        let (drain, drained) = watch::channel(());
        let ended = tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| {
                let path = request.uri().path().to_owned();
                std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                    path,
                )))))
            });
            let mut http = http1::Builder::new();
            http.header_read_timeout(idle);
            serve(io, service, Arc::new(http), idle, park_after, drained).await
        });
        Served {
            client,
            parks,
            drain,
            ended,
        }
    }

    /// Sends `GET path`.
    async fn ask(client: &mut TcpStream, path: &str) {
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Reads one answer (headers and a body of at most a few bytes).
    async fn answer(client: &mut TcpStream) -> String {
        let mut buffer = vec![0; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "never {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Until the client sees the end of the connection; how long that took.
    async fn closed_after(client: &mut TcpStream, limit: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let mut buffer = [0; 64];
        tokio::time::timeout(limit, async {
            while client.read(&mut buffer).await.unwrap_or(0) > 0 {}
        })
        .await
        .expect("the connection was closed");
        started.elapsed()
    }

    #[tokio::test]
    async fn an_idle_session_is_put_down_and_the_socket_serves_on() {
        let Served {
            mut client,
            parks,
            drain: _drain,
            ended,
        } = served(Duration::from_secs(30), Duration::from_millis(50)).await;
        ask(&mut client, "/first").await;
        let first = answer(&mut client).await;
        assert!(
            first.starts_with(ANSWER) && first.ends_with("/first"),
            "{first}"
        );
        // Parked once at the start, and once more after the exchange.
        wait_for("parked after the exchange", || {
            parks.load(Ordering::Relaxed) >= 2
        })
        .await;
        ask(&mut client, "/second").await;
        let second = answer(&mut client).await;
        assert!(
            second.starts_with(ANSWER) && second.ends_with("/second"),
            "{second}"
        );
        drop(client);
        ended.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn busy_sessions_are_not_put_down() {
        let Served {
            mut client,
            parks,
            drain: _drain,
            ..
        } = served(Duration::from_secs(30), Duration::from_millis(300)).await;
        let mut in_session = None;
        for i in 0..20 {
            ask(&mut client, &format!("/{i}")).await;
            let answered = answer(&mut client).await;
            assert!(answered.ends_with(&format!("/{i}")), "{answered}");
            let parks = parks.load(Ordering::Relaxed);
            assert_eq!(
                *in_session.get_or_insert(parks),
                parks,
                "parked between requests"
            );
        }
    }

    #[tokio::test]
    async fn a_head_split_across_the_park_point_is_answered() {
        let Served {
            mut client,
            drain: _drain,
            ..
        } = served(Duration::from_secs(30), Duration::from_millis(100)).await;
        ask(&mut client, "/first").await;
        answer(&mut client).await;
        // Half a head before the session is put down, the rest after: the
        // next session reads what the last one had read.
        client.write_all(b"GET /sec").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        client
            .write_all(b"ond HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let second = answer(&mut client).await;
        assert!(
            second.starts_with(ANSWER) && second.ends_with("/second"),
            "{second}"
        );
    }

    #[tokio::test]
    async fn the_head_deadline_runs_on_while_parked() {
        let Served {
            mut client,
            parks,
            drain: _drain,
            ..
        } = served(Duration::from_secs(2), Duration::from_secs(1)).await;
        ask(&mut client, "/first").await;
        answer(&mut client).await;
        let in_session = parks.load(Ordering::Relaxed);
        // Closed `idle` after the answer, not `idle` after the park point.
        let held = closed_after(&mut client, Duration::from_secs(10)).await;
        assert!(parks.load(Ordering::Relaxed) > in_session, "never parked");
        assert!(
            held >= Duration::from_millis(1900) && held < Duration::from_millis(2700),
            "closed {held:?} after the answer"
        );
    }

    #[tokio::test]
    async fn draining_closes_a_parked_connection_at_once() {
        let Served {
            mut client,
            parks,
            drain,
            ended,
        } = served(Duration::from_secs(30), Duration::from_millis(50)).await;
        ask(&mut client, "/first").await;
        answer(&mut client).await;
        let in_session = parks.load(Ordering::Relaxed);
        wait_for("parked after the exchange", || {
            parks.load(Ordering::Relaxed) > in_session
        })
        .await;
        drain.send(()).unwrap();
        closed_after(&mut client, Duration::from_secs(2)).await;
        ended.await.unwrap().unwrap();
    }

    /// The drain wakes a connection whose session waits for its next
    /// head, as well as one parked: its waiter was polled once, on the
    /// first wake, and never again.
    #[tokio::test]
    async fn draining_closes_a_waiting_session_at_once() {
        let Served {
            mut client,
            parks,
            drain,
            ended,
        } = served(Duration::from_secs(30), Duration::from_secs(30)).await;
        for path in ["/first", "/second"] {
            ask(&mut client, path).await;
            assert!(answer(&mut client).await.ends_with(path));
        }
        let in_session = parks.load(Ordering::Relaxed);
        drain.send(()).unwrap();
        closed_after(&mut client, Duration::from_secs(2)).await;
        ended.await.unwrap().unwrap();
        assert_eq!(parks.load(Ordering::Relaxed), in_session, "not parked");
    }

    #[test]
    fn bytes_read_ahead_come_first_and_fresh_bytes_withdraw_a_park() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (ours, mut theirs) = tokio::io::duplex(64);
            let signals = Arc::new(Signals::default());
            let mut socket = Socket {
                io: ours,
                ahead: Bytes::new(),
                signals: signals.clone(),
            };
            socket.read_first(Bytes::from_static(b"GET /a"));
            socket.read_first(Bytes::from_static(b"x"));
            signals.ask_to_park(Instant::now());
            let mut read = vec![0; 3];
            socket.read_exact(&mut read).await.unwrap();
            assert_eq!(read, b"xGE");
            assert!(
                signals.park.load(Ordering::Relaxed),
                "bytes read ahead are not news"
            );
            theirs.write_all(b"b").await.unwrap();
            let mut rest = vec![0; 4];
            socket.read_exact(&mut rest).await.unwrap();
            assert_eq!(rest, b"T /a");
            let mut fresh = [0; 1];
            socket.read_exact(&mut fresh).await.unwrap();
            assert_eq!(&fresh, b"b");
            assert_eq!(
                signals.take_park(),
                None,
                "a byte from the client withdraws it"
            );
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_after_an_exchange_asks_to_park_then_fails_at_its_deadline() {
        let signals = Arc::new(Signals::default());
        let first_deadline = now() + Duration::from_secs(3);
        let timer = HeadTimer {
            signals: signals.clone(),
            first_deadline,
            idle: Duration::from_secs(10),
            park_after: Duration::from_secs(1),
            waits: AtomicU32::new(0),
        };
        // The first wait keeps the deadline the session was started under,
        // and never asks to park.
        let started = tokio::time::Instant::now();
        timer.sleep_until(now() + Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(signals.take_park(), None);
        // Later waits ask at `park_after`, and fail at their deadline.
        let deadline = now() + Duration::from_secs(10);
        let mut wait = timer.sleep_until(deadline);
        let started = tokio::time::Instant::now();
        assert!(
            tokio::time::timeout(Duration::from_millis(999), wait.as_mut())
                .await
                .is_err()
        );
        assert_eq!(signals.take_park(), None);
        assert!(
            tokio::time::timeout(Duration::from_millis(2), wait.as_mut())
                .await
                .is_err()
        );
        assert_eq!(signals.take_park(), Some(deadline));
        wait.await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // A wait that ends withdraws its ask.
        let mut wait = timer.sleep_until(now() + Duration::from_secs(10));
        assert!(tokio::time::timeout(Duration::from_secs(2), wait.as_mut())
            .await
            .is_err());
        drop(wait);
        assert_eq!(signals.take_park(), None);
    }
}
