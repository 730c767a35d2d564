//! A family's scheduler: the one task per parent that writes its table.
//! It keeps a due-time index instead of a task per child, starts at most
//! `fetch_rate` fetches a second, a few at a time, and applies the
//! engine's policy to each child apart: a child refused for a cause only
//! its owner, an operator or the next Beijing day can fix is held, and
//! its siblings keep refreshing.
//!
//! Refresh moments are jittered inside the refresh window, so children
//! recovered or authorized together do not stay together. A warm start
//! with fresh stored tokens makes no fetch at all. Every durable grant is
//! written to the store before the access token that came with it is
//! served, and an empty one never replaces the held one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument, Span};

use super::index::Recent;
use super::policy::{self, Failed, FetchBudget, LogGate};
use super::record::{ChildRecord, ChildStore};
use super::source::ChildSource;
use super::table::{ChildToken, Hold, Slot, Table};
use crate::clock::{next_beijing_midnight, Clock};
use crate::engine::backoff::Backoff;
use crate::engine::schedule::{self, Renewal};
use crate::errors::Chain;
use crate::secret::AccessToken;
use crate::wechat::ErrorClass;

/// What the scheduler is asked to do.
pub enum Command {
    /// A pushed authorization: exchange the code. `id` is the child the
    /// push named, or empty when the push names none (the exchange's
    /// answer says whose code it was).
    Authorized { id: String, code: String },
    /// Upstream says the child changed: re-read what it is called.
    Describe { id: String },
    /// A pushed revocation: the child's tokens are dead.
    Unauthorized { id: String },
    /// A client reports `reported` rejected by WeChat; `reply` says
    /// whether a refresh was scheduled for it.
    Invalidate {
        id: String,
        reported: String,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
}

/// Fixed behaviour tests need to change.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerTuning {
    /// Child fetches a second, at most (per fleet with a shared store).
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

/// How soon a child another broker of the fleet is refreshing is looked
/// at again.
const FLEET_RECHECK: Duration = Duration::from_secs(2);

/// The scheduler's own state of one child.
struct Entry {
    refresh_token: Box<str>,
    due_ms: u64,
    in_flight: bool,
    hold: Hold,
    /// Transient failures since the last success (rule 5's backoff).
    backoff: Backoff,
    /// Paces the fetches while upstream grants lifetimes no longer than
    /// `refresh_before` (DESIGN.md section 17); reset by a normal one.
    short_lifetimes: Backoff,
    /// The tokens the index still finds besides the current one.
    recent: Recent,
}

/// The counter a family's fetches are counted on, with the parent's
/// label value: `{parent,result}`, results from [`policy::RESULT_LABELS`].
#[derive(Clone)]
pub struct FetchCounter {
    pub counter: prometheus::IntCounterVec,
    pub parent: Arc<str>,
}

impl FetchCounter {
    fn count(&self, result: &str) {
        self.counter
            .with_label_values(&[&self.parent, result])
            .inc();
    }
}

pub struct SchedulerParts {
    /// What a child is, in log lines: "authorizer".
    pub kind: &'static str,
    /// Carries the parent's name into every line the scheduler and its
    /// fetches log.
    pub span: Span,
    pub refresh_before: Duration,
    pub source: Arc<dyn ChildSource>,
    pub store: Arc<dyn ChildStore>,
    pub table: Arc<Table>,
    pub fetches: FetchCounter,
    pub clock: Clock,
    pub commands: mpsc::Receiver<Command>,
    pub cancel: CancellationToken,
    pub tuning: SchedulerTuning,
    /// Child fetches a Beijing day, and the configuration key that sets it.
    pub daily_budget: u32,
    pub budget_key: String,
}

pub struct Scheduler {
    kind: &'static str,
    span: Span,
    refresh_before: Duration,
    source: Arc<dyn ChildSource>,
    store: Arc<dyn ChildStore>,
    table: Arc<Table>,
    fetches: FetchCounter,
    clock: Clock,
    entries: HashMap<Box<str>, Entry>,
    due: BTreeSet<(u64, Box<str>)>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    in_flight: JoinSet<Outcome>,
    tuning: SchedulerTuning,
    interval: Duration,
    next_start: Instant,
    budget: Arc<FetchBudget>,
    short_lifetimes: ShortLifetimes,
    log_gate: LogGate,
}

/// When a child token fetched at `fetched_ms`, dying at `expires_ms`, is
/// refreshed: when the engine would refresh an access token
/// (`refresh_before` ahead, never in the first half of its life), moved
/// earlier by a random part of a quarter of its life so that tokens
/// fetched together are not all refreshed together.
pub fn due_ms(refresh_before: Duration, fetched_ms: u64, expires_ms: u64, jitter: f64) -> u64 {
    let lifetime = expires_ms.saturating_sub(fetched_ms);
    let latest = schedule::due_ms(Renewal::Ahead, refresh_before, fetched_ms, expires_ms);
    let spread = (lifetime / 4).min(latest.saturating_sub(fetched_ms + lifetime / 2));
    latest.saturating_sub((spread as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// A fraction in [0, 1) that spreads refresh moments: a hash of the
/// child and its token's fetch time, not a random draw, so every broker
/// of a fleet holding the same token picks the same moment. One of them
/// then refreshes; the others find the lock taken, and adopt the new
/// token from the shared store seconds later instead of serving the
/// replaced one until their own, later moment.
pub fn jitter(id: &str, fetched_ms: u64) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(id.as_bytes())
        .chain_update(fetched_ms.to_be_bytes())
        .finalize();
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl Scheduler {
    pub fn new(parts: SchedulerParts) -> Self {
        let rate = parts.tuning.fetch_rate.max(1);
        let budget = Arc::new(FetchBudget::new(
            parts.daily_budget,
            parts.budget_key,
            parts.store.clone(),
            parts.clock.now_secs(),
        ));
        Scheduler {
            kind: parts.kind,
            span: parts.span,
            refresh_before: parts.refresh_before,
            source: parts.source,
            store: parts.store,
            table: parts.table,
            fetches: parts.fetches,
            clock: parts.clock,
            entries: HashMap::new(),
            due: BTreeSet::new(),
            commands: parts.commands,
            cancel: parts.cancel,
            in_flight: JoinSet::new(),
            tuning: parts.tuning,
            interval: Duration::from_secs(1) / rate,
            next_start: Instant::now(),
            budget,
            short_lifetimes: ShortLifetimes {
                kind: parts.kind,
                refresh_before: parts.refresh_before,
                children: 0,
            },
            log_gate: LogGate::default(),
        }
    }

    /// Loads the stored children (or recovers them all from upstream
    /// when there are none), then refreshes each when due until
    /// cancelled. A fetch in flight at cancellation runs to its end and
    /// is stored.
    pub async fn run(self) {
        let span = self.span.clone();
        self.serve().instrument(span).await;
    }

    async fn serve(mut self) {
        let stored = match self.store.load_children().await {
            Ok(records) => records,
            Err(err) => {
                error!(error = %Chain(&err), "cannot read the stored {}s; recovering them from wechat", self.kind);
                Vec::new()
            }
        };
        self.budget.restore(self.clock.now_secs()).await;
        if stored.is_empty() {
            self.start_recovery();
        } else {
            info!(children = stored.len(), "loaded stored {}s", self.kind);
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

    fn schedule(&mut self, id: &str, due_ms: u64) {
        if let Some(entry) = self.entries.get_mut(id) {
            self.due.remove(&(entry.due_ms, id.into()));
            entry.due_ms = due_ms;
            if !entry.in_flight {
                self.due.insert((due_ms, id.into()));
            }
        }
    }

    fn due_for(&self, id: &str, token: Option<&ChildToken>) -> u64 {
        match token {
            Some(token) if token.is_valid(self.now_ms()) => due_ms(
                self.refresh_before,
                token.fetched_at_ms,
                token.expires_at_ms,
                jitter(id, token.fetched_at_ms),
            ),
            _ => self.now_ms(),
        }
    }

    /// Takes records (stored, recovered or freshly fetched) into the
    /// table, the token index and the schedule. A token whose times no
    /// broker could have written is dropped and its child refreshed at
    /// once with the record's durable grant, which is kept: it is the one
    /// thing that cannot be had again without the merchant. A child whose
    /// record arrives with a token is no longer held.
    fn adopt_all(&mut self, records: Vec<ChildRecord>) {
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
                Arc::new(ChildToken {
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
            slot.set_authorized_at(record.authorized_at);
            slot.set_name(&record.name);
            let held = slot.token();
            // Upstream answered with the token already held (WeCom hands
            // out its cached token until it expires): asking again before
            // it dies would get it again, so the next fetch is when it has
            // died upstream too. It is no anomaly, whatever time it has left.
            let repeated = token
                .as_ref()
                .zip(held.as_ref())
                .is_some_and(|(new, held)| new.value == held.value);
            let due = self.due_for(&record.appid, token.as_deref().or(held.as_deref()));
            let id: Box<str> = record.appid.as_str().into();
            let entry = self.entries.entry(id.clone()).or_insert_with(|| Entry {
                refresh_token: Box::default(),
                due_ms: due,
                in_flight: false,
                hold: Hold::None,
                backoff: Backoff::default(),
                short_lifetimes: Backoff::default(),
                recent: Recent::default(),
            });
            entry.refresh_token = record.refresh_token.into();
            let due = match token {
                Some(token) => {
                    self.table.install(&slot, token.clone(), &mut entry.recent);
                    entry.backoff.reset();
                    entry.hold = Hold::None;
                    slot.set_hold(Hold::None);
                    if repeated {
                        schedule::due_ms(
                            Renewal::AtExpiry,
                            self.refresh_before,
                            token.fetched_at_ms,
                            token.expires_at_ms,
                        )
                    } else {
                        self.short_lifetimes
                            .pace(&id, &mut entry.short_lifetimes, &token, now, due)
                    }
                }
                None => due,
            };
            self.schedule(&id, due);
        }
        if let Some((id, problem)) = problem {
            error!(
                children = implausible, first = %id, %problem,
                "refusing stored {} tokens no broker could have written; refreshing them with their refresh tokens",
                self.kind
            );
        }
        self.table.insert_many(new_slots);
        self.table.changed.notify_waiters();
    }

    fn start_due(&mut self) {
        let now = self.now_ms();
        while self.in_flight.len() < self.tuning.concurrency && Instant::now() >= self.next_start {
            let Some((due_ms, id)) = self.due.first().cloned() else {
                return;
            };
            if due_ms > now {
                return;
            }
            self.due.remove(&(due_ms, id.clone()));
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.in_flight = true;
            self.next_start = self.next_start.max(Instant::now()) + self.interval;
            let slot = self.table.get(&id);
            let task = RefreshTask {
                source: self.source.clone(),
                store: self.store.clone(),
                budget: self.budget.clone(),
                clock: self.clock,
                rate: self.tuning.fetch_rate,
                id: id.clone(),
                refresh_token: entry.refresh_token.clone(),
                held_fetched_at_ms: slot
                    .as_ref()
                    .and_then(|slot| slot.token())
                    .map_or(0, |t| t.fetched_at_ms),
                authorized_at: slot.as_ref().map_or(0, |slot| slot.authorized_at()),
                name: slot
                    .and_then(|slot| slot.name())
                    .map(|name| name.to_string())
                    .unwrap_or_default(),
                kind: self.kind,
            };
            self.in_flight
                .spawn(task.run().instrument(self.span.clone()));
        }
    }

    async fn finish(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Refreshed { id, result } => {
                let known = self.entries.get_mut(&id).map(|entry| {
                    entry.in_flight = false;
                });
                if known.is_none() {
                    // Unauthorized while the fetch ran: it stays gone.
                    let _ = self.store.remove_child(&id).await;
                    return;
                }
                match result {
                    Ok(record) => {
                        self.fetches.count("ok");
                        self.adopt_all(vec![record]);
                    }
                    Err(failed) => {
                        self.fetches
                            .count(failed.result_label(self.source.as_ref()));
                        self.failed(&id, &failed);
                    }
                }
                self.maybe_compact().await;
            }
            Outcome::Settled { id, record } => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.in_flight = false;
                }
                match record {
                    Some(record) => self.adopt_all(vec![record]),
                    // Another broker holds it: look again shortly.
                    None => {
                        let later = self.now_ms() + FLEET_RECHECK.as_millis() as u64;
                        self.schedule(&id, later);
                    }
                }
            }
            Outcome::Authorized(Ok(record)) => {
                self.fetches.count("ok");
                info!(id = %record.appid, "{} authorized", self.kind);
                let id = record.appid.clone();
                let tokenless = record.access_token.is_empty();
                self.adopt_all(vec![record]);
                // A grant that came without a token (WeCom's permanent
                // code) is fetched with at once: a token the replaced
                // grant fetched may have died with it.
                if tokenless {
                    let now = self.now_ms();
                    self.schedule(&id, now);
                }
            }
            Outcome::Described { id, result } => match result {
                Ok(name) => {
                    if let Some(slot) = self.table.get(&id) {
                        slot.set_name(&name);
                    }
                    if let Some(record) = self.current_record(&id) {
                        if let Err(err) = self.store.save_children(&[record]).await {
                            warn!(id = %id, error = %Chain(&err), "could not store a {}'s new description", self.kind);
                        }
                    }
                }
                Err(err) => {
                    warn!(id = %id, error = %Chain(&err), "could not re-read a changed {}", self.kind)
                }
            },
            Outcome::Authorized(Err(err)) => {
                self.fetches
                    .count(Failed::Upstream(err.clone()).result_label(self.source.as_ref()));
                warn!(error = %Chain(&err), "could not exchange an authorization code");
            }
            Outcome::Recovered(Ok(records)) => {
                info!(
                    children = records.len(),
                    "recovered {}s from the upstream list", self.kind
                );
                self.adopt_all(records);
                self.table.mark_loaded();
            }
            Outcome::Recovered(Err(err)) => {
                warn!(error = %Chain(&err), "{} recovery failed; trying again", self.kind);
                self.start_recovery();
            }
        }
    }

    /// Rule 5 per child: a transient failure waits by the engine's
    /// backoff (1 s doubling to 60 s, full jitter); a configuration
    /// errcode holds it 10 minutes; WeChat's quota (45009) or a spent
    /// budget hold it until Beijing midnight. Its siblings are not
    /// touched. A durable grant WeChat refuses is kept: it is the only
    /// one there is.
    fn failed(&mut self, id: &str, failed: &Failed) {
        let now = self.now_ms();
        let midnight_ms = next_beijing_midnight(now / 1000).saturating_mul(1000);
        let until_midnight = Duration::from_millis(midnight_ms.saturating_sub(now));
        let source = self.source.clone();
        let failure = failed.failure(source.as_ref());
        let hold = failed.hold(source.as_ref());
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let wait = schedule::failure_wait(failure, until_midnight, || entry.backoff.next_delay());
        entry.hold = hold;
        if let Some(slot) = self.table.get(id) {
            slot.set_hold(hold);
        }
        self.log_failure(id, failed, wait, now);
        let due = now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        self.schedule(id, due);
    }

    /// One line per failure, naming the errcode and the fix; a cause
    /// many children meet at once is logged once a minute with how many
    /// lines were left out.
    fn log_failure(&mut self, id: &str, failed: &Failed, wait: Duration, now_ms: u64) {
        let kind = self.kind;
        let err = match failed {
            // The budget logs itself, once a day.
            Failed::BudgetSpent => return,
            Failed::Upstream(err) => err,
        };
        let cause = err.errcode_label();
        let Some(left_out) = self.log_gate.admit(cause, now_ms) else {
            return;
        };
        let retry_in = humantime::format_duration(Duration::from_secs(wait.as_secs()));
        match policy::class_of(err, self.source.as_ref()) {
            ErrorClass::Retry => {
                warn!(id, error = %Chain(&err), %retry_in, left_out, "{kind} token refresh failed; retrying")
            }
            ErrorClass::Config => error!(
                id,
                errcode = err.errcode(),
                fix = policy::fix_of(err, self.source.as_ref()).unwrap_or_default(),
                error = %Chain(&err),
                %retry_in,
                left_out,
                "{kind} token refresh refused: it needs an operator or its owner, not retries; one attempt per 10 minutes"
            ),
            ErrorClass::QuotaExhausted => error!(
                id,
                errcode = err.errcode(),
                %retry_in,
                left_out,
                "wechat daily quota reached (45009) for this {kind}: no attempt until Beijing midnight"
            ),
        }
    }

    async fn maybe_compact(&mut self) {
        if !self.store.wants_compaction(self.entries.len()) {
            return;
        }
        let records: Vec<ChildRecord> = self
            .entries
            .keys()
            .filter_map(|id| self.current_record(id))
            .collect();
        if let Err(err) = self.store.compact(&records).await {
            warn!(error = %Chain(&err), "could not compact the {} journal", self.kind);
        }
    }

    /// Child `id`'s record as the scheduler and the table hold it now.
    fn current_record(&self, id: &str) -> Option<ChildRecord> {
        let entry = self.entries.get(id)?;
        let slot = self.table.get(id);
        let token = slot.as_ref().and_then(|slot| slot.token());
        Some(ChildRecord {
            appid: id.to_owned(),
            refresh_token: entry.refresh_token.to_string(),
            access_token: token
                .as_ref()
                .map(|t| t.value.expose().to_owned())
                .unwrap_or_default(),
            expires_at_ms: token.as_ref().map_or(0, |t| t.expires_at_ms),
            fetched_at_ms: token.as_ref().map_or(0, |t| t.fetched_at_ms),
            authorized_at: slot.as_ref().map_or(0, |slot| slot.authorized_at()),
            name: slot
                .and_then(|slot| slot.name())
                .map(|name| name.to_string())
                .unwrap_or_default(),
        })
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Authorized { id, code } => {
                let task = AuthorizeTask {
                    source: self.source.clone(),
                    store: self.store.clone(),
                    clock: self.clock,
                    cancel: self.cancel.clone(),
                    id,
                    code,
                };
                self.in_flight
                    .spawn(task.run().instrument(self.span.clone()));
            }
            Command::Describe { id } => {
                let Some(entry) = self.entries.get(id.as_str()) else {
                    return;
                };
                let task = DescribeTask {
                    source: self.source.clone(),
                    id: id.into(),
                    refresh_token: entry.refresh_token.clone(),
                };
                self.in_flight
                    .spawn(task.run().instrument(self.span.clone()));
            }
            Command::Unauthorized { id } => {
                let recent = match self.entries.remove(id.as_str()) {
                    Some(entry) => {
                        self.due.remove(&(entry.due_ms, id.as_str().into()));
                        self.short_lifetimes.forget(&entry.short_lifetimes);
                        entry.recent
                    }
                    None => Recent::default(),
                };
                self.table.remove(&id, &recent);
                if let Err(err) = self.store.remove_child(&id).await {
                    warn!(id = %id, error = %Chain(&err), "could not remove an unauthorized {} from the store", self.kind);
                }
                info!(id = %id, "{} unauthorized; dropped", self.kind);
            }
            Command::Invalidate {
                id,
                reported,
                reply,
            } => {
                let now = self.now_ms();
                let token = self.table.get(&id).and_then(|slot| slot.token());
                // A held child stays held: a report cannot buy an attempt
                // that the hold refuses.
                let held = self
                    .entries
                    .get(id.as_str())
                    .is_some_and(|entry| entry.hold != Hold::None);
                let refresh = !held
                    && token.as_ref().is_some_and(|token| {
                        token.value.expose() == reported
                            && now.saturating_sub(token.fetched_at_ms)
                                >= self.tuning.min_forced_interval.as_millis() as u64
                    });
                let _ = reply.send(refresh);
                if let Some(token) = token.filter(|_| refresh) {
                    info!(id = %id, token = %token.value.fingerprint(), "{} token reported rejected; refreshing", self.kind);
                    self.schedule(&id, now);
                }
            }
        }
    }

    fn start_recovery(&mut self) {
        let task = RecoverTask {
            kind: self.kind,
            source: self.source.clone(),
            store: self.store.clone(),
            cancel: self.cancel.clone(),
        };
        self.in_flight
            .spawn(task.run().instrument(self.span.clone()));
    }
}

/// DESIGN.md section 17 for children: a token living no longer than
/// `refresh_before` is served while it lives, but its child's next fetch
/// is paced by the error backoff (1 s doubling to 60 s), never by the
/// lifetime. The anomaly is logged once per parent, when the first child
/// meets it, and its end once, when the last is past it: ten thousand
/// children given short tokens make two lines, not one each.
struct ShortLifetimes {
    kind: &'static str,
    refresh_before: Duration,
    /// Children whose latest token was short-lived.
    children: usize,
}

impl ShortLifetimes {
    /// When the child holding `token` (just adopted, due at `due`) is
    /// fetched next; `pace` is its own backoff.
    fn pace(
        &mut self,
        id: &str,
        pace: &mut Backoff,
        token: &ChildToken,
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
            self.children += 1;
            if self.children == 1 {
                error!(
                    first = id,
                    lifetime = ?lifetime, refresh_before = ?self.refresh_before,
                    "upstream granted a {} token a lifetime no longer than refresh_before; serving such tokens while they live, pacing their next fetches by the error backoff",
                    self.kind
                );
            }
        }
        schedule::paced_due_ms(due, now_ms, wait)
    }

    /// A child past the anomaly, or gone.
    fn forget(&mut self, pace: &Backoff) {
        if !pace.is_reset() {
            self.children = self.children.saturating_sub(1);
            if self.children == 0 {
                info!(
                    "{} token lifetimes are longer than refresh_before again",
                    self.kind
                );
            }
        }
    }
}

mod tasks;
#[cfg(test)]
mod tests;

use tasks::{AuthorizeTask, DescribeTask, Outcome, RecoverTask, RefreshTask};
