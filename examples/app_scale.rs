//! The cost of a configured app, measured: one `wxbroker serve` (the
//! release binary) with N classic apps on a file store, in front of an
//! in-process simulator holding their accounts, against the same broker
//! with one app. Prints a Markdown report.
//!
//! Each broker is started and waited for until `/readyz` answers 200
//! (every app holds a token: each fetched once), measured idle, then each
//! app's token is read once through the token API and it is measured
//! again, and once more after the daemon's quota poll has asked about
//! every app: resident memory and memory per app over the one-app
//! broker, the series of `/metrics` (its sample lines) per app over the
//! one-app broker, the size of `/metrics` and the time a scrape takes
//! (the median of several, the whole answer read). The series of one app
//! are listed by family.
//!
//! ```text
//! cargo build --release --bin wxbroker --example app_scale
//! target/release/examples/app_scale --apps 10000
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use wxbroker::simulator::{AccountKind, SimConfig, SimHandle, Simulator};

#[path = "common/scale_broker.rs"]
mod scale_broker;
use scale_broker::ScaleBroker;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    apps: usize,
    /// Scrapes of `/metrics` timed; the median is reported.
    #[arg(long, default_value_t = 9)]
    scrapes: usize,
    /// Seconds the broker is left alone before its memory is read, each
    /// time: the allocator returns freed pages over about ten seconds.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Token reads in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "target/release/wxbroker")]
    binary: PathBuf,
}

fn app_name(i: usize) -> String {
    format!("app{i:05}")
}

fn appid(i: usize) -> String {
    format!("wxscale{i:011}")
}

fn secret(i: usize) -> String {
    format!("scale-secret-{i:011}")
}

/// The `[[apps]]` tables of apps `0..n` against `sim`.
fn apps_section(n: usize, sim: &SimHandle) -> String {
    let base = sim.base_url();
    (0..n)
        .map(|i| {
            format!(
                "[[apps]]\nname = \"{}\"\nappid = \"{}\"\nsecret = \"{}\"\napi_base = \"{base}\"\n",
                app_name(i),
                appid(i),
                secret(i)
            )
        })
        .collect()
}

/// The sample lines of an exposition (its series), without comments.
fn series(exposition: &str) -> usize {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .count()
}

/// The series of app `app` by family (the sample name before `{`).
fn series_of(exposition: &str, app: &str) -> BTreeMap<String, usize> {
    let label = format!("app=\"{app}\"");
    let mut families = BTreeMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') || !line.contains(&label) {
            continue;
        }
        let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
        *families.entry(name.to_owned()).or_insert(0) += 1;
    }
    families
}

/// The exposition as one scrape saw it, and how long the scrapes took.
struct Scraped {
    series: usize,
    bytes: usize,
    /// The median of the scrapes.
    took: Duration,
    one_app: BTreeMap<String, usize>,
}

/// What one broker measured.
struct Measured {
    ready: Duration,
    rss_idle_kib: u64,
    fds_idle: usize,
    rss_read_kib: u64,
    fds_read: usize,
    read: Scraped,
    rss_polled_kib: u64,
    polled: Scraped,
    peak_rss_kib: u64,
}

/// `args.scrapes` scrapes of `/metrics`, the last one kept.
async fn scrape(args: &Args, broker: &ScaleBroker, n: usize) -> Scraped {
    let mut took = Vec::with_capacity(args.scrapes);
    let mut exposition = String::new();
    for _ in 0..args.scrapes {
        let started = Instant::now();
        exposition = broker.metrics_text().await;
        took.push(started.elapsed());
        assert!(!exposition.is_empty(), "/metrics answers");
    }
    took.sort_unstable();
    Scraped {
        series: series(&exposition),
        bytes: exposition.len(),
        took: took[took.len() / 2],
        one_app: series_of(&exposition, &app_name(n / 2)),
    }
}

