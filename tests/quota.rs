//! Quota and diagnostics (DESIGN.md section 16) against the simulator:
//! WeChat's own quota count through the broker, quota resets (the monthly
//! limit, the count kept across restarts, the secret fallback, a 45009 hold
//! lifted at once), rid lookups with credentials masked, the operator-only
//! rule, the poll's gauges, and the commands' output and exit codes.

mod support;

use std::time::Duration;

use http::Method;
use serde_json::Value;
use support::*;
use wxbroker::diagnostics::PollSchedule;
use wxbroker::simulator::{Endpoint, SimConfig};
use wxbroker::Tuning;

const FILE_STORE: &str = "[store]\nbackend = \"file\"\npath = \"{dir}/state\"\n";
const CONFIRM: &str = r#"{"confirm":true}"#;

async fn reset(broker: &Broker, app: &str) -> (u16, Value) {
    broker
        .unix(
            Method::POST,
            &format!("/v1/apps/{app}/clear_quota"),
            Some(CONFIRM),
        )
        .await
}

#[tokio::test]
async fn quota_answers_with_the_simulators_own_counters() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    // Another party's fetch counts against the same quota (and leaves
    // the broker's token valid for WeChat's overlap).
    sim.sim.issue_classic_directly(APPID).unwrap();
    let (limit, used) = sim.sim.quota(APPID, "/cgi-bin/token").unwrap();
    assert_eq!(used, 2);

    let (status, body) = broker.get("/v1/apps/shop/quota").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cgi_path"], "/cgi-bin/token");
    assert_eq!(body["daily_limit"], limit);
    assert_eq!(body["used"], used);
    assert_eq!(body["remain"], limit - used);
    assert_eq!(body["appid"], APPID);

    let (status, body) = broker
        .unix(
            Method::GET,
            "/v1/apps/shop/quota?cgi_path=%2Fcgi-bin%2Fmessage%2Fcustom%2Fsend",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cgi_path"], "/cgi-bin/message/custom/send");
    let text = serde_json::to_string(&body).unwrap();
    assert!(
        !text.contains(&broker.token("shop").await),
        "no token in the answer"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    let before = sim.sim.calls(Endpoint::QuotaGet);

    let (status, body) = broker.get("/v1/apps/nope/quota").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "app_not_found");

    for malformed in [
        "cgi-bin%2Ftoken",
        "%2Fcgi-bin%2F..%2Ftoken",
        "%2Fcgi-bin%2Ftoken%3Fx%3D1",
    ] {
        let (status, body) = broker
            .get(&format!("/v1/apps/shop/quota?cgi_path={malformed}"))
            .await;
        assert_eq!(status, 400, "{malformed}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("malformed cgi_path"),
            "{body}"
        );
    }
    assert_eq!(
        sim.sim.calls(Endpoint::QuotaGet),
        before,
        "a malformed path never goes upstream"
    );

    // Well-formed, but no API WeChat knows.
    let (status, body) = broker
        .get("/v1/apps/shop/quota?cgi_path=%2Fcgi-bin%2Fno%2Fsuch%2Fapi")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["errcode"], 76021);

    let (status, body) = broker.get("/v1/apps/shop/rids/not-a-rid").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = broker
        .get("/v1/apps/shop/rids/0a0a0a0a-0b0b0b0b-0c0c0c0c")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "rid_not_found");
    assert_eq!(body["error"]["errcode"], 76001);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("7 days"),
        "{body}"
    );
}

