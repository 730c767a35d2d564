//! Kept-alive HTTP/1.1 connections to upstream origins, for the calls the
//! proxy forwards. A call is written, and its answer's head read, by the
//! task that makes it, on its own connection: no connection task, no
//! channel, no hand-off and back. The answer's body ([`AnswerBody`])
//! takes the connection with it and puts it back once read to its end, so
//! a streamed answer's connection is kept too.
//!
//! A kept connection may have been closed by upstream while it sat idle.
//! One the reactor has seen closed is dropped when taken; one that fails
//! before a byte of the call is written is replaced, and the call sent on
//! another.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use http::Response;
use tracing::debug;

use super::body::AnswerBody;
use super::conn::{Conn, Idle, Unanswered};
use super::connect::{ConnectError, Connector, Origin};
use super::http1::{self, Http1Error, Outgoing};

/// A body up to this size goes out in the head's buffer, in one write;
/// a larger one is written from where it is, after the head.
const COPIED_BODY: usize = 16 * 1024;

/// Why a call got no answer. Never carries the request's URL.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Http(#[from] Http1Error),
    #[error("upstream closed a new connection before taking the request")]
    Closed,
}

pub struct Pool {
    connector: Connector,
    idle: Arc<Idle>,
}

impl Pool {
    pub fn new(connector: Connector) -> Self {
        Pool {
            connector,
            idle: Arc::default(),
        }
    }

