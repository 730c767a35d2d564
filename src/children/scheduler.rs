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
//!
//! This file holds the run loop and the starting of due refreshes; what
//! the scheduler is asked ([`Command`]), what its tasks come to, the
//! records it takes in and writes back, and when each child is due
//! ([`due_ms`]) have a file each.

mod commands;
mod outcomes;
mod pacing;
mod records;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument, Span};

use super::index::Recent;
use super::policy::{self, FetchBudget, LogGate};
use super::record::ChildStore;
use super::source::ChildSource;
use super::table::{ChildToken, Hold, Table};
use crate::clock::Clock;
use crate::engine::backoff::Backoff;
use crate::errors::Chain;
use pacing::ShortLifetimes;
use tasks::{Outcome, RecoverTask, RefreshTask};

pub use commands::Command;
pub use pacing::{due_ms, jitter};

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
            short_lifetimes: ShortLifetimes::new(parts.kind, parts.refresh_before),
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
