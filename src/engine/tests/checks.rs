//! The refresher's own check of its held token, on the paused clock: a
//! token killed behind the broker's back is seen at the next check and
//! refreshed once, never in a ping-pong, and a fetch that timed out is
//! followed by a check.

use super::*;

fn fights(running: &Running) -> u64 {
    running.apps.context().metrics.app("shop").fights()
}

/// Sleeps until `secs` after `start`.
async fn at(start: Instant, secs: u64) {
    tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_token_killed_elsewhere_is_refreshed_once_at_the_next_check_never_in_a_ping_pong() {
    let began = Instant::now();
    let source = FakeSource::checkable_classic();
    let running = start(app(Grant::Classic), source.clone());
    running.handle.token(WAIT).await.unwrap();

    // Healthy: the checks at 600 and 1200 s find the token good.
    at(began, 1201).await;
    assert_eq!(
        (source.calls(), source.checks(), fights(&running)),
        (1, 2, 0)
    );

    // Killed elsewhere at 1300 s: the check at 1800 s sees it, counts a
    // fight and refreshes once.
    at(began, 1300).await;
    source.rotate_elsewhere();
    at(began, 1801).await;
    assert_eq!((source.calls(), fights(&running)), (2, 1));
    let held = running.handle.valid_token().unwrap();
    assert!(source.is_current(&held.value));

    // Killed again: the token the check's refresh brought is dead too, so
    // the next check counts the fight but does not refresh again.
    source.rotate_elsewhere();
    at(began, 2401).await;
    assert_eq!((source.calls(), fights(&running)), (2, 2));
    at(began, 3001).await;
    assert_eq!((source.calls(), fights(&running)), (2, 3));

    // The proactive refresh (1800 + 6900 s) breaks the chain: a fight
    // after it is refreshed once again.
    at(began, 8701).await;
    assert_eq!(source.calls(), 3);
    source.rotate_elsewhere();
    at(began, 9001).await;
    assert_eq!(source.calls(), 4);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_timed_out_is_followed_by_a_check() {
    let began = Instant::now();
    let source = FakeSource::checkable_classic();
    let running = start(app(Grant::Classic), source.clone());
    running.handle.token(WAIT).await.unwrap();
    // The proactive refresh at 6900 s times out, its retry succeeds, and
    // the fetch given up on lands upstream after it.
    at(began, 6899).await;
    source.fail_next(FetchError::Timeout(Duration::from_secs(10)), 1);
    at(began, 6905).await;
    assert_eq!(source.calls(), 3, "the timed-out fetch and its retry");
    source.rotate_elsewhere();
    // The check 30 s after the timeout sees the held token dead, before
    // the periodic one (at 7200 s) would; its refresh waits out
    // min_forced_interval (30 s) from the retry's fetch, at most 6901 s.
    at(began, 6932).await;
    assert_eq!((source.calls(), fights(&running)), (4, 1));
    assert!(source.is_current(&running.handle.valid_token().unwrap().value));
    running.stop().await;
}
