//! The deadline for a request's whole body. Hyper bounds the wait for a
//! request head (`idle_timeout`) but not the body behind it: a client that
//! sends one byte a second keeps a handler (and a connection permit) busy
//! for as long as it likes. Every listener hands its handlers a
//! [`RequestBody`], which fails once the body has not fully arrived within
//! `body_timeout` of the head.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the body")]
    Read(#[source] hyper::Error),
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
}

/// A request body that must be complete `limit` after its head arrived.
pub struct RequestBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Made on the first wait only: most requests (every token GET) have
    /// no body, and their handlers never poll it.
    timer: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        RequestBody {
            inner,
            deadline: Instant::now() + limit,
            limit,
            timer: None,
        }
    }

    /// True if a collecting error is this module's deadline (it reaches
    /// callers boxed, through `http_body_util::Limited`).
    pub fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
        matches!(err.downcast_ref(), Some(BodyError::TimedOut(_)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        // A body that keeps a little data ready at every poll must not
        // outrun the deadline either, so the timer is checked first.
        if let Some(timer) = &mut this.timer {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(BodyError::TimedOut(this.limit))));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BodyError::Read))),
            Poll::Pending => {
                if this.timer.is_none() {
                    let mut timer = Box::pin(tokio::time::sleep_until(this.deadline));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(BodyError::TimedOut(this.limit))));
                    }
                    this.timer = Some(timer);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
