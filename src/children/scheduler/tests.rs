//! The scheduler on the paused clock against a scripted upstream: each
//! child's answers are set per id, every call is recorded with the
//! clock's time, and hours pass in milliseconds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use prometheus::{IntCounterVec, Opts};

use super::tasks::record_of;
use super::*;
use crate::children::record::ChildRecord;
use crate::children::source::{ChildGrant, ChildPage};
use crate::clock::beijing_day;
use crate::secret::AccessToken;
use crate::store::StoreError;
use crate::wechat::FetchError;

/// 2025-11-24T06:00:00Z, 14:00 in Beijing: the next Beijing midnight is
/// ten hours away.
const START: u64 = 1_763_964_000;
const MIDNIGHT: u64 = 1_764_000_000;
const LIFETIME: u64 = 7200;
const HOUR: Duration = Duration::from_secs(3600);

/// Upstream: every child is answered a fresh token of [`LIFETIME`]
/// unless an errcode is set for it.
struct Upstream {
    clock: Clock,
    errcodes: Mutex<HashMap<String, i64>>,
    /// (child, unix ms) of every fetch.
    calls: Mutex<Vec<(String, u64)>>,
    issued: AtomicU64,
    /// WeCom's way: the held token, with what it has left, until it dies.
    repeats: AtomicBool,
    /// The token each child holds upstream, and its expiry (unix ms).
    current: Mutex<HashMap<String, (String, u64)>>,
    /// What an exchanged code grants, after this many transient failures.
    exchanged: Mutex<Option<ChildGrant>>,
    exchange_failures: AtomicU64,
    /// The parent has no token; the kind cannot list; its fetches need
    /// no parent.
    parent_down: AtomicBool,
    unlisted: AtomicBool,
    parentless: AtomicBool,
    /// What `describe` answers.
    name: Mutex<String>,
}

impl Upstream {
    fn new(clock: Clock) -> Arc<Self> {
        Arc::new(Upstream {
            clock,
            errcodes: Mutex::default(),
            calls: Mutex::default(),
            issued: AtomicU64::new(0),
            repeats: AtomicBool::new(false),
            current: Mutex::default(),
            exchanged: Mutex::default(),
            exchange_failures: AtomicU64::new(0),
            parent_down: AtomicBool::new(false),
            unlisted: AtomicBool::new(false),
            parentless: AtomicBool::new(false),
            name: Mutex::default(),
        })
    }

    fn answer(&self, id: &str, errcode: i64) {
        self.errcodes.lock().unwrap().insert(id.to_owned(), errcode);
    }

    /// When each fetch of `id` was made, unix ms.
    fn calls_of(&self, id: &str) -> Vec<u64> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(child, _)| child == id)
            .map(|(_, at)| *at)
            .collect()
    }

    fn total(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl ChildSource for Upstream {
    fn parent_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
        let down = self.parent_down.load(Ordering::Relaxed);
        Box::pin(async move {
            if down {
                return Err(FetchError::Parent("down".into()));
            }
            Ok(AccessToken::new("parent"))
        })
    }

    fn parent_rejected<'a>(&'a self, _: &'a AccessToken) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn fetch<'a>(
        &'a self,
        _: &'a AccessToken,
        id: &'a str,
        refresh_token: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
        self.calls
            .lock()
            .unwrap()
            .push((id.to_owned(), self.clock.now_ms()));
        let errcode = self.errcodes.lock().unwrap().get(id).copied();
        let now = self.clock.now_ms();
        let held = self
            .current
            .lock()
            .unwrap()
            .get(id)
            .filter(|(_, expires)| self.repeats.load(Ordering::Relaxed) && now < *expires)
            .cloned();
        let (token, expires_in) = match held {
            Some((token, expires)) => (token, (expires - now) / 1000),
            None => {
                let serial = self.issued.fetch_add(1, Ordering::Relaxed);
                let token = format!("tok-{id}-{serial}");
                let expires = now + LIFETIME * 1000;
                self.current
                    .lock()
                    .unwrap()
                    .insert(id.to_owned(), (token.clone(), expires));
                (token, LIFETIME)
            }
        };
        let answer = match errcode {
            Some(errcode) => Err(FetchError::Api {
                errcode,
                errmsg: format!("scripted {errcode}"),
            }),
            None => Ok(ChildGrant {
                id: id.to_owned(),
                access_token: AccessToken::new(token),
                expires_in,
                refresh_token: refresh_token.to_owned(),
                name: String::new(),
            }),
        };
        Box::pin(async move { answer })
    }

    fn exchange<'a>(
        &'a self,
        _: &'a AccessToken,
        _: &'a str,
    ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
        let failing = self
            .exchange_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let grant = self.exchanged.lock().unwrap().clone();
        Box::pin(async move {
            match grant {
                Some(grant) if !failing => Ok(grant),
                _ => Err(FetchError::Http(500)),
            }
        })
    }

    fn can_list(&self) -> bool {
        !self.unlisted.load(Ordering::Relaxed)
    }

    fn fetch_needs_parent(&self) -> bool {
        !self.parentless.load(Ordering::Relaxed)
    }

    fn describe<'a>(
        &'a self,
        _: &'a AccessToken,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<String, FetchError>> {
        let name = self.name.lock().unwrap().clone();
        Box::pin(async move { Ok(name) })
    }

    fn list<'a>(
        &'a self,
        _: &'a AccessToken,
        _: u64,
    ) -> BoxFuture<'a, Result<ChildPage, FetchError>> {
        Box::pin(async {
            Ok(ChildPage {
                total: 0,
                children: Vec::new(),
            })
        })
    }

    fn config_fix(&self, errcode: i64) -> Option<&'static str> {
        (errcode == 61023).then_some("the merchant must authorize again")
    }
}

