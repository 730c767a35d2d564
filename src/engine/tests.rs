//! Refresher tests on tokio's paused clock against a scripted in-process
//! source: hours and days of token life run in milliseconds, and every
//! assertion is about exact call counts and times.

mod checks;
mod fleet;
mod tickets;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::clock::{next_beijing_midnight, Clock};
use crate::config::{AppConfig, AppKind, Grant, SecretSource};
use crate::secret::{AccessToken, Secret};
use crate::store::{MemoryStore, StoreKey, StoredCredential, StoredToken};
use crate::wechat::{FetchError, TokenGrant, TokenSource};

const LIFETIME: u64 = 7200;
/// How long a test's caller waits for an answer (token_wait_timeout).
const WAIT: Duration = Duration::from_secs(10);
/// 2026-11-24 10:00 Beijing time.
const START: u64 = 1_795_975_200;

/// A fake WeChat for one app. Classic: each call issues a new token.
/// Stable: the same token while more than `window` is left, unless forced.
struct FakeSource {
    stable_window: Option<Duration>,
    delay: Mutex<Duration>,
    script: Mutex<VecDeque<FetchError>>,
    /// Calls in flight now, and the most ever in flight at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    issued: AtomicU64,
    calls: Mutex<Vec<(Instant, bool)>>,
    current: Mutex<Option<(AccessToken, Instant)>>,
    /// Whether it offers a check of a held token ([`TokenCheck`]).
    checkable: std::sync::atomic::AtomicBool,
    checks: AtomicU64,
}

impl FakeSource {
    fn classic() -> Arc<Self> {
        Arc::new(Self::new(None))
    }

    fn stable(window: Duration) -> Arc<Self> {
        Arc::new(Self::new(Some(window)))
    }

    fn new(stable_window: Option<Duration>) -> Self {
        FakeSource {
            stable_window,
            delay: Mutex::new(Duration::from_millis(50)),
            script: Mutex::default(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            calls: Mutex::default(),
            current: Mutex::default(),
            checkable: std::sync::atomic::AtomicBool::new(false),
            checks: AtomicU64::new(0),
        }
    }

    /// A classic source with a check: a token checks out while it is the
    /// last one issued.
    fn checkable_classic() -> Arc<Self> {
        let source = Self::new(None);
        source.checkable.store(true, Ordering::SeqCst);
        Arc::new(source)
    }

    /// Someone else fetches a token: the one issued before is dead.
    fn rotate_elsewhere(&self) {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        *self.current.lock().unwrap() = Some((
            AccessToken::new(format!("elsewhere-{n}")),
            Instant::now() + Duration::from_secs(LIFETIME),
        ));
    }

    /// Whether `token` is the last one issued.
    fn is_current(&self, token: &AccessToken) -> bool {
        self.current
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(current, _)| current == token)
    }

    fn checks(&self) -> u64 {
        self.checks.load(Ordering::SeqCst)
    }

    /// How long each call takes from now on.
    fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// The most calls ever in flight at once.
    fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// The next `count` calls fail with `err`.
    fn fail_next(&self, err: FetchError, count: usize) {
        self.script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(err, count));
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn forced_calls(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| *f)
            .count()
    }

    fn call_times(&self) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .collect()
    }

    fn answer(&self, force: bool) -> Result<TokenGrant, FetchError> {
        if let Some(err) = self.script.lock().unwrap().pop_front() {
            return Err(err);
        }
        let now = Instant::now();
        let mut current = self.current.lock().unwrap();
        if let (Some(window), Some((token, expires))) = (self.stable_window, current.as_ref()) {
            let left = expires.saturating_duration_since(now);
            if !force && left > window {
                return Ok(TokenGrant {
                    token: token.clone(),
                    expires_in: left.as_secs(),
                });
            }
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let token = AccessToken::new(format!("tok-{n}"));
        *current = Some((token.clone(), now + Duration::from_secs(LIFETIME)));
        Ok(TokenGrant {
            token,
            expires_in: LIFETIME,
        })
    }
}