#[tokio::test]
async fn clear_quota_resets_the_count_and_is_for_the_socket_only() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    sim.sim.issue_classic_directly(APPID).unwrap();

    // Over TCP: refused, whatever the body.
    let (status, body) = broker.post("/v1/apps/shop/clear_quota", CONFIRM).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "admin_only");
    // On the socket, without confirm: refused.
    for unconfirmed in ["{}", r#"{"confirm":false}"#, ""] {
        let (status, body) = broker
            .unix(Method::POST, "/v1/apps/shop/clear_quota", Some(unconfirmed))
            .await;
        assert_eq!(status, 400, "{unconfirmed}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("confirm"));
    }
    let (status, _) = broker
        .unix(Method::GET, "/v1/apps/shop/clear_quota", None)
        .await;
    assert_eq!(status, 405);
    assert_eq!(sim.sim.calls(Endpoint::ClearQuota), 0);
    assert_eq!(sim.sim.quota(APPID, "/cgi-bin/token").unwrap().1, 2);

    let (status, body) = reset(&broker, "shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["via"], "clear_quota");
    assert_eq!(body["resets_this_month"], 1);
    assert_eq!(sim.sim.calls(Endpoint::ClearQuota), 1);
    assert_eq!(sim.sim.quota(APPID, "/cgi-bin/token").unwrap().1, 0);
    assert_eq!(sim.sim.quota_resets(APPID), 1);
    let (_, body) = broker.get("/v1/apps/shop/quota").await;
    assert_eq!(body["used"], 0, "{body}");
}

#[tokio::test]
async fn the_eleventh_reset_of_a_month_is_refused_and_explained() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    for n in 1..=10 {
        let (status, body) = reset(&broker, "shop").await;
        assert_eq!(status, 200, "reset {n}: {body}");
        assert_eq!(body["resets_this_month"], n);
    }
    let (status, body) = reset(&broker, "shop").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "quota_reset_limit");
    assert_eq!(body["error"]["errcode"], 48006);
    let message = body["error"]["message"].as_str().unwrap();
    for explained in [
        "10 quota resets",
        "web console",
        "next month",
        "Beijing midnight",
    ] {
        assert!(message.contains(explained), "{explained}: {message}");
    }
    assert_eq!(sim.sim.quota_resets(APPID), 10);

    // The command says the same, and fails.
    let (status, output) = process::run(
        &[
            "clear-quota",
            "--app",
            "shop",
            "--confirm",
            "--socket",
            broker.socket.to_str().unwrap(),
        ],
        &[],
        broker.dir.path(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("48006"), "{output}");
    assert!(output.contains("web console"), "{output}");
}

#[tokio::test]
async fn the_monthly_count_survives_a_restart_with_the_file_store() {
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "");
    let options = || Options {
        store: FILE_STORE.into(),
        ..Options::default()
    };
    let broker = Broker::start_with(&apps, options()).await;
    broker.token("shop").await;
    assert_eq!(reset(&broker, "shop").await.1["resets_this_month"], 1);
    assert_eq!(reset(&broker, "shop").await.1["resets_this_month"], 2);
    let dir = broker.stop().await;

    let broker = Broker::start_with(
        &apps,
        Options {
            dir: Some(dir),
            ..options()
        },
    )
    .await;
    broker.token("shop").await;
    let (status, body) = reset(&broker, "shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resets_this_month"], 3, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_counts_its_resets_once_in_redis() {
    let redis = RedisServer::start().await;
    let sim = simulator(SimConfig::default()).await;
    let apps = classic_app("shop", &sim, "");
    let store = || Options {
        store: redis_store(&redis.url()),
        ..Options::default()
    };
    let first = Broker::start_with(&apps, store()).await;
    let second = Broker::start_with(&apps, store()).await;
    first.token("shop").await;
    second.token("shop").await;
    assert_eq!(reset(&first, "shop").await.1["resets_this_month"], 1);
    let (status, body) = reset(&second, "shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resets_this_month"], 2, "one count for the fleet");
    assert_eq!(sim.sim.quota_resets(APPID), 2);
}

