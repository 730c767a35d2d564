//! The simulator's WeCom service providers over real HTTP: the encrypted
//! pushes it sends to a callback URL (opened here by the broker's own
//! callback checks, a separate codec), WeCom's URL check, installs and
//! cancellations, 代开发, and the `/cgi-bin/service/*` endpoints with
//! their errcodes, driven both through the simulator's handle and through
//! its `/__sim/suites` admin routes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::scripted::{Answer, ScriptedUpstream};
use support::{wait_until, within};
use wxbroker::secret::Secret;
use wxbroker::simulator::{
    Fault, ReceiveId, SimConfig, SimHandle, SimSuite, Simulator, TicketKind,
};
use wxbroker::suite::ticket::{self, PushedTicket};
use wxbroker::suite::{SuiteCallback, SuiteEvent};

const SUITE: &str = "wwsuite0000000001";
const OTHER_SUITE: &str = "wwsuite0000000002";
const CUSTOM_SUITE: &str = "dktemplate000001";
const SUITE_SECRET: &str = "suite-s3cret-0123456789";
const PROVIDER: &str = "wwprovider000001";
const PROVIDER_SECRET: &str = "provider-s3cret-0123456789";
const TOKEN: &str = "callback-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn suite(suite_id: &str, customized: bool) -> SimSuite {
    SimSuite {
        suite_id: suite_id.into(),
        suite_secret: SUITE_SECRET.into(),
        token: TOKEN.into(),
        aes_key: AES_KEY.into(),
        provider_corpid: PROVIDER.into(),
        provider_secret: Some(PROVIDER_SECRET.into()),
        customized,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A callback URL that checks what arrives as the broker will (GET: the
/// URL check; POST: a push) and keeps the events it accepted.
struct Callback {
    upstream: ScriptedUpstream,
    events: Arc<Mutex<Vec<SuiteEvent>>>,
}

impl Callback {
    async fn start(suite_id: &str, token: &str) -> Callback {
        let checks =
            Arc::new(SuiteCallback::new(Secret::new(token), AES_KEY, suite_id, PROVIDER).unwrap());
        let events = Arc::new(Mutex::new(Vec::new()));
        let kept = events.clone();
        let upstream = ScriptedUpstream::start(move |_, request| {
            let query = request.target.split_once('?').map(|(_, q)| q);
            let answer = if request.method == "GET" {
                checks.verify_url(query, now_secs())
            } else {
                checks
                    .open_push(query, request.body.as_bytes(), now_secs())
                    .map(|event| {
                        kept.lock().unwrap().push(event);
                        "success".to_owned()
                    })
            };
            match answer {
                Ok(text) => Answer {
                    status: 200,
                    headers: vec![],
                    body: text,
                },
                Err(refusal) => Answer {
                    status: 403,
                    headers: vec![],
                    body: refusal.label().to_owned(),
                },
            }
        })
        .await;
        Callback { upstream, events }
    }

    fn url(&self) -> String {
        format!("{}/wechat/suites/crm/callback", self.upstream.base_url())
    }

    fn events(&self) -> Vec<SuiteEvent> {
        self.events.lock().unwrap().clone()
    }

    fn last(&self) -> SuiteEvent {
        self.events().pop().expect("an event arrived")
    }
}

/// A simulator with the suite (and a second one of the same provider)
/// pushing to a checking callback.
async fn start(customized: bool) -> (SimHandle, Callback) {
    let sim = Simulator::new(SimConfig::default());
    let suite_id = if customized { CUSTOM_SUITE } else { SUITE };
    sim.add_suite(suite(suite_id, customized));
    sim.add_suite(suite(OTHER_SUITE, false));
    let callback = Callback::start(suite_id, TOKEN).await;
    sim.set_suite_callback_url(suite_id, &callback.url());
    (sim.spawn().await.unwrap(), callback)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn call(wechat: &SimHandle, path: &str, body: Value) -> Value {
    within(async {
        http()
            .post(format!("{}/cgi-bin/service/{path}", wechat.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
    .await
}

async fn get(wechat: &SimHandle, path_and_query: &str) -> Value {
    within(async {
        http()
            .get(format!("{}{path_and_query}", wechat.base_url()))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
    .await
}

async fn suite_token_with(wechat: &SimHandle, suite_id: &str, ticket: &str) -> Value {
    call(
        wechat,
        "get_suite_token",
        json!({ "suite_id": suite_id, "suite_secret": SUITE_SECRET, "suite_ticket": ticket }),
    )
    .await
}

/// A pushed ticket and the suite token it fetches.
async fn suite_token(wechat: &SimHandle, suite_id: &str) -> String {
    let pushed = wechat.sim.push_suite_ticket(suite_id).await.unwrap();
    let answer = suite_token_with(wechat, suite_id, &pushed.ticket).await;
    answer["suite_access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

fn errcode(answer: &Value) -> i64 {
    answer["errcode"].as_i64().unwrap_or(0)
}

/// Installs a corp and exchanges its `create_auth` code: (corpid,
/// permanent code).
async fn installed(
    wechat: &SimHandle,
    callback: &Callback,
    suite_id: &str,
    token: &str,
) -> (String, String) {
    let corp = wechat.sim.install_corp(suite_id).await.unwrap();
    assert_eq!(corp.status, Some(200));
    let SuiteEvent::CreateAuth { auth_code } = callback.last() else {
        panic!("create_auth expected, got {:?}", callback.last());
    };
    let answer = call(
        wechat,
        &format!("v2/get_permanent_code?suite_access_token={token}"),
        json!({ "auth_code": auth_code.expose() }),
    )
    .await;
    assert_eq!(errcode(&answer), 0, "{answer}");
    assert_eq!(answer["auth_corp_info"]["corpid"], corp.corpid.as_str());
    let code = answer["permanent_code"].as_str().unwrap().to_owned();
    (corp.corpid, code)
}

#[tokio::test]
async fn tickets_arrive_sealed_for_either_receive_id_and_fetch_one_suite_token() {
    let (wechat, callback) = start(false).await;
    let first = wechat.sim.push_suite_ticket(SUITE).await.unwrap();
    assert_eq!(first.status, Some(200));
    assert_eq!(
        callback.last(),
        SuiteEvent::SuiteTicket {
            ticket: Secret::new(first.ticket.clone()),
            timestamp: first.timestamp
        }
    );
    wechat
        .sim
        .set_suite_receive_id(SUITE, ReceiveId::ProviderCorpId);
    let second = wechat.sim.push_suite_ticket(SUITE).await.unwrap();
    assert_eq!(second.status, Some(200), "sealed for the provider corpid");
    assert_eq!(callback.events().len(), 2);
    assert_eq!(
        wechat.sim.latest_suite_ticket(SUITE),
        Some(second.ticket.clone())
    );

    // WeCom answers the same token while it is valid, whichever ticket.
    let answer = suite_token_with(&wechat, SUITE, &first.ticket).await;
    assert_eq!(errcode(&answer), 0, "{answer}");
    let token = answer["suite_access_token"].as_str().unwrap().to_owned();
    assert_eq!(answer["expires_in"], 7200);
    wechat.sim.advance(Duration::from_secs(100));
    let again = suite_token_with(&wechat, SUITE, &second.ticket).await;
    assert_eq!(again["suite_access_token"], token.as_str());
    assert!(again["expires_in"].as_u64().unwrap() <= 7100, "{again}");
    assert!(wechat.sim.suite_token_valid(&token));
    assert!(!wechat.sim.token_valid(&token), "not a corp token");
    assert_eq!(wechat.sim.suite_calls("get_suite_token"), 2);

    // Once it expires, a new one; the old one is then 42009, not 40082.
    wechat.sim.advance(Duration::from_secs(7200));
    let fresh = suite_token(&wechat, SUITE).await;
    assert_ne!(fresh, token);
    let expired = get(
        &wechat,
        &format!("/cgi-bin/service/get_pre_auth_code?suite_access_token={token}"),
    )
    .await;
    assert_eq!(errcode(&expired), 42009, "{expired}");
}

#[tokio::test]
async fn get_suite_token_refuses_with_wecoms_errcodes() {
    let (wechat, _callback) = start(false).await;
    let mine = wechat.sim.push_suite_ticket(SUITE).await.unwrap().ticket;
    let theirs = wechat
        .sim
        .push_suite_ticket(OTHER_SUITE)
        .await
        .unwrap()
        .ticket;
    let code_for = |suite_id: &'static str, secret: &'static str, ticket: String| {
        let wechat = &wechat;
        async move {
            errcode(
                &call(
                    wechat,
                    "get_suite_token",
                    json!({ "suite_id": suite_id, "suite_secret": secret, "suite_ticket": ticket }),
                )
                .await,
            )
        }
    };
    assert_eq!(
        code_for("wwnosuchsuite", SUITE_SECRET, mine.clone()).await,
        40083
    );
    assert_eq!(code_for(SUITE, "wrong-secret", mine.clone()).await, 40001);
    assert_eq!(
        code_for(SUITE, SUITE_SECRET, theirs).await,
        40085,
        "another suite's ticket"
    );
    assert_eq!(code_for(SUITE, SUITE_SECRET, "made-up".into()).await, 40085);
    assert_eq!(code_for(SUITE, SUITE_SECRET, String::new()).await, 40085);
    assert_eq!(code_for(SUITE, SUITE_SECRET, mine.clone()).await, 0);

    // Faults answer the next calls of that endpoint only.
    assert!(wechat.sim.inject_suite_fault(
        "get_suite_token",
        Fault::Errcode {
            errcode: -1,
            count: 2
        }
    ));
    assert!(!wechat
        .sim
        .inject_suite_fault("get_everything", Fault::Http500Html { count: 1 }));
    assert_eq!(code_for(SUITE, SUITE_SECRET, mine.clone()).await, -1);
    assert_eq!(code_for(SUITE, SUITE_SECRET, mine.clone()).await, -1);
    assert_eq!(code_for(SUITE, SUITE_SECRET, mine.clone()).await, 0);

    // Past the daily limit: 45009 (two calls succeeded today).
    wechat.sim.set_suite_token_daily_limit(2);
    assert_eq!(code_for(SUITE, SUITE_SECRET, mine.clone()).await, 45009);

    // A day later the limit is new, and the ticket (30 minutes) is dead.
    wechat.sim.advance(Duration::from_secs(86_400));
    assert_eq!(
        code_for(SUITE, SUITE_SECRET, mine).await,
        40085,
        "expired ticket"
    );
    let next_day = wechat.sim.push_suite_ticket(SUITE).await.unwrap().ticket;
    assert_eq!(code_for(SUITE, SUITE_SECRET, next_day.clone()).await, 0);
    assert_eq!(code_for(SUITE, SUITE_SECRET, next_day.clone()).await, 0);
    assert_eq!(code_for(SUITE, SUITE_SECRET, next_day).await, 45009);
    assert_eq!(wechat.sim.suite_calls("get_suite_token"), 14);
}

#[tokio::test]
async fn out_of_order_pushes_carry_older_timestamps_and_the_newest_wins() {
    let (wechat, callback) = start(false).await;
    let newest = wechat.sim.push_suite_ticket(SUITE).await.unwrap();
    let late = wechat
        .sim
        .push_delayed_suite_ticket(SUITE, Duration::from_secs(60))
        .await
        .unwrap();
    let dead = wechat
        .sim
        .push_delayed_suite_ticket(SUITE, Duration::from_secs(31 * 60))
        .await
        .unwrap();
    assert_eq!(late.status, Some(200));
    assert!(late.timestamp < newest.timestamp, "{late:?} {newest:?}");
    assert!(dead.timestamp < late.timestamp);
    // A late ticket still works until its own 30 minutes; a dead one not.
    assert_eq!(
        errcode(&suite_token_with(&wechat, SUITE, &late.ticket).await),
        0
    );
    assert_eq!(
        errcode(&suite_token_with(&wechat, SUITE, &dead.ticket).await),
        40085
    );

    // The broker's rule, fed the pushes in their arrival order, keeps the
    // newest.
    let mut held: Option<PushedTicket> = None;
    for event in callback.events() {
        let SuiteEvent::SuiteTicket { ticket, timestamp } = event else {
            panic!("a ticket push");
        };
        let pushed = PushedTicket { ticket, timestamp };
        if ticket::judge(held.as_ref(), &pushed, now_secs()).keeps_pushed() {
            held = Some(pushed);
        }
    }
    assert_eq!(held.unwrap().ticket.expose(), newest.ticket);
}

#[tokio::test]
async fn ticket_stamps_rise_with_each_push_and_follow_the_wall_clock() {
    let (wechat, _callback) = start(false).await;
    let mut last = 0;
    for _ in 0..5 {
        let pushed = wechat.sim.push_suite_ticket(SUITE).await.unwrap();
        assert!(
            pushed.timestamp > last,
            "each new ticket is newer, even within a second"
        );
        last = pushed.timestamp;
    }
    // Advancing the simulator ages its tickets, not the stamps a receiver
    // judges against its own clock.
    wechat.sim.advance(Duration::from_secs(86_400));
    let pushed = wechat.sim.push_suite_ticket(SUITE).await.unwrap();
    assert!(pushed.timestamp.abs_diff(now_secs()) < 120, "{pushed:?}");
    let judged = ticket::judge(
        None,
        &PushedTicket {
            ticket: Secret::new(pushed.ticket.clone()),
            timestamp: pushed.timestamp,
        },
        now_secs(),
    );
    assert!(judged.keeps_pushed(), "{judged:?}");
    assert_eq!(
        errcode(&suite_token_with(&wechat, SUITE, &pushed.ticket).await),
        0
    );
}

#[tokio::test]
async fn calls_with_a_suite_token_judge_it() {
    let (wechat, _callback) = start(false).await;
    let pre_auth = |query: String| {
        let wechat = &wechat;
        async move {
            get(
                wechat,
                &format!("/cgi-bin/service/get_pre_auth_code{query}"),
            )
            .await
        }
    };
    assert_eq!(errcode(&pre_auth(String::new()).await), 41022);
    assert_eq!(
        errcode(&pre_auth("?suite_access_token=garbage".into()).await),
        40082
    );
    let token = suite_token(&wechat, SUITE).await;
    let first = pre_auth(format!("?suite_access_token={token}")).await;
    assert_eq!(errcode(&first), 0, "{first}");
    assert_eq!(first["expires_in"], 1200);
    let second = pre_auth(format!("?suite_access_token={token}")).await;
    assert_ne!(
        first["pre_auth_code"], second["pre_auth_code"],
        "fresh each call"
    );
    assert_eq!(wechat.sim.suite_calls("get_pre_auth_code"), 4);
    // Unknown endpoints under /cgi-bin/service/ are not WeCom's.
    let missing = http()
        .get(format!("{}/cgi-bin/service/no_such_api", wechat.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn an_install_gives_a_permanent_code_and_corp_tokens_wecom_apis_accept() {
    let (wechat, callback) = start(false).await;
    let token = suite_token(&wechat, SUITE).await;
    let corp = wechat.sim.install_corp(SUITE).await.unwrap();
    let SuiteEvent::CreateAuth { auth_code } = callback.last() else {
        panic!("create_auth expected");
    };
    let exchange = |code: String| {
        let (wechat, token) = (&wechat, &token);
        async move {
            call(
                wechat,
                &format!("v2/get_permanent_code?suite_access_token={token}"),
                json!({ "auth_code": code }),
            )
            .await
        }
    };
    let answer = exchange(auth_code.expose().to_owned()).await;
    assert_eq!(errcode(&answer), 0, "{answer}");
    let permanent = answer["permanent_code"].as_str().unwrap().to_owned();
    assert_eq!(
        wechat.sim.permanent_code_of(SUITE, &corp.corpid),
        Some(permanent.clone())
    );
    assert_eq!(answer["auth_corp_info"]["corpid"], corp.corpid.as_str());
    assert!(
        answer["auth_info"]["agent"][0]["agentid"]
            .as_u64()
            .is_some(),
        "{answer}"
    );
    assert!(
        answer.get("access_token").is_none(),
        "the v2 answer carries no token"
    );
    assert_eq!(
        errcode(&exchange(auth_code.expose().to_owned()).await),
        40078,
        "one use"
    );
    assert_eq!(errcode(&exchange("made-up".into()).await), 40078);
    assert_eq!(
        errcode(
            &call(
                &wechat,
                &format!("v2/get_permanent_code?suite_access_token={token}"),
                json!({})
            )
            .await
        ),
        41008
    );

    let info = call(
        &wechat,
        &format!("get_auth_info?suite_access_token={token}"),
        json!({ "auth_corpid": corp.corpid, "permanent_code": permanent }),
    )
    .await;
    assert_eq!(
        info["auth_corp_info"]["corp_name"]
            .as_str()
            .map(|n| !n.is_empty()),
        Some(true)
    );
    assert!(info.get("permanent_code").is_none(), "{info}");

    let corp_token = |code: &str| {
        let (wechat, token, corpid) = (&wechat, &token, corp.corpid.clone());
        let code = code.to_owned();
        async move {
            call(
                wechat,
                &format!("get_corp_token?suite_access_token={token}"),
                json!({ "auth_corpid": corpid, "permanent_code": code }),
            )
            .await
        }
    };
    let answer = corp_token(&permanent).await;
    assert!(
        answer.get("errcode").is_none(),
        "WeCom's success has no errcode: {answer}"
    );
    let access = answer["access_token"].as_str().unwrap().to_owned();
    assert_eq!(answer["expires_in"], 7200);
    assert!(wechat.sim.token_valid(&access));
    assert_eq!(
        corp_token(&permanent).await["access_token"],
        access.as_str(),
        "the same while valid"
    );
    assert_eq!(errcode(&corp_token("wrong-code").await), 40084);
    assert_eq!(errcode(&corp_token("").await), 41025);

    // The corp token calls WeCom's JS-SDK ticket APIs.
    let jsapi = get(
        &wechat,
        &format!("/cgi-bin/get_jsapi_ticket?access_token={access}"),
    )
    .await;
    let ticket = jsapi["ticket"]
        .as_str()
        .unwrap_or_else(|| panic!("{jsapi}"));
    assert!(wechat
        .sim
        .ticket_valid(&corp.corpid, TicketKind::Jsapi, ticket));
    let agent = get(
        &wechat,
        &format!("/cgi-bin/ticket/get?access_token={access}&type=agent_config"),
    )
    .await;
    let ticket = agent["ticket"]
        .as_str()
        .unwrap_or_else(|| panic!("{agent}"));
    assert!(wechat
        .sim
        .ticket_valid(&corp.corpid, TicketKind::AgentConfig, ticket));
    // A suite token is no corp token.
    let refused = get(
        &wechat,
        &format!("/cgi-bin/get_jsapi_ticket?access_token={token}"),
    )
    .await;
    assert_eq!(errcode(&refused), 40014);
}

#[tokio::test]
async fn auth_codes_expire_and_belong_to_their_suite() {
    let (wechat, callback) = start(false).await;
    let token = suite_token(&wechat, SUITE).await;
    let other_token = suite_token(&wechat, OTHER_SUITE).await;
    wechat.sim.install_corp(SUITE).await.unwrap();
    let SuiteEvent::CreateAuth { auth_code } = callback.last() else {
        panic!("create_auth expected");
    };
    let body = json!({ "auth_code": auth_code.expose() });
    let foreign = call(
        &wechat,
        &format!("v2/get_permanent_code?suite_access_token={other_token}"),
        body.clone(),
    )
    .await;
    assert_eq!(errcode(&foreign), 40078, "another suite's code");
    wechat.sim.advance(Duration::from_secs(601));
    let late = call(
        &wechat,
        &format!("v2/get_permanent_code?suite_access_token={token}"),
        body,
    )
    .await;
    assert_eq!(errcode(&late), 40078, "past its 10 minutes");
}

#[tokio::test]
async fn a_rename_is_pushed_and_a_cancellation_kills_the_code_and_tokens() {
    let (wechat, callback) = start(false).await;
    let token = suite_token(&wechat, SUITE).await;
    let (corpid, permanent) = installed(&wechat, &callback, SUITE, &token).await;
    let body = json!({ "auth_corpid": corpid, "permanent_code": permanent });
    let access = call(
        &wechat,
        &format!("get_corp_token?suite_access_token={token}"),
        body.clone(),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(
        wechat.sim.rename_corp(SUITE, &corpid, "Renamed Ltd").await,
        Some(200)
    );
    assert_eq!(
        callback.last(),
        SuiteEvent::ChangeAuth {
            auth_corpid: corpid.clone()
        }
    );
    let info = call(
        &wechat,
        &format!("get_auth_info?suite_access_token={token}"),
        body.clone(),
    )
    .await;
    assert_eq!(info["auth_corp_info"]["corp_name"], "Renamed Ltd");

    assert_eq!(wechat.sim.cancel_corp(SUITE, &corpid).await, Some(200));
    assert_eq!(
        callback.last(),
        SuiteEvent::CancelAuth {
            auth_corpid: corpid.clone()
        }
    );
    assert!(
        !wechat.sim.token_valid(&access),
        "the corp token died with the install"
    );
    let refused = call(
        &wechat,
        &format!("get_corp_token?suite_access_token={token}"),
        body,
    )
    .await;
    assert_eq!(errcode(&refused), 40084);
    assert!(wechat.sim.installed_corps(SUITE).is_empty());
    assert_eq!(wechat.sim.cancel_corp(SUITE, &corpid).await, None);
}

#[tokio::test]
async fn customized_installs_take_gettoken_and_follow_a_reset() {
    let (wechat, callback) = start(true).await;
    let token = suite_token(&wechat, CUSTOM_SUITE).await;
    let (corpid, permanent) = installed(&wechat, &callback, CUSTOM_SUITE, &token).await;
    let gettoken = |secret: String| {
        let (wechat, corpid) = (&wechat, corpid.clone());
        async move {
            get(
                wechat,
                &format!("/cgi-bin/gettoken?corpid={corpid}&corpsecret={secret}"),
            )
            .await
        }
    };
    let first = gettoken(permanent.clone()).await;
    let access = first["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    assert!(wechat.sim.token_valid(&access));
    let via_suite = call(
        &wechat,
        &format!("get_corp_token?suite_access_token={token}"),
        json!({ "auth_corpid": corpid, "permanent_code": permanent }),
    )
    .await;
    assert_eq!(
        errcode(&via_suite),
        40084,
        "a 代开发 token comes from gettoken"
    );

    assert_eq!(
        wechat.sim.reset_permanent_code(CUSTOM_SUITE, &corpid).await,
        Some(200)
    );
    let SuiteEvent::ResetPermanentCode { auth_code } = callback.last() else {
        panic!("reset_permanent_code expected, got {:?}", callback.last());
    };
    assert!(
        !wechat.sim.token_valid(&access),
        "the old secret's token died"
    );
    assert_eq!(
        errcode(&gettoken(permanent.clone()).await),
        40001,
        "the old code is dead"
    );
    let answer = call(
        &wechat,
        &format!("v2/get_permanent_code?suite_access_token={token}"),
        json!({ "auth_code": auth_code.expose() }),
    )
    .await;
    let renewed = answer["permanent_code"].as_str().unwrap().to_owned();
    assert_ne!(renewed, permanent);
    assert_eq!(
        wechat.sim.permanent_code_of(CUSTOM_SUITE, &corpid),
        Some(renewed.clone())
    );
    let fresh = gettoken(renewed).await;
    assert!(wechat
        .sim
        .token_valid(fresh["access_token"].as_str().unwrap()));
    // Only a 代开发 install is reset.
    let plain = wechat.sim.add_installed_corps(OTHER_SUITE, 1).remove(0);
    assert_eq!(
        wechat.sim.reset_permanent_code(OTHER_SUITE, &plain).await,
        None
    );
}

#[tokio::test]
async fn the_provider_token_is_one_per_provider_while_valid() {
    let (wechat, _callback) = start(false).await;
    let provider = |corpid: &'static str, secret: &'static str| {
        let wechat = &wechat;
        async move {
            call(
                wechat,
                "get_provider_token",
                json!({ "corpid": corpid, "provider_secret": secret }),
            )
            .await
        }
    };
    let first = provider(PROVIDER, PROVIDER_SECRET).await;
    assert_eq!(errcode(&first), 0, "{first}");
    let token = first["provider_access_token"].as_str().unwrap().to_owned();
    assert!(wechat.sim.provider_token_valid(&token));
    assert!(!wechat.sim.suite_token_valid(&token));
    assert_eq!(
        provider(PROVIDER, PROVIDER_SECRET).await["provider_access_token"],
        token.as_str()
    );
    assert_eq!(errcode(&provider("wwnobody", PROVIDER_SECRET).await), 40013);
    assert_eq!(errcode(&provider(PROVIDER, "wrong").await), 40001);
    assert_eq!(wechat.sim.suite_calls("get_provider_token"), 4);
}

#[tokio::test]
async fn the_url_check_is_answered_only_by_a_callback_with_the_right_token() {
    let (wechat, _callback) = start(false).await;
    for receive in [ReceiveId::SuiteId, ReceiveId::ProviderCorpId] {
        assert_eq!(
            wechat.sim.check_suite_callback_url(SUITE, receive).await,
            Some((200, true))
        );
    }
    let impostor = Callback::start(SUITE, "another-token").await;
    wechat.sim.set_suite_callback_url(SUITE, &impostor.url());
    assert_eq!(
        wechat
            .sim
            .check_suite_callback_url(SUITE, ReceiveId::SuiteId)
            .await,
        Some((403, false))
    );
    assert_eq!(
        wechat.sim.push_suite_ticket(SUITE).await.unwrap().status,
        Some(403)
    );
    assert!(impostor.events().is_empty());
}

#[tokio::test]
async fn a_ticket_pusher_pushes_a_new_ticket_every_period() {
    let (wechat, callback) = start(false).await;
    let pusher = wechat
        .sim
        .spawn_suite_ticket_pusher(SUITE, Duration::from_millis(30));
    wait_until("three ticket pushes", || callback.events().len() >= 3).await;
    pusher.abort();
    let mut tickets: Vec<String> = callback
        .events()
        .into_iter()
        .map(|event| match event {
            SuiteEvent::SuiteTicket { ticket, .. } => ticket.expose().to_owned(),
            other => panic!("a ticket push, not {other:?}"),
        })
        .collect();
    let pushed = tickets.len();
    tickets.dedup();
    assert_eq!(tickets.len(), pushed, "each push a new ticket");
}

#[tokio::test]
async fn the_admin_routes_drive_the_suite_family_over_http() {
    let wechat = Simulator::new(SimConfig::default()).spawn().await.unwrap();
    let callback = Callback::start(SUITE, TOKEN).await;
    let admin = |route: &str, body: Value| {
        let url = format!("{}/__sim/suites{route}", wechat.base_url());
        async move {
            let response = within(http().post(url).json(&body).send()).await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, _) = admin(
        "",
        json!({
            "suite_id": SUITE, "suite_secret": SUITE_SECRET, "token": TOKEN, "aes_key": AES_KEY,
            "provider_corpid": PROVIDER, "callback_url": callback.url(),
            "receive_id": "provider_corpid", "ticket_every_secs": 3600,
        }),
    )
    .await;
    assert_eq!(status, 200);
    // The pusher's first push happens at once.
    wait_until("the first pushed ticket", || !callback.events().is_empty()).await;
    let (_, pushed) = admin("/ticket", json!({ "suite_id": SUITE })).await;
    assert_eq!(pushed["status"], 200, "{pushed}");
    let ticket = pushed["ticket"].as_str().unwrap().to_owned();
    let (_, late) = admin("/ticket", json!({ "suite_id": SUITE, "age_secs": 120 })).await;
    assert!(late["timestamp"].as_u64().unwrap() < pushed["timestamp"].as_u64().unwrap());
    let (_, checked) = admin("/url_check", json!({ "suite_id": SUITE })).await;
    assert_eq!(checked, json!({ "status": 200, "answered": true }));

    let (status, _) = admin(
        "/fault",
        json!({ "endpoint": "get_suite_token", "kind": "errcode", "errcode": 40085, "count": 1 }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        admin("/fault", json!({ "endpoint": "nope", "kind": "http500" }))
            .await
            .0,
        400
    );
    assert_eq!(
        errcode(&suite_token_with(&wechat, SUITE, &ticket).await),
        40085
    );
    let answer = suite_token_with(&wechat, SUITE, &ticket).await;
    let token = answer["suite_access_token"].as_str().unwrap().to_owned();
    let valid = get(&wechat, &format!("/__sim/suites/token_valid?token={token}")).await;
    assert_eq!(valid, json!({ "suite": true, "provider": false }));

    let (_, installed) = admin("/install", json!({ "suite_id": SUITE })).await;
    assert_eq!(installed["status"], 200);
    let corpid = installed["corpid"].as_str().unwrap().to_owned();
    let corps = get(&wechat, &format!("/__sim/suites/corps?suite_id={SUITE}")).await;
    assert_eq!(corps["corps"], json!([corpid]));
    let code = get(
        &wechat,
        &format!("/__sim/suites/permanent_code?suite_id={SUITE}&corpid={corpid}"),
    )
    .await;
    assert_eq!(
        code["permanent_code"].as_str(),
        wechat.sim.permanent_code_of(SUITE, &corpid).as_deref()
    );
    assert_eq!(
        admin(
            "/rename",
            json!({ "suite_id": SUITE, "corpid": corpid, "corp_name": "New" })
        )
        .await
        .1["status"],
        200
    );
    assert_eq!(
        admin(
            "/reset_permanent_code",
            json!({ "suite_id": SUITE, "corpid": corpid })
        )
        .await
        .0,
        400
    );
    assert_eq!(
        admin("/cancel", json!({ "suite_id": SUITE, "corpid": corpid }))
            .await
            .1["status"],
        200
    );
    assert_eq!(
        admin("/cancel", json!({ "suite_id": SUITE, "corpid": corpid }))
            .await
            .0,
        404
    );
    assert_eq!(
        admin(
            "/receive_id",
            json!({ "suite_id": SUITE, "receive_id": "suite_id" })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        admin(
            "/receive_id",
            json!({ "suite_id": SUITE, "receive_id": "me" })
        )
        .await
        .0,
        400
    );
    assert_eq!(
        admin(
            "/limits",
            json!({ "ticket_lifetime_secs": 60, "daily_limit": 5 })
        )
        .await
        .0,
        200
    );

    let calls = get(&wechat, "/__sim/suites/calls").await;
    assert_eq!(calls["get_suite_token"], 2);
    assert_eq!(calls["get_corp_token"], 0);
    let kinds: Vec<&str> = callback.events().iter().map(SuiteEvent::label).collect();
    for kind in ["suite_ticket", "create_auth", "change_auth", "cancel_auth"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
}
