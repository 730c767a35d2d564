//! A closed-loop HTTP/1.1 load generator for the benchmark, over a Unix
//! socket or TCP, so both transports are measured by the same client
//! (`wrk` speaks TCP only). Each of N keep-alive connections sends a GET,
//! waits for the whole answer, records the latency, and sends the next.
//!
//! ```text
//! cargo run --release --example unix_load -- --unix /tmp/wxbroker.sock \
//!     --connections 64 --duration 10s
//! cargo run --release --example unix_load -- --tcp 127.0.0.1:8930 \
//!     --client bench --connections 1000 --hold 10s
//! ```
//!
//! Prints one `key=value` line: requests, errors, rps and latency
//! percentiles in microseconds. With `--windows`, latencies are also kept
//! per one-second window, and the windows in which a connection saw the
//! `access_token` in the answer change (a refresh) are reported apart.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
struct Args {
    /// Connect to this Unix socket.
    #[arg(long, conflicts_with = "tcp", required_unless_present = "tcp")]
    unix: Option<PathBuf>,
    /// Connect to this TCP address.
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// Request path.
    #[arg(long, default_value = "/v1/token")]
    path: String,
    /// Sent as `Wxbroker-Client` when given.
    #[arg(long)]
    client: Option<String>,
    /// Open connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to send requests.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Instead of a load run: open the connections, send one request on
    /// each, print `holding N`, and keep them open this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    hold: Option<Duration>,
    /// Write `percentile microseconds` lines here.
    #[arg(long)]
    percentiles: Option<PathBuf>,
    /// Keep per-second latency windows and report refresh windows apart.
    #[arg(long)]
    windows: bool,
}

#[derive(Debug, Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Log-linear latency buckets: exact below 64 ns, then 32 buckets per
/// power of two (about 3% wide), up to 2^40 ns.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const LINEAR: u64 = 64;
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const TOP_BIT: u32 = 40;

impl Histogram {
    fn new() -> Self {
        let buckets = LINEAR + u64::from(TOP_BIT - 6 + 1) * SUB;
        Histogram {
            counts: vec![0; buckets as usize],
            total: 0,
            max: 0,
        }
    }

    fn index(value: u64) -> usize {
        let value = value.min((1 << (TOP_BIT + 1)) - 1);
        if value < LINEAR {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros();
        let mantissa = (value >> (exponent - SUB_BITS)) & (SUB - 1);
        (LINEAR + u64::from(exponent - 6) * SUB + mantissa) as usize
    }

    /// The middle of bucket `index`.
    fn value_at(index: usize) -> u64 {
        let index = index as u64;
        if index < LINEAR {
            return index;
        }
        let exponent = (index - LINEAR) / SUB + 6;
        let mantissa = (index - LINEAR) % SUB;
        let shift = exponent as u32 - SUB_BITS;
        ((SUB + mantissa) << shift) + (1 << shift) / 2
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The latency at quantile `q` (0..=1), in nanoseconds.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value_at(index).min(self.max);
            }
        }
        self.max
    }
}

/// What one connection measured.
struct Tally {
    all: Histogram,
    windows: Vec<Histogram>,
    refresh_windows: BTreeSet<usize>,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            all: Histogram::new(),
            windows: Vec::new(),
            refresh_windows: BTreeSet::new(),
            errors: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.all.merge(&other.all);
        if self.windows.len() < other.windows.len() {
            self.windows
                .resize_with(other.windows.len(), Histogram::new);
        }
        for (mine, theirs) in self.windows.iter_mut().zip(&other.windows) {
            mine.merge(theirs);
        }
        self.refresh_windows.extend(other.refresh_windows);
        self.errors += other.errors;
    }
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let (sender, connection) = match target {
        Target::Tcp(addr) => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            (sender, connection)
        }
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).await?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            (sender, connection)
        }
    };
    drop(connection);
    Ok(sender)
}

fn request(args: &Args) -> Request<Empty<Bytes>> {
    let mut builder = Request::get(args.path.as_str()).header(header::HOST, "localhost");
    if let Some(client) = &args.client {
        builder = builder.header("wxbroker-client", client.as_str());
    }
    builder.body(Empty::new()).expect("a valid request")
}

/// One request; the answer's body on success.
async fn exchange(sender: &mut SendRequest<Empty<Bytes>>, args: &Args) -> anyhow::Result<Bytes> {
    sender.ready().await?;
    let response = sender.send_request(request(args)).await?;
    let ok = response.status().is_success();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(ok, "status not 2xx: {}", String::from_utf8_lossy(&body));
    Ok(body)
}

fn access_token(body: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"access_token\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    Some(&body[start..start + len])
}

