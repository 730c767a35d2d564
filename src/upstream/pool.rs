//! Kept-alive HTTP/1.1 connections to upstream origins, for the calls the
//! proxy forwards. A call runs its connection in its own task: the request
//! is written, the answer read and the connection put back by the task that
//! asked, with no hand-off to a connection task and back (what a pooled
//! client's per-connection tasks cost on every call). Only an answer that
//! is still streaming when the call returns gets a task for its connection,
//! which then ends with it.
//!
//! A kept connection may have been closed by upstream while it sat idle:
//! a request it could not take is sent again on another connection, and
//! only when not a byte of it was written.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use rustc_hash::FxHashMap;
use thread_local::ThreadLocal;
use tokio::time::Instant;
use tracing::debug;

use super::connect::{ConnectError, Connector, Origin, Stream};

/// How long a connection may sit unused and still be taken again; upstream
/// servers close theirs after a minute or so.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Connections kept per origin once their calls are done; more are opened
/// when more calls run at once, and closed after.
const MAX_IDLE_PER_ORIGIN: usize = 128;

/// Why a call got no answer. Never carries the request's URL.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream connection failed")]
    Http(#[from] hyper::Error),
    #[error("upstream closed a new connection before taking the request")]
    Closed,
}

/// What the caller made of an answer: done with the connection, or still
/// reading a body that streams on after the call returns.
pub enum Read<T> {
    Done(T),
    Streaming(T),
}

type Sender = http1::SendRequest<Full<Bytes>>;
type Driver = http1::Connection<Stream, Full<Bytes>>;

/// One connection: the side requests are sent on, and the side that moves
/// its bytes, polled by whichever task is calling on it.
struct Conn {
    sender: Sender,
    driver: Pin<Box<Driver>>,
    idle_since: Instant,
}

/// One thread's idle connections, by origin. Origins come from the
/// configuration, never from a client, so a fast hash is safe: SipHash's
/// flood resistance cost more than the rest of a checkout.
type Kept = FxHashMap<Origin, Vec<Conn>>;

pub struct Pool {
    connector: Connector,
    /// Idle connections are kept by the thread that last used them: a
    /// connection is registered with its thread's reactor, and used from
    /// another thread it would wake that one on every answer. A thread
    /// takes from and returns to its own, so no call waits on a lock.
    idle: ThreadLocal<RefCell<Kept>>,
}

impl Pool {
    pub fn new(connector: Connector) -> Self {
        Pool {
            connector,
            idle: ThreadLocal::new(),
        }
    }

    /// Sends `request` (origin-form URI, its `Host` header set) to
    /// `origin` and hands the answer to `read`, on a kept connection when
    /// one is free. `read` runs while the connection is driven, so it may
    /// read the body; what it says decides whether the connection is kept.
    pub async fn call<T, F, Fut>(
        &self,
        origin: &Origin,
        mut request: Request<Full<Bytes>>,
        read: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = Result<Read<T>, hyper::Error>>,
    {
        let mut read = Some(read);
        loop {
            let (conn, kept) = match self.checkout(origin) {
                Some(conn) => (conn, true),
                None => (self.open(origin).await?, false),
            };
            match conn.exchange(request, &mut read).await {
                Ok((Read::Done(value), conn)) => {
                    if let Some(conn) = conn {
                        self.checkin(origin, conn);
                    }
                    return Ok(value);
                }
                Ok((Read::Streaming(value), conn)) => {
                    if let Some(conn) = conn {
                        // The body is read by the caller after this returns;
                        // the connection ends with it (its sender is gone).
                        drop(conn.sender);
                        tokio::spawn(conn.driver);
                    }
                    return Ok(value);
                }
                Err(Unanswered::NotSent(unsent)) if kept => {
                    debug!(host = %origin.host, "a kept connection was closed; calling on another");
                    request = *unsent;
                }
                Err(Unanswered::NotSent(_)) => return Err(CallError::Closed),
                Err(Unanswered::Failed(err)) => return Err(CallError::Http(err)),
            }
        }
    }

    /// The most recently used idle connection to `origin` still young
    /// enough to trust.
    fn checkout(&self, origin: &Origin) -> Option<Conn> {
        let mut kept = self.idle.get()?.borrow_mut();
        let conns = kept.get_mut(origin)?;
        let now = Instant::now();
        while let Some(conn) = conns.pop() {
            if now.duration_since(conn.idle_since) < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, origin: &Origin, mut conn: Conn) {
        let now = Instant::now();
        conn.idle_since = now;
        let mut kept = self.idle.get_or_default().borrow_mut();
        // The origin is copied only the first time it is kept.
        let Some(conns) = kept.get_mut(origin) else {
            kept.insert(origin.clone(), vec![conn]);
            return;
        };
        conns.retain(|kept| now.duration_since(kept.idle_since) < IDLE_TIMEOUT);
        if conns.len() < MAX_IDLE_PER_ORIGIN {
            conns.push(conn);
        }
    }

    async fn open(&self, origin: &Origin) -> Result<Conn, CallError> {
        let stream = self.connector.connect(origin).await?;
        // Left to write vectored: flattened, a request's body (an upload
        // of megabytes) would be copied into a write buffer that the kept
        // connection then holds, at that size, until it is closed.
        let (sender, driver) = http1::Builder::new().handshake(stream).await?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
            idle_since: Instant::now(),
        })
    }
}

