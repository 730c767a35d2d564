//! The broker's own check of its held token (DESIGN.md section 21), against
//! the simulator: a token killed behind the broker's back, by another
//! party or by a fetch the broker gave up on that WeChat carried out
//! anyway, is seen without any client's report, counted as a fight and
//! replaced once; healthy tokens of every kind check out and change
//! nothing.

mod support;

use std::time::Duration;

use support::*;
use wxbroker::engine::TokenChecks;
use wxbroker::simulator::{Endpoint, Fault, SimConfig};
use wxbroker::Tuning;

/// Checks every `every`, and `after_timeout` after a fetch that timed out.
fn checks(every: Duration, after_timeout: Vec<Duration>) -> Option<Tuning> {
    Some(Tuning {
        quota_poll: None,
        token_checks: TokenChecks {
            every,
            after_timeout,
        },
        ..Tuning::default()
    })
}

/// Lines of the captured log since `from` that contain all of `needles`.
fn log_lines(from: usize, needles: &[&str]) -> usize {
    captured_logs()[from..]
        .lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_elsewhere_is_seen_at_the_next_check_and_replaced_once() {
    let logs = captured_logs().len();
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start_with(
        &classic_app("checked", &sim, "min_forced_interval = \"1s\""),
        Options {
            tuning: checks(Duration::from_millis(500), Vec::new()),
            ..Options::default()
        },
    )
    .await;
    let first = broker.token("checked").await;
    let fights = "wxbroker_token_fights_total{app=\"checked\"}";

    // Another party fetches twice: the broker's token is dead at once.
    // No client reports anything.
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
    assert!(!sim.sim.token_valid(&first));
    let deadline = tokio::time::Instant::now() + WAIT;
    let second = loop {
        let token = broker.token("checked").await;
        if token != first {
            break token;
        }
        assert!(tokio::time::Instant::now() < deadline, "never replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(sim.sim.token_valid(&second));
    assert_eq!(broker.metric(fights).await, 1.0);
    assert_eq!(sim.sim.calls(Endpoint::Token), 2 + 2, "two fetches each");

    // It happens again: the token the check's refresh brought is dead
    // too. Counted at every check, but not refreshed again: never a
    // ping-pong with the other party.
    sim.sim.issue_classic_directly(APPID).unwrap();
    sim.sim.issue_classic_directly(APPID).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.metric(fights).await < 3.0 {
        assert!(tokio::time::Instant::now() < deadline, "fights not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.sim.calls(Endpoint::Token), 2 + 4);
    assert_eq!(broker.token("checked").await, second);
    assert_eq!(
        log_lines(logs, &["token fight", "checked", APPID]),
        1,
        "one error line per episode:\n{}",
        &captured_logs()[logs..]
    );
    assert_eq!(
        broker
            .metric("wxbroker_token_checks_total{app=\"checked\",result=\"rejected\"}")
            .await,
        broker.metric(fights).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_timed_out_but_landed_later_is_seen_and_replaced() {
    // The replaced token lives 1 s more after a new one is issued.
    let sim = simulator(SimConfig {
        classic_overlap: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    // The cold start's fetch takes 2.5 s against a 1 s fetch_timeout: the
    // broker gives up on it and its retry (within a second) gets a token,
    // which WeChat replaces when the first fetch lands after all.
    sim.sim.inject(Fault::Delay {
        delay: Duration::from_millis(2500),
        count: 1,
    });
    let broker = Broker::start_with(
        &classic_app(
            "orphaned",
            &sim,
            "fetch_timeout = \"1s\"\nmin_forced_interval = \"1s\"",
        ),
        Options {
            // No periodic check within the test: only the one after the
            // timeout can see it.
            tuning: checks(Duration::from_secs(3600), vec![Duration::from_secs(4)]),
            ..Options::default()
        },
    )
    .await;
    let first = broker.token("orphaned").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let replaced = loop {
        let token = broker.token("orphaned").await;
        if token != first {
            break token;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead token was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !sim.sim.token_valid(&first),
        "the late fetch killed the first token"
    );
    assert!(sim.sim.token_valid(&replaced));
    assert_eq!(
        broker
            .metric("wxbroker_token_fights_total{app=\"orphaned\"}")
            .await,
        1.0
    );
    assert_eq!(sim.sim.calls(Endpoint::Token), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_tokens_of_every_kind_check_out_and_nothing_is_fetched() {
    captured_logs();
    let sim = simulator(SimConfig::default()).await;
    let apps = format!(
        "{}{}{}",
        classic_app("classic", &sim, ""),
        stable_app("stable", &sim, ""),
        wecom_app("corp", &sim, "")
    );
    let broker = Broker::start_with(
        &apps,
        Options {
            tuning: checks(Duration::from_millis(200), Vec::new()),
            ..Options::default()
        },
    )
    .await;
    let tokens = [
        broker.token("classic").await,
        broker.token("stable").await,
        broker.token("corp").await,
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.sim.calls(Endpoint::GetApiDomainIp) < 9 {
        assert!(tokio::time::Instant::now() < deadline, "no checks made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.sim.total_token_calls(), 3, "one fetch each, no more");
    for (app, token) in ["classic", "stable", "corp"].iter().zip(&tokens) {
        assert_eq!(&broker.token(app).await, token);
        let valid = broker
            .metric(&format!(
                "wxbroker_token_checks_total{{app=\"{app}\",result=\"valid\"}}"
            ))
            .await;
        assert!(valid >= 1.0, "{app}: {valid} valid checks");
        for series in [
            format!("wxbroker_token_checks_total{{app=\"{app}\",result=\"rejected\"}}"),
            format!("wxbroker_token_fights_total{{app=\"{app}\"}}"),
        ] {
            assert_eq!(broker.metric(&series).await, 0.0, "{series}");
        }
    }
    // The token never shows in the log, not even in the check's URL.
    let logs = captured_logs();
    for token in &tokens {
        assert!(!logs.contains(token.as_str()));
    }
}