/// Records in memory, and the day's count.
#[derive(Default)]
struct Memory {
    records: Mutex<HashMap<String, ChildRecord>>,
    count: Mutex<(u32, u32)>,
}

impl ChildStore for Memory {
    fn load_children(&self) -> BoxFuture<'_, Result<Vec<ChildRecord>, StoreError>> {
        let all = self.records.lock().unwrap().values().cloned().collect();
        Box::pin(async move { Ok(all) })
    }

    fn save_children<'a>(
        &'a self,
        records: &'a [ChildRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut all = self.records.lock().unwrap();
        for record in records {
            all.insert(record.appid.clone(), record.clone());
        }
        Box::pin(async { Ok(()) })
    }

    fn save_recovered<'a>(
        &'a self,
        records: &'a [ChildRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.save_children(records)
    }

    fn remove_child<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.records.lock().unwrap().remove(id);
        Box::pin(async { Ok(()) })
    }

    fn wants_compaction(&self, _: usize) -> bool {
        false
    }

    fn compact<'a>(&'a self, _: &'a [ChildRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn shared_child<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChildRecord>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn fetch_permit(&self, _: u32) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn lock_child<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn unlock_child<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn count_fetch(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let mut count = self.count.lock().unwrap();
        *count = match *count {
            (counted, used) if counted == day => (day, used + 1),
            _ => (day, 1),
        };
        let used = count.1;
        Box::pin(async move { Ok(used) })
    }

    fn fetches(&self, day: u32) -> BoxFuture<'_, Result<u32, StoreError>> {
        let (counted, used) = *self.count.lock().unwrap();
        Box::pin(async move { Ok(if counted == day { used } else { 0 }) })
    }
}

struct Running {
    upstream: Arc<Upstream>,
    store: Arc<Memory>,
    table: Arc<Table>,
    commands: mpsc::Sender<Command>,
    fetches: IntCounterVec,
    cancel: CancellationToken,
}

impl Running {
    /// A scheduler for children `ids`, each stored with a refresh token
    /// and no access token (so due at once), within `budget` a day.
    fn start(upstream: Arc<Upstream>, store: Arc<Memory>, ids: &[&str], budget: u32) -> Self {
        for id in ids {
            store.records.lock().unwrap().insert(
                (*id).to_owned(),
                ChildRecord {
                    appid: (*id).to_owned(),
                    refresh_token: format!("refresh-{id}"),
                    access_token: String::new(),
                    expires_at_ms: 0,
                    fetched_at_ms: 0,
                    authorized_at: START,
                    name: String::new(),
                },
            );
        }
        let fetches = IntCounterVec::new(Opts::new("fetches", "test"), &["parent", "result"])
            .expect("a valid metric");
        let table = Arc::new(Table::default());
        let (commands, receiver) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let scheduler = Scheduler::new(SchedulerParts {
            kind: "authorizer",
            span: Span::none(),
            refresh_before: Duration::from_secs(300),
            source: upstream.clone(),
            store: store.clone(),
            table: table.clone(),
            fetches: FetchCounter {
                counter: fetches.clone(),
                parent: Arc::from("saas"),
            },
            clock: upstream.clock,
            commands: receiver,
            cancel: cancel.clone(),
            tuning: SchedulerTuning::default(),
            daily_budget: budget,
            budget_key: "platforms.saas.authorizer_daily_budget".into(),
        });
        tokio::spawn(scheduler.run());
        Running {
            upstream,
            store,
            table,
            commands,
            fetches,
            cancel,
        }
    }

