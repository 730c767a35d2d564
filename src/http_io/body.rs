//! The deadline for a request's whole body, and its one reader. Hyper
//! bounds the wait for a request head (`idle_timeout`) but not the body
//! behind it: a client that sends one byte a second keeps a handler (and
//! a connection permit) busy for as long as it likes. Every listener
//! hands its handlers a [`RequestBody`], which fails once the body has
//! not fully arrived within `body_timeout` of the head; handlers read it
//! whole with [`RequestBody::read`], within a limit of their own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
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

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Body(#[from] BodyError),
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

    /// The whole body, refused past `limit` bytes: at once when its
    /// declared length says so, else as soon as it gets there.
    pub async fn read(mut self, limit: usize) -> Result<Bytes, ReadError> {
        let too_large = ReadError::TooLarge { limit };
        if self.size_hint().lower() > limit as u64 {
            return Err(too_large);
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut length = 0usize;
        while let Some(frame) = self.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            length += data.len();
            if length > limit {
                return Err(too_large);
            }
            chunks.push(data);
        }
        // Most bodies come in one frame: kept as it came, not copied.
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        })
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