    /// Sends `call` to `origin` and hands its answer to `read`, on a kept
    /// connection when one is free. The answer's body brings the
    /// connection back when read to its end.
    pub async fn call<T, F, Fut>(
        &self,
        origin: &Origin,
        call: Outgoing<'_>,
        read: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(Response<AnswerBody>) -> Fut,
        Fut: Future<Output = Result<T, Http1Error>>,
    {
        let mut head =
            Vec::with_capacity(256 + call.target.len() + call.body.len().min(COPIED_BODY));
        http1::encode(&call, &mut head)?;
        let body: &[u8] = if call.body.len() <= COPIED_BODY {
            head.extend_from_slice(call.body);
            &[]
        } else {
            call.body
        };
        loop {
            let (mut conn, kept) = match self.checkout(origin).await {
                Some(conn) => (conn, true),
                None => (self.open(origin).await?, false),
            };
            match conn.send(&head, body).await {
                Ok(()) => {}
                Err(Unanswered::Unsent) if kept => {
                    debug!(host = %origin.host, "a kept connection was closed; calling on another");
                    continue;
                }
                Err(Unanswered::Unsent) => return Err(CallError::Closed),
                Err(Unanswered::Failed(err)) => return Err(err.into()),
            }
            let head = conn.read_head(call.method).await?;
            let (parts, ()) = head.response.into_parts();
            let body = AnswerBody::new(conn, head.framing, head.reusable, self.idle.clone());
            return Ok(read(Response::from_parts(parts, body)).await?);
        }
    }

    /// A kept connection to `origin` that upstream has not closed.
    async fn checkout(&self, origin: &Origin) -> Option<Box<Conn>> {
        loop {
            let conn = self.idle.checkout(origin)?;
            if !poll_fn(|cx| Poll::Ready(conn.closed_while_idle(cx))).await {
                return Some(conn);
            }
            debug!(host = %origin.host, "a kept connection was closed by upstream; dropped");
        }
    }

    async fn open(&self, origin: &Origin) -> Result<Box<Conn>, CallError> {
        Ok(Conn::new(self.connector.connect(origin).await?, origin))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Method};
    use http_body_util::BodyExt;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    use super::*;
    use crate::config::UpstreamConfig;

    const WAIT: Duration = Duration::from_secs(10);

    /// A raw HTTP/1.1 server on loopback, and what it has seen.
    struct Scripted {
        origin: Origin,
        /// Connections taken.
        accepted: Arc<AtomicUsize>,
        /// Connections closed after their share of answers.
        closed: Arc<AtomicUsize>,
        /// When gated, a connection that has answered its share closes
        /// only on a permit from here.
        close: Arc<tokio::sync::Semaphore>,
    }

    /// Answers each request on a connection with `answer`, written in
    /// pieces of at most `piece` bytes, each flushed on its own; after
    /// `per_connection` answers it closes the connection without saying
    /// so, as an upstream's idle timeout does (once `gated` ones are let).
    async fn scripted(
        answer: Vec<u8>,
        per_connection: usize,
        piece: usize,
        gated: bool,
    ) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(answer);
        let seen = Scripted {
            origin: Origin {
                tls: false,
                host: "127.0.0.1".into(),
                port,
            },
            accepted: Arc::default(),
            closed: Arc::default(),
            close: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let (accepted, closed, close) = (
            seen.accepted.clone(),
            seen.closed.clone(),
            seen.close.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let (answer, closed, close) = (answer.clone(), closed.clone(), close.clone());
                tokio::spawn(async move {
                    if !answer_requests(&mut stream, &answer, per_connection, piece).await {
                        return;
                    }
                    if gated {
                        let _ = close.acquire().await.map(|permit| permit.forget());
                    }
                    drop(stream);
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        seen
    }

    /// Answers each request on `stream` with `answer`, in pieces of at
    /// most `piece` bytes, for `per_connection` requests; false when the
    /// client left first.
    async fn answer_requests<S>(
        stream: &mut S,
        answer: &[u8],
        per_connection: usize,
        piece: usize,
    ) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut buf = vec![0; 4096];
        for _ in 0..per_connection {
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            for part in answer.chunks(piece.max(1)) {
                if stream.write_all(part).await.is_err() || stream.flush().await.is_err() {
                    return false;
                }
                tokio::task::yield_now().await;
            }
        }
        true
    }

    fn json(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Answers `body` as JSON, keeping each connection for at most
    /// `per_connection` answers. Counts the connections it took.
    async fn upstream(body: &str, per_connection: usize) -> (Origin, Arc<AtomicUsize>) {
        let seen = scripted(json(body), per_connection, usize::MAX, false).await;
        (seen.origin, seen.accepted)
    }

    fn pool() -> Pool {
        let config = UpstreamConfig {
            resolve: crate::config::Resolve::System,
            connect_to: Vec::new(),
        };
        Pool::new(Connector::new(&config, WAIT).unwrap())
    }

    /// A GET to `origin`, handing its answer to `read`.
    async fn get<T, F, Fut>(pool: &Pool, origin: &Origin, read: F) -> Result<T, CallError>
    where
        F: FnOnce(Response<AnswerBody>) -> Fut,
        Fut: Future<Output = Result<T, Http1Error>>,
    {
        let host = HeaderValue::from_str(&format!("{}:{}", origin.host, origin.port)).unwrap();
        let (headers, body) = (HeaderMap::new(), Bytes::new());
        let call = Outgoing {
            method: &Method::GET,
            target: "/cgi-bin/getcallbackip?access_token=t",
            host: &host,
            headers: &headers,
            body: &body,
        };
        tokio::time::timeout(WAIT, pool.call(origin, call, read))
            .await
            .expect("answered in time")
    }

    async fn whole(pool: &Pool, origin: &Origin) -> Result<Bytes, CallError> {
        get(pool, origin, |response| async move {
            Ok(response.into_body().collect().await?.to_bytes())
        })
        .await
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
        let Scripted {
            origin,
            accepted,
            closed,
            close,
        } = scripted(json(r#"{"errcode":0}"#), 1, usize::MAX, true).await;
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
    async fn an_answer_read_after_the_call_returns_brings_its_connection_back() {
        let (origin, accepted) = upstream(r#"{"media":"0123456789"}"#, usize::MAX).await;
        let pool = pool();
        let body = get(&pool, &origin, |response| async move {
            Ok(response.into_body())
        })
        .await
        .unwrap();
        let read = tokio::time::timeout(WAIT, body.collect()).await.unwrap();
        assert_eq!(read.unwrap().to_bytes(), r#"{"media":"0123456789"}"#);
        whole(&pool, &origin).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_left_unread_closes_its_connection() {
        let (origin, accepted) = upstream(r#"{"media":"0123456789"}"#, usize::MAX).await;
        let pool = pool();
        let head_only = get(
            &pool,
            &origin,
            |response| async move { Ok(response.status()) },
        );
        assert_eq!(head_only.await.unwrap(), 200);
        // What is left of it would be taken for the next answer.
        whole(&pool, &origin).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_chunked_answer_in_pieces_is_read_and_its_connection_kept() {
        let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                       4\r\n{\"er\r\n9\r\nrcode\":0}\r\n0\r\n\r\n";
        for piece in [1, 5, answer.len()] {
            let Scripted {
                origin, accepted, ..
            } = scripted(answer.to_vec(), usize::MAX, piece, false).await;
            let pool = pool();
            for _ in 0..3 {
                assert_eq!(whole(&pool, &origin).await.unwrap(), r#"{"errcode":0}"#);
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "pieces of {piece}");
        }
    }

    #[tokio::test]
    async fn an_answer_ended_by_its_close_is_read_and_its_connection_not_kept() {
        let answer = b"HTTP/1.1 200 OK\r\n\r\n{\"errcode\":0}".to_vec();
        let Scripted {
            origin, accepted, ..
        } = scripted(answer, 1, usize::MAX, false).await;
        let pool = pool();
        for round in 1..=2 {
            assert_eq!(whole(&pool, &origin).await.unwrap(), r#"{"errcode":0}"#);
            assert_eq!(accepted.load(Ordering::SeqCst), round);
        }
    }

    /// An `https` upstream for `api.weixin.qq.com` with a certificate from
    /// a local CA, answering every request on a connection with `answer`
    /// for `per_connection` requests (then closing, with a TLS
    /// close_notify); the pool that trusts that CA and pins the name to
    /// it; the origin; and the connections it took.
    async fn tls_upstream(
        answer: &'static [u8],
        per_connection: usize,
    ) -> (Pool, Origin, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().unwrap();
        let issued = crate::tls::init(dir.path()).unwrap();
        let server = crate::tls::server_config(&issued.cert, &issued.key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&issued.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    if answer_requests(&mut stream, answer, per_connection, 7).await {
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        let config = UpstreamConfig {
            resolve: crate::config::Resolve::System,
            connect_to: vec![("api.weixin.qq.com".to_owned(), addr)],
        };
        let pool = Pool::new(Connector::trusting(&config, WAIT, roots).unwrap());
        let origin = Origin {
            tls: true,
            host: "api.weixin.qq.com".into(),
            port: 443,
        };
        (pool, origin, accepted)
    }

    #[tokio::test]
    async fn answers_over_tls_in_pieces_are_read_and_their_connection_kept() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                        4\r\n{\"er\r\n9\r\nrcode\":0}\r\n0\r\n\r\n";
        let (pool, origin, accepted) = tls_upstream(chunked, usize::MAX).await;
        for _ in 0..5 {
            assert_eq!(whole(&pool, &origin).await.unwrap(), r#"{"errcode":0}"#);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_over_tls_ended_by_its_close_is_read_whole() {
        let (pool, origin, accepted) =
            tls_upstream(b"HTTP/1.1 200 OK\r\n\r\n{\"errcode\":0}", 1).await;
        for round in 1..=2 {
            assert_eq!(whole(&pool, &origin).await.unwrap(), r#"{"errcode":0}"#);
            assert_eq!(accepted.load(Ordering::SeqCst), round);
        }
    }

    #[tokio::test]
    async fn a_truncated_or_malformed_answer_is_an_error_and_not_kept() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"errcode\""[..],
                "in the middle",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-le", "in the middle"),
            (b"", "before answering"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "not valid",
            ),
        ] {
            let origin = scripted(answer.to_vec(), 1, usize::MAX, false).await.origin;
            let err = whole(&pool(), &origin).await.unwrap_err();
            let text = crate::errors::Chain(&err).to_string();
            assert!(text.contains(expected), "{text}");
        }
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
