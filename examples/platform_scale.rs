//! The Open Platform at scale (DESIGN.md section 13), measured: one
//! `wxbroker serve` (the release binary) with one platform, in front of an
//! in-process simulator holding the authorizers. Prints a Markdown report.
//!
//! 1. Cold recovery: an empty store and N authorizers at the simulator;
//!    `api_get_authorizer_list` pages and the authorizer fetch rate,
//!    sampled every second for `--sample` seconds.
//! 2. Warm start: N authorizers stored with fresh tokens; start to ready
//!    (the table loaded and a token served), fetches made (none expected),
//!    resident memory and the size of `/metrics`; against the same broker
//!    with no authorizer, the memory per authorizer.
//! 3. A backlog: N stored tokens all due now; the fetch rate the limiter
//!    allows, sampled every second.
//! 4. The compatible listener's lookup by token: 500 calls, each carrying
//!    the stored (valid) token of another authorizer, forwarded to the
//!    simulator; latency p50 and p99 with 100 authorizers held and with
//!    N. The broker finds whose token it is through its token index, so
//!    the two should not differ with the number of authorizers.
//!
//! ```text
//! cargo build --release --bin wxbroker
//! cargo run --release --example platform_scale -- --authorizers 10000
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use wxbroker::platform::store::{AuthorizerRecord, FilePlatformStore, PlatformStore};
use wxbroker::simulator::{SimConfig, SimHandle, Simulator};

#[path = "common/scale_broker.rs"]
mod scale_broker;
use scale_broker::{p50_p99, ScaleBroker};

const COMPONENT: &str = "wxcomponentscale01";
const SECRET: &str = "component-scale-secret";
const MSG_TOKEN: &str = "scale-message-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    authorizers: usize,
    /// Seconds each fetch rate is sampled.
    #[arg(long, default_value_t = 30)]
    sample: u64,
    #[arg(long, default_value = "target/release/wxbroker")]
    binary: PathBuf,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The broker with platform `saas`, its callbacks aimed at by the
/// simulator.
struct Broker(ScaleBroker);

impl Broker {
    fn start(args: &Args, sim: &SimHandle, state: &Path) -> Broker {
        let section = format!(
            "[[platforms]]\nname = \"saas\"\ncomponent_appid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\ntoken = \"{MSG_TOKEN}\"\naes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n",
            sim.base_url()
        );
        let (broker, callback) = ScaleBroker::start(&args.binary, state, &section);
        sim.sim.set_callback_url(
            COMPONENT,
            &format!("http://127.0.0.1:{callback}/wechat/platforms/saas/callback"),
        );
        Broker(broker)
    }

    /// Waits until the platform lists `count` authorizers.
    async fn wait_loaded(&self, count: usize) -> Duration {
        self.0
            .wait_listed("/v1/platforms/saas/authorizers?limit=1", count)
            .await
    }

    async fn compat_call(&self, token: &str) -> (Duration, bool) {
        self.0.compat_call("/cgi-bin/getcallbackip", token).await
    }
}

/// Authorizer fetches per second over `secs` seconds: (max, mean).
async fn fetch_rate(sim: &Simulator, secs: u64) -> (u64, f64) {
    scale_broker::fetch_rate(|| sim.component_calls("api_authorizer_token"), secs).await
}

/// `n` stored authorizers whose tokens were fetched `age` ago and live
/// `life` more; the tokens are ones the simulator issued (and honours)
/// when `valid`, else made up. Returns the tokens.
async fn store(
    dir: &Path,
    sim: &Simulator,
    n: usize,
    age: u64,
    life: u64,
    valid: bool,
) -> Vec<String> {
    let appids = sim.add_authorizers(COMPONENT, n);
    let now = now_ms();
    let records: Vec<AuthorizerRecord> = appids
        .into_iter()
        .map(|appid| AuthorizerRecord {
            refresh_token: sim.refresh_token_of(&appid).unwrap(),
            access_token: if valid {
                sim.issue_authorizer_token(&appid).unwrap()
            } else {
                format!("87_stored-{appid}-{}", "x".repeat(100))
            },
            expires_at_ms: now + life * 1000,
            fetched_at_ms: now - age * 1000,
            authorized_at: now / 1000,
            name: String::new(),
            appid,
        })
        .collect();
    let tokens = records.iter().map(|r| r.access_token.clone()).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    FilePlatformStore::new(dir, "saas", COMPONENT)
        .save_authorizers(&records)
        .await
        .unwrap();
    tokens
}

/// Calls through the compatible listener measured at each size.
const LOOKUP_CALLS: usize = 500;