/// Why an exchange brought no answer.
enum Unanswered {
    /// The connection could not take the request; not a byte was sent.
    NotSent(Box<Request<Full<Bytes>>>),
    Failed(hyper::Error),
}

impl Conn {
    /// Sends `request` and runs `read` on its answer while driving the
    /// connection: the answer, read as far as the caller wanted, and the
    /// connection when it can carry more.
    async fn exchange<T, F, Fut>(
        self,
        request: Request<Full<Bytes>>,
        read: &mut Option<F>,
    ) -> Result<(Read<T>, Option<Conn>), Unanswered>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = Result<Read<T>, hyper::Error>>,
    {
        // Taken out (and so dropped) once it ends: only then does a call
        // waiting on the connection learn that it is gone.
        let Conn {
            mut sender,
            driver,
            idle_since,
        } = self;
        let mut driver = Some(driver);
        let outcome = {
            let sender = &mut sender;
            let driver = &mut driver;
            let call = async {
                if sender.ready().await.is_err() {
                    return Err(Unanswered::NotSent(Box::new(request)));
                }
                let response = match sender.try_send_request(request).await {
                    Ok(response) => response,
                    Err(mut err) => {
                        return Err(match err.take_message() {
                            Some(unsent) => Unanswered::NotSent(Box::new(unsent)),
                            None => Unanswered::Failed(err.into_error()),
                        })
                    }
                };
                let read = read.take().expect("an answer is read once");
                read(response).await.map_err(Unanswered::Failed)
            };
            let mut call = pin!(call);
            poll_fn(|cx| {
                if driver
                    .as_mut()
                    .is_some_and(|running| running.as_mut().poll(cx).is_ready())
                {
                    // Closed, or failed: whatever the call waits for now
                    // fails too, and the connection is not kept.
                    *driver = None;
                }
                call.as_mut().poll(cx)
            })
            .await
        };
        let read = outcome?;
        let conn = driver.map(|driver| Conn {
            sender,
            driver,
            idle_since,
        });
        Ok((read, conn))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::UpstreamConfig;

    const WAIT: Duration = Duration::from_secs(10);

    /// A raw HTTP/1.1 server on loopback: answers each request on a
    /// connection with `body`, keeping the connection open for at most
    /// `per_connection` answers (then closing it without saying so, as
    /// an upstream's idle timeout does). Counts the connections it took.
    async fn upstream(body: &'static str, per_connection: usize) -> (Origin, Arc<AtomicUsize>) {
        upstream_closing(body, per_connection).await.0
    }

    /// [`upstream`], told when to close a connection that has answered
    /// its share, and how many it has closed.
    async fn upstream_closing(
        body: &'static str,
        per_connection: usize,
    ) -> (
        (Origin, Arc<AtomicUsize>),
        (Arc<tokio::sync::Semaphore>, Arc<AtomicUsize>),
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let closed = Arc::new(AtomicUsize::new(0));
        let closes = closed.clone();
        let close_now = Arc::new(tokio::sync::Semaphore::new(0));
        let closer = close_now.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let closed = closed.clone();
                let close = close_now.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let answered = async {
                        for _ in 0..per_connection {
                            let mut head = Vec::new();
                            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => head.extend_from_slice(&buf[..n]),
                                }
                            }
                            let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    };
                    answered.await;
                    // Closed once the client has kept the connection.
                    let _ = close.acquire().await.map(|permit| permit.forget());
                    drop(stream);
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let origin = Origin {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        };
        ((origin, accepted), (closer, closes))
    }

