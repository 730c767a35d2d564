//! A platform's authorizers: a compact table the readers see (one small
//! slot per authorizer, its token in an atomic cell) and ONE scheduler task
//! per platform, the table's only writer. Ten thousand engine refreshers
//! would cost a task, a channel and a set of metric series each; the
//! scheduler keeps a due-time index instead and starts at most
//! `fetch_rate` fetches a second, a few at a time.
//!
//! Refresh moments are jittered inside the refresh window, so authorizers
//! recovered or authorized together do not stay together. A warm start
//! with fresh stored tokens makes no fetch at all. Every refresh token is
//! written to the store before the access token that came with it is
//! served, and an empty one never replaces the held one.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::metrics::PlatformMetrics;
use super::store::{AuthorizerRecord, PlatformStore};
use super::upstream::{AuthorizerGrant, ComponentApi};
use crate::broker::backoff::Backoff;
use crate::broker::schedule::{self, Renewal};
use crate::broker::CredentialHandle;
use crate::clock::Clock;
use crate::secret::AccessToken;
use crate::wechat::{self, FetchError};

/// An authorizer's access token as readers see it.
#[derive(Debug)]
pub struct AuthorizerToken {
    pub value: AccessToken,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    pub fetched_at_ms: u64,
}

impl AuthorizerToken {
    pub fn is_valid(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Whole seconds left at `now_ms`.
    pub fn expires_in(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms) / 1000
    }

    pub fn expires_at(&self) -> u64 {
        self.expires_at_ms / 1000
    }
}

/// One authorizer in the readers' table.
pub struct Slot {
    pub appid: Box<str>,
    token: ArcSwapOption<AuthorizerToken>,
    authorized_at: AtomicU64,
}

impl Slot {
    fn new(appid: &str, authorized_at: u64) -> Self {
        Slot {
            appid: appid.into(),
            token: ArcSwapOption::empty(),
            authorized_at: AtomicU64::new(authorized_at),
        }
    }

    pub fn token(&self) -> Option<Arc<AuthorizerToken>> {
        self.token.load_full()
    }

    pub fn authorized_at(&self) -> u64 {
        self.authorized_at.load(Ordering::Relaxed)
    }
}

/// The readers' view: appid to slot, swapped whole when an authorizer
/// comes or goes (rare); a token change touches one slot's cell only.
#[derive(Default)]
pub struct Table {
    slots: ArcSwap<HashMap<Box<str>, Arc<Slot>>>,
    /// Woken whenever a token is published or an authorizer removed.
    pub changed: Notify,
    /// Set once the stored (or recovered) authorizers are in: until then
    /// an unknown appid may be one not loaded yet.
    loaded: std::sync::atomic::AtomicBool,
}