#[tokio::test]
async fn a_reset_lifts_a_45009_hold_at_once_using_the_secret_when_no_token_can_be_had() {
    let sim = simulator(SimConfig {
        daily_limit: 1,
        ..SimConfig::default()
    })
    .await;
    // Someone else spent the day's only token call: the broker gets 45009.
    sim.sim.issue_classic_directly(APPID).unwrap();
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let (status, body) = broker.get("/v1/apps/shop/token").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["errcode"], 45009);

    let (status, body) = reset(&broker, "shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["via"], "clear_quota/v2");
    assert_eq!(body["holds_lifted"], serde_json::json!(["shop"]));
    assert_eq!(sim.sim.calls(Endpoint::ClearQuota), 0);
    assert_eq!(sim.sim.calls(Endpoint::ClearQuotaV2), 1);
    let sent = sim.sim.last_request(Endpoint::ClearQuotaV2).unwrap();
    assert!(
        !sent.query.contains(SECRET),
        "the secret never goes in the URL"
    );
    let form = String::from_utf8(sent.body).unwrap();
    assert!(form.contains(&format!("appid={APPID}")), "{form}");
    assert!(form.contains("appsecret="), "{form}");

    // Held until Beijing midnight before; a token within seconds now.
    let token = within(async {
        loop {
            let (status, body) = broker.get("/v1/apps/shop/token").await;
            if status == 200 {
                return body["access_token"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(sim.sim.token_valid(&token));
    let (status, _) = broker.get("/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_rejected_token_is_reported_and_the_call_made_once_more() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "min_forced_interval = \"0s\"")).await;
    let held = broker.token("shop").await;
    // Two fetches behind the broker's back: its token is dead upstream.
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
    assert!(!sim.sim.token_valid(&held));

    let (status, body) = broker.get("/v1/apps/shop/quota").await;
    assert_eq!(status, 200, "{body}");
    let fresh = broker.token("shop").await;
    assert_ne!(fresh, held, "the broker replaced the rejected token");
    assert!(sim.sim.token_valid(&fresh));
}

#[tokio::test]
async fn a_token_rejected_with_no_refresh_allowed_yet_is_a_503() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "min_forced_interval = \"1h\"")).await;
    let held = broker.token("shop").await;
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
    let (status, body) = broker.get("/v1/apps/shop/quota").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "token_unavailable");
    assert_eq!(body["error"]["errcode"], 40001);
    assert!(!body.to_string().contains(&held));
}

#[tokio::test]
async fn rid_tells_of_a_real_error_with_credentials_masked() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    let token = broker.token("shop").await;

    // A call through the proxy that WeChat refuses (40003), rid and all.
    let (status, _, body) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/cgi-bin/message/custom/send",
            &[("content-type", "application/json")],
            Some(br#"{"touser":"nobody","msgtype":"text","text":{"content":"hi"}}"#),
        )
        .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["errcode"], 40003);
    let rid = rid_of(&answer);

    let (status, body) = broker.get(&format!("/v1/apps/shop/rids/{rid}")).await;
    assert_eq!(status, 200, "{body}");
    let request = &body["request"];
    assert_eq!(request["request_url"], "access_token=***");
    assert!(request["request_body"].as_str().unwrap().contains("nobody"));
    assert!(request["response_body"].as_str().unwrap().contains("40003"));
    assert_eq!(request["client_ip"], "127.0.0.1");
    assert!(!body.to_string().contains(&token), "no token in the answer");

    // A failed token call by someone else: its secret is masked too.
    let url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=wrong-secret-guess",
        sim.base_url()
    );
    let answer: Value = broker
        .http()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errcode"], 40125);
    let (status, body) = broker
        .get(&format!("/v1/apps/shop/rids/{}", rid_of(&answer)))
        .await;
    assert_eq!(status, 200, "{body}");
    let url = body["request"]["request_url"].as_str().unwrap();
    assert!(
        url.contains("secret=***") && !url.contains("wrong-secret-guess"),
        "{url}"
    );

    // The command prints it.
    let (status, output) = process::run(
        &[
            "rid",
            "--app",
            "shop",
            "--socket",
            broker.socket.to_str().unwrap(),
            &rid,
        ],
        &[],
        broker.dir.path(),
    )
    .await;
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("access_token=***"), "{output}");
    assert!(output.contains("40003"), "{output}");
    assert!(!output.contains(&token), "{output}");
}

fn rid_of(answer: &Value) -> String {
    let errmsg = answer["errmsg"].as_str().unwrap();
    errmsg.rsplit_once("rid: ").unwrap().1.trim().to_owned()
}

