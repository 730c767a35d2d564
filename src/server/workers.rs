//! The threads that serve request connections, each with a runtime of its
//! own. A listener's accept loop hands each connection it
//! accepts to the next thread in turn, and the connection lives there, with
//! its requests and the upstream calls they make: nothing moves between
//! cores, and no thread wakes another or steals its work, which a runtime
//! shared by every core does on every request (on 2 cores, about 4 µs of a
//! forwarded call's 11 µs of CPU).
//!
//! The accept loops, the engine, the store, the audit writer, `/metrics`
//! (a scrape of thousands of apps) and the callbacks stay on the daemon's
//! shared runtime, so none of them holds up a read.
//!
//! The threads run until the process ends: a connection a request opened
//! on one (to Redis, say) may serve the engine after the listeners drain.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use tokio::runtime::Handle;

/// The request threads; connections are spread over them in turn.
pub struct RequestThreads {
    threads: Vec<Handle>,
    next: AtomicUsize,
}

impl RequestThreads {
    /// One thread per two cores, at least one: the broker shares its host
    /// with the services it serves, and the shared runtime keeps a thread
    /// per core for everything else. On 2 cores one request thread served
    /// more token reads a second than two, at less CPU each (two split
    /// the connections and each waits for work, then sleeps, more often),
    /// and forwarded calls at a fifth less CPU than the shared runtime.
    pub fn per_two_cores() -> io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores.div_ceil(2))
    }

    /// `count` threads (`[server] request_threads`), at least one.
    pub fn new(count: usize) -> io::Result<Self> {
        let count = count.max(1);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("wxbroker-requests-{index}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        }
        Ok(RequestThreads {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `connection` on the next thread. It is made there (`make`
    /// runs on that thread's runtime), so the sockets and timers it
    /// registers are that thread's.
    pub fn spawn<M, F>(&self, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let next = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        self.threads[next].spawn(futures_util::future::lazy(move |_| make()).flatten());
    }
}
