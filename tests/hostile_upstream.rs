//! A hostile or broken upstream (DESIGN.md section 17), played by a
//! scripted server on 127.0.0.1: a redirect never takes the secret
//! anywhere, and no lifetime upstream hands out can make the refresher
//! spin through the daily budget.

mod support;

use std::time::Duration;

use support::scripted::{Answer, ScriptedUpstream};
use support::*;
use tokio::time::Instant;

fn app_against(upstream: &ScriptedUpstream, extra: &str) -> String {
    format!(
        "[[apps]]\nname = \"shop\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\napi_base = \"{}\"\n{extra}\n",
        upstream.base_url()
    )
}

/// Counts the upstream's requests over `window`, from now.
async fn requests_during(upstream: &ScriptedUpstream, window: Duration) -> usize {
    let before = upstream.count();
    tokio::time::sleep(window).await;
    upstream.count() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_never_carries_the_secret_on() {
    for (grant, status) in [
        ("classic", 302),
        ("classic", 307),
        ("stable", 307),
        ("stable", 308),
    ] {
        let thief = ScriptedUpstream::start(|_, _| Answer::json("{}")).await;
        let location = format!("{}/steal", thief.base_url());
        let upstream =
            ScriptedUpstream::start(move |_, _| Answer::redirect(status, location.clone())).await;
        let broker = Broker::start(&app_against(&upstream, &format!("grant = \"{grant}\""))).await;
        // A redirect is an upstream error, retried with backoff: wait for
        // the retry, then look at what went where.
        wait_until("a retried fetch", || upstream.count() >= 2).await;
        let (_, apps) = broker.get("/v1/apps").await;
        let errmsg = apps["apps"][0]["last_error"]["errmsg"]
            .as_str()
            .unwrap_or("");
        assert!(errmsg.contains("redirect"), "{grant} {status}: {apps}");
        assert_eq!(
            thief.count(),
            0,
            "{grant} {status}: the redirect was followed"
        );
        for request in upstream.requests() {
            assert_eq!(
                request.header("referer"),
                None,
                "{grant} {status}: {request:?}"
            );
        }
        assert!(!apps.to_string().contains(SECRET));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_lifetime_is_clamped_and_fetched_once() {
    for expires_in in ["18446744073709551", "18446744073709551615"] {
        let upstream = ScriptedUpstream::start(move |n, _| {
            Answer::json(format!(
                "{{\"access_token\":\"huge-{n}\",\"expires_in\":{expires_in}}}"
            ))
        })
        .await;
        let broker = Broker::start(&app_against(&upstream, "")).await;
        assert_eq!(broker.token("shop").await, "huge-0");
        let (_, body) = broker.get("/v1/apps/shop/token").await;
        let served = body["expires_in"].as_u64().unwrap();
        assert!(
            (1..=86_400).contains(&served),
            "lifetime {expires_in} served as {served}"
        );
        assert_eq!(
            requests_during(&upstream, Duration::from_secs(3)).await,
            0,
            "expires_in {expires_in} made the broker fetch again"
        );
        assert_eq!(upstream.count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_shorter_than_refresh_before_is_paced_by_the_backoff() {
    let upstream = ScriptedUpstream::start(|n, _| {
        Answer::json(format!(
            "{{\"access_token\":\"short-{n}\",\"expires_in\":1}}"
        ))
    })
    .await;
    // refresh_before stays at its 5 min default: a 1 s lifetime is an anomaly.
    let broker = Broker::start(&app_against(&upstream, "")).await;
    let (status, body) = broker.get("/v1/apps/shop/token").await;
    assert_eq!(
        status, 200,
        "the short-lived token is served while it lives: {body}"
    );
    let started = Instant::now();
    let fetched = requests_during(&upstream, Duration::from_secs(5)).await;
    // Paced at 1, 2, 4 s after the first fetch: at most 3 more in 5 s (the
    // lifetime alone would pace a fetch every half second).
    assert!(
        (1..=3).contains(&fetched),
        "{fetched} fetches in {:?}",
        started.elapsed()
    );
    let anomalies = broker
        .metric("wxbroker_upstream_errors_total{app=\"shop\",credential=\"access_token\",errcode=\"short_lifetime\"}")
        .await;
    assert!(anomalies >= 1.0, "the anomaly is counted");
}
