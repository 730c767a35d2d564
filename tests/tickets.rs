//! JS-SDK tickets (DESIGN.md section 11) end to end against the simulator:
//! served from the broker's cache and valid at WeChat, one fetch for any
//! number of readers, fetched with the app's token (a rejected token is
//! replaced and the ticket asked once more), signed into `wx.config` and
//! `wx.agentConfig` without leaving the broker, answered on the
//! compatible listener, counted, and kept across a restart.

mod support;

use http::Method;
use serde_json::Value;
use support::*;
use wxbroker::simulator::{Endpoint, Fault, SimConfig, TicketKind};

const TICKETS: &str = "tickets = [\"jsapi\", \"wx_card\"]";
const FILE_STORE: &str = "[store]\nbackend = \"file\"\npath = \"{dir}/state\"\n";

async fn ticket(broker: &Broker, app: &str, kind: &str) -> (u16, Value) {
    broker.get(&format!("/v1/apps/{app}/tickets/{kind}")).await
}

#[tokio::test]
async fn tickets_are_served_from_the_cache_and_valid_at_wechat() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, TICKETS)).await;

    let (status, body) = ticket(&broker, "shop", "jsapi").await;
    assert_eq!(status, 200, "{body}");
    let jsapi = body["ticket"].as_str().unwrap().to_owned();
    assert_eq!(
        (body["app"].as_str(), body["kind"].as_str()),
        (Some("shop"), Some("jsapi"))
    );
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((7000..=7200).contains(&expires_in), "{body}");
    assert!(body["expires_at"].as_u64().unwrap() > 1_700_000_000);
    assert!(sim.sim.ticket_valid(APPID, TicketKind::Jsapi, &jsapi));

    let (status, body) = ticket(&broker, "shop", "wx_card").await;
    assert_eq!(status, 200, "{body}");
    let card = body["ticket"].as_str().unwrap();
    assert_ne!(card, jsapi);
    assert!(sim.sim.ticket_valid(APPID, TicketKind::WxCard, card));

    let (status, headers, text) = broker
        .send(
            Method::GET,
            "/v1/apps/shop/tickets/jsapi?format=text",
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(text, jsapi.as_bytes());
    assert_eq!(headers["cache-control"], "no-store");

    // Not configured, unknown, or for another product: 404 with the code.
    for kind in ["agent_config", "card", "JSAPI"] {
        let (status, body) = ticket(&broker, "shop", kind).await;
        assert_eq!(status, 404, "{kind}: {body}");
        assert_eq!(body["error"]["code"], "ticket_not_configured", "{body}");
    }
    let (status, body) = ticket(&broker, "nope", "jsapi").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("app_not_found"))
    );

    // Many readers, one fetch each kind: the cache answers.
    let readers: Vec<_> = (0..50).map(|_| ticket(&broker, "shop", "jsapi")).collect();
    for (status, body) in futures_util::future::join_all(readers).await {
        assert_eq!(
            (status, body["ticket"].as_str()),
            (200, Some(jsapi.as_str()))
        );
    }
    assert_eq!(sim.sim.calls(Endpoint::GetTicket), 2);

    let metrics = broker.metrics_text().await;
    for series in [
        r#"wxbroker_ticket_valid{app="shop",kind="jsapi"} 1"#,
        r#"wxbroker_ticket_valid{app="shop",kind="wx_card"} 1"#,
        r#"wxbroker_upstream_fetches_total{app="shop",credential="jsapi_ticket",result="ok"} 1"#,
        r#"wxbroker_upstream_fetches_total{app="shop",credential="access_token",result="ok"} 1"#,
        r#"wxbroker_fetches_today{app="shop",credential="wx_card_ticket"} 1"#,
        r#"wxbroker_daily_budget{app="shop",credential="jsapi_ticket"} 200"#,
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("wxbroker_ticket_expiry_timestamp_seconds{app=\"shop\",kind=\"jsapi\"}")
    );
    assert!(
        !metrics.contains(&jsapi),
        "a ticket never appears in metrics"
    );

    // /v1/apps shows each ticket's state, never the ticket.
    let (_, apps) = broker.get("/v1/apps").await;
    let tickets = &apps["apps"][0]["tickets"];
    assert_eq!(tickets[0]["kind"], "jsapi");
    assert_eq!(tickets[0]["valid"], true);
    assert_eq!(tickets[1]["daily_budget"], 200);
    assert!(!apps.to_string().contains(&jsapi));
    broker.stop().await;
}

