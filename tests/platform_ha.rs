//! The Open Platform on highly available Redis (DESIGN.md sections 14
//! and 18): a platform's state goes through the store every credential
//! uses, so a fleet keeps its authorizers on a Sentinel-managed primary
//! through a failover, and on a Redis Cluster, against real processes.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::redis_ha::*;
use support::*;
use wxbroker::config::Config;
use wxbroker::platform::authorizers::SchedulerTuning;
use wxbroker::simulator::{SimConfig, SimHandle, Simulator};
use wxbroker::{Daemon, Listeners, Tuning};

const COMPONENT: &str = "wxcomponent0000001";
const SECRET: &str = "component-s3cr3t-0123456789";
const MSG_TOKEN: &str = "message-token-01";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const AUTHORIZERS: usize = 10;

async fn platform_simulator(lifetime: Duration) -> SimHandle {
    let sim = Simulator::new(SimConfig::default());
    sim.add_component(COMPONENT, SECRET, MSG_TOKEN, AES_KEY);
    let sim = sim.spawn().await.expect("simulator starts");
    // WeChat may hand out a new refresh token with each token, and the
    // old one dies at once: a broker that ever sends an old one fails.
    sim.sim.set_refresh_token_rotation(true);
    sim.sim.set_authorizer_token_lifetime(lifetime);
    sim
}

struct PlatformBroker {
    daemon: Daemon,
    api: SocketAddr,
    callback: SocketAddr,
    metrics: SocketAddr,
    http: reqwest::Client,
}

