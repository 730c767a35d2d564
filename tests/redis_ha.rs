//! A fleet on highly available Redis (DESIGN.md section 14), against real
//! processes: a Sentinel-managed primary killed mid-run, a three-master
//! Redis Cluster, Part I's keys migrated, a password and TLS; and a
//! refresh lock that never outlives the broker holding it.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::redis_ha::*;
use support::*;
use tokio::time::Instant;
use wxbroker::simulator::{Endpoint, SimConfig};

/// A refresh window a fleet accepts with a short fetch_timeout: the
/// lock's hold (2 × 300 ms + 1 s), its lease (2 s) and a fetch fit in 6 s.
const WINDOW: &str = "refresh_before = \"6s\"\nfetch_timeout = \"300ms\"";

fn token_key(prefix: &str, appid: &str, grant: &str) -> String {
    format!("{{{prefix}:{appid}:{grant}}}:token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_the_fleet_on_one_valid_token() {
    let mut ha = SentinelSetup::start().await;
    // 12 s tokens refreshed 6 s ahead; the primary dies 1.5 s before the
    // refresh, so the refresh falls in the failover.
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(12),
        ..SimConfig::default()
    })
    .await;
    let apps = classic_app("shop", &sim, WINDOW) + &stable_app("mini", &sim, WINDOW);
    let brokers = fleet(&apps, &redis_store(&ha.url()), 3).await;
    let first = converged(&brokers, "shop").await;
    let fetched = Instant::now();
    converged(&brokers, "mini").await;
    let (classic_before, stable_before) = (
        sim.sim.calls(Endpoint::Token),
        sim.sim.calls(Endpoint::StableToken),
    );
    assert_eq!(classic_before, 1, "one fetch for the fleet");

    // The record has reached the replica: the test is about a primary
    // that dies, not about a write it took with it.
    let key = token_key("test", APPID, "classic");
    let replica = ha.replica.url();
    wait_async("the record to reach the replica", || async {
        get(&replica, &key)
            .await
            .is_some_and(|r| r.contains(&first))
    })
    .await;

    tokio::time::sleep_until(fetched + Duration::from_millis(4_500)).await;
    let killed = Instant::now();
    ha.primary.kill();
    let mut promoted_after = None;
    let mut refreshed_after = None;
    let mut served = HashSet::new();
    while fetched.elapsed() < Duration::from_secs(13) {
        for broker in &brokers {
            let shop = broker.token("shop").await;
            assert!(
                sim.sim.token_valid(&shop),
                "a dead classic token was served"
            );
            served.insert(shop);
            let mini = broker.token("mini").await;
            assert!(sim.sim.token_valid(&mini), "a dead stable token was served");
        }
        if promoted_after.is_none() && ha.primary_port().await == Some(ha.replica.port) {
            promoted_after = Some(killed.elapsed());
        }
        if promoted_after.is_some() && refreshed_after.is_none() {
            let record = get(&replica, &key).await.unwrap_or_default();
            if !record.is_empty() && !record.contains(&first) {
                refreshed_after = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted_after = promoted_after.expect("the sentinels promoted the replica");

    let shop = converged(&brokers, "shop").await;
    assert_ne!(shop, first, "the refresh went through the new primary");
    assert!(sim.sim.token_valid(&shop));
    converged(&brokers, "mini").await;
    let classic = sim.sim.calls(Endpoint::Token) - classic_before;
    let stable = sim.sim.calls(Endpoint::StableToken) - stable_before;
    // One scheduled refresh each, and at most one more for the failover.
    assert!((1..=2).contains(&classic), "{classic} classic fetches");
    assert!(stable <= 2, "{stable} stable fetches");
    wait_async("the new primary to hold the fleet's token", || async {
        get(&replica, &key).await.is_some_and(|r| r.contains(&shop))
    })
    .await;
    eprintln!(
        "failover: replica promoted {promoted_after:?} after the primary was killed, \
         the refresh due 1.5 s after the kill stored there {refreshed_after:?} after it; \
         {classic} classic and {stable} stable fetches for one refresh; \
         {} classic tokens served",
        served.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_holds_each_credential_on_its_own_master() {
    let cluster = ClusterSetup::start().await;
    let sim = simulator(SimConfig::default()).await;
    let other = format!(
        "[[apps]]\nname = \"other\"\nappid = \"{OTHER_APPID}\"\nsecret = \"{OTHER_SECRET}\"\napi_base = \"{}\"\n",
        sim.base_url()
    );
    let credentials = [
        ("shop", APPID, "classic"),
        ("mini", STABLE_APPID, "stable"),
        ("other", OTHER_APPID, "classic"),
    ];
    // A key prefix that puts the three credentials on three masters.
    let prefix = (0..1000)
        .map(|n| format!("c{n}"))
        .find(|prefix| {
            let masters: HashSet<usize> = credentials
                .iter()
                .map(|(_, appid, grant)| {
                    ClusterSetup::node_of_slot(key_slot(&token_key(prefix, appid, grant)))
                })
                .collect();
            masters.len() == 3
        })
        .expect("some prefix spreads the keys");
    let store = format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
        cluster.url()
    );
    let apps = classic_app("shop", &sim, "min_forced_interval = \"100ms\"")
        + &stable_app("mini", &sim, "")
        + &other;
    let brokers = fleet(&apps, &store, 3).await;
    let mut masters = HashSet::new();
    for (app, appid, grant) in credentials {
        let token = converged(&brokers, app).await;
        let key = token_key(&prefix, appid, grant);
        let (master, record) = cluster
            .value_on_owner(&key)
            .await
            .unwrap_or_else(|| panic!("{key} is stored"));
        assert!(record.contains(&token));
        assert_eq!(master, ClusterSetup::node_of_slot(key_slot(&key)));
        masters.insert(master);
    }
    assert_eq!(masters.len(), 3, "the credentials sit on three masters");
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        2,
        "one fetch per classic app"
    );

    // The lock, the counter and the published update work on Cluster:
    // invalidations sent to every broker make one fetch, adopted by all.
    let old = converged(&brokers, "shop").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let body = format!("{{\"access_token\":\"{old}\"}}");
    let mut refreshed = 0;
    for broker in &brokers {
        let (status, answer) = broker.post("/v1/apps/shop/token/invalidate", &body).await;
        assert_eq!(status, 200, "{answer}");
        refreshed += usize::from(answer["refreshed"] == true);
    }
    assert_eq!(refreshed, 1);
    let new = converged(&brokers, "shop").await;
    assert_ne!(new, old);
    assert_eq!(sim.sim.calls(Endpoint::Token), 3);
    let counter = format!(
        "{{{prefix}:{APPID}:classic}}:fetches:{}",
        wxbroker::clock::beijing_day(wxbroker::clock::Clock::new().now_secs())
    );
    let (_, count) = cluster.value_on_owner(&counter).await.expect("counted");
    assert_eq!(count, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_one_keys_are_migrated_without_a_fetch() {
    let redis = RedisProcess::server(&[]).await;
    let sim = simulator(SimConfig::default()).await;
    // What a Part I fleet left: a record and the day's count, untagged.
    let token = sim.sim.issue_classic_directly(APPID).expect("issued");
    let now = wxbroker::clock::Clock::new().now_secs();
    let day = wxbroker::clock::beijing_day(now);
    let record = serde_json::json!({
        "appid": APPID,
        "grant": "classic",
        "token": {
            "access_token": token,
            "expires_at": now + 7000,
            "fetched_at": now - 200,
            "fetched_at_ms": (now - 200) * 1000,
        },
        "day": day,
        "fetches": 3,
    });
    let old_token = format!("test:{APPID}:classic:token");
    let old_counter = format!("test:{APPID}:classic:fetches:{day}");
    ask(
        &redis.url(),
        redis::cmd("SET")
            .arg(&old_token)
            .arg(record.to_string())
            .arg("EX")
            .arg(7000),
    )
    .await
    .expect("written");
    ask(&redis.url(), redis::cmd("SET").arg(&old_counter).arg(3))
        .await
        .expect("written");
    let calls = sim.sim.calls(Endpoint::Token);

    let brokers = fleet(
        &classic_app("shop", &sim, ""),
        &redis_store(&redis.url()),
        2,
    )
    .await;
    assert_eq!(converged(&brokers, "shop").await, token);
    assert_eq!(sim.sim.calls(Endpoint::Token), calls, "no upstream fetch");
    let moved = get(&redis.url(), &token_key("test", APPID, "classic"))
        .await
        .expect("the record is under the new key");
    assert!(moved.contains(&token));
    assert_eq!(get(&redis.url(), &old_token).await, None, "read once");
    assert_eq!(get(&redis.url(), &old_counter).await, None, "read once");
    let counter = format!("{{test:{APPID}:classic}}:fetches:{day}");
    assert_eq!(get(&redis.url(), &counter).await.as_deref(), Some("3"));
    let today = brokers[0]
        .metric("wxbroker_fetches_today{app=\"shop\",credential=\"access_token\"}")
        .await;
    assert_eq!(today, 3.0, "the day's count came along");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_file_reaches_redis_and_nothing_else() {
    const PASSWORD: &str = "redis-pa55-f0r-tests";
    let _ = captured_logs();
    let redis = RedisProcess::server(&["--requirepass", PASSWORD]).await;
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis.password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let store = format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\nkey_prefix = \"test\"\n",
        redis.url(),
        password_file.display()
    );
    let brokers = fleet(&classic_app("shop", &sim, ""), &store, 2).await;
    let token = converged(&brokers, "shop").await;
    assert_eq!(sim.sim.calls(Endpoint::Token), 1, "one fetch for the fleet");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port);
    let stored = get(&url, &token_key("test", APPID, "classic")).await;
    assert!(stored.is_some_and(|record| record.contains(&token)));

    let config = &brokers[0].config;
    let shown = format!(
        "{config:?}\n{}\n{}",
        config.render_effective(),
        brokers[0].metrics_text().await
    );
    assert!(!shown.contains(PASSWORD), "leaked in:\n{shown}");
    assert!(shown.contains("password_file"), "{shown}");
    let logs = captured_logs();
    assert!(logs.contains("token refreshed"), "logs are captured");
    assert!(!logs.contains(PASSWORD), "a log line holds the password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_primary_found_through_the_sentinels() {
    const PASSWORD: &str = "sentinel-data-pa55";
    let ha = SentinelSetup::start_with_password(Some(PASSWORD)).await;
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis.password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let store = format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\nkey_prefix = \"test\"\n",
        ha.url(),
        password_file.display()
    );
    let brokers = fleet(&classic_app("shop", &sim, ""), &store, 2).await;
    let token = converged(&brokers, "shop").await;
    assert_eq!(sim.sim.calls(Endpoint::Token), 1, "one fetch for the fleet");
    let primary = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", ha.primary.port);
    let stored = get(&primary, &token_key("test", APPID, "classic")).await;
    assert!(stored.is_some_and(|record| record.contains(&token)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let redis = tls_server(certs.path()).await;
    let sim = simulator(SimConfig::default()).await;
    let store = format!(
        "[store]\nbackend = \"redis\"\nurl = \"rediss://localhost:{}/0\"\nca_file = \"{}\"\nkey_prefix = \"test\"\n",
        redis.port,
        certs.path().join(wxbroker::tls::CA_FILE).display()
    );
    let brokers = fleet(&classic_app("shop", &sim, ""), &store, 2).await;
    converged(&brokers, "shop").await;
    assert_eq!(sim.sim.calls(Endpoint::Token), 1, "one fetch for the fleet");
    let degraded = brokers[1]
        .metric("wxbroker_cluster_degraded{app=\"shop\"}")
        .await;
    assert_eq!(degraded, 0.0, "the fleet shares the TLS Redis");
}

/// The real binary with a Redis store, listening on `port`.
fn spawn_child(
    dir: &std::path::Path,
    name: &str,
    port: u16,
    store: &str,
    app: &str,
) -> ChildBroker {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{}\"\n{store}\n{app}",
            free_port()
        ),
    )
    .unwrap();
    ChildBroker::spawn(&config_path, "info")
}

/// Posts an invalidation of `token` to the broker at `port`, in the
/// background (it waits on a slow upstream).
fn invalidate_in_background(port: u16, token: &str) -> tokio::task::JoinHandle<()> {
    let body = format!("{{\"access_token\":\"{token}\"}}");
    tokio::spawn(async move {
        let _ = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .build()
            .unwrap()
            .post(format!(
                "http://127.0.0.1:{port}/v1/apps/shop/token/invalidate"
            ))
            .header("wxbroker-client", "tests")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_lock_never_outlives_the_broker_holding_it() {
    let redis = RedisProcess::server(&[]).await;
    let sim = simulator(SimConfig::default()).await;
    let app = classic_app(
        "shop",
        &sim,
        "fetch_timeout = \"4s\"\nrefresh_before = \"20s\"\nmin_forced_interval = \"0s\"",
    );
    let store = redis_store(&redis.url());
    let lock = format!("{{test:{APPID}:classic}}:lock");
    let dir = tempfile::tempdir().unwrap();
    let other = Broker::start_with(
        &app,
        Options {
            store: store.clone(),
            ..Options::default()
        },
    )
    .await;
    let token = other.token("shop").await;

    // Stopped gracefully while fetching under the lock: the fetch ends,
    // its token is stored, and the lock is gone with the broker.
    let port = free_port();
    let mut holder = spawn_child(dir.path(), "graceful", port, &store, &app);
    holder
        .wait_ready(&format!("http://127.0.0.1:{port}/v1/apps/shop/token"))
        .await;
    sim.sim.set_latency(Duration::from_millis(1_500));
    let asked = invalidate_in_background(port, &token);
    wait_async("the broker to take the lock", || async {
        get(&redis.url(), &lock).await.is_some()
    })
    .await;
    assert!(holder.terminate().success());
    assert_eq!(get(&redis.url(), &lock).await, None, "released on stop");
    let _ = asked.await;
    wait_until("the other broker to adopt the new token", || {
        sim.sim.calls(Endpoint::Token) == 2
    })
    .await;
    let token = within(async {
        loop {
            let served = other.token("shop").await;
            if served != token {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // SIGKILLed while fetching under the lock: the lock lapses within a
    // lease (not 2 × fetch_timeout + …), and the other broker takes
    // over at once.
    sim.sim.set_latency(Duration::from_secs(3));
    let port = free_port();
    let mut holder = spawn_child(dir.path(), "killed", port, &store, &app);
    holder
        .wait_ready(&format!("http://127.0.0.1:{port}/v1/apps/shop/token"))
        .await;
    let asked = invalidate_in_background(port, &token);
    wait_async("the broker to take the lock", || async {
        get(&redis.url(), &lock).await.is_some()
    })
    .await;
    let lease = ask(&redis.url(), redis::cmd("PTTL").arg(&lock)).await;
    assert!(
        matches!(lease, Some(redis::Value::Int(ms)) if ms > 0 && ms <= 2_000),
        "the lock lives for a lease: {lease:?}"
    );
    holder.kill();
    let killed = Instant::now();
    let _ = asked.await;
    wait_async("the lock to lapse", || async {
        get(&redis.url(), &lock).await.is_none()
    })
    .await;
    let lapsed = killed.elapsed();
    assert!(lapsed <= Duration::from_millis(2_500), "{lapsed:?}");
    sim.sim.set_latency(Duration::ZERO);
    let taken_over = Instant::now();
    let (status, answer) = other
        .post(
            "/v1/apps/shop/token/invalidate",
            &format!("{{\"access_token\":\"{token}\"}}"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["refreshed"], true, "{answer}");
    eprintln!(
        "lock: lapsed {lapsed:?} after its holder was killed; the next broker refreshed in {:?}",
        taken_over.elapsed()
    );
}