#[tokio::test]
async fn wx_config_is_signed_for_the_page_and_never_carries_the_ticket() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, TICKETS)).await;
    let (_, body) = ticket(&broker, "shop", "jsapi").await;
    let jsapi = body["ticket"].as_str().unwrap().to_owned();

    let page = "https://shop.example.com/pay?order=42&from=singlemessage";
    let body = format!(r##"{{"url":"{page}#/cart?x=1"}}"##);
    let (status, headers, raw) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/jssdk/config",
            &[],
            Some(body.as_bytes()),
        )
        .await;
    assert_eq!(status, 200, "{raw:?}");
    assert_eq!(headers["cache-control"], "no-store");
    let config: Value = serde_json::from_slice(&raw).unwrap();
    let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["appId", "nonceStr", "signature", "timestamp"]);
    assert_eq!(config["appId"], APPID);
    let timestamp = config["timestamp"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(timestamp.abs_diff(now) <= 2, "signed now: {timestamp}");
    let expected = expected_signature(&jsapi, &config, page);
    assert_eq!(config["signature"], expected.as_str());
    assert!(!String::from_utf8_lossy(&raw).contains(&jsapi));

    // Two signatures, two nonces.
    let (_, again) = broker.post("/v1/apps/shop/jssdk/config", &body).await;
    assert_ne!(again["nonceStr"], config["nonceStr"]);

    for bad in [
        r#"{"url":"/pay?order=42"}"#,
        r#"{"url":"ftp://shop.example.com/x"}"#,
        r#"{"url":"javascript:alert(1)"}"#,
        r#"{"page":"https://shop.example.com/"}"#,
        r#"{"url":"https://shop.example.com/","agent":true}"#,
        "not json",
    ] {
        let (status, body) = broker.post("/v1/apps/shop/jssdk/config", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}: {body}");
    }
    let (status, body) = broker.get("/v1/apps/shop/jssdk/config").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // An app without the jsapi ticket cannot sign.
    broker.stop().await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let (status, body) = broker
        .post("/v1/apps/shop/jssdk/config", r#"{"url":"https://h/"}"#)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ticket_not_configured")),
        "{body}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_ticket_refused_for_its_token_replaces_the_token_and_asks_once_more() {
    let sim = simulator(SimConfig::default()).await;
    // The first ticket call says the token is dead.
    sim.sim.inject_ticket_fault(Fault::Errcode {
        errcode: 40001,
        count: 1,
    });
    let broker = Broker::start(&classic_app(
        "shop",
        &sim,
        "tickets = [\"jsapi\"]\nmin_forced_interval = \"0s\"",
    ))
    .await;
    let (status, body) = ticket(&broker, "shop", "jsapi").await;
    assert_eq!(status, 200, "{body}");
    let jsapi = body["ticket"].as_str().unwrap();
    assert!(sim.sim.ticket_valid(APPID, TicketKind::Jsapi, jsapi));
    assert_eq!(sim.sim.calls(Endpoint::GetTicket), 2, "asked once more");
    assert_eq!(
        sim.sim.calls(Endpoint::Token),
        2,
        "the token was replaced once"
    );
    let token = broker.token("shop").await;
    assert!(sim.sim.token_valid(&token));
    broker.stop().await;
}

#[tokio::test]
async fn an_invalidated_ticket_wechat_still_holds_is_kept() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app(
        "shop",
        &sim,
        "tickets = [\"jsapi\"]\nmin_forced_interval = \"0s\"",
    );
    let broker = Broker::start(&apps).await;
    let (_, body) = ticket(&broker, "shop", "jsapi").await;
    let jsapi = body["ticket"].as_str().unwrap().to_owned();
    let expires_at = body["expires_at"].as_u64().unwrap();

    let request = format!(r#"{{"ticket":"{jsapi}"}}"#);
    let path = "/v1/apps/shop/tickets/jsapi/invalidate";
    let (status, body) = broker.post(path, &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ticket"], jsapi.as_str());
    assert_eq!(body["refreshed"], false);
    assert_eq!(sim.sim.calls(Endpoint::GetTicket), 2, "WeChat was asked");
    assert!(
        body["expires_at"].as_u64().unwrap() <= expires_at,
        "the same ticket again never lives longer: {body}"
    );
    // A stale report changes nothing and calls nothing.
    let calls = sim.sim.calls(Endpoint::GetTicket);
    let (status, body) = broker.post(path, r#"{"ticket":"old"}"#).await;
    assert_eq!((status, body["refreshed"].as_bool()), (200, Some(false)));
    assert_eq!(sim.sim.calls(Endpoint::GetTicket), calls);
    let (status, body) = broker.post(path, r#"{"access_token":"x"}"#).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    broker.stop().await;
}

#[tokio::test]
async fn wecom_agents_each_sign_with_their_own_agent_ticket() {
    let sim = simulator(SimConfig::default()).await;
    const AGENT2_SECRET: &str = "agent2-s3cr3t-0123456789abcdef";
    sim.sim.add_wecom_agent(CORPID, CORPSECRET, 1000002);
    sim.sim.add_wecom_agent(CORPID, AGENT2_SECRET, 1000003);
    let apps = format!(
        "{}{}",
        wecom_app(
            "crm",
            &sim,
            "tickets = [\"jsapi\", \"agent_config\"]\nagentid = 1000002"
        ),
        wecom_app(
            "hr",
            &sim,
            "tickets = [\"agent_config\"]\nagentid = 1000003"
        )
        .replace(CORPSECRET, AGENT2_SECRET),
    );
    let broker = Broker::start(&apps).await;
    let (_, crm) = ticket(&broker, "crm", "agent_config").await;
    let (_, hr) = ticket(&broker, "hr", "agent_config").await;
    let (crm, hr) = (
        crm["ticket"].as_str().unwrap(),
        hr["ticket"].as_str().unwrap(),
    );
    assert_ne!(
        crm, hr,
        "two agents of one corp never share an agent ticket"
    );
    assert!(sim.sim.ticket_valid(CORPID, TicketKind::AgentConfig, crm));
    assert!(sim.sim.ticket_valid(CORPID, TicketKind::AgentConfig, hr));

    let page = "https://work.example.com/app?id=7";
    let (status, signed) = broker
        .post(
            "/v1/apps/crm/jssdk/config",
            &format!(r#"{{"url":"{page}","agent":true}}"#),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["corpid"], CORPID);
    assert_eq!(signed["agentid"], 1000002);
    let expected = expected_signature(crm, &signed, page);
    assert_eq!(signed["signature"], expected.as_str());

    // Without "agent", wx.config's object, signed with the corp's ticket.
    let (_, corp) = ticket(&broker, "crm", "jsapi").await;
    let corp = corp["ticket"].as_str().unwrap();
    assert!(sim.sim.ticket_valid(CORPID, TicketKind::Jsapi, corp));
    let (status, signed) = broker
        .post(
            "/v1/apps/crm/jssdk/config",
            &format!(r#"{{"url":"{page}"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["appId"], CORPID);
    let expected = expected_signature(corp, &signed, page);
    assert_eq!(signed["signature"], expected.as_str());
    // hr has no corp jsapi ticket configured.
    let (status, body) = broker
        .post(
            "/v1/apps/hr/jssdk/config",
            &format!(r#"{{"url":"{page}"}}"#),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ticket_not_configured"))
    );
    broker.stop().await;
}

#[tokio::test]
async fn the_compatible_listener_answers_configured_tickets_from_the_cache() {
    let sim = simulator(SimConfig::default()).await;
    let options = Options {
        compat: true,
        ..Options::default()
    };
    let broker =
        Broker::start_with(&classic_app("shop", &sim, "tickets = [\"jsapi\"]"), options).await;
    let token = broker.token("shop").await;
    let (_, body) = ticket(&broker, "shop", "jsapi").await;
    let cached = body["ticket"].as_str().unwrap().to_owned();
    let before = sim.sim.calls(Endpoint::GetTicket);

    for _ in 0..5 {
        let url = broker.compat_url(&format!(
            "/cgi-bin/ticket/getticket?access_token={token}&type=jsapi"
        ));
        let answer: Value = within(async { broker.http().get(url).send().await?.json().await })
            .await
            .unwrap();
        assert_eq!(answer["errcode"], 0, "{answer}");
        assert_eq!(answer["ticket"], cached.as_str());
        assert!(answer["expires_in"].as_u64().unwrap() > 7000);
    }
    assert_eq!(
        sim.sim.calls(Endpoint::GetTicket),
        before,
        "served from the cache"
    );

    // wx_card is not configured: forwarded with the app's token.
    let url = broker.compat_url("/cgi-bin/ticket/getticket?access_token=whatever&type=wx_card");
    let answer: Value = within(async { broker.http().get(url).send().await?.json().await })
        .await
        .unwrap();
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert!(sim.sim.ticket_valid(
        APPID,
        TicketKind::WxCard,
        answer["ticket"].as_str().unwrap()
    ));
    assert_eq!(sim.sim.calls(Endpoint::GetTicket), before + 1);
    broker.stop().await;
}

#[tokio::test]
async fn a_warm_restart_makes_no_ticket_call() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, TICKETS);
    let options = Options {
        store: FILE_STORE.into(),
        ..Options::default()
    };
    let broker = Broker::start_with(&apps, options).await;
    let (_, body) = ticket(&broker, "shop", "jsapi").await;
    let jsapi = body["ticket"].as_str().unwrap().to_owned();
    wait_until("both tickets fetched", || {
        sim.sim.calls(Endpoint::GetTicket) == 2
    })
    .await;
    let dir = broker.stop().await;
    assert!(dir.path().join("state/shop.jsapi_ticket.json").exists());

    let options = Options {
        store: FILE_STORE.into(),
        dir: Some(dir),
        ..Options::default()
    };
    let broker = Broker::start_with(&apps, options).await;
    let (status, body) = ticket(&broker, "shop", "jsapi").await;
    assert_eq!(
        (status, body["ticket"].as_str()),
        (200, Some(jsapi.as_str()))
    );
    let (status, _) = ticket(&broker, "shop", "wx_card").await;
    assert_eq!(status, 200);
    assert_eq!(
        sim.sim.calls(Endpoint::GetTicket),
        2,
        "no ticket call on a warm start"
    );
    assert_eq!(sim.sim.calls(Endpoint::Token), 1, "no token call either");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_fetches_each_ticket_once() {
    let redis = RedisServer::start().await;
    // 4 s tickets: a new one every 4 s, for the whole fleet.
    let sim = simulator(SimConfig {
        ticket_lifetime: std::time::Duration::from_secs(4),
        ..SimConfig::default()
    })
    .await;
    let apps = classic_app(
        "shop",
        &sim,
        // A fleet's refresh window must hold the lock's hold, a lease and
        // a fetch: 4 s with a 300 ms fetch_timeout.
        "tickets = [\"jsapi\"]\nrefresh_before = \"4s\"\nfetch_timeout = \"300ms\"",
    );
    let mut brokers = Vec::new();
    for _ in 0..3 {
        let options = Options {
            store: redis_store(&redis.url()),
            ..Options::default()
        };
        brokers.push(Broker::start_with(&apps, options).await);
    }
    let started = tokio::time::Instant::now();
    let mut seen = std::collections::HashSet::new();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        for broker in &brokers {
            let (status, body) = ticket(broker, "shop", "jsapi").await;
            assert_eq!(status, 200, "{body}");
            let served = body["ticket"].as_str().unwrap().to_owned();
            assert!(
                sim.sim.ticket_valid(APPID, TicketKind::Jsapi, &served),
                "a broker served a dead ticket"
            );
            seen.insert(served);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // About three lifetimes: three or four tickets, each fetched once by
    // the fleet (a repeated answer at a change costs one call more at most).
    let calls = sim.sim.calls(Endpoint::GetTicket) as usize;
    assert!((3..=4).contains(&seen.len()), "{} tickets", seen.len());
    assert!(
        calls <= 2 * seen.len(),
        "{calls} ticket calls for {} tickets in a fleet of 3",
        seen.len()
    );
    for broker in brokers {
        broker.stop().await;
    }
}
