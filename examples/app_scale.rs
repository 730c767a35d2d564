//! The cost of a configured app, measured: one `wxbroker serve` (the
//! release binary) with N classic apps on a file store, in front of an
//! in-process simulator holding their accounts, against the same broker
//! with one app. Prints a Markdown report.
//!
//! Each broker is started, waited for until `/readyz` answers 200 (every
//! app holds a token: each fetched once), measured idle, then each app's
//! token is read once through the token API and it is measured again:
//! resident memory, memory per app over the one-app broker, the series
//! of `/metrics` (its sample lines) per app over the one-app broker, the
//! size of `/metrics` and the time a scrape takes (the median of several,
//! the whole answer read). The series of one app are listed by family.
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

/// What one broker measured.
struct Measured {
    ready: Duration,
    rss_idle_kib: u64,
    rss_read_kib: u64,
    fds_idle: usize,
    fds_read: usize,
    series: usize,
    bytes: usize,
    scrape: Duration,
    one_app: BTreeMap<String, usize>,
}

async fn measure(args: &Args, sim: &SimHandle, state: &Path, n: usize) -> Measured {
    let broker = ScaleBroker::start_apps(&args.binary, state, &apps_section(n, sim));
    let ready = broker.wait_ok("/readyz", Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_idle_kib = broker.rss_kib();
    let fds_idle = broker.open_fds();

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
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_read_kib = broker.rss_kib();
    let fds_read = broker.open_fds();

    let mut took = Vec::with_capacity(args.scrapes);
    let mut exposition = String::new();
    for _ in 0..args.scrapes {
        let started = Instant::now();
        exposition = broker.metrics_text().await;
        took.push(started.elapsed());
        assert!(!exposition.is_empty(), "/metrics answers");
    }
    took.sort_unstable();
    let measured = Measured {
        ready,
        rss_idle_kib,
        rss_read_kib,
        fds_idle,
        fds_read,
        series: series(&exposition),
        bytes: exposition.len(),
        scrape: took[took.len() / 2],
        one_app: series_of(&exposition, &app_name(n / 2)),
    };
    broker.stop();
    measured
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
        "`target/release/examples/app_scale --apps {n} --scrapes {} --settle {}`: classic apps, one simulator account each, file store, release binary, loopback. Each app's token is fetched once at start (ready = every app holds one) and read once through the token API.\n",
        args.scrapes, args.settle
    );
    println!("| measure | 1 app | {n} apps | per app |\n|---|---|---|---|");
    println!(
        "| start to ready | {:.0} ms | {:.0} ms | |",
        ms(base.ready),
        ms(many.ready)
    );
    println!(
        "| resident memory, idle | {} KiB | {} KiB | {:.1} KiB |",
        base.rss_idle_kib,
        many.rss_idle_kib,
        per_app(many.rss_idle_kib, base.rss_idle_kib)
    );
    println!(
        "| resident memory, after one read of each | {} KiB | {} KiB | {:.1} KiB |",
        base.rss_read_kib,
        many.rss_read_kib,
        per_app(many.rss_read_kib, base.rss_read_kib)
    );
    println!(
        "| open files (sockets included), idle / after the reads | {} / {} | {} / {} | |",
        base.fds_idle, base.fds_read, many.fds_idle, many.fds_read
    );
    println!(
        "| `/metrics` series (sample lines) | {} | {} | {:.2} |",
        base.series,
        many.series,
        per_app(many.series as u64, base.series as u64)
    );
    println!(
        "| `/metrics` size | {} bytes | {} bytes | {:.0} bytes |",
        base.bytes,
        many.bytes,
        per_app(many.bytes as u64, base.bytes as u64)
    );
    println!(
        "| `/metrics` scrape, median of {} | {:.1} ms | {:.1} ms | |",
        args.scrapes,
        ms(base.scrape),
        ms(many.scrape)
    );
    println!(
        "\nThe series of one app (`{}` of {n}), by family:\n",
        app_name(n / 2)
    );
    println!("| family | series |\n|---|---|");
    for (family, count) in &many.one_app {
        println!("| `{family}` | {count} |");
    }
    println!("| total | {} |", many.one_app.values().sum::<usize>());
}