#[tokio::test]
async fn the_poll_exports_what_wechat_says_is_left() {
    let sim = simulator(SimConfig::default()).await;
    let apps = format!(
        "{}{}{}",
        classic_app("shop", &sim, "tickets = [\"jsapi\"]"),
        stable_app("crm", &sim, ""),
        wecom_app("office", &sim, ""),
    );
    let broker = Broker::start_with(
        &apps,
        Options {
            tuning: Some(Tuning {
                quota_poll: Some(PollSchedule {
                    first_after: Duration::from_millis(10),
                    every: Duration::from_millis(100),
                }),
                ..Tuning::default()
            }),
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    broker.token("crm").await;
    let shop = r#"wxbroker_wechat_quota_remaining{app="shop",cgi_path="/cgi-bin/token"}"#;
    let expect = |series: &'static str, value: u32| {
        let broker = &broker;
        async move {
            within(async {
                while broker.metric(series).await != f64::from(value) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
        }
    };
    let (limit, used) = sim.sim.quota(APPID, "/cgi-bin/token").unwrap();
    expect(shop, limit - used).await;
    expect(
        r#"wxbroker_wechat_quota_daily_limit{app="shop",cgi_path="/cgi-bin/token"}"#,
        limit,
    )
    .await;
    // The next polls follow WeChat's count.
    sim.sim.issue_classic_directly(APPID).unwrap();
    let (_, used) = sim.sim.quota(APPID, "/cgi-bin/token").unwrap();
    expect(shop, limit - used).await;
    let (limit, used) = sim
        .sim
        .quota(STABLE_APPID, "/cgi-bin/stable_token")
        .unwrap();
    expect(
        r#"wxbroker_wechat_quota_remaining{app="crm",cgi_path="/cgi-bin/stable_token"}"#,
        limit - used,
    )
    .await;
    // An app owning tickets: their endpoint's quota too.
    broker.get("/v1/apps/shop/tickets/jsapi").await;
    let (limit, used) = sim.sim.quota(APPID, "/cgi-bin/ticket/getticket").unwrap();
    expect(
        r#"wxbroker_wechat_quota_remaining{app="shop",cgi_path="/cgi-bin/ticket/getticket"}"#,
        limit - used,
    )
    .await;
    let text = broker.metrics_text().await;
    assert!(
        !text.contains(
            r#"wxbroker_wechat_quota_remaining{app="crm",cgi_path="/cgi-bin/ticket/getticket"}"#
        ),
        "an app without tickets is not polled for them"
    );
    assert!(
        !text.contains(r#"wxbroker_wechat_quota_remaining{app="office""#),
        "WeCom has no quota/get"
    );
    assert!(
        broker
            .metric(r#"wxbroker_wechat_quota_polls_total{app="shop",result="ok"}"#)
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn no_poll_unless_asked() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    let (status, _) = broker.get("/v1/apps/shop/quota").await;
    assert_eq!(status, 200);
    assert_eq!(sim.sim.calls(Endpoint::QuotaGet), 1, "only the asked call");
    assert!(!broker
        .metrics_text()
        .await
        .contains("wxbroker_wechat_quota_remaining{"));
}

#[tokio::test]
async fn the_commands_print_answers_and_exit_as_section_2_says() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    let socket = broker.socket.to_str().unwrap().to_owned();
    let url = format!("http://{}", broker.tcp);
    let dir = broker.dir.path();
    let run = |args: Vec<&'static str>, target: [String; 2]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(target);
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            process::run(&args, &[], dir).await
        }
    };
    let on_socket = || ["--socket".to_owned(), socket.clone()];

    let (status, output) = run(vec!["quota", "--app", "shop"], on_socket()).await;
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("used 1 of 2000"), "{output}");
    let (status, output) = run(
        vec!["quota", "--app", "shop"],
        ["--url".into(), url.clone()],
    )
    .await;
    assert_eq!(status.code(), Some(0), "over TCP too: {output}");

    let (status, output) = run(vec!["quota", "--app", "nope"], on_socket()).await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("no app named 'nope'"), "{output}");

    let (status, output) = run(
        vec!["quota", "--app", "shop", "--cgi-path", "cgi-bin/token"],
        on_socket(),
    )
    .await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("malformed cgi_path"), "{output}");

    let (status, output) = run(vec!["clear-quota", "--app", "shop"], on_socket()).await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("--confirm"), "{output}");
    let (status, output) = run(
        vec!["clear-quota", "--app", "shop", "--confirm"],
        ["--url".into(), url.clone()],
    )
    .await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("admin_only"), "{output}");
    assert_eq!(sim.sim.calls(Endpoint::ClearQuota), 0);
    let (status, output) = run(
        vec!["clear-quota", "--app", "shop", "--confirm"],
        on_socket(),
    )
    .await;
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("made 1 reset(s) this month"), "{output}");

    let (status, output) = run(vec!["rid", "--app", "shop", "0a0a-0b0b"], on_socket()).await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("76001") && output.contains("7 days"),
        "{output}"
    );
    let (status, output) = run(vec!["rid", "--app", "shop", "no such rid"], on_socket()).await;
    assert_eq!(status.code(), Some(2), "{output}");
}