async fn start(sim: &SimHandle, store_url: &str) -> PlatformBroker {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncallback_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ntoken_wait_timeout = \"5s\"\n{}\n[[platforms]]\nname = \"saas\"\ncomponent_appid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\ntoken = \"{MSG_TOKEN}\"\naes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n",
        redis_store(store_url),
        sim.base_url()
    );
    let config = Config::from_toml_str("platform.toml", &text).expect("valid config");
    let listeners = Listeners::bind(&config).await.expect("binds");
    let api = listeners.api_tcp_addr().unwrap();
    let callback = listeners.callback_addr().unwrap();
    let metrics = listeners.metrics_addr().unwrap();
    let tuning = Tuning {
        authorizers: SchedulerTuning {
            fetch_rate: 1000,
            concurrency: 8,
            ..SchedulerTuning::default()
        },
        ..Tuning::default()
    };
    let daemon = wxbroker::start_with(&config, listeners, tuning)
        .await
        .expect("broker starts");
    PlatformBroker {
        daemon,
        api,
        callback,
        metrics,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl PlatformBroker {
    async fn authorizer_token(&self, appid: &str) -> Option<String> {
        let response = self
            .http
            .get(format!(
                "http://{}/v1/platforms/saas/authorizers/{appid}/token",
                self.api
            ))
            .header("wxbroker-client", "tests")
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        body["access_token"].as_str().map(str::to_owned)
    }

    async fn metrics_text(&self) -> String {
        let response = self
            .http
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await;
        match response {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Authorizer fetches that failed with an errcode, whatever its
    /// class (61023 for a spent refresh token is a configuration one).
    async fn refused_fetches(&self) -> f64 {
        let text = self.metrics_text().await;
        ["errcode", "config", "quota"]
            .iter()
            .filter_map(|result| {
                let series = format!(
                    "wxbroker_authorizer_fetches_total{{platform=\"saas\",result=\"{result}\"}}"
                );
                text.lines()
                    .find(|line| line.starts_with(&series))
                    .and_then(|line| line.rsplit(' ').next())
                    .and_then(|value| value.parse::<f64>().ok())
            })
            .sum()
    }

    async fn all_valid(&self) -> bool {
        self.metrics_text().await.contains(&format!(
            "wxbroker_authorizers{{platform=\"saas\",state=\"valid\"}} {AUTHORIZERS}"
        ))
    }
}

/// Every authorizer's record in `url`'s hash holds the refresh token
/// WeChat holds now.
async fn stored_refresh_tokens_match(url: &str, sim: &SimHandle, appids: &[String]) -> bool {
    let hash = format!("{{test:{COMPONENT}:authorizers}}");
    for appid in appids {
        let Some(value) = ask(url, redis::cmd("HGET").arg(&hash).arg(appid)).await else {
            return false;
        };
        let Ok(raw) = redis::from_redis_value::<String>(&value) else {
            return false;
        };
        let record: serde_json::Value = serde_json::from_str(&raw).unwrap();
        if record["refresh_token"].as_str() != sim.sim.refresh_token_of(appid).as_deref() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_on_sentinel_keeps_its_refresh_tokens_through_a_failover() {
    let mut ha = SentinelSetup::start().await;
    // 12 s authorizer tokens, refreshed at half their life: a round every
    // 6 s, each handing out new refresh tokens.
    let sim = platform_simulator(Duration::from_secs(12)).await;
    let appids = sim.sim.add_authorizers(COMPONENT, AUTHORIZERS);
    let fleet = [start(&sim, &ha.url()).await, start(&sim, &ha.url()).await];
    sim.sim.set_callback_url(
        COMPONENT,
        &format!(
            "http://{}/wechat/platforms/saas/callback",
            fleet[0].callback
        ),
    );
    sim.sim.push_verify_ticket(COMPONENT).await;
    for broker in &fleet {
        wait_async("every authorizer valid on every broker", || {
            broker.all_valid()
        })
        .await;
    }
    let replica = ha.replica.url();
    wait_async("the replica to hold every current refresh token", || {
        stored_refresh_tokens_match(&replica, &sim, &appids)
    })
    .await;

    let before_kill = sim.sim.component_calls("api_authorizer_token");
    ha.primary.kill();
    let old_primary = ha.primary.port;
    wait_async("the sentinels to promote the replica", || async {
        ha.primary_port()
            .await
            .is_some_and(|port| port != old_primary)
    })
    .await;

    // Two more rounds on the promoted primary, every one with the refresh
    // token WeChat holds: none refused, and the tokens served are valid.
    wait_async("two rounds of refreshes after the failover", || async {
        sim.sim.component_calls("api_authorizer_token") >= before_kill + 2 * AUTHORIZERS as u64
    })
    .await;
    for broker in &fleet {
        assert_eq!(
            broker.refused_fetches().await,
            0.0,
            "no spent refresh token was sent"
        );
        for appid in &appids {
            // A 12 s token may run out while the sentinels elect (a real
            // one lives two hours), and whatever is served is valid. A
            // broker whose tries failed during the election looks again
            // on the engine's backoff, at most a minute later (DESIGN.md
            // section 4, rule 5): the next round after that serves it.
            let backoff_and_a_round = Duration::from_secs(60 + 12);
            wait_async_within(
                "every authorizer served after the failover",
                backoff_and_a_round,
                || async {
                    match broker.authorizer_token(appid).await {
                        Some(token) => {
                            assert!(sim.sim.token_valid(&token), "{appid}: a valid token");
                            true
                        }
                        None => false,
                    }
                },
            )
            .await;
        }
    }
    wait_async("the promoted primary to hold every refresh token", || {
        stored_refresh_tokens_match(&replica, &sim, &appids)
    })
    .await;
    for broker in fleet {
        broker.daemon.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_on_a_redis_cluster_is_shared_by_the_fleet() {
    let cluster = ClusterSetup::start().await;
    let sim = platform_simulator(Duration::from_secs(3600)).await;
    let appids = sim.sim.add_authorizers(COMPONENT, AUTHORIZERS);
    let fleet = [
        start(&sim, &cluster.url()).await,
        start(&sim, &cluster.url()).await,
    ];
    sim.sim.set_callback_url(
        COMPONENT,
        &format!(
            "http://{}/wechat/platforms/saas/callback",
            fleet[0].callback
        ),
    );
    sim.sim.push_verify_ticket(COMPONENT).await;
    for broker in &fleet {
        wait_async("every authorizer valid on every broker", || {
            broker.all_valid()
        })
        .await;
    }
    // One fetch per authorizer for the fleet: the second broker found the
    // first one's records (and its verify ticket) through the cluster.
    assert_eq!(
        sim.sim.component_calls("api_authorizer_token"),
        AUTHORIZERS as u64
    );
    let hash = format!("{{test:{COMPONENT}:authorizers}}");
    let owner = &cluster.nodes[ClusterSetup::node_of_slot(key_slot(&hash))];
    let held = ask(&owner.url(), redis::cmd("HLEN").arg(&hash)).await;
    assert_eq!(
        held.and_then(|n| redis::from_redis_value::<usize>(&n).ok()),
        Some(AUTHORIZERS),
        "the hash lives on the node owning its slot"
    );
    for appid in &appids {
        let first = fleet[0].authorizer_token(appid).await.expect("served");
        assert_eq!(fleet[1].authorizer_token(appid).await, Some(first));
    }
    for broker in fleet {
        broker.daemon.shutdown().await;
    }
}
