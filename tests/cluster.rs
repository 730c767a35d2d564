//! Cluster mode against a real `redis-server` (DESIGN.md section 9): a
//! fleet of brokers behaves like one broker — one upstream fetch per
//! refresh, invalidations merged, one budget — and Redis faults (down at
//! start, killed, restarted empty, frozen) never reach readers.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use wxbroker::simulator::{Endpoint, SimConfig};

/// A short refresh window a fleet accepts: the lock's hold (2 × 300 ms +
/// 1 s), its lease (2 s) and one more fetch fit in 4 s.
const SHORT_WINDOW: &str = "refresh_before = \"4s\"\nfetch_timeout = \"300ms\"";

async fn metric_value(broker: &Broker, line_prefix: &str) -> Option<f64> {
    let text = broker.metrics_text().await;
    text.lines()
        .find(|line| line.starts_with(line_prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_fetch_like_one() {
    let redis = RedisServer::start().await;
    // 6 s tokens refreshed at half their life (refresh_before is longer):
    // one fetch every 3 s for the fleet.
    // (A fleet's refresh window must hold the lock's hold, a lease and a
    // fetch: 4 s is enough for a 300 ms fetch_timeout.)
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(6),
        ..SimConfig::default()
    })
    .await;
    let brokers = fleet(
        &classic_app("shop", &sim, SHORT_WINDOW),
        &redis_store(&redis.url()),
        3,
    )
    .await;
    let first = converged(&brokers, "shop").await;
    let started = Instant::now();
    let mut served = HashSet::new();
    while started.elapsed() < Duration::from_millis(7_500) {
        for broker in &brokers {
            let token = broker.token("shop").await;
            assert!(sim.sim.token_valid(&token), "a broker served a dead token");
            served.insert(token);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // As one broker: the first fetch, then one at 3 and 6 s.
    assert_eq!(sim.sim.calls(Endpoint::Token), 3);
    assert!(served.contains(&first));
    assert_eq!(
        served.len(),
        3,
        "every broker served the fleet's tokens only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_sent_to_every_broker_make_one_fetch() {
    let redis = RedisServer::start().await;
    let sim = simulator(SimConfig::default()).await;
    let brokers = fleet(
        &classic_app("shop", &sim, "min_forced_interval = \"500ms\""),
        &redis_store(&redis.url()),
        3,
    )
    .await;
    let old = converged(&brokers, "shop").await;
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        1,
        "one fetch on a cold fleet start"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    sim.sim.set_latency(Duration::from_millis(200));
    let body = format!("{{\"access_token\":\"{old}\"}}");
    let reports: Vec<_> = (0..60)
        .map(|i| {
            let (broker, body) = (brokers[i % 3].clone(), body.clone());
            tokio::spawn(async move { broker.post("/v1/apps/shop/token/invalidate", &body).await })
        })
        .collect();
    let mut refreshed = 0;
    for report in reports {
        let (status, answer) = within(report).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        refreshed += usize::from(answer["refreshed"] == true);
    }
    assert_eq!(refreshed, 1);
    assert_eq!(sim.sim.calls(Endpoint::Token), 2);
    let new = converged(&brokers, "shop").await;
    assert_ne!(new, old);
    assert!(sim.sim.token_valid(&new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_shares_one_daily_budget() {
    let redis = RedisServer::start().await;
    let sim = simulator(SimConfig::default()).await;
    let brokers = fleet(
        &classic_app(
            "shop",
            &sim,
            "daily_budget = 4\nmin_forced_interval = \"10ms\"",
        ),
        &redis_store(&redis.url()),
        3,
    )
    .await;
    for round in 0..30 {
        let broker = &brokers[round % 3];
        let token = broker.token("shop").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let body = format!("{{\"access_token\":\"{token}\"}}");
        let (status, _) = broker.post("/v1/apps/shop/token/invalidate", &body).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        4,
        "four fetches for the whole fleet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_then_back_converges_the_fleet() {
    let port = free_port();
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "") + &stable_app("mini", &sim, "");
    let store = redis_store(&format!("redis://127.0.0.1:{port}/0"));
    let brokers = fleet(&apps, &store, 3).await;
    // No Redis: each broker fetches alone and says so. Three classic
    // fetches in a row leave only the last two tokens valid upstream: the
    // price of refreshing without the fleet, which is why it is a last
    // resort and raises an alert.
    for broker in &brokers {
        assert!(sim.sim.token_ever_issued(&broker.token("shop").await));
        assert!(sim.sim.token_valid(&broker.token("mini").await));
    }
    let degraded = metric_value(&brokers[0], "wxbroker_cluster_degraded{app=\"shop\"}").await;
    assert_eq!(degraded, Some(1.0));
    // The stable grant hands every broker the same token anyway.
    converged(&brokers, "mini").await;

    let _redis = RedisServer::start_on(port).await;
    let shop = converged(&brokers, "shop").await;
    assert!(sim.sim.token_valid(&shop));
    // Which of the tokens fetched alone is still good upstream cannot be
    // known, so agreeing again costs exactly one locked fetch.
    assert_eq!(sim.sim.calls(Endpoint::Token), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_keeps_tokens_flowing_and_restarted_empty_converges() {
    let mut redis = RedisServer::start().await;
    // 8 s tokens refreshed 4 s ahead; alone only in the last 2 s.
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    // The token is fetched after this and before it is served.
    let starting = Instant::now();
    let brokers = fleet(
        &classic_app("shop", &sim, SHORT_WINDOW),
        &redis_store(&redis.url()),
        3,
    )
    .await;
    let first = converged(&brokers, "shop").await;
    let fetched = Instant::now();
    let port = redis.port;
    redis.kill();
    // Through the refresh time (4 s) the brokers keep the fleet's token
    // and wait for Redis; from 6 s each fetches alone. No reader notices.
    let mut alone = HashSet::new();
    while fetched.elapsed() < Duration::from_secs(9) {
        for broker in &brokers {
            let token = broker.token("shop").await;
            // Alone from 6 s after the fetch, or 5 s: a broker that
            // adopted the token knows its expiry to the second only.
            if starting.elapsed() < Duration::from_millis(4_900) {
                assert_eq!(
                    token, first,
                    "a broker refreshed before the token ran short"
                );
                assert!(sim.sim.token_valid(&token), "a dead token was served");
            } else if token != first {
                // Fetched alone: each broker's own fetch invalidates the
                // one before the previous (WeChat's rule), the reason this
                // waits until the token is about to run out.
                assert!(sim.sim.token_ever_issued(&token));
                alone.insert(token);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alone.is_empty(), "the brokers refreshed alone near expiry");
    assert!(
        alone.len() <= 3,
        "one fetch alone per broker: {}",
        alone.len()
    );
    let degraded = metric_value(&brokers[0], "wxbroker_cluster_degraded{app=\"shop\"}").await;
    assert_eq!(degraded, Some(1.0));
    let errors = metric_value(&brokers[0], "wxbroker_store_errors_total{backend=\"redis\"").await;
    assert!(errors.unwrap_or(0.0) > 0.0);

    // Redis comes back empty: the fleet settles on one (the newest) token.
    let _redis = RedisServer::start_on(port).await;
    let settled = converged(&brokers, "shop").await;
    assert!(sim.sim.token_valid(&settled));
    let degraded = metric_value(&brokers[0], "wxbroker_cluster_degraded{app=\"shop\"}").await;
    assert_ne!(degraded, Some(1.0), "no longer degraded once Redis answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_never_blocks_readers() {
    let redis = RedisServer::start().await;
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    let brokers = fleet(
        &classic_app("shop", &sim, SHORT_WINDOW),
        &redis_store(&redis.url()),
        2,
    )
    .await;
    converged(&brokers, "shop").await;
    redis.freeze();
    let frozen = Instant::now();
    // Each broker refreshes alone near expiry, and a classic fetch kills
    // the token before the previous one at once: a read answered while
    // the other broker's fetch was on its way back may carry a token that
    // died a moment before. Any other read must carry a live token.
    let mut fetches_seen = sim.sim.total_token_calls();
    let mut last_fetch_seen = Instant::now() - Duration::from_secs(60);
    while frozen.elapsed() < Duration::from_secs(9) {
        for broker in &brokers {
            let asked = Instant::now();
            let token = broker.token("shop").await;
            assert!(
                asked.elapsed() < Duration::from_millis(500),
                "a read waited on Redis"
            );
            let fetches = sim.sim.total_token_calls();
            if fetches != fetches_seen {
                fetches_seen = fetches;
                last_fetch_seen = Instant::now();
            }
            let just_fetched = last_fetch_seen.elapsed() < Duration::from_secs(1);
            assert!(
                sim.sim.token_valid(&token) || (just_fetched && sim.sim.token_ever_issued(&token)),
                "a reader got a dead token while Redis was frozen"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.thaw();
    let settled = converged(&brokers, "shop").await;
    assert!(sim.sim.token_valid(&settled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_warns_at_start_when_its_appid_is_stored_under_another_prefix() {
    let logs_before = captured_logs().len();
    let redis = RedisServer::start().await;
    let sim = simulator(SimConfig::default()).await;
    // One fleet stores the classic account's token under "test" ...
    let first = Broker::start_with(
        &classic_app("shop", &sim, ""),
        Options {
            store: redis_store(&redis.url()),
            ..Options::default()
        },
    )
    .await;
    first.token("shop").await;
    // Its record is stored just after the token is served: the check at
    // the next fleet's start reads the store.
    let pattern = format!("*test:{APPID}:*token");
    let deadline = Instant::now() + WAIT;
    loop {
        let keys = redis_ha::ask(&redis.url(), redis::cmd("KEYS").arg(&pattern)).await;
        if matches!(keys, Some(redis::Value::Array(ref found)) if !found.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first fleet never stored its token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and another, a typo away, starts on the same Redis with the
    // same appid, plus an appid nobody else holds.
    let typo = redis_store(&redis.url()).replace("key_prefix = \"test\"", "key_prefix = \"tset\"");
    let apps = format!(
        "{}{}",
        classic_app("shop", &sim, ""),
        stable_app("other", &sim, "")
    );
    let second = Broker::start_with(
        &apps,
        Options {
            store: typo,
            ..Options::default()
        },
    )
    .await;
    let warning = |logs: &str| {
        logs.lines()
            .filter(|line| {
                line.contains("WARN")
                    && line.contains("under another key_prefix")
                    && line.contains(APPID)
                    && line.contains("\"test\"")
            })
            .count()
    };
    let deadline = Instant::now() + WAIT;
    while warning(&captured_logs()[logs_before..]) == 0 {
        assert!(
            Instant::now() < deadline,
            "no warning about the other prefix"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = captured_logs();
    let new_logs = &logs[logs_before..];
    assert_eq!(warning(new_logs), 1, "{new_logs}");
    // The appid only this fleet holds is not named, nor is the first
    // fleet warned about itself (its own prefix only).
    assert!(
        !new_logs
            .lines()
            .any(|line| line.contains("under another key_prefix") && line.contains(STABLE_APPID)),
        "{new_logs}"
    );
    second.stop().await;
    first.stop().await;
}