impl TokenSource for FakeSource {
    fn fetch(&self, force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push((Instant::now(), force_refresh));
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            // Counted out when it ends or is dropped by its caller.
            let _done = InFlight(&self.in_flight);
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            self.answer(force_refresh)
        })
    }

    fn token_check(&self) -> Option<&dyn crate::wechat::TokenCheck> {
        if self.checkable.load(Ordering::SeqCst) {
            Some(self)
        } else {
            None
        }
    }
}

impl crate::wechat::TokenCheck for FakeSource {
    fn check<'a>(&'a self, token: &'a AccessToken) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            self.checks.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.is_current(token) {
                Ok(())
            } else {
                Err(FetchError::Api {
                    errcode: 40001,
                    errmsg: "invalid credential, access_token is invalid or not latest".into(),
                })
            }
        })
    }
}

/// Counts a call out of flight when it ends, finished or dropped.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) fn app(grant: Grant) -> AppConfig {
    AppConfig {
        name: "shop".into(),
        kind: AppKind::Wechat,
        grant,
        appid: "wx1".into(),
        secret: Secret::new("s"),
        secret_source: SecretSource::Inline,
        refresh_before: Duration::from_secs(300),
        daily_budget: 1000,
        min_forced_interval: Duration::from_secs(30),
        api_base: "http://127.0.0.1:1".into(),
        fetch_timeout: Duration::from_secs(10),
        sink: None,
        compat_listen: None,
        tickets: Vec::new(),
        agentid: None,
        follow: None,
    }
}

struct Running {
    apps: Apps,
    handle: AppHandle,
    clock: Clock,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    /// Stops the refreshers and waits until they have finished.
    async fn stop(self) {
        let tasks = self.tasks.clone();
        drop(self);
        tasks.close();
        tasks.wait().await;
    }
}

fn start_with(config: AppConfig, source: Arc<FakeSource>, store: Arc<dyn Store>) -> Running {
    start_at(Duration::from_secs(START), config, source, store)
}

/// Starts with the clock reading `unix`: a restart picks up where the
/// previous run's clock was.
fn start_at(
    unix: Duration,
    config: AppConfig,
    source: Arc<FakeSource>,
    store: Arc<dyn Store>,
) -> Running {
    start_full(
        unix,
        config,
        source,
        store,
        Arc::new(tickets::FakeTickets::default()),
    )
}

/// [`start_at`] with the ticket sources given.
fn start_full(
    unix: Duration,
    config: AppConfig,
    source: Arc<FakeSource>,
    store: Arc<dyn Store>,
    tickets: Arc<dyn TicketSources>,
) -> Running {
    let clock = Clock::starting_at(unix);
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let context = EngineContext {
        store,
        tickets,
        metrics: Metrics::new(),
        clock,
        tasks: tasks.clone(),
        cancel: cancel.clone(),
        token_checks: TokenChecks::default(),
    };
    let apps = Apps::start(vec![(Arc::new(config), source)], &context);
    Running {
        handle: apps.apps()[0].clone(),
        apps,
        clock,
        cancel,
        tasks,
    }
}

