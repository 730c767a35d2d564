//! The deadline for a stalled write. A client that stops reading (its
//! receive window full, say halfway through a large proxied answer) leaves
//! hyper's write pending forever, holding the connection and its permit.
//! [`WriteStall`] wraps a connection's socket and fails a write, flush or
//! shutdown that has made no progress for `limit`; hyper then closes the
//! connection. A slow reader that keeps draining is never cut off: any
//! progress starts the clock again.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A socket whose writes may not stall for longer than `limit`.
pub struct WriteStall<T> {
    io: T,
    limit: Duration,
    /// Armed while a write is pending; allocated at the first stall only,
    /// since token answers are one small write that never waits.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<T> WriteStall<T> {
    pub fn new(io: T, limit: Duration) -> Self {
        WriteStall {
            io,
            limit,
            timer: None,
            stalled: false,
        }
    }

    /// The socket itself.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Passes progress through and resets the clock; on `Pending`, starts
    /// the clock (if this is a new stall) and fails once it runs out.
    fn guard<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = false;
            return poll;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let timer = self.timer.as_mut().expect("armed above");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {:?}", self.limit),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.guard(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_limit() {
        // A 1 KiB pipe nobody reads from: the second write waits forever.
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut io = WriteStall::new(ours, Duration::from_secs(5));
        io.write_all(&[0; 1024]).await.unwrap();
        let started = Instant::now();
        let err = io.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        use tokio::io::AsyncReadExt;
        let (ours, mut theirs) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0; 16];
            loop {
                // Less than the limit between reads, more than it in all.
                tokio::time::sleep(Duration::from_secs(3)).await;
                match theirs.read(&mut buf).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        let mut io = WriteStall::new(ours, Duration::from_secs(5));
        io.write_all(&[7; 64]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 64);
    }
}