async fn drive(args: Arc<Args>, target: Target, start: Instant, deadline: Instant) -> Tally {
    let mut tally = Tally::new();
    let mut sender = match connect(&target).await {
        Ok(sender) => sender,
        Err(err) => {
            eprintln!("connect: {err:#}");
            tally.errors += 1;
            return tally;
        }
    };
    let mut last_token: Option<Bytes> = None;
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        match exchange(&mut sender, &args).await {
            Ok(body) => {
                let took = sent.elapsed().as_nanos() as u64;
                tally.all.record(took);
                if args.windows {
                    let window = sent.duration_since(start).as_secs() as usize;
                    if tally.windows.len() <= window {
                        tally.windows.resize_with(window + 1, Histogram::new);
                    }
                    tally.windows[window].record(took);
                    if let Some(token) = access_token(&body) {
                        if last_token.as_deref().is_some_and(|last| last != token) {
                            tally.refresh_windows.insert(window);
                        }
                        if last_token.as_deref() != Some(token) {
                            last_token = Some(Bytes::copy_from_slice(token));
                        }
                    }
                }
            }
            Err(err) => {
                tally.errors += 1;
                if tally.errors == 1 {
                    eprintln!("request: {err:#}");
                }
                match connect(&target).await {
                    Ok(fresh) => sender = fresh,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
    tally
}

async fn hold(args: Arc<Args>, target: Target, time: Duration) -> anyhow::Result<()> {
    // Opened 64 at a time so the listen backlog never overflows.
    let gate = Arc::new(Semaphore::new(64));
    let mut opening = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let gate = gate.clone();
        let target = target.clone();
        let args = args.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("never closed");
            let mut sender = connect(&target).await?;
            exchange(&mut sender, &args).await?;
            anyhow::Ok(sender)
        }));
    }
    let mut held = Vec::with_capacity(opening.len());
    for task in opening {
        held.push(task.await??);
    }
    println!("holding {}", held.len());
    std::io::stdout().flush()?;
    tokio::time::sleep(time).await;
    drop(held);
    Ok(())
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let target = match (&args.unix, args.tcp) {
        (Some(path), _) => Target::Unix(path.clone()),
        (None, Some(addr)) => Target::Tcp(addr),
        (None, None) => anyhow::bail!("pass --unix or --tcp"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Some(time) = args.hold {
            return hold(args, target, time).await;
        }
        let start = Instant::now();
        let deadline = start + args.duration;
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(drive(args.clone(), target.clone(), start, deadline)))
            .collect();
        let mut tally = Tally::new();
        for task in tasks {
            tally.merge(task.await?);
        }
        let seconds = start.elapsed().as_secs_f64();
        let all = &tally.all;
        let mut line = format!(
            "requests={} errors={} seconds={:.3} rps={:.1} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
            all.total,
            tally.errors,
            seconds,
            all.total as f64 / seconds,
            micros(all.quantile(0.5)),
            micros(all.quantile(0.9)),
            micros(all.quantile(0.99)),
            micros(all.quantile(0.999)),
            micros(all.max),
        );
        if args.windows {
            let mut with = Histogram::new();
            let mut without = Histogram::new();
            let mut worst_p99: u64 = 0;
            for (index, window) in tally.windows.iter().enumerate() {
                if tally.refresh_windows.contains(&index) {
                    with.merge(window);
                } else {
                    without.merge(window);
                }
                worst_p99 = worst_p99.max(window.quantile(0.99));
            }
            let list: Vec<String> = tally.refresh_windows.iter().map(usize::to_string).collect();
            line.push_str(&format!(
                " refresh_windows={} p99_refresh_windows_us={:.1} p99_other_windows_us={:.1} worst_window_p99_us={:.1}",
                if list.is_empty() { "none".to_owned() } else { list.join(",") },
                micros(with.quantile(0.99)),
                micros(without.quantile(0.99)),
                micros(worst_p99),
            ));
        }
        println!("{line}");
        if let Some(path) = &args.percentiles {
            let mut out = String::new();
            for q in [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99] {
                out.push_str(&format!("{q} {:.1}\n", micros(all.quantile(q / 100.0))));
            }
            std::fs::write(path, out)?;
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_three_percent() {
        for value in [0, 1, 63, 64, 65, 1000, 12_345, 1_000_000, 987_654_321] {
            let back = Histogram::value_at(Histogram::index(value));
            let error = (back as f64 - value as f64).abs() / (value.max(1) as f64);
            assert!(error <= 0.03, "{value} -> {back}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.03, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
    }

    #[test]
    fn finds_the_token() {
        assert_eq!(
            access_token(br#"{"app":"a","access_token":"87_x","expires_in":1}"#),
            Some(&b"87_x"[..])
        );
    }
}
