//! Only the refresher fetches a credential (DESIGN.md section 17): no
//! spelling of a token endpoint, through the `/v1` proxy or the
//! WeChat-compatible listener, ever reaches upstream. The upstream here is
//! a scripted server that issues a token for ANY request and records it, so
//! every request that got through shows, whatever its path.

mod support;

use http::Method;
use support::scripted::{Answer, ScriptedUpstream};
use support::*;

const HOSTILE_SPELLINGS: [&str; 7] = [
    "cgi-bin/token",
    "cgi-bin/%74oken",
    "cgi-bin/%2574oken",
    "CGI-BIN/TOKEN",
    "cgi-bin/token/",
    "%63gi-bin/token",
    "cgi-bin/token;x=1",
];

async fn token_issuing_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|n, _| {
        Answer::json(format!(
            "{{\"errcode\":0,\"access_token\":\"issued-{n}\",\"expires_in\":7200}}"
        ))
    })
    .await
}

async fn broker_against(upstream: &ScriptedUpstream) -> Broker {
    let apps = format!(
        "[[apps]]\nname = \"shop\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\napi_base = \"{}\"\n",
        upstream.base_url()
    );
    let options = Options {
        compat: true,
        ..Options::default()
    };
    let broker = Broker::start_with(&apps, options).await;
    assert_eq!(broker.token("shop").await, "issued-0");
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_every_spelling_of_a_token_endpoint() {
    let upstream = token_issuing_upstream().await;
    let broker = broker_against(&upstream).await;
    let query = format!("grant_type=client_credential&appid={APPID}&secret={SECRET}");
    for path in HOSTILE_SPELLINGS {
        let (status, body) = broker
            .get(&format!("/v1/apps/shop/proxy/{path}?{query}"))
            .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "proxied_request_refused", "{path}");
    }
    for path in [
        "cgi-bin/stable_token",
        "cgi-bin/stable%5Ftoken",
        "cgi-bin/gettoken",
    ] {
        let force = format!(
            r#"{{"grant_type":"client_credential","appid":"{APPID}","secret":"{SECRET}","force_refresh":true}}"#
        );
        let (status, _, body) = broker
            .send(
                Method::POST,
                &format!("/v1/apps/shop/proxy/{path}"),
                &[("content-type", "application/json")],
                Some(force.as_bytes()),
            )
            .await;
        assert_eq!(status, 403, "{path}: {body:?}");
        assert!(!String::from_utf8_lossy(&body).contains(SECRET));
    }
    assert_eq!(upstream.count(), 1, "a token path reached upstream");
    assert_eq!(broker.token("shop").await, "issued-0");
    // The control: a token-consuming call is forwarded.
    let (status, _, _) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/tcb/databasequery",
            &[],
            Some(b"{}"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compatible_listener_answers_every_spelling_from_the_cache() {
    let upstream = token_issuing_upstream().await;
    let broker = broker_against(&upstream).await;
    let client = broker.http().clone();
    for path in HOSTILE_SPELLINGS {
        let url = broker.compat_url(&format!(
            "/{path}?grant_type=client_credential&appid={APPID}&secret=anything"
        ));
        let body: serde_json::Value = within(client.get(url).send())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["access_token"], "issued-0", "{path}: {body}");
    }
    let stable = format!(
        r#"{{"grant_type":"client_credential","appid":"{APPID}","secret":"x","force_refresh":true}}"#
    );
    for path in [
        "/cgi-bin/stable_%74oken",
        "/cgi-bin/component/api_component_token",
    ] {
        let response = within(
            client
                .post(broker.compat_url(path))
                .header("content-type", "application/json")
                .body(stable.clone())
                .send(),
        )
        .await
        .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["access_token"] == "issued-0" || body["errcode"] == 48001,
            "{path}: {body}"
        );
    }
    assert_eq!(upstream.count(), 1, "a token path reached upstream");
    // The control: a token-consuming call is forwarded.
    let response = within(
        client
            .post(broker.compat_url("/tcb/databasequery?access_token=issued-0"))
            .body("{}")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.count(), 2);
}