impl Table {
    pub fn get(&self, appid: &str) -> Option<Arc<Slot>> {
        self.slots.load().get(appid).cloned()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.slots.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every slot, ordered by appid (stable pages for listing).
    pub fn sorted(&self) -> Vec<Arc<Slot>> {
        let mut all: Vec<Arc<Slot>> = self.slots.load().values().cloned().collect();
        all.sort_unstable_by(|a, b| a.appid.cmp(&b.appid));
        all
    }

    /// Calls `f` with each slot, without copying the table.
    pub fn for_each(&self, mut f: impl FnMut(&Slot)) {
        for slot in self.slots.load().values() {
            f(slot);
        }
    }

    /// The token a client holds, if it is one of ours: whose it is.
    pub fn owner_of(&self, token: &str) -> Option<Arc<Slot>> {
        self.slots
            .load()
            .values()
            .find(|slot| {
                slot.token
                    .load()
                    .as_ref()
                    .is_some_and(|held| held.value.expose() == token)
            })
            .cloned()
    }

    fn insert_many(&self, slots: Vec<Arc<Slot>>) {
        if slots.is_empty() {
            return;
        }
        let mut next = HashMap::clone(&self.slots.load());
        for slot in slots {
            next.insert(slot.appid.clone(), slot);
        }
        self.slots.store(Arc::new(next));
    }

    fn remove(&self, appid: &str) {
        let mut next = HashMap::clone(&self.slots.load());
        if next.remove(appid).is_some() {
            self.slots.store(Arc::new(next));
        }
        self.changed.notify_waiters();
    }
}

/// What the scheduler is asked to do.
pub enum Command {
    /// `authorized`/`updateauthorized`: exchange the code.
    Authorized { appid: String, code: String },
    /// `unauthorized`: the authorizer's tokens are dead.
    Unauthorized { appid: String },
    /// A client reports `reported` rejected by WeChat; `reply` says
    /// whether a refresh was scheduled for it.
    Invalidate {
        appid: String,
        reported: String,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
}

/// Fixed behaviour tests need to change.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerTuning {
    /// Authorizer fetches a second, at most (per fleet with a shared store).
    pub fetch_rate: u32,
    /// Fetches in flight at once.
    pub concurrency: usize,
    /// A reported token younger than this is not refreshed (WeChat keeps
    /// a replaced token valid a while; a burst of reports is one refresh).
    pub min_forced_interval: Duration,
}

impl Default for SchedulerTuning {
    fn default() -> Self {
        SchedulerTuning {
            fetch_rate: 20,
            concurrency: 4,
            min_forced_interval: Duration::from_secs(30),
        }
    }
}

/// How long after a failure an authorizer is tried again, at most.
const MAX_RETRY: Duration = Duration::from_secs(600);
/// `api_get_authorizer_list`'s largest page.
const LIST_PAGE: u64 = 500;

/// The scheduler's own state of one authorizer.
struct Entry {
    refresh_token: Box<str>,
    due_ms: u64,
    failures: u32,
    in_flight: bool,
    /// Paces the fetches while upstream grants lifetimes no longer than
    /// `refresh_before` (DESIGN.md section 17); reset by a normal one.
    short_lifetimes: Backoff,
}

enum Outcome {
    Refreshed {
        appid: Box<str>,
        result: Result<AuthorizerRecord, FetchError>,
    },
    /// The fleet refreshed it already, or holds it right now.
    Settled {
        appid: Box<str>,
        record: Option<AuthorizerRecord>,
    },
    Authorized(Result<AuthorizerRecord, FetchError>),
    Recovered(Result<Vec<AuthorizerRecord>, FetchError>),
}

pub struct Scheduler {
    name: Arc<str>,
    refresh_before: Duration,
    api: ComponentApi,
    component: CredentialHandle,
    store: Arc<dyn PlatformStore>,
    table: Arc<Table>,
    metrics: PlatformMetrics,
    clock: Clock,
    entries: HashMap<Box<str>, Entry>,
    due: BTreeSet<(u64, Box<str>)>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    in_flight: JoinSet<Outcome>,
    tuning: SchedulerTuning,
    interval: Duration,
    next_start: Instant,
    component_wait: Duration,
    short_lifetimes: ShortLifetimes,
}

pub struct SchedulerParts {
    pub name: Arc<str>,
    pub refresh_before: Duration,
    pub api: ComponentApi,
    pub component: CredentialHandle,
    pub store: Arc<dyn PlatformStore>,
    pub table: Arc<Table>,
    pub metrics: PlatformMetrics,
    pub clock: Clock,
    pub commands: mpsc::Receiver<Command>,
    pub cancel: CancellationToken,
    pub tuning: SchedulerTuning,
    pub component_wait: Duration,
}

/// When an authorizer token fetched at `fetched_ms`, dying at
/// `expires_ms`, is refreshed: when the engine would refresh an access
/// token (`refresh_before` ahead, never in the first half of its life),
/// moved earlier by a random part of a quarter of its life so that tokens
/// fetched together are not all refreshed together.
pub fn due_ms(refresh_before: Duration, fetched_ms: u64, expires_ms: u64, jitter: f64) -> u64 {
    let lifetime = expires_ms.saturating_sub(fetched_ms);
    let latest = schedule::due_ms(Renewal::Ahead, refresh_before, fetched_ms, expires_ms);
    let spread = (lifetime / 4).min(latest.saturating_sub(fetched_ms + lifetime / 2));
    latest.saturating_sub((spread as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// A fraction in [0, 1) that spreads refresh moments: a hash of the
/// authorizer and its token's fetch time, not a random draw, so every
/// broker of a fleet holding the same token picks the same moment. One of
/// them then refreshes; the others find the lock taken, and adopt the new
/// token from the shared store seconds later instead of serving the
/// replaced one until their own, later moment.
pub fn jitter(appid: &str, fetched_ms: u64) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(appid.as_bytes())
        .chain_update(fetched_ms.to_be_bytes())
        .finalize();
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl Scheduler {
    pub fn new(parts: SchedulerParts) -> Self {
        let rate = parts.tuning.fetch_rate.max(1);
        let short_lifetimes = ShortLifetimes {
            platform: parts.name.clone(),
            refresh_before: parts.refresh_before,
            authorizers: 0,
        };
        Scheduler {
            name: parts.name,
            refresh_before: parts.refresh_before,
            api: parts.api,
            component: parts.component,
            store: parts.store,
            table: parts.table,
            metrics: parts.metrics,
            clock: parts.clock,
            entries: HashMap::new(),
            due: BTreeSet::new(),
            commands: parts.commands,
            cancel: parts.cancel,
            in_flight: JoinSet::new(),
            tuning: parts.tuning,
            interval: Duration::from_secs(1) / rate,
            next_start: Instant::now(),
            component_wait: parts.component_wait,
            short_lifetimes,
        }
    }

    /// Loads the stored authorizers (or recovers them all from WeChat when
    /// there are none), then refreshes each when due until cancelled. A
    /// fetch in flight at cancellation runs to its end and is stored.
    pub async fn run(mut self) {
        let stored = match self.store.load_authorizers().await {
            Ok(records) => records,
            Err(err) => {
                error!(platform = %self.name, error = %err, "cannot read the stored authorizers; recovering them from wechat");
                Vec::new()
            }
        };
        if stored.is_empty() {
            self.start_recovery();
        } else {
            info!(platform = %self.name, authorizers = stored.len(), "loaded stored authorizers");
            self.adopt_all(stored);
            self.table.mark_loaded();
        }
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(outcome) = joined {
                        self.finish(outcome).await;
                    }
                }
                Some(command) = self.commands.recv() => self.command(command).await,
                () = tokio::time::sleep_until(wake) => self.start_due(),
            }
        }
        while let Some(joined) = self.in_flight.join_next().await {
            if let Ok(outcome) = joined {
                self.finish(outcome).await;
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        if self.in_flight.len() >= self.tuning.concurrency {
            return far;
        }
        match self.due.first() {
            Some((due_ms, _)) => self.clock.instant_at_ms(*due_ms).max(self.next_start),
            None => far,
        }
    }

    fn schedule(&mut self, appid: &str, due_ms: u64) {
        if let Some(entry) = self.entries.get_mut(appid) {
            self.due.remove(&(entry.due_ms, appid.into()));
            entry.due_ms = due_ms;
            if !entry.in_flight {
                self.due.insert((due_ms, appid.into()));
            }
        }
    }

    fn due_for(&self, appid: &str, token: Option<&AuthorizerToken>) -> u64 {
        match token {
            Some(token) if token.is_valid(self.now_ms()) => due_ms(
                self.refresh_before,
                token.fetched_at_ms,
                token.expires_at_ms,
                jitter(appid, token.fetched_at_ms),
            ),
            _ => self.now_ms(),
        }
    }

    /// Takes records (stored, recovered or freshly fetched) into the
    /// table and the schedule. A token whose times no broker could have
    /// written is dropped and its authorizer refreshed at once with the
    /// record's refresh token, which is kept: it is the one thing that
    /// cannot be had again without the merchant.
    fn adopt_all(&mut self, records: Vec<AuthorizerRecord>) {
        let now = self.now_ms();
        let mut new_slots = Vec::new();
        let (mut implausible, mut problem) = (0usize, None);
        for record in records {
            if record.refresh_token.is_empty() {
                continue;
            }
            let record = match record.token_implausible(now) {
                None => record,
                Some(found) => {
                    implausible += 1;
                    problem.get_or_insert((record.appid.clone(), found));
                    record.without_token()
                }
            };
            let token = (!record.access_token.is_empty()).then(|| {
                Arc::new(AuthorizerToken {
                    value: AccessToken::new(record.access_token.clone()),
                    expires_at_ms: record.expires_at_ms,
                    fetched_at_ms: record.fetched_at_ms,
                })
            });
            let slot = match self.table.get(&record.appid) {
                Some(slot) => slot,
                None => {
                    let slot = Arc::new(Slot::new(&record.appid, record.authorized_at));
                    new_slots.push(slot.clone());
                    slot
                }
            };
            slot.authorized_at
                .store(record.authorized_at, Ordering::Relaxed);
            if token.is_some() {
                slot.token.store(token.clone());
            }
            let due = self.due_for(&record.appid, token.as_deref().or(slot.token().as_deref()));
            let appid: Box<str> = record.appid.as_str().into();
            let entry = self.entries.entry(appid.clone()).or_insert_with(|| Entry {
                refresh_token: Box::default(),
                due_ms: due,
                failures: 0,
                in_flight: false,
                short_lifetimes: Backoff::default(),
            });
            entry.refresh_token = record.refresh_token.into();
            entry.failures = 0;
            let due = match token.as_deref() {
                Some(token) => {
                    self.short_lifetimes
                        .pace(&appid, &mut entry.short_lifetimes, token, now, due)
                }
                None => due,
            };
            self.schedule(&appid, due);
        }
        if let Some((appid, problem)) = problem {
            error!(
                platform = %self.name, authorizers = implausible, first = %appid, %problem,
                "refusing stored authorizer tokens no broker could have written; refreshing them with their refresh tokens"
            );
        }
        self.table.insert_many(new_slots);
        self.table.changed.notify_waiters();
    }

    fn start_due(&mut self) {
        let now = self.now_ms();
        while self.in_flight.len() < self.tuning.concurrency && Instant::now() >= self.next_start {
            let Some((due_ms, appid)) = self.due.first().cloned() else {
                return;
            };
            if due_ms > now {
                return;
            }
            self.due.remove(&(due_ms, appid.clone()));
            let Some(entry) = self.entries.get_mut(&appid) else {
                continue;
            };
            entry.in_flight = true;
            self.next_start = self.next_start.max(Instant::now()) + self.interval;
            let held = self.table.get(&appid).and_then(|slot| slot.token());
            let task = RefreshTask {
                api: self.api.clone(),
                component: self.component.clone(),
                store: self.store.clone(),
                clock: self.clock,
                wait: self.component_wait,
                rate: self.tuning.fetch_rate,
                appid: appid.clone(),
                refresh_token: entry.refresh_token.clone(),
                held_fetched_at_ms: held.map_or(0, |t| t.fetched_at_ms),
                authorized_at: self
                    .table
                    .get(&appid)
                    .map_or(0, |slot| slot.authorized_at()),
            };
            self.in_flight.spawn(task.run());
        }
    }

    async fn finish(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Refreshed { appid, result } => {
                let known = self.entries.get_mut(&appid).map(|entry| {
                    entry.in_flight = false;
                });
                if known.is_none() {
                    // Unauthorized while the fetch ran: it stays gone.
                    let _ = self.store.remove_authorizer(&appid).await;
                    return;
                }
                match result {
                    Ok(record) => {
                        self.count("ok");
                        self.adopt_all(vec![record]);
                    }
                    Err(err) => {
                        self.count(err.result_label());
                        self.failed(&appid, &err);
                    }
                }
                self.maybe_compact().await;
            }
            Outcome::Settled { appid, record } => {
                if let Some(entry) = self.entries.get_mut(&appid) {
                    entry.in_flight = false;
                }
                match record {
                    Some(record) => self.adopt_all(vec![record]),
                    // Another broker holds it: look again shortly.
                    None => {
                        let later = self.now_ms() + 2_000;
                        self.schedule(&appid, later);
                    }
                }
            }
            Outcome::Authorized(Ok(record)) => {
                self.count("ok");
                info!(platform = %self.name, authorizer = %record.appid, "authorizer authorized");
                self.adopt_all(vec![record]);
            }
            Outcome::Authorized(Err(err)) => {
                self.count(err.result_label());
                warn!(platform = %self.name, error = %err, "could not exchange an authorization code");
            }
            Outcome::Recovered(Ok(records)) => {
                info!(platform = %self.name, authorizers = records.len(), "recovered authorizers from api_get_authorizer_list");
                self.adopt_all(records);
                self.table.mark_loaded();
            }
            Outcome::Recovered(Err(err)) => {
                warn!(platform = %self.name, error = %err, "authorizer recovery failed; trying again");
                self.start_recovery();
            }
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .authorizer_fetches
            .with_label_values(&[&self.name, result])
            .inc();
    }

    /// Backoff per authorizer: 1 s doubling to 10 minutes, jittered. A
    /// refresh token WeChat refuses is kept (it is the only one there
    /// is) and tried again rarely.
    fn failed(&mut self, appid: &str, err: &FetchError) {
        let Some(entry) = self.entries.get_mut(appid) else {
            return;
        };
        entry.failures = entry.failures.saturating_add(1);
        let cap = MAX_RETRY.as_millis() as u64;
        let backoff = 1000u64.saturating_mul(1 << entry.failures.min(16)).min(cap);
        let wait = rand::thread_rng().gen_range(backoff / 2..=backoff);
        warn!(platform = %self.name, authorizer = appid, error = %err, retry_in_ms = wait, "authorizer token refresh failed");
        let due = self.now_ms() + wait;
        self.schedule(appid, due);
    }

    async fn maybe_compact(&mut self) {
        if !self.store.wants_compaction(self.entries.len()) {
            return;
        }
        let records: Vec<AuthorizerRecord> = self
            .entries
            .iter()
            .map(|(appid, entry)| {
                let slot = self.table.get(appid);
                let token = slot.as_ref().and_then(|slot| slot.token());
                AuthorizerRecord {
                    appid: appid.to_string(),
                    refresh_token: entry.refresh_token.to_string(),
                    access_token: token
                        .as_ref()
                        .map(|t| t.value.expose().to_owned())
                        .unwrap_or_default(),
                    expires_at_ms: token.as_ref().map_or(0, |t| t.expires_at_ms),
                    fetched_at_ms: token.as_ref().map_or(0, |t| t.fetched_at_ms),
                    authorized_at: slot.map_or(0, |slot| slot.authorized_at()),
                }
            })
            .collect();
        if let Err(err) = self.store.compact(&records).await {
            warn!(platform = %self.name, error = %err, "could not compact the authorizer journal");
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Authorized { appid, code } => {
                let task = AuthorizeTask {
                    api: self.api.clone(),
                    component: self.component.clone(),
                    store: self.store.clone(),
                    clock: self.clock,
                    wait: self.component_wait,
                    appid,
                    code,
                };
                self.in_flight.spawn(task.run());
            }
            Command::Unauthorized { appid } => {
                if let Some(entry) = self.entries.remove(appid.as_str()) {
                    self.due.remove(&(entry.due_ms, appid.as_str().into()));
                    self.short_lifetimes.forget(&entry.short_lifetimes);
                }
                self.table.remove(&appid);
                if let Err(err) = self.store.remove_authorizer(&appid).await {
                    warn!(platform = %self.name, authorizer = %appid, error = %err, "could not remove an unauthorized authorizer from the store");
                }
                info!(platform = %self.name, authorizer = %appid, "authorizer unauthorized; dropped");
            }
            Command::Invalidate {
                appid,
                reported,
                reply,
            } => {
                let now = self.now_ms();
                let token = self.table.get(&appid).and_then(|slot| slot.token());
                let refresh = token.as_ref().is_some_and(|token| {
                    token.value.expose() == reported
                        && now.saturating_sub(token.fetched_at_ms)
                            >= self.tuning.min_forced_interval.as_millis() as u64
                });
                let _ = reply.send(refresh);
                if let Some(token) = token.filter(|_| refresh) {
                    info!(platform = %self.name, authorizer = %appid, token = %token.value.fingerprint(), "authorizer token reported rejected; refreshing");
                    self.schedule(&appid, now);
                }
            }
        }
    }

    fn start_recovery(&mut self) {
        let task = RecoverTask {
            name: self.name.clone(),
            api: self.api.clone(),
            component: self.component.clone(),
            store: self.store.clone(),
            wait: self.component_wait,
            cancel: self.cancel.clone(),
        };
        self.in_flight.spawn(task.run());
    }
}

/// DESIGN.md section 17 for authorizers: a token living no longer than
/// `refresh_before` is served while it lives, but its authorizer's next
/// fetch is paced by the error backoff (1 s doubling to 60 s), never by
/// the lifetime. The anomaly is logged once per platform, when the first
/// authorizer meets it, and its end once, when the last is past it: ten
/// thousand authorizers given short tokens make two lines, not one each.
struct ShortLifetimes {
    platform: Arc<str>,
    refresh_before: Duration,
    /// Authorizers whose latest token was short-lived.
    authorizers: usize,
}

impl ShortLifetimes {
    /// When the authorizer holding `token` (just adopted, due at `due`)
    /// is fetched next; `pace` is its own backoff.
    fn pace(
        &mut self,
        appid: &str,
        pace: &mut Backoff,
        token: &AuthorizerToken,
        now_ms: u64,
        due: u64,
    ) -> u64 {
        let lifetime =
            Duration::from_millis(token.expires_at_ms.saturating_sub(token.fetched_at_ms));
        if !schedule::is_short_lifetime(lifetime, self.refresh_before) {
            self.forget(pace);
            pace.reset();
            return due;
        }
        let first = pace.is_reset();
        let wait = pace.next_pace();
        if first {
            self.authorizers += 1;
            if self.authorizers == 1 {
                error!(
                    platform = %self.platform, first = appid,
                    lifetime = ?lifetime, refresh_before = ?self.refresh_before,
                    "upstream granted an authorizer token a lifetime no longer than refresh_before; serving such tokens while they live, pacing their next fetches by the error backoff"
                );
            }
        }
        schedule::paced_due_ms(due, now_ms, wait)
    }

    /// An authorizer past the anomaly, or gone.
    fn forget(&mut self, pace: &Backoff) {
        if !pace.is_reset() {
            self.authorizers = self.authorizers.saturating_sub(1);
            if self.authorizers == 0 {
                info!(platform = %self.platform, "authorizer token lifetimes are longer than refresh_before again");
            }
        }
    }
}

/// The valid component token, waiting for one.
async fn component_token(
    component: &CredentialHandle,
    wait: Duration,
) -> Result<crate::secret::AccessToken, FetchError> {
    component
        .token(wait)
        .await
        .map(|record| record.value.clone())
        .map_err(|err| FetchError::Parent(format!("component token: {err}")))
}

/// A component token WeChat rejected is reported to its refresher.
async fn report_rejection(component: &CredentialHandle, token: &AccessToken, err: &FetchError) {
    if let FetchError::Api { errcode, .. } = err {
        if wechat::is_token_rejected(*errcode) {
            let _ = component
                .report_rejected(token.expose(), Duration::from_secs(1))
                .await;
        }
    }
}

fn record_of(
    grant: AuthorizerGrant,
    held_refresh: &str,
    sent_ms: u64,
    now_ms: u64,
    authorized_at: u64,
) -> AuthorizerRecord {
    // An answer without a refresh token keeps the held one: an empty value
    // never replaces a good one.
    let refresh_token = if grant.refresh_token.is_empty() {
        held_refresh.to_owned()
    } else {
        grant.refresh_token
    };
    AuthorizerRecord {
        appid: grant.appid,
        refresh_token,
        access_token: grant.access_token.expose().to_owned(),
        expires_at_ms: sent_ms.saturating_add(grant.expires_in.saturating_mul(1000)),
        fetched_at_ms: now_ms,
        authorized_at,
    }
}

struct RefreshTask {
    api: ComponentApi,
    component: CredentialHandle,
    store: Arc<dyn PlatformStore>,
    clock: Clock,
    wait: Duration,
    rate: u32,
    appid: Box<str>,
    refresh_token: Box<str>,
    held_fetched_at_ms: u64,
    authorized_at: u64,
}

impl RefreshTask {
    async fn run(mut self) -> Outcome {
        let appid = self.appid.clone();
        if self.store.is_shared() {
            match self.fleet_check().await {
                Ok(Some(refresh_token)) => self.refresh_token = refresh_token.into(),
                Ok(None) => {}
                Err(outcome) => return outcome,
            }
        }
        let result = self.fetch().await;
        if self.store.is_shared() {
            let _ = self.store.unlock_authorizer(&appid).await;
        }
        Outcome::Refreshed { appid, result }
    }

    /// In a fleet: another broker holds this authorizer, or refreshed it
    /// already (adopt that), or the fleet's rate is spent this second; else
    /// the lock is ours, and the fleet's refresh token (the one WeChat
    /// holds, whoever rotated it last) is what to fetch with, unless the
    /// held one is newer.
    async fn fleet_check(&self) -> Result<Option<String>, Outcome> {
        let settled = |record| {
            Err(Outcome::Settled {
                appid: self.appid.clone(),
                record,
            })
        };
        if !self
            .store
            .lock_authorizer(&self.appid)
            .await
            .unwrap_or(false)
        {
            return settled(None);
        }
        let shared = self
            .store
            .shared_authorizer(&self.appid)
            .await
            .ok()
            .flatten();
        if let Some(shared) = &shared {
            let now = self.clock.now_ms();
            let fresher = shared.fetched_at_ms > self.held_fetched_at_ms
                && !shared.access_token.is_empty()
                && shared.expires_at_ms > now
                && shared.token_implausible(now).is_none();
            if fresher {
                let _ = self.store.unlock_authorizer(&self.appid).await;
                return settled(Some(shared.clone()));
            }
        }
        if !self.store.fetch_permit(self.rate).await.unwrap_or(true) {
            let _ = self.store.unlock_authorizer(&self.appid).await;
            return settled(None);
        }
        // A record older than the one held (a promoted replica that missed
        // the last write) carries a refresh token that may be spent: keep
        // the held one then.
        Ok(shared
            .filter(|shared| shared.fetched_at_ms >= self.held_fetched_at_ms)
            .map(|shared| shared.refresh_token)
            .filter(|refresh| !refresh.is_empty()))
    }

    async fn fetch(&self) -> Result<AuthorizerRecord, FetchError> {
        let token = component_token(&self.component, self.wait).await?;
        let sent = self.clock.now_ms();
        let grant = self
            .api
            .authorizer_token(token.expose(), &self.appid, &self.refresh_token)
            .await;
        let grant = match grant {
            Ok(grant) => grant,
            Err(err) => {
                report_rejection(&self.component, &token, &err).await;
                return Err(err);
            }
        };
        let record = record_of(
            grant,
            &self.refresh_token,
            sent,
            self.clock.now_ms(),
            self.authorized_at,
        );
        // Durable before it is served: the refresh token may have rotated.
        if let Err(err) = self
            .store
            .save_authorizers(std::slice::from_ref(&record))
            .await
        {
            error!(authorizer = %self.appid, error = %err, "could not store an authorizer's refresh token; keeping it in memory and serving");
        }
        Ok(record)
    }
}

struct AuthorizeTask {
    api: ComponentApi,
    component: CredentialHandle,
    store: Arc<dyn PlatformStore>,
    clock: Clock,
    wait: Duration,
    appid: String,
    code: String,
}

impl AuthorizeTask {
    async fn run(self) -> Outcome {
        Outcome::Authorized(self.exchange().await)
    }

    async fn exchange(&self) -> Result<AuthorizerRecord, FetchError> {
        let token = component_token(&self.component, self.wait).await?;
        let sent = self.clock.now_ms();
        let grant = match self.api.query_auth(token.expose(), &self.code).await {
            Ok(grant) => grant,
            Err(err) => {
                report_rejection(&self.component, &token, &err).await;
                return Err(err);
            }
        };
        if grant.appid != self.appid {
            warn!(pushed = %self.appid, answered = %grant.appid, "api_query_auth answered for another authorizer than the push named");
        }
        if grant.refresh_token.is_empty() {
            return Err(FetchError::Malformed(
                "api_query_auth answered without a refresh token".into(),
            ));
        }
        let now = self.clock.now_ms();
        let record = record_of(grant, "", sent, now, now / 1000);
        self.store
            .save_authorizers(std::slice::from_ref(&record))
            .await
            .map_err(|err| FetchError::Transport(format!("store: {err}")))?;
        Ok(record)
    }
}

struct RecoverTask {
    name: Arc<str>,
    api: ComponentApi,
    component: CredentialHandle,
    store: Arc<dyn PlatformStore>,
    wait: Duration,
    cancel: CancellationToken,
}

impl RecoverTask {
    async fn run(self) -> Outcome {
        // Recovery waits as long as it takes for the component token (the
        // first verify ticket may be minutes away), but not past shutdown.
        let token = loop {
            match component_token(&self.component, self.wait).await {
                Ok(token) => break token,
                Err(_) if self.cancel.is_cancelled() => {
                    return Outcome::Recovered(Ok(Vec::new()));
                }
                Err(_) => {
                    tokio::select! {
                        () = self.cancel.cancelled() => return Outcome::Recovered(Ok(Vec::new())),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        Outcome::Recovered(self.pages(token).await)
    }

    async fn pages(&self, token: AccessToken) -> Result<Vec<AuthorizerRecord>, FetchError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .api
                .authorizer_list(token.expose(), offset, LIST_PAGE)
                .await?;
            let fetched = page.list.len() as u64;
            let records: Vec<AuthorizerRecord> = page
                .list
                .into_iter()
                .filter(|listed| !listed.refresh_token.is_empty())
                .map(|listed| AuthorizerRecord {
                    appid: listed.authorizer_appid,
                    refresh_token: listed.refresh_token,
                    access_token: String::new(),
                    expires_at_ms: 0,
                    fetched_at_ms: 0,
                    authorized_at: listed.auth_time,
                })
                .collect();
            // Each page is durable before the next is asked for.
            if let Err(err) = self.store.save_recovered(&records).await {
                error!(platform = %self.name, error = %err, "could not store recovered refresh tokens");
            }
            all.extend(records);
            offset += fetched;
            info!(platform = %self.name, recovered = all.len(), total = page.total_count, "authorizer list page");
            if fetched == 0 || offset >= page.total_count {
                break;
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_spread_inside_the_window_and_never_early() {
        let before = Duration::from_secs(300);
        let (fetched, expires) = (0, 7_200_000);
        assert_eq!(due_ms(before, fetched, expires, 0.0), 6_900_000);
        assert_eq!(due_ms(before, fetched, expires, 1.0), 6_900_000 - 1_800_000);
        let mid = due_ms(before, fetched, expires, 0.5);
        assert!(mid > 5_100_000 && mid < 6_900_000);
        // A short lifetime never refreshes in its first half.
        assert!(due_ms(before, 0, 400_000, 1.0) >= 200_000);
    }

    #[test]
    fn jitter_is_the_same_on_every_broker_and_spreads() {
        assert_eq!(jitter("wxa", 1_000), jitter("wxa", 1_000));
        let values: Vec<f64> = (0..1000).map(|i| jitter(&format!("wx{i}"), 7)).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below a half");
    }

    #[test]
    fn an_answer_without_a_refresh_token_keeps_the_held_one() {
        let grant = |refresh: &str| AuthorizerGrant {
            appid: "wxa".into(),
            access_token: AccessToken::new("at"),
            expires_in: 7200,
            refresh_token: refresh.into(),
        };
        let kept = record_of(grant(""), "held", 1_000, 1_100, 5);
        assert_eq!(kept.refresh_token, "held");
        assert_eq!(
            kept.expires_at_ms,
            1_000 + 7_200_000,
            "dated from the request"
        );
        let rotated = record_of(grant("new"), "held", 1_000, 1_100, 5);
        assert_eq!(rotated.refresh_token, "new");
    }

    #[test]
    fn short_lifetimes_are_paced_and_counted_once_per_authorizer() {
        let mut short = ShortLifetimes {
            platform: Arc::from("saas"),
            refresh_before: Duration::from_secs(8),
            authorizers: 0,
        };
        let token = |fetched_at_ms, lifetime_ms| AuthorizerToken {
            value: AccessToken::new("at"),
            expires_at_ms: fetched_at_ms + lifetime_ms,
            fetched_at_ms,
        };
        let (mut a, mut b) = (Backoff::default(), Backoff::default());
        // A 2 s token is due after 1 s by its lifetime; the pace decides.
        assert_eq!(short.pace("a", &mut a, &token(0, 2_000), 0, 1_000), 1_000);
        assert_eq!(
            short.pace("a", &mut a, &token(1_000, 2_000), 1_000, 2_000),
            3_000
        );
        assert_eq!(
            short.pace("a", &mut a, &token(3_000, 2_000), 3_000, 4_000),
            7_000
        );
        assert_eq!(short.pace("b", &mut b, &token(0, 2_000), 0, 1_000), 1_000);
        assert_eq!(short.authorizers, 2, "each authorizer counted once");
        // A normal lifetime ends the anomaly for its authorizer.
        let normal = token(10_000, 7_200_000);
        assert_eq!(
            short.pace("a", &mut a, &normal, 10_000, 5_000_000),
            5_000_000
        );
        assert!(a.is_reset());
        assert_eq!(short.authorizers, 1);
        short.forget(&b);
        assert_eq!(short.authorizers, 0);
    }
}