    fn counted(&self, result: &str) -> u64 {
        self.fetches.with_label_values(&["saas", result]).get()
    }

    fn hold(&self, id: &str) -> Hold {
        self.table.get(id).expect("a child").hold()
    }

    fn valid_token(&self, id: &str) -> Option<String> {
        let now = self.upstream.clock.now_ms();
        self.table
            .get(id)?
            .token()
            .filter(|token| token.is_valid(now))
            .map(|token| token.value.expose().to_owned())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn clock() -> Clock {
    Clock::starting_at(Duration::from_secs(START))
}

#[tokio::test(start_paused = true)]
async fn a_child_answered_45009_waits_for_beijing_midnight_while_its_siblings_refresh() {
    let upstream = Upstream::new(clock());
    upstream.answer("a", 45009);
    let running = Running::start(upstream.clone(), Arc::default(), &["a", "b", "c"], 200_000);

    tokio::time::sleep(9 * HOUR + Duration::from_secs(50 * 60)).await;
    assert_eq!(
        upstream.calls_of("a").len(),
        1,
        "no second call before Beijing midnight"
    );
    assert_eq!(running.hold("a"), Hold::Quota);
    for sibling in ["b", "c"] {
        let calls = upstream.calls_of(sibling);
        assert!(calls.len() >= 5, "{sibling} kept refreshing: {calls:?}");
        assert!(running.valid_token(sibling).is_some());
        assert_eq!(running.hold(sibling), Hold::None);
    }
    assert_eq!(running.counted("quota"), 1);

    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    let calls = upstream.calls_of("a");
    assert_eq!(calls.len(), 2, "tried again once the Beijing day changed");
    assert!(calls[1] >= MIDNIGHT * 1000, "{calls:?}");
    assert_eq!(beijing_day(calls[1] / 1000), beijing_day(START) + 1);
}

#[tokio::test(start_paused = true)]
async fn a_configuration_errcode_gets_one_attempt_per_10_minutes() {
    let upstream = Upstream::new(clock());
    // 61023: the kind's own (a dead refresh token); 40013: the engine's.
    upstream.answer("a", 61023);
    upstream.answer("d", 40013);
    let running = Running::start(upstream.clone(), Arc::default(), &["a", "b", "d"], 200_000);

    tokio::time::sleep(HOUR + Duration::from_secs(5)).await;
    for held in ["a", "d"] {
        let calls = upstream.calls_of(held);
        assert_eq!(
            calls.len(),
            7,
            "{held}: at 0, 10, ..., 60 minutes: {calls:?}"
        );
        for pair in calls.windows(2) {
            assert!(
                pair[1] - pair[0] >= 600_000,
                "{held}: never twice in 10 minutes: {calls:?}"
            );
        }
        assert_eq!(running.hold(held), Hold::Config);
    }
    assert_eq!(running.counted("config"), 14);
    assert!(running.valid_token("b").is_some(), "the sibling is served");

    // The merchant authorizes again: the next attempt succeeds and the
    // hold is over.
    upstream.errcodes.lock().unwrap().remove("a");
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert!(running.valid_token("a").is_some());
    assert_eq!(running.hold("a"), Hold::None);
}

#[tokio::test(start_paused = true)]
async fn a_transient_errcode_is_retried_by_the_engines_backoff() {
    let upstream = Upstream::new(clock());
    upstream.answer("a", -1);
    let running = Running::start(upstream.clone(), Arc::default(), &["a"], 200_000);

    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    let calls = upstream.calls_of("a");
    assert!(
        calls.len() >= 12,
        "retried within a minute each time: {calls:?}"
    );
    for pair in calls.windows(2) {
        assert!(
            pair[1] - pair[0] <= 61_000,
            "the backoff's cap is 60 s: {calls:?}"
        );
    }
    assert_eq!(running.hold("a"), Hold::None);
    assert_eq!(running.counted("errcode") as usize, calls.len());
}

#[tokio::test(start_paused = true)]
async fn the_daily_budget_stops_fetches_and_held_tokens_are_served() {
    let upstream = Upstream::new(clock());
    let store = Arc::new(Memory::default());
    let running = Running::start(upstream.clone(), store.clone(), &["a", "b", "c"], 4);

    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(upstream.total(), 3);
    // The second round: one more fetch fits the budget, two are refused
    // and their tokens served while they live.
    tokio::time::sleep(Duration::from_secs(6_950)).await;
    assert_eq!(upstream.total(), 4, "{:?}", upstream.calls.lock().unwrap());
    assert_eq!(running.counted("budget"), 2);
    let held: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|id| running.hold(id) == Hold::Budget)
        .collect();
    assert_eq!(held.len(), 2, "two held until midnight");
    for id in &held {
        assert!(
            running.valid_token(id).is_some(),
            "{id}: its token is served while valid"
        );
    }
    assert_eq!(
        store.count.lock().unwrap().1,
        4,
        "the store counted each fetch"
    );

    tokio::time::sleep(2 * HOUR).await;
    assert_eq!(upstream.total(), 4, "nothing past the budget");
    tokio::time::sleep(8 * HOUR).await;
    assert!(upstream.total() > 4, "a new Beijing day, a new budget");
    assert!(upstream.calls.lock().unwrap()[4].1 >= MIDNIGHT * 1000);
}

#[tokio::test(start_paused = true)]
async fn a_budget_spent_before_a_restart_stays_spent() {
    let upstream = Upstream::new(clock());
    let store = Arc::new(Memory::default());
    *store.count.lock().unwrap() = (beijing_day(START), 4);
    let running = Running::start(upstream.clone(), store, &["a", "b"], 4);

    tokio::time::sleep(HOUR).await;
    assert_eq!(upstream.total(), 0);
    assert_eq!(running.hold("a"), Hold::Budget);
    assert_eq!(running.hold("b"), Hold::Budget);
}

#[tokio::test(start_paused = true)]
async fn the_writer_keeps_the_token_index_through_refreshes_and_removal() {
    let upstream = Upstream::new(clock());
    let running = Running::start(upstream.clone(), Arc::default(), &["a", "b"], 200_000);
    let owner = |token: &str| {
        running
            .table
            .owner_of(token)
            .map(|slot| slot.id.to_string())
    };

    tokio::time::sleep(Duration::from_secs(60)).await;
    let first = running.valid_token("a").expect("a's first token");
    assert_eq!(owner(&first).as_deref(), Some("a"));
    tokio::time::sleep(2 * HOUR).await;
    let second = running.valid_token("a").expect("a's second token");
    assert_ne!(first, second);
    assert_eq!(owner(&second).as_deref(), Some("a"), "the current token");
    assert_eq!(owner(&first).as_deref(), Some("a"), "the previous token");
    let sibling = running.valid_token("b").unwrap();
    assert_eq!(owner(&sibling).as_deref(), Some("b"));

    running
        .commands
        .send(Command::Unauthorized { id: "a".into() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(owner(&second), None, "a removed child is forgotten");
    assert_eq!(owner(&first), None);
    assert_eq!(owner(&sibling).as_deref(), Some("b"));
    assert!(running.store.records.lock().unwrap().get("a").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_repeated_token_is_asked_for_again_once_it_has_died_not_ahead() {
    let upstream = Upstream::new(clock());
    upstream.repeats.store(true, Ordering::Relaxed);
    let running = Running::start(upstream.clone(), Arc::default(), &["a"], 200_000);

    tokio::time::sleep(HOUR / 60).await;
    let first = running.valid_token("a").expect("a's first token");
    let expiry = upstream.current.lock().unwrap()["a"].1;
    tokio::time::sleep(2 * HOUR + HOUR / 60).await;
    let calls = upstream.calls_of("a");
    let before_expiry = calls.iter().filter(|at| **at < expiry).count();
    // The first fetch, then one ahead of expiry that got the same token
    // back: no more until it died (a chase of what is left would ask
    // again and again, each time sooner).
    assert_eq!(before_expiry, 2, "{calls:?}");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[2] > expiry && calls[2] <= expiry + 2_000, "{calls:?}");
    let second = running.valid_token("a").expect("a's second token");
    assert_ne!(first, second);
    assert_eq!(running.counted("ok"), 3);
}

/// A scheduler like [`Running::start`]'s, its upstream granting `grant`
/// for any exchanged code.
fn exchanging(grant: ChildGrant, ids: &[&str]) -> Running {
    let upstream = Upstream::new(clock());
    *upstream.exchanged.lock().unwrap() = Some(grant);
    Running::start(upstream, Arc::default(), ids, 200_000)
}

fn tokenless(id: &str, code: &str, name: &str) -> ChildGrant {
    ChildGrant {
        id: id.into(),
        access_token: AccessToken::new(""),
        expires_in: 0,
        refresh_token: code.into(),
        name: name.into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_tokenless_grant_is_stored_first_then_fetched_with_at_once_and_renamed_on_change() {
    let running = exchanging(tokenless("corp", "code-1", "Corp A"), &["other"]);
    let authorize = || Command::Authorized {
        id: String::new(),
        code: "auth".into(),
    };
    running.commands.send(authorize()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = running.valid_token("corp").expect("fetched with the code");
    let stored = running.store.records.lock().unwrap()["corp"].clone();
    assert_eq!(
        (stored.refresh_token.as_str(), stored.name.as_str()),
        ("code-1", "Corp A")
    );
    let slot = running.table.get("corp").unwrap();
    assert_eq!(slot.name().as_deref().map(String::as_str), Some("Corp A"));

    // A new grant for a child that holds a valid token (a reset secret):
    // the token is fetched again at once, with the new grant.
    *running.upstream.exchanged.lock().unwrap() = Some(tokenless("corp", "code-2", ""));
    running.commands.send(authorize()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running.upstream.calls_of("corp").len(), 2);
    assert_ne!(running.valid_token("corp").unwrap(), first);
    let stored = running.store.records.lock().unwrap()["corp"].clone();
    assert_eq!(
        (stored.refresh_token.as_str(), stored.name.as_str()),
        ("code-2", "Corp A")
    );

    *running.upstream.name.lock().unwrap() = "Corp B".into();
    running
        .commands
        .send(Command::Describe { id: "corp".into() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slot.name().as_deref().map(String::as_str), Some("Corp B"));
    let stored = running.store.records.lock().unwrap()["corp"].clone();
    assert_eq!(
        (stored.refresh_token.as_str(), stored.name.as_str()),
        ("code-2", "Corp B")
    );
}

#[tokio::test(start_paused = true)]
async fn a_code_exchange_is_retried_through_transient_failures() {
    let running = exchanging(tokenless("corp", "code-1", "Corp A"), &["other"]);
    running
        .upstream
        .exchange_failures
        .store(3, Ordering::Relaxed);
    running
        .commands
        .send(Command::Authorized {
            id: String::new(),
            code: "auth".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        running.valid_token("corp").is_some(),
        "exchanged at the fourth try"
    );
    assert_eq!(
        running.upstream.exchange_failures.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_kind_that_cannot_list_or_needs_no_parent_goes_on_while_the_parent_is_down() {
    let upstream = Upstream::new(clock());
    upstream.parent_down.store(true, Ordering::Relaxed);
    upstream.unlisted.store(true, Ordering::Relaxed);
    let empty = Running::start(upstream.clone(), Arc::default(), &[], 200_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        empty.table.is_loaded(),
        "nothing to recover: the table is complete"
    );

    upstream.parentless.store(true, Ordering::Relaxed);
    let stored = Running::start(upstream.clone(), Arc::default(), &["a"], 200_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        stored.valid_token("a").is_some(),
        "fetched without the parent"
    );
}

#[test]
fn an_answer_without_a_refresh_token_or_name_keeps_the_held_ones() {
    let grant = |refresh: &str| ChildGrant {
        id: "wxa".into(),
        access_token: AccessToken::new("at"),
        expires_in: 7200,
        refresh_token: refresh.into(),
        name: String::new(),
    };
    let kept = record_of(grant(""), ("held", "Corp A"), 1_000, 1_100, 5);
    assert_eq!(kept.refresh_token, "held");
    assert_eq!(kept.name, "Corp A");
    assert_eq!(
        kept.expires_at_ms,
        1_000 + 7_200_000,
        "dated from the request"
    );
    let renamed = ChildGrant {
        name: "Corp B".into(),
        ..grant("new")
    };
    let rotated = record_of(renamed, ("held", "Corp A"), 1_000, 1_100, 5);
    assert_eq!(rotated.refresh_token, "new");
    assert_eq!(rotated.name, "Corp B");
}
