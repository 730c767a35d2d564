//! What a configured app costs a broker that holds thousands of them:
//! at most a dozen series in `/metrics` once it has fetched and been
//! read, and no upstream connection of its own left open after the
//! start, when every app fetches at once. (Its memory is measured by
//! `make bench-apps`, never by a test.)

mod support;

use std::time::Duration;

use support::*;
use wxbroker::simulator::{AccountKind, Fault, SimConfig, SimHandle};

/// The most series a configured app may add to `/metrics` once it has
/// fetched its token and been read (a classic app without tickets): its
/// token's three gauges, its fetches today and budget, its fetches and
/// their durations. An event it has not had costs it no series.
const SERIES_PER_APP: usize = 12;

/// The idle connections the broker keeps to an upstream host.
const IDLE_UPSTREAM_CONNECTIONS: usize = 16;

/// `n` classic apps `app0`.. each with an account of its own at `sim`.
fn apps_of_their_own(sim: &SimHandle, n: usize) -> String {
    (0..n)
        .map(|i| {
            let (appid, secret) = (format!("wxcost{i:012}"), format!("cost-secret-{i}"));
            sim.sim.add_account(&appid, &secret, AccountKind::Wechat);
            format!(
                "[[apps]]\nname = \"app{i}\"\nappid = \"{appid}\"\nsecret = \"{secret}\"\napi_base = \"{}\"\n",
                sim.base_url()
            )
        })
        .collect()
}

/// The sample lines of an exposition: its series.
fn series(exposition: &str) -> usize {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_adds_at_most_a_dozen_series() {
    let sim = simulator(SimConfig::default()).await;
    let mut counted = Vec::new();
    for n in [2, 12] {
        let broker = Broker::start(&apps_of_their_own(&sim, n)).await;
        for i in 0..n {
            broker.token(&format!("app{i}")).await;
        }
        // The first scrape is counted in the operations listener's own
        // series, which the second one shows.
        broker.metrics_text().await;
        let exposition = broker.metrics_text().await;
        for i in 0..n {
            for line in [
                format!(r#"wxbroker_token_valid{{app="app{i}"}} 1"#),
                format!(
                    r#"wxbroker_upstream_fetches_total{{app="app{i}",credential="access_token",result="ok"}} 1"#
                ),
            ] {
                assert!(
                    exposition.lines().any(|l| l == line),
                    "{line} missing from\n{exposition}"
                );
            }
        }
        counted.push(series(&exposition));
        broker.stop().await;
    }
    let added = counted[1] - counted[0];
    assert!(
        added <= 10 * SERIES_PER_APP,
        "10 more apps added {added} series, more than {SERIES_PER_APP} each"
    );
}

/// Established TCP connections (IPv4) whose far end is `port` on this
/// host: the broker's to the simulator, in this process.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let far_end = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2].ends_with(&far_end) && fields[3] == "01"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_fetches_leave_a_few_idle_connections_not_one_per_app() {
    const APPS: usize = 40;
    let sim = simulator(SimConfig::default()).await;
    // Slow answers, so every app's first fetch is in flight at once, each
    // on a connection of its own.
    sim.sim.inject(Fault::Delay {
        delay: Duration::from_millis(1500),
        count: APPS as u32,
    });
    let broker = Broker::start(&apps_of_their_own(&sim, APPS)).await;
    let port = sim.addr.port();
    wait_until("the start-up fetches to be in flight together", || {
        connections_to(port) > IDLE_UPSTREAM_CONNECTIONS
    })
    .await;
    for i in 0..APPS {
        broker.token(&format!("app{i}")).await;
    }
    wait_until("the connections beyond the idle few to be closed", || {
        connections_to(port) <= IDLE_UPSTREAM_CONNECTIONS
    })
    .await;
    broker.stop().await;
}
