//! WeCom suites at scale (DESIGN.md section 19), measured: one
//! `wxbroker serve` (the release binary) with one suite, in front of an
//! in-process simulator whose corps install it. Prints a Markdown report.
//!
//! 1. Installs: the simulated WeCom pushes the suite ticket, then N
//!    `create_auth` pushes to the callback; the permanent code exchanges
//!    and the corp token fetch rate, sampled every second for `--sample`
//!    seconds; then the time until every corp holds a token (at 20
//!    fetches a second, N / 20 seconds at least).
//! 2. Warm start: the same broker restarted on its file store; start to
//!    loaded (every corp listed), fetches and exchanges made (none
//!    expected), resident memory and the size of `/metrics`; against a
//!    broker with no corp, the memory per corp.
//! 3. The compatible listener's lookup by token: 500 calls, each holding
//!    the token of another corp, forwarded to the simulator; latency p50
//!    and p99 with 100 corps installed and with N. Whose token it is comes
//!    from the token index, so the two should not differ with N.
//!
//! ```text
//! cargo build --release --bin wxbroker
//! cargo run --release --example suite_scale -- --corps 10000
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use wxbroker::simulator::{SimConfig, SimHandle, SimSuite, Simulator};

#[path = "common/scale_broker.rs"]
mod scale_broker;
use scale_broker::{p50_p99, ScaleBroker};

const SUITE: &str = "wwsuitescale0001";
const SUITE_SECRET: &str = "suite-scale-secret";
const PROVIDER: &str = "wwproviderscale1";
const MSG_TOKEN: &str = "scale-callback-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    corps: usize,
    /// Seconds the fetch rate is sampled.
    #[arg(long, default_value_t = 30)]
    sample: u64,
    #[arg(long, default_value = "target/release/wxbroker")]
    binary: PathBuf,
}

/// The broker with suite `crm`, its callbacks aimed at by the simulator.
struct Broker(ScaleBroker);

impl Broker {
    fn start(args: &Args, sim: &SimHandle, state: &Path) -> Broker {
        let section = format!(
            "[[suites]]\nname = \"crm\"\nsuite_id = \"{SUITE}\"\nprovider_corpid = \"{PROVIDER}\"\nsecret = \"{SUITE_SECRET}\"\ntoken = \"{MSG_TOKEN}\"\naes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n",
            sim.base_url()
        );
        let (broker, callback) = ScaleBroker::start(&args.binary, state, &section);
        sim.sim.set_suite_callback_url(
            SUITE,
            &format!("http://127.0.0.1:{callback}/wechat/suites/crm/callback"),
        );
        Broker(broker)
    }