/// Latency of [`LOOKUP_CALLS`] calls through the compatible listener,
/// each holding another of `n` authorizers' tokens: (p50, p99).
async fn lookup_latency(args: &Args, root: &Path, n: usize) -> (Duration, Duration) {
    let sim = simulator().await;
    let dir = root.join(format!("lookup-{n}"));
    let tokens = store(&dir, &sim.sim, n, 60, 7140, true).await;
    let broker = Broker::start(args, &sim, &dir);
    broker.wait_loaded(n).await;
    // Spread over all of them: with fewer than the calls, each in turn.
    let pick = |i: usize| &tokens[(i * n.max(LOOKUP_CALLS) / LOOKUP_CALLS) % n];
    for i in 0..50 {
        let (_, answered) = broker.compat_call(pick(i * 7)).await;
        assert!(answered, "the compatible listener forwards the call");
    }
    let mut took = Vec::with_capacity(LOOKUP_CALLS);
    for i in 0..LOOKUP_CALLS {
        let (elapsed, answered) = broker.compat_call(pick(i)).await;
        assert!(answered, "call {i} answered");
        took.push(elapsed);
    }
    broker.0.stop();
    p50_p99(&mut took)
}

async fn simulator() -> SimHandle {
    let sim = Simulator::new(SimConfig::default());
    sim.add_component(COMPONENT, SECRET, MSG_TOKEN, AES_KEY);
    sim.spawn().await.expect("simulator")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let n = args.authorizers;
    let root = tempfile::tempdir().unwrap();
    println!("# Open Platform at scale\n");
    println!(
        "`cargo run --release --example platform_scale -- --authorizers {n} --sample {}`, one platform, file store, release binary, loopback.\n",
        args.sample
    );
    println!("| measure | figure |\n|---|---|");

    // 1. Cold recovery.
    let sim = simulator().await;
    sim.sim.add_authorizers(COMPONENT, n);
    let broker = Broker::start(&args, &sim, &root.path().join("cold"));
    let (max, mean) = fetch_rate(&sim.sim, args.sample).await;
    println!(
        "| cold recovery: `api_get_authorizer_list` pages | {} |",
        sim.sim.component_calls("api_get_authorizer_list")
    );
    println!(
        "| cold recovery: authorizer fetches a second, max / mean over {}s | {max} / {mean:.1} |",
        args.sample
    );
    broker.0.stop();
    drop(sim);

    // 2. Warm start with N stored, against none.
    let sim = simulator().await;
    let empty = Broker::start(&args, &sim, &root.path().join("empty"));
    empty.wait_loaded(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_rss = empty.0.rss_kib();
    let base_metrics = empty.0.metrics_text().await.len();
    empty.0.stop();
    let warm_dir = root.path().join("warm");
    store(&warm_dir, &sim.sim, n, 60, 7140, false).await;
    let warm = Broker::start(&args, &sim, &warm_dir);
    let loaded = warm.wait_loaded(n).await;
    let first = sim.sim.component_calls("api_authorizer_token");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = warm.0.rss_kib();
    let metrics = warm.0.metrics_text().await.len();
    let fetched = sim.sim.component_calls("api_authorizer_token") - first;
    println!(
        "| warm start with {n} stored: start to loaded | {} ms |",
        loaded.as_millis()
    );
    println!("| warm start: authorizer fetches in the first 5 s | {fetched} |");
    println!(
        "| resident memory, no authorizer / {n} authorizers | {} / {} KiB |",
        base_rss, rss
    );
    println!(
        "| memory per authorizer | {:.2} KiB |",
        (rss.saturating_sub(base_rss)) as f64 / n as f64
    );
    println!(
        "| `/metrics` size, no authorizer / {n} authorizers | {base_metrics} / {metrics} bytes |"
    );
    warm.0.stop();
    drop(sim);

    // 3. A backlog: every stored token due now.
    let sim = simulator().await;
    let due_dir = root.path().join("due");
    store(&due_dir, &sim.sim, n, 7100, 100, false).await;
    let due = Broker::start(&args, &sim, &due_dir);
    due.wait_loaded(n).await;
    let (max, mean) = fetch_rate(&sim.sim, args.sample).await;
    println!("| every token due at once: authorizer fetches a second, max / mean over {}s | {max} / {mean:.1} |", args.sample);
    due.0.stop();
    println!(
        "| steady state, {n} tokens of 2 h refreshed in a window of up to 35 min before expiry | about {:.1} fetches a second on average |",
        n as f64 / (7200.0 - 1200.0)
    );

    // 4. The compatible listener's lookup by token, small and large.
    let small = 100.min(n);
    let (small_p50, small_p99) = lookup_latency(&args, root.path(), small).await;
    let (large_p50, large_p99) = lookup_latency(&args, root.path(), n).await;
    let micros = |d: Duration| d.as_micros();
    println!(
        "| compatible listener, {LOOKUP_CALLS} calls each holding another authorizer's token, {small} authorizers: p50 / p99 | {} / {} µs |",
        micros(small_p50),
        micros(small_p99)
    );
    println!(
        "| compatible listener, the same with {n} authorizers: p50 / p99 | {} / {} µs |",
        micros(large_p50),
        micros(large_p99)
    );
    println!(
        "| compatible listener: p99 with {n} over p99 with {small} | {:.2} (bound: at most 3) |",
        large_p99.as_secs_f64() / small_p99.as_secs_f64()
    );
}
