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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_many_statuses_cannot_grow_the_metrics() {
    // The token endpoint answers a token; every other call the status
    // its query names.
    let upstream = ScriptedUpstream::start(|_, request| {
        if request.target.starts_with("/cgi-bin/token") {
            return Answer::json(r#"{"access_token":"status-test-token","expires_in":7200}"#);
        }
        let code = request
            .target
            .split("code=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .and_then(|code| code.parse().ok())
            .unwrap_or(200);
        Answer {
            status: code,
            ..Answer::json(r#"{"errcode":0}"#)
        }
    })
    .await;
    let broker = Broker::start_with(
        &app_against(&upstream, ""),
        Options {
            compat: true,
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    let codes: Vec<u16> = (200..600).step_by(3).collect();
    for code in &codes {
        let path = format!("/v1/apps/shop/proxy/cgi-bin/echo?code={code}");
        broker.send(http::Method::GET, &path, &[], None).await;
        let url = broker.compat_url(&format!("/cgi-bin/echo?code={code}&appid={APPID}"));
        within(broker.http().get(url).send())
            .await
            .expect("compat request");
    }
    assert!(
        upstream.count() > 2 * codes.len(),
        "the upstream saw {} calls",
        upstream.count()
    );
    let text = broker.metrics_text().await;
    // The forwarding routes' series: the /v1 proxy's and the compatible
    // listener's (whose other routes answered nothing here).
    for (listener, route) in [("tcp", "/v1/apps/{app}/proxy"), ("compat", "")] {
        let series: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.starts_with("wxbroker_requests_total{")
                    && line.contains(&format!("listener=\"{listener}\""))
                    && line.contains(route)
            })
            .collect();
        assert!(
            series.iter().any(|line| line.contains("status=\"5xx\"")),
            "the upstream's statuses reached the {listener} listener's answers:\n{}",
            series.join("\n")
        );
        assert!(
            series.len() <= 16,
            "{} {listener} series for {} upstream statuses:\n{}",
            series.len(),
            codes.len(),
            series.join("\n")
        );
    }
}