    /// The corp's token, once it holds one.
    async fn corp_token(&self, corpid: &str) -> String {
        let path = format!("/v1/suites/crm/corps/{corpid}/token?format=text");
        let started = Instant::now();
        loop {
            if let Some((200, token)) = self.0.get(&path).await {
                return token;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no token");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn compat_call(&self, token: &str) -> (Duration, bool) {
        self.0
            .compat_call("/cgi-bin/get_api_domain_ip", token)
            .await
    }

    /// Waits until the suite lists `count` corps.
    async fn wait_loaded(&self, count: usize) -> Duration {
        self.0
            .wait_listed("/v1/suites/crm/corps?limit=1", count)
            .await
    }

    /// Corps listed as holding a valid token, page by page.
    async fn valid_corps(&self, total: usize) -> usize {
        let mut valid = 0;
        for offset in (0..total).step_by(500) {
            let path = format!("/v1/suites/crm/corps?offset={offset}&limit=500");
            if let Some((200, body)) = self.0.get(&path).await {
                valid += body.matches("\"valid\":true").count();
            }
        }
        valid
    }
}

/// Corp token fetches per second over `secs` seconds: (max, mean).
async fn fetch_rate(sim: &Simulator, secs: u64) -> (u64, f64) {
    scale_broker::fetch_rate(|| sim.suite_calls("get_corp_token"), secs).await
}

async fn simulator() -> SimHandle {
    let sim = Simulator::new(SimConfig::default());
    sim.add_suite(SimSuite {
        suite_id: SUITE.into(),
        suite_secret: SUITE_SECRET.into(),
        token: MSG_TOKEN.into(),
        aes_key: AES_KEY.into(),
        provider_corpid: PROVIDER.into(),
        provider_secret: None,
        customized: false,
    });
    sim.spawn().await.expect("simulator")
}

/// A broker on `state` with the suite ticket pushed and the suite token
/// held, then `n` corps installed through pushes: the broker, the
/// corpids, and how long the installs' pushes took.
async fn installed(
    args: &Args,
    sim: &SimHandle,
    state: &Path,
    n: usize,
) -> (Broker, Vec<String>, Duration) {
    let broker = Broker::start(args, sim, state);
    broker.0.wait_ok("/livez", Duration::from_secs(30)).await;
    sim.sim.push_suite_ticket(SUITE).await;
    broker
        .0
        .wait_ok("/v1/suites/crm/suite_token", Duration::from_secs(30))
        .await;
    let started = Instant::now();
    let mut corpids = Vec::with_capacity(n);
    for _ in 0..n {
        let corp = sim.sim.install_corp(SUITE).await.expect("the suite exists");
        assert_eq!(corp.status, Some(200), "the callback takes the install");
        corpids.push(corp.corpid);
    }
    (broker, corpids, started.elapsed())
}

/// Waits until `n` corp tokens were fetched and the list shows them
/// valid: how long it took from now.
async fn all_valid(broker: &Broker, sim: &Simulator, n: usize) -> Duration {
    let started = Instant::now();
    // 20 fetches a second, and a margin.
    let limit = Duration::from_secs(n as u64 / 20 + 120);
    while sim.suite_calls("get_corp_token") < n as u64 {
        assert!(started.elapsed() < limit, "the corps never all got a token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while broker.valid_corps(n).await < n {
        assert!(started.elapsed() < limit, "the corps never all got a token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

/// Calls through the compatible listener measured at each size.
const LOOKUP_CALLS: usize = 500;

/// Latency of [`LOOKUP_CALLS`] calls through the compatible listener,
/// each holding another of the corps' tokens: (p50, p99).
async fn lookup_latency(broker: &Broker, corpids: &[String]) -> (Duration, Duration) {
    let n = corpids.len();
    let picked: Vec<&String> = (0..LOOKUP_CALLS.min(n))
        .map(|i| &corpids[i * n / LOOKUP_CALLS.min(n)])
        .collect();
    let mut tokens = Vec::with_capacity(picked.len());
    for corpid in picked {
        tokens.push(broker.corp_token(corpid).await);
    }
    for token in tokens.iter().take(50) {
        let (_, answered) = broker.compat_call(token).await;
        assert!(answered, "the compatible listener forwards the call");
    }
    let mut took = Vec::with_capacity(LOOKUP_CALLS);
    for i in 0..LOOKUP_CALLS {
        let (elapsed, answered) = broker.compat_call(&tokens[i % tokens.len()]).await;
        assert!(answered, "call {i} answered");
        took.push(elapsed);
    }
    p50_p99(&mut took)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let n = args.corps;
    let root = tempfile::tempdir().unwrap();
    println!("# WeCom suites at scale\n");
    println!(
        "`cargo run --release --example suite_scale -- --corps {n} --sample {}`, one suite, file store, release binary, loopback.\n",
        args.sample
    );
    println!("| measure | figure |\n|---|---|");

    // A broker with no corp, for the baseline.
    let sim = simulator().await;
    let (empty, _, _) = installed(&args, &sim, &root.path().join("empty"), 0).await;
    empty.wait_loaded(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_rss = empty.0.rss_kib();
    let base_metrics = empty.0.metrics_text().await.len();
    empty.0.stop();
    drop(sim);

    // 1. N installs through pushes, and the fetches they bring.
    let sim = simulator().await;
    let state = root.path().join("suite");
    let (broker, corpids, pushing) = installed(&args, &sim, &state, n).await;
    println!(
        "| {n} `create_auth` pushes answered | {} ms ({:.0} a second) |",
        pushing.as_millis(),
        n as f64 / pushing.as_secs_f64()
    );
    let (max, mean) = fetch_rate(&sim.sim, args.sample).await;
    println!(
        "| corp token fetches a second after the installs, max / mean over {}s | {max} / {mean:.1} |",
        args.sample
    );
    let waited = all_valid(&broker, &sim.sim, n).await;
    println!(
        "| every corp holding a token, after the sample | {} s more |",
        waited.as_secs()
    );
    println!(
        "| permanent code exchanges (`v2/get_permanent_code`) | {} |",
        sim.sim.suite_calls("v2/get_permanent_code")
    );
    broker.0.stop();

    // 2. Warm start on the same store.
    let (fetches, exchanges) = (
        sim.sim.suite_calls("get_corp_token"),
        sim.sim.suite_calls("v2/get_permanent_code"),
    );
    let warm = Broker::start(&args, &sim, &state);
    let loaded = warm.wait_loaded(n).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = warm.0.rss_kib();
    let metrics = warm.0.metrics_text().await.len();
    println!(
        "| warm start with {n} stored: start to loaded | {} ms |",
        loaded.as_millis()
    );
    println!(
        "| warm start: corp fetches / exchanges in the first 5 s | {} / {} |",
        sim.sim.suite_calls("get_corp_token") - fetches,
        sim.sim.suite_calls("v2/get_permanent_code") - exchanges
    );
    println!("| resident memory, no corp / {n} corps | {base_rss} / {rss} KiB |");
    println!(
        "| memory per corp | {:.2} KiB |",
        rss.saturating_sub(base_rss) as f64 / n as f64
    );
    println!("| `/metrics` size, no corp / {n} corps | {base_metrics} / {metrics} bytes |");
    println!(
        "| steady state, {n} tokens of 2 h refreshed in a window of up to 35 min before expiry | about {:.1} fetches a second on average |",
        n as f64 / (7200.0 - 1200.0)
    );

    // 3. The compatible listener's lookup by token, with N and with 100.
    let (large_p50, large_p99) = lookup_latency(&warm, &corpids).await;
    warm.0.stop();
    drop(sim);
    let small = 100.min(n);
    let sim = simulator().await;
    let (broker, small_corpids, _) =
        installed(&args, &sim, &root.path().join("small"), small).await;
    all_valid(&broker, &sim.sim, small).await;
    let (small_p50, small_p99) = lookup_latency(&broker, &small_corpids).await;
    broker.0.stop();
    let micros = |d: Duration| d.as_micros();
    println!(
        "| compatible listener, {LOOKUP_CALLS} calls each holding another corp's token, {small} corps: p50 / p99 | {} / {} µs |",
        micros(small_p50),
        micros(small_p99)
    );
    println!(
        "| compatible listener, the same with {n} corps: p50 / p99 | {} / {} µs |",
        micros(large_p50),
        micros(large_p99)
    );
    println!(
        "| compatible listener: p99 with {n} over p99 with {small} | {:.2} (bound: at most 3) |",
        large_p99.as_secs_f64() / small_p99.as_secs_f64()
    );
}
