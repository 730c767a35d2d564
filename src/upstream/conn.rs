//! One kept-alive HTTP/1.1 connection to an upstream origin, and the
//! idle ones kept for the next calls: writing a call, reading an answer's
//! head, and telling whether upstream closed it while it sat idle.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use rustc_hash::FxHashMap;
use thread_local::ThreadLocal;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::either::Either;

use super::connect::{Origin, Stream};
use super::http1::{self, Http1Error, MAX_HEAD};

/// How long a connection may sit unused and still be taken again; upstream
/// servers close theirs after a minute or so.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Connections kept per origin once their calls are done; more are opened
/// when more calls run at once, and closed after.
const MAX_IDLE_PER_ORIGIN: usize = 128;

/// How much room a read asks for: a small answer arrives in one read.
const READ_SIZE: usize = 8 * 1024;

/// One connection, and what has been read from it but not yet taken.
pub(super) struct Conn {
    io: Stream,
    pub(super) buf: BytesMut,
    origin: Arc<Origin>,
    idle_since: Instant,
}

impl Conn {
    pub(super) fn new(io: Stream, origin: &Origin) -> Box<Conn> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            origin: Arc::new(origin.clone()),
            idle_since: Instant::now(),
        })
    }

    /// Reads what has arrived into `buf`; 0 when upstream has closed.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Whether upstream closed (or wrote on) the connection while it was
    /// idle, as far as the reactor has seen. A read that came up short
    /// cleared the socket's readiness, so a quiet connection is judged
    /// without a system call.
    pub(super) fn closed_while_idle(&self, cx: &mut Context<'_>) -> bool {
        let tcp = match &self.io {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => tls.get_ref().0,
        };
        if tcp.poll_read_ready(cx).is_pending() {
            return false;
        }
        // Readable: the end of the stream, an error, or bytes nobody
        // asked for. Only a read that would block says it is quiet.
        !matches!(tcp.try_read(&mut [0; 1]), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Writes `head` and `body`; `Unsent` when the connection took none
    /// of it.
    pub(super) async fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), Unanswered> {
        let mut written = 0;
        let first = poll_fn(|cx| Pin::new(&mut self.io).poll_write(cx, head)).await;
        match first {
            Ok(0) | Err(_) => return Err(Unanswered::Unsent),
            Ok(n) => written += n,
        }
        let failed = |err: std::io::Error| Unanswered::Failed(err.into());
        self.io.write_all(&head[written..]).await.map_err(failed)?;
        self.io.write_all(body).await.map_err(failed)?;
        self.io.flush().await.map_err(failed)
    }

    /// Reads until an answer's head has come.
    pub(super) async fn read_head(
        &mut self,
        method: &http::Method,
    ) -> Result<http1::Head, Http1Error> {
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = http1::parse(&mut self.buf, method)? {
                    return Ok(head);
                }
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Http1Error::HeadTooLarge);
            }
            if poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(if self.buf.is_empty() {
                    Http1Error::ClosedBeforeAnswer
                } else {
                    Http1Error::Truncated
                });
            }
        }
    }
}

/// Why a call on a connection brought no answer.
pub(super) enum Unanswered {
    /// The connection took not a byte of the call.
    Unsent,
    Failed(Http1Error),
}

/// One thread's idle connections, by origin. Origins come from the
/// configuration, never from a client, so a fast hash is safe: SipHash's
/// flood resistance cost more than the rest of a checkout.
type Kept = FxHashMap<Origin, Vec<Box<Conn>>>;

/// Idle connections, kept by the thread that last used them: a
/// connection is registered with its thread's reactor, and used from
/// another thread it would wake that one on every answer. A thread takes
/// from and returns to its own, so no call waits on a lock.
#[derive(Default)]
pub(super) struct Idle {
    kept: ThreadLocal<RefCell<Kept>>,
}

impl Idle {
    /// The most recently used idle connection to `origin` still young
    /// enough to trust.
    pub(super) fn checkout(&self, origin: &Origin) -> Option<Box<Conn>> {
        let mut kept = self.kept.get()?.borrow_mut();
        let conns = kept.get_mut(origin)?;
        let now = Instant::now();
        while let Some(conn) = conns.pop() {
            if now.duration_since(conn.idle_since) < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn`, whose last answer was read to its end.
    pub(super) fn checkin(&self, mut conn: Box<Conn>) {
        let now = Instant::now();
        conn.idle_since = now;
        let mut kept = self.kept.get_or_default().borrow_mut();
        // The origin is copied only the first time it is kept.
        let Some(conns) = kept.get_mut(&*conn.origin) else {
            let origin = Origin::clone(&conn.origin);
            kept.insert(origin, vec![conn]);
            return;
        };
        conns.retain(|kept| now.duration_since(kept.idle_since) < IDLE_TIMEOUT);
        if conns.len() < MAX_IDLE_PER_ORIGIN {
            conns.push(conn);
        }
    }
}
