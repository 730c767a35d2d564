//! The simulator's HTTP server: an accept loop over a TCP listener, one
//! hyper HTTP/1.1 keep-alive connection per task, and a bounded drain when
//! the shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{routes, Simulator};

/// How long open connections get to finish after shutdown; a `Delay` fault
/// in flight must not hold a test's teardown hostage.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn serve(
    sim: Simulator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "simulator listening");
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(sim.clone(), stream, peer, stop.clone()));
                }
                Err(error) => {
                    warn!(%error, "simulator accept failed");
                    sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    stop.cancel();
    let drained = timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open = connections.len(),
            "simulator aborting connections after drain timeout"
        );
        connections.abort_all();
    }
    info!(%addr, "simulator stopped");
    Ok(())
}

async fn connection(sim: Simulator, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
    // Small JSON answers: don't let Nagle add latency to every call.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "simulator could not set nodelay");
    }
    let ip = peer.ip();
    let service = service_fn(move |request| routes::handle(sim.clone(), request, ip));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, then close instead of idling.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        // Includes the DropConnection fault, which works by failing here.
        debug!(%peer, %error, "simulator connection closed with error");
    }
}