    fn pool() -> Pool {
        let config = UpstreamConfig {
            resolve: crate::config::Resolve::System,
            connect_to: Vec::new(),
        };
        Pool::new(Connector::new(&config, WAIT).unwrap())
    }

    fn get(origin: &Origin) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = "/cgi-bin/getcallbackip?access_token=t".parse().unwrap();
        request.headers_mut().insert(
            http::header::HOST,
            format!("{}:{}", origin.host, origin.port).parse().unwrap(),
        );
        request
    }

    async fn whole(pool: &Pool, origin: &Origin) -> Result<Bytes, CallError> {
        let call = pool.call(origin, get(origin), |response| async move {
            Ok(Read::Done(response.into_body().collect().await?.to_bytes()))
        });
        tokio::time::timeout(WAIT, call)
            .await
            .expect("answered in time")
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_connection() {
        let (origin, accepted) = upstream(r#"{"errcode":0}"#, usize::MAX).await;
        let pool = pool();
        for _ in 0..20 {
            assert_eq!(whole(&pool, &origin).await.unwrap(), r#"{"errcode":0}"#);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_upstream_closed_while_kept_is_replaced_without_an_error() {
        // Every connection answers once, then closes as an idle timeout
        // would: each next call finds its kept connection gone.
        let ((origin, accepted), (close, closed)) = upstream_closing(r#"{"errcode":0}"#, 1).await;
        let pool = pool();
        for round in 1..=5 {
            assert_eq!(whole(&pool, &origin).await.unwrap(), r#"{"errcode":0}"#);
            close.add_permits(1);
            let deadline = Instant::now() + WAIT;
            while closed.load(Ordering::SeqCst) < round {
                assert!(Instant::now() < deadline, "upstream never closed");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // One turn of the reactor past the close, as any connection
            // kept for a while has had: its end is known when taken.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn calls_at_once_each_get_a_connection_and_keep_them_after() {
        let (origin, accepted) = upstream(r#"{"errcode":0}"#, usize::MAX).await;
        let pool = Arc::new(pool());
        for _ in 0..3 {
            let calls: Vec<_> = (0..8)
                .map(|_| {
                    let (pool, origin) = (pool.clone(), origin.clone());
                    tokio::spawn(async move { whole(&pool, &origin).await.unwrap() })
                })
                .collect();
            for call in calls {
                assert_eq!(call.await.unwrap(), r#"{"errcode":0}"#);
            }
        }
        // Eight at most at once; later rounds reuse what the first opened.
        let opened = accepted.load(Ordering::SeqCst);
        assert!((1..=8).contains(&opened), "{opened} connections");
    }

    #[tokio::test]
    async fn a_streaming_answer_is_read_after_the_call_returns() {
        let (origin, accepted) = upstream(r#"{"media":"0123456789"}"#, usize::MAX).await;
        let pool = pool();
        let call = pool.call(&origin, get(&origin), |response| async move {
            Ok(Read::Streaming(response.into_body()))
        });
        let body = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
        let read = tokio::time::timeout(WAIT, body.collect()).await.unwrap();
        assert_eq!(read.unwrap().to_bytes(), r#"{"media":"0123456789"}"#);
        // Its connection was not kept: the next call opens another.
        whole(&pool, &origin).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_that_names_no_url() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let origin = Origin {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        };
        let err = whole(&pool(), &origin).await.unwrap_err();
        let text = crate::errors::Chain(&err).to_string();
        assert!(text.contains("cannot connect to 127.0.0.1"), "{text}");
        assert!(!text.contains("access_token"), "{text}");
    }
}