fn start(config: AppConfig, source: Arc<FakeSource>) -> Running {
    start_with(config, source, Arc::new(MemoryStore::new()))
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Advances the paused clock in steps, checking at each that readers get
/// a valid token without waiting.
async fn run_for(running: &Running, total: Duration, step: Duration) {
    let end = Instant::now() + total;
    while Instant::now() < end {
        tokio::time::sleep(step).await;
        let token = running.handle.valid_token();
        assert!(
            token.is_some(),
            "no valid token at {:?}",
            running.clock.now()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn proactive_refresh_happens_refresh_before_expiry() {
    let source = FakeSource::classic();
    let running = start(app(Grant::Classic), source.clone());
    running.handle.token(Duration::from_secs(10)).await.unwrap();
    run_for(
        &running,
        Duration::from_secs(10 * LIFETIME),
        Duration::from_secs(60),
    )
    .await;
    // One fetch at start, then one every lifetime - refresh_before (6900 s).
    let expected = 1 + (10 * LIFETIME) / (LIFETIME - 300);
    assert_eq!(source.calls() as u64, expected);
    let times = source.call_times();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(6900) && gap <= Duration::from_secs(6901),
            "{gap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_cold_readers_make_one_fetch() {
    let source = FakeSource::classic();
    let running = start(app(Grant::Classic), source.clone());
    let readers: Vec<_> = (0..1000)
        .map(|_| {
            let handle = running.handle.clone();
            tokio::spawn(async move { handle.token(Duration::from_secs(10)).await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for reader in readers {
        tokens.insert(reader.await.unwrap().unwrap().value.clone());
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn readers_keep_the_old_token_while_a_refresh_is_slow() {
    let source = FakeSource::classic();
    source.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    let running = start(app(Grant::Classic), source.clone());
    let first = running.handle.token(Duration::from_secs(10)).await.unwrap();
    // Into the refresh: it started at expiry - 300 s and takes 5 s.
    tokio::time::sleep_until(started + Duration::from_secs(LIFETIME - 300 + 2)).await;
    assert_eq!(source.calls(), 2, "the refresh is in flight");
    assert_eq!(running.handle.valid_token().unwrap().value, first.value);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_ne!(running.handle.valid_token().unwrap().value, first.value);
}

#[tokio::test(start_paused = true)]
async fn readers_of_a_held_app_are_answered_at_once_with_the_cause() {
    let source = FakeSource::classic();
    source.fail_next(
        FetchError::Api {
            errcode: 40164,
            errmsg: "invalid ip".into(),
        },
        1,
    );
    let running = start(app(Grant::Classic), source.clone());
    let started = Instant::now();
    let err = running
        .handle
        .token(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waiting cannot help a configuration error: {:?}",
        started.elapsed()
    );
    match err {
        TokenError::Unavailable {
            retry_after,
            last_error,
        } => {
            assert!((589..=600).contains(&retry_after), "{retry_after}");
            assert_eq!(last_error.unwrap().errcode, Some(40164));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn readers_give_up_after_the_wait_when_there_is_no_token() {
    let source = FakeSource::classic();
    source.fail_next(
        FetchError::Api {
            errcode: -1,
            errmsg: "system error".into(),
        },
        1000,
    );
    let running = start(app(Grant::Classic), source.clone());
    let started = Instant::now();
    let err = running
        .handle
        .token(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    match err {
        TokenError::Unavailable { last_error, .. } => {
            assert_eq!(last_error.unwrap().errcode, Some(-1));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn stable_grant_same_token_is_rechecked_without_spinning() {
    // The broker asks 20 minutes ahead; WeChat rotates only in the last 5.
    let source = FakeSource::stable(Duration::from_secs(300));
    let mut config = app(Grant::Stable);
    config.refresh_before = Duration::from_secs(1200);
    let running = start(config, source.clone());
    let first = running.handle.token(Duration::from_secs(10)).await.unwrap();
    run_for(
        &running,
        Duration::from_secs(LIFETIME),
        Duration::from_secs(10),
    )
    .await;
    let second = running.handle.valid_token().unwrap();
    assert_ne!(first.value, second.value, "rotated before expiry");
    // 1200 s left -> 900 -> 675 -> 506 -> 380 -> 285 (rotates): a handful.
    let calls = source.calls();
    assert!((4..=8).contains(&calls), "{calls} calls");
    assert_eq!(source.forced_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn invalidating_the_current_token_refreshes_once() {
    let source = FakeSource::classic();
    let running = start(app(Grant::Classic), source.clone());
    let first = running.handle.token(Duration::from_secs(10)).await.unwrap();
    // Within min_forced_interval of the fetch: refused.
    let outcome = running
        .handle
        .invalidate(first.value.expose(), WAIT)
        .await
        .unwrap();
    assert_eq!(outcome, InvalidateOutcome::RateLimited);
    tokio::time::sleep(Duration::from_secs(31)).await;
    let storm: Vec<_> = (0..200)
        .map(|_| {
            let handle = running.handle.clone();
            let reported = first.value.expose().to_owned();
            tokio::spawn(async move { handle.invalidate(&reported, WAIT).await.unwrap() })
        })
        .collect();
    let mut refreshed = 0;
    for outcome in storm {
        match outcome.await.unwrap() {
            InvalidateOutcome::Refreshed => refreshed += 1,
            InvalidateOutcome::AlreadyRotated => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((refreshed, source.calls()), (1, 2));
    // The old token again: already rotated, no call.
    let outcome = running
        .handle
        .invalidate(first.value.expose(), WAIT)
        .await
        .unwrap();
    assert_eq!(outcome, InvalidateOutcome::AlreadyRotated);
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stable_invalidation_forces_only_when_wechat_returns_the_same_token() {
    let source = FakeSource::stable(Duration::from_secs(300));
    let running = start(app(Grant::Stable), source.clone());
    let first = running.handle.token(Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let outcome = running
        .handle
        .invalidate(first.value.expose(), WAIT)
        .await
        .unwrap();
    assert_eq!(outcome, InvalidateOutcome::Refreshed);
    // One normal ask (same token back), then one forced.
    assert_eq!((source.calls(), source.forced_calls()), (3, 1));
    assert_ne!(running.handle.valid_token().unwrap().value, first.value);
}

#[tokio::test(start_paused = true)]
async fn transient_errors_back_off_under_the_ceiling() {
    let source = FakeSource::classic();
    source.fail_next(
        FetchError::Api {
            errcode: -1,
            errmsg: "system error".into(),
        },
        12,
    );
    let running = start(app(Grant::Classic), source.clone());
    running
        .handle
        .token(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(source.calls(), 13);
    let times = source.call_times();
    let ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60];
    for (pair, ceiling) in times.windows(2).zip(ceilings) {
        let gap = pair[1] - pair[0];
        // Each wait is below its ceiling (plus the fake's 50 ms answer time).
        assert!(
            gap <= Duration::from_millis(ceiling * 1000 + 50),
            "{gap:?} > {ceiling}s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn configuration_errors_are_tried_once_per_ten_minutes() {
    let source = FakeSource::classic();
    let running = start(app(Grant::Classic), source.clone());
    let first = running.handle.token(Duration::from_secs(10)).await.unwrap();
    source.fail_next(
        FetchError::Api {
            errcode: 40125,
            errmsg: "invalid appsecret".into(),
        },
        1000,
    );
    // From the proactive refresh to 30 minutes past expiry: the valid token
    // is served until it expires, and attempts come 600 s apart.
    let due = Duration::from_secs(LIFETIME - 300);
    tokio::time::sleep(due + Duration::from_secs(1)).await;
    assert_eq!(running.handle.valid_token().unwrap().value, first.value);
    assert_eq!(
        running.handle.view().last_error.unwrap().errcode,
        Some(40125)
    );
    tokio::time::sleep(Duration::from_secs(2100)).await;
    assert!(running.handle.valid_token().is_none());
    // Attempts at due, +600, +1200, +1800.
    assert_eq!(source.calls(), 1 + 4);
    let times = source.call_times();
    for pair in times[1..].windows(2) {
        let gap = (pair[1] - pair[0]).as_secs();
        assert!((600..=601).contains(&gap), "{gap}");
    }
}

#[tokio::test(start_paused = true)]
async fn quota_exhausted_waits_for_beijing_midnight() {
    let source = FakeSource::classic();
    source.fail_next(
        FetchError::Api {
            errcode: 45009,
            errmsg: "reach max api daily quota limit".into(),
        },
        1,
    );
    let running = start(app(Grant::Classic), source.clone());
    let until_midnight = next_beijing_midnight(START) - START;
    tokio::time::sleep(Duration::from_secs(until_midnight - 1)).await;
    assert_eq!(source.calls(), 1);
    assert!(running.handle.valid_token().is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(source.calls(), 2);
    assert!(running.handle.valid_token().is_some());
}

#[tokio::test(start_paused = true)]
async fn budget_holds_over_days_of_invalidation_storms() {
    let source = FakeSource::classic();
    let mut config = app(Grant::Classic);
    config.daily_budget = 20;
    let started = Instant::now();
    let running = start(config, source.clone());
    // Three days; every 10 s a client reports the current token as dead.
    let days = 3;
    let end = Instant::now() + Duration::from_secs(days * 86_400);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Some(token) = running.handle.valid_token() {
            running
                .handle
                .invalidate(token.value.expose(), WAIT)
                .await
                .unwrap();
        }
    }
    let mut per_day = std::collections::BTreeMap::<u32, u32>::new();
    for at in source.call_times() {
        let unix = START + (at - started).as_secs();
        *per_day.entry(crate::clock::beijing_day(unix)).or_default() += 1;
    }
    assert!(per_day.values().all(|&n| n <= 20), "{per_day:?}");
    assert!(per_day.len() >= 3, "{per_day:?}");
    assert_eq!(
        running.handle.view().fetches_on(running.clock.now_secs()),
        *per_day.values().last().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_healthy_day_costs_about_thirteen_fetches() {
    let source = FakeSource::classic();
    let running = start(app(Grant::Classic), source.clone());
    running.handle.token(Duration::from_secs(10)).await.unwrap();
    run_for(
        &running,
        Duration::from_secs(3 * 86_400),
        Duration::from_secs(300),
    )
    .await;
    let per_day = source.calls() as f64 / 3.0;
    assert!((12.0..=13.5).contains(&per_day), "{per_day}");
}

#[tokio::test(start_paused = true)]
async fn warm_start_with_a_fresh_stored_token_makes_no_call() {
    let store = Arc::new(MemoryStore::new());
    let config = app(Grant::Classic);
    let key = StoreKey::for_app(&config);
    let record = |expires_in: u64| StoredCredential {
        appid: "wx1".into(),
        grant: "classic".into(),
        token: Some(StoredToken {
            access_token: AccessToken::new("stored"),
            expires_at: START + expires_in,
            fetched_at: START + expires_in - LIFETIME,
            fetched_at_ms: 0,
        }),
        day: crate::clock::beijing_day(START),
        fetches: 7,
    };
    store.save(&key, &record(3600)).await.unwrap();
    let source = FakeSource::classic();
    let running = start_with(config.clone(), source.clone(), store.clone());
    let token = running.handle.token(Duration::from_secs(1)).await.unwrap();
    assert_eq!(token.value.expose(), "stored");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(source.calls(), 0);
    assert_eq!(
        running.handle.view().fetches_today,
        7,
        "the day's count survives"
    );
    drop(running);

    // Inside the refresh window: one call at once.
    store.save(&key, &record(200)).await.unwrap();
    let source = FakeSource::classic();
    let _running = start_with(config, source.clone(), store);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_record_for_another_app_is_ignored() {
    let store = Arc::new(MemoryStore::new());
    let config = app(Grant::Classic);
    let key = StoreKey::for_app(&config);
    let foreign = StoredCredential {
        appid: "wx-other".into(),
        grant: "classic".into(),
        token: Some(StoredToken {
            access_token: AccessToken::new("foreign"),
            expires_at: START + 3600,
            fetched_at: START,
            fetched_at_ms: 0,
        }),
        day: crate::clock::beijing_day(START),
        fetches: 999,
    };
    store.save(&key, &foreign).await.unwrap();
    let source = FakeSource::classic();
    let running = start_with(config, source.clone(), store.clone());
    let token = running.handle.token(Duration::from_secs(10)).await.unwrap();
    assert_ne!(token.value.expose(), "foreign");
    assert_eq!(source.calls(), 1);
    // The record is written right after the token is published.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replaced = store.load(&key).await.unwrap().unwrap();
    assert_eq!(replaced.appid, "wx1");
    assert_eq!(replaced.fetches, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stored_token_with_absurd_times_is_not_served() {
    let config = app(Grant::Classic);
    let key = StoreKey::for_app(&config);
    let planted = |fetched_at: u64, expires_at: u64| StoredCredential {
        appid: "wx1".into(),
        grant: "classic".into(),
        token: Some(StoredToken {
            access_token: AccessToken::new("planted"),
            expires_at,
            fetched_at,
            fetched_at_ms: 0,
        }),
        day: crate::clock::beijing_day(START),
        fetches: 2,
    };
    for record in [
        // `expires_at * 1000` would overflow.
        planted(START, u64::MAX),
        // Valid for a year.
        planted(START - 60, START + 365 * 86_400),
        // Fetched tomorrow.
        planted(START + 86_400, START + 86_400 + LIFETIME),
    ] {
        let store = Arc::new(MemoryStore::new());
        store.save(&key, &record).await.unwrap();
        let source = FakeSource::classic();
        let running = start_with(config.clone(), source.clone(), store.clone());
        let token = running.handle.token(Duration::from_secs(10)).await.unwrap();
        assert_eq!(token.value.expose(), "tok-0", "{record:?}");
        assert_eq!(source.calls(), 1);
        assert_eq!(
            running.handle.view().fetches_today,
            3,
            "the day's count is kept: it only ever holds fetches back"
        );
    }
}

/// A memory store whose saves fail while `failing` is set, as on a full
/// disk; reads keep working.
#[derive(Default)]
struct FullDisk {
    inner: MemoryStore,
    failing: std::sync::atomic::AtomicBool,
}

impl FullDisk {
    fn failing() -> Arc<Self> {
        let store = Arc::new(FullDisk::default());
        store.set_failing(true);
        store
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    async fn stored_fetches(&self) -> Option<u32> {
        let key = StoreKey::for_app(&app(Grant::Classic));
        let record = self.inner.load(&key).await.unwrap()?;
        Some(record.fetches)
    }
}

impl Store for FullDisk {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, crate::store::StoreError>> {
        self.inner.load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        state: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), crate::store::StoreError>> {
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(crate::store::StoreError::Io {
                    op: "write",
                    path: "state/shop.json".into(),
                    source: std::io::Error::other("no space left on device"),
                })
            });
        }
        self.inner.save(key, state)
    }
}

/// Three upstream calls: the first token, then two invalidations.
async fn three_fetches(running: &Running, source: &FakeSource) {
    let mut token = running.handle.token(Duration::from_secs(10)).await.unwrap();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(31)).await;
        let outcome = running.handle.invalidate(token.value.expose(), WAIT).await;
        assert_eq!(outcome, Ok(InvalidateOutcome::Refreshed));
        token = running.handle.valid_token().unwrap();
    }
    assert_eq!(source.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn fetches_made_while_saves_fail_are_counted_and_saved_once_the_store_recovers() {
    let store = FullDisk::failing();
    let source = FakeSource::classic();
    let running = start_with(app(Grant::Classic), source.clone(), store.clone());
    three_fetches(&running, &source).await;
    assert_eq!(
        running.handle.view().fetches_today,
        3,
        "memory counts them all"
    );
    assert_eq!(store.stored_fetches().await, None, "nothing could be saved");

    store.set_failing(false);
    // Retries double to a minute: one is due within it.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(store.stored_fetches().await, Some(3));
    let now = running.clock.now();
    running.stop().await;

    let source = FakeSource::classic();
    let running = start_at(now, app(Grant::Classic), source.clone(), store.clone());
    let token = running.handle.token(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        token.value.expose(),
        "tok-2",
        "the last token was saved too"
    );
    assert_eq!(running.handle.view().fetches_today, 3);
    assert_eq!(source.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_saves_what_the_store_could_not_take_before() {
    let store = FullDisk::failing();
    let source = FakeSource::classic();
    let running = start_with(app(Grant::Classic), source.clone(), store.clone());
    three_fetches(&running, &source).await;
    // The store recovers, and the broker stops before the next retry.
    store.set_failing(false);
    let now = running.clock.now();
    running.stop().await;
    assert_eq!(store.stored_fetches().await, Some(3));

    let source = FakeSource::classic();
    let running = start_at(now, app(Grant::Classic), source.clone(), store.clone());
    running.handle.token(Duration::from_secs(1)).await.unwrap();
    assert_eq!(running.handle.view().fetches_today, 3);
    assert_eq!(source.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_count_the_store_could_not_take() {
    let store = FullDisk::failing();
    let source = FakeSource::classic();
    // No token to carry over: every call fails, so the restarted app
    // reads the store, which lags.
    source.fail_next(
        FetchError::Api {
            errcode: -1,
            errmsg: "system error".into(),
        },
        1000,
    );
    let running = start_with(app(Grant::Classic), source.clone(), store.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(source.calls() >= 3);
    assert_eq!(running.handle.view().fetches_today as usize, source.calls());

    let mut changed = app(Grant::Classic);
    changed.refresh_before = Duration::from_secs(600);
    let report = running
        .apps
        .reconcile(vec![(
            Arc::new(changed),
            source.clone() as Arc<dyn TokenSource>,
        )])
        .await;
    assert_eq!(report.restarted, ["shop"]);
    let app = running.apps.app("shop").unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(app.view().fetches_today as usize, source.calls());
}

/// The stored token for the test app.
async fn stored_token(store: &MemoryStore) -> Option<AccessToken> {
    let key = StoreKey::for_app(&app(Grant::Classic));
    let record = store.load(&key).await.unwrap()?;
    Some(record.token?.access_token)
}

/// Starts the test app with slow fetches and waits until its first
/// proactive refresh (due at expiry - 300 s, taking 5 s) is 2 s in.
async fn in_a_slow_refresh(source: &Arc<FakeSource>, store: &Arc<MemoryStore>) -> Running {
    let started = Instant::now();
    let running = start_with(app(Grant::Classic), source.clone(), store.clone());
    let first = running.handle.token(WAIT).await.unwrap();
    assert_eq!(first.value.expose(), "tok-0");
    source.set_delay(Duration::from_secs(5));
    tokio::time::sleep_until(started + Duration::from_secs(LIFETIME - 300 + 2)).await;
    assert_eq!(source.calls(), 2, "the refresh is in flight");
    running
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_refresh_waits_for_it_and_stores_its_token() {
    let source = FakeSource::classic();
    let store = Arc::new(MemoryStore::new());
    let running = in_a_slow_refresh(&source, &store).await;
    let handle = running.handle.clone();
    let stopping = Instant::now();
    running.stop().await;
    let waited = stopping.elapsed();
    assert!(
        (Duration::from_secs(2)..=Duration::from_secs(4)).contains(&waited),
        "the stop waits for the fetch to end, and no longer: {waited:?}"
    );
    // Upstream replaced tok-0 with tok-1: the broker must keep tok-1.
    assert_eq!(handle.valid_token().unwrap().value.expose(), "tok-1");
    assert_eq!(stored_token(&store).await.unwrap().expose(), "tok-1");
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_in_flight_at_a_stop_is_answered_and_stored() {
    let source = FakeSource::classic();
    let store = Arc::new(MemoryStore::new());
    let running = start_with(app(Grant::Classic), source.clone(), store.clone());
    let first = running.handle.token(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    source.set_delay(Duration::from_secs(3));
    let handle = running.handle.clone();
    let reported = first.value.expose().to_owned();
    let invalidation = tokio::spawn(async move { handle.invalidate(&reported, WAIT).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 2, "the invalidation's fetch is in flight");
    let handle = running.handle.clone();
    running.stop().await;
    assert_eq!(
        invalidation.await.unwrap(),
        Ok(InvalidateOutcome::Refreshed)
    );
    assert_eq!(handle.valid_token().unwrap().value.expose(), "tok-1");
    assert_eq!(stored_token(&store).await.unwrap().expose(), "tok-1");
}

#[tokio::test(start_paused = true)]
async fn a_reload_during_a_refresh_waits_for_it_and_hands_its_token_on() {
    let source = FakeSource::classic();
    let store = Arc::new(MemoryStore::new());
    let running = in_a_slow_refresh(&source, &store).await;
    let mut changed = app(Grant::Classic);
    changed.daily_budget = 500;
    let reloading = Instant::now();
    let report = running
        .apps
        .reconcile(vec![(
            Arc::new(changed),
            source.clone() as Arc<dyn TokenSource>,
        )])
        .await;
    assert_eq!(report.restarted, ["shop"]);
    assert!(
        reloading.elapsed() >= Duration::from_secs(2),
        "the old refresher's fetch is waited for: {:?}",
        reloading.elapsed()
    );
    let app = running.apps.app("shop").unwrap();
    assert_eq!(app.config().daily_budget, 500);
    assert_eq!(
        app.valid_token().unwrap().value.expose(),
        "tok-1",
        "the new refresher starts from the old one's last token"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(source.calls(), 2, "the new refresher had nothing to fetch");
    assert_eq!(source.max_in_flight(), 1, "never two fetches at once");
    assert_eq!(stored_token(&store).await.unwrap().expose(), "tok-1");
}

#[tokio::test(start_paused = true)]
async fn a_reload_during_an_invalidation_answers_it_with_the_new_token() {
    let source = FakeSource::classic();
    let running = start(app(Grant::Classic), source.clone());
    let first = running.handle.token(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    source.set_delay(Duration::from_secs(3));
    let handle = running.handle.clone();
    let reported = first.value.expose().to_owned();
    let invalidation = tokio::spawn(async move { handle.invalidate(&reported, WAIT).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut changed = app(Grant::Classic);
    changed.min_forced_interval = Duration::from_secs(60);
    running
        .apps
        .reconcile(vec![(
            Arc::new(changed),
            source.clone() as Arc<dyn TokenSource>,
        )])
        .await;
    assert_eq!(
        invalidation.await.unwrap(),
        Ok(InvalidateOutcome::Refreshed)
    );
    let app = running.apps.app("shop").unwrap();
    assert_eq!(app.valid_token().unwrap().value.expose(), "tok-1");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!((source.calls(), source.max_in_flight()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_waits_no_longer_than_the_callers_wait() {
    let source = FakeSource::classic();
    let running = start(app(Grant::Classic), source.clone());
    let first = running.handle.token(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    // Upstream hangs far longer than a caller waits.
    source.set_delay(Duration::from_secs(60));
    let asked = Instant::now();
    let outcome = running
        .handle
        .invalidate(first.value.expose(), Duration::from_secs(2))
        .await;
    assert_eq!(asked.elapsed(), Duration::from_secs(2));
    assert_eq!(outcome, Ok(InvalidateOutcome::Pending));
    assert_eq!(
        running.handle.valid_token().unwrap().value,
        first.value,
        "the valid token is served meanwhile"
    );
    // The refresh goes on, and lands.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        running.handle.valid_token().unwrap().value.expose(),
        "tok-1"
    );
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_without_a_valid_token_fails_after_the_wait() {
    let source = FakeSource::classic();
    source.set_delay(Duration::from_secs(60));
    let running = start(app(Grant::Classic), source.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 1, "the first fetch hangs");
    let asked = Instant::now();
    let err = running
        .handle
        .invalidate("tok-from-elsewhere", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(asked.elapsed(), Duration::from_secs(2));
    assert!(matches!(err, TokenError::Unavailable { .. }), "{err:?}");
}