/// Waits until the daemon's quota poll (its first round a minute after
/// start) has polled each of the `n` apps.
async fn wait_polled(broker: &ScaleBroker, n: usize) {
    let started = Instant::now();
    loop {
        let text = broker.metrics_text().await;
        let polled = text
            .lines()
            .filter(|line| line.starts_with("wxbroker_wechat_quota_polls_total{"))
            .count();
        if polled >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the quota poll never reached every app ({polled} of {n})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn measure(args: &Args, sim: &SimHandle, state: &Path, n: usize) -> Measured {
    let broker = ScaleBroker::start_apps(&args.binary, state, &apps_section(n, sim));
    let ready = broker.wait_ok("/readyz", Duration::from_secs(300)).await;
    let settle = || tokio::time::sleep(Duration::from_secs(args.settle));
    settle().await;
    let (rss_idle_kib, fds_idle) = (broker.rss_kib(), broker.open_fds());

    let reads = futures_util::stream::iter(0..n)
        .map(|i| {
            let broker = &broker;
            async move { broker.get(&format!("/v1/apps/{}/token", app_name(i))).await }
        })
        .buffer_unordered(args.concurrency)
        .filter(|answer| std::future::ready(matches!(answer, Some((200, _)))))
        .count()
        .await;
    assert_eq!(reads, n, "every app's token is read once");
    settle().await;
    let (rss_read_kib, fds_read) = (broker.rss_kib(), broker.open_fds());
    let read = scrape(args, &broker, n).await;

    wait_polled(&broker, n).await;
    settle().await;
    let rss_polled_kib = broker.rss_kib();
    let polled = scrape(args, &broker, n).await;
    let peak_rss_kib = broker.peak_rss_kib();
    broker.stop();
    Measured {
        ready,
        rss_idle_kib,
        fds_idle,
        rss_read_kib,
        fds_read,
        read,
        rss_polled_kib,
        polled,
        peak_rss_kib,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let n = args.apps;
    assert!(n >= 2, "--apps must be at least 2");
    let sim = Simulator::new(SimConfig::default());
    for i in 0..n {
        sim.add_account(&appid(i), &secret(i), AccountKind::Wechat);
    }
    let sim = sim.spawn().await.expect("simulator");
    let root = tempfile::tempdir().unwrap();

    let base = measure(&args, &sim, &root.path().join("one"), 1).await;
    let many = measure(&args, &sim, &root.path().join("many"), n).await;

    let per_app = |many: u64, base: u64| many.saturating_sub(base) as f64 / (n - 1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("# The cost of a configured app\n");
    println!(
        "`target/release/examples/app_scale --apps {n} --scrapes {} --settle {}`: classic apps without tickets, one simulator account each, file store, release binary, loopback. Each app's token is fetched once at start (ready: every app holds one), then read once through the token API; the broker is left {}s alone before each reading of its memory. Then the daemon's quota poll (its first round a minute after start) asks WeChat's `quota/get` about every app once, which adds its own series.\n",
        args.scrapes, args.settle, args.settle
    );
    println!("| measure | 1 app | {n} apps | per app |\n|---|---|---|---|");
    println!(
        "| start to ready | {:.0} ms | {:.0} ms | |",
        ms(base.ready),
        ms(many.ready)
    );
    let memory = |what: &str, base: u64, many: u64| {
        println!(
            "| resident memory, {what} | {base} KiB | {many} KiB ({:.0} MiB) | {:.1} KiB |",
            many as f64 / 1024.0,
            per_app(many, base)
        );
    };
    memory("idle after start", base.rss_idle_kib, many.rss_idle_kib);
    memory(
        "after one read of each",
        base.rss_read_kib,
        many.rss_read_kib,
    );
    memory(
        "after the quota poll",
        base.rss_polled_kib,
        many.rss_polled_kib,
    );
    memory("peak (VmHWM)", base.peak_rss_kib, many.peak_rss_kib);
    println!(
        "| open files (sockets included), idle / after the reads | {} / {} | {} / {} | |",
        base.fds_idle, base.fds_read, many.fds_idle, many.fds_read
    );
    let exposition = |what: &str, base: &Scraped, many: &Scraped| {
        println!(
            "| `/metrics` series (sample lines), {what} | {} | {} | {:.2} |",
            base.series,
            many.series,
            per_app(many.series as u64, base.series as u64)
        );
        println!(
            "| `/metrics` size, {what} | {} bytes | {} bytes | {:.0} bytes |",
            base.bytes,
            many.bytes,
            per_app(many.bytes as u64, base.bytes as u64)
        );
        println!(
            "| `/metrics` scrape, {what}, median of {} | {:.1} ms | {:.1} ms | |",
            args.scrapes,
            ms(base.took),
            ms(many.took)
        );
    };
    exposition("after the reads", &base.read, &many.read);
    exposition("after the quota poll", &base.polled, &many.polled);
    let app = app_name(n / 2);
    println!("\nThe series of one app (`{app}` of {n}) by family, after the reads and after the quota poll:\n");
    println!("| family | after the reads | after the quota poll |\n|---|---|---|");
    let families: std::collections::BTreeSet<&String> = many
        .read
        .one_app
        .keys()
        .chain(many.polled.one_app.keys())
        .collect();
    for family in families {
        let count = |scraped: &Scraped| scraped.one_app.get(family).copied().unwrap_or(0);
        println!(
            "| `{family}` | {} | {} |",
            count(&many.read),
            count(&many.polled)
        );
    }
    println!(
        "| total | {} | {} |",
        many.read.one_app.values().sum::<usize>(),
        many.polled.one_app.values().sum::<usize>()
    );
}
