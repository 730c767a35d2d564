//! The refresher: one task per credential, its only writer, run as its
//! [`CredentialSpec`] says. It waits for the next deadline (proactive
//! refresh, a retry, a stable-grant re-check), for an invalidation, for a
//! check of its held token ([`checks`]), or for cancellation, and calls
//! upstream at most once at a time, which is what makes every fetch
//! single-flight. Whether it shares the credential with a fleet is its
//! [`coordination`], a strategy; what it publishes and stores goes through
//! the [`Writer`].
//!
//! This file owns the task's state and its loop. What each branch does
//! lives beside it: a fetch and what its answer does to the held
//! credential ([`fetch`]), a failure and the hold it imposes
//! ([`failure`]), a reported rejection and the token fights it reveals
//! ([`invalidation`]), the warm start and the saved count
//! ([`persistence`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};

mod checks;
pub(super) mod coordination;
mod failure;
mod fetch;
mod invalidation;
mod persistence;

pub use checks::TokenChecks;

use self::coordination::{Coordination, Turn};
use self::invalidation::{deferred_due, SeenBy};
use super::backoff::Backoff;
use super::budget::DailyBudget;
use super::handle::WriterCommand;
use super::schedule;
use super::unsaved::Unsaved;
use super::{CredentialHandle, CredentialRecord, CredentialSpec, EngineContext, Writer};
use crate::clock::Clock;
use crate::credential::Credential;
use crate::metrics::AppSeries;
use crate::secret::AccessToken;
use crate::store::StoreKey;
use crate::wechat::TokenSource;

/// The target of the refresher's log lines, whichever of its files
/// writes them: the one name operators filter on. (Its token checks log
/// under their own, `wxbroker::engine::refresher::checks`.)
const LOG_TARGET: &str = "wxbroker::engine::refresher";

pub(super) struct Refresher {
    spec: Arc<CredentialSpec>,
    credential: Credential,
    key: StoreKey,
    source: Arc<dyn TokenSource>,
    /// The counted series of the credential's `app` label.
    series: Arc<AppSeries>,
    clock: Clock,
    /// Publishes, warm-starts and saves.
    writer: Writer,
    commands: mpsc::Receiver<WriterCommand>,
    cancel: CancellationToken,
    budget: DailyBudget,
    /// A count kept here (not on a fleet's counter) that the store lags.
    unsaved: Unsaved,
    backoff: Backoff,
    /// When the next scheduled upstream attempt is due.
    next_attempt: Instant,
    /// Set after a failure: no attempt, forced or not, before this.
    hold_until: Option<Instant>,
    /// The last upstream call made for an invalidation.
    last_forced: Option<Instant>,
    /// A rejected token whose refresh `min_forced_interval` put off, and
    /// when it is allowed: one at a time, later reports merge into it.
    deferred: Option<(AccessToken, Instant)>,
    /// The last token fight seen, for logging once per episode.
    last_fight: Option<Instant>,
    /// When the held token is checked upstream; `None` for credentials
    /// whose source has no check.
    checks: Option<TokenChecks>,
    /// The next periodic check.
    next_check: Instant,
    /// The checks due after a fetch that timed out.
    checks_after_timeout: Vec<Instant>,
    /// A check found the held token rejected and asked for a refresh,
    /// which the next adopted token is the result of.
    check_asked: bool,
    /// The held token came from a refresh a check asked for.
    held_from_check: bool,
}

impl Refresher {
    pub(super) fn new(
        source: Arc<dyn TokenSource>,
        handle: CredentialHandle,
        commands: mpsc::Receiver<WriterCommand>,
        context: &EngineContext,
    ) -> Self {
        let cancel = handle.stopped().clone();
        let spec = handle.spec().clone();
        let mut budget = DailyBudget::new(spec.daily_budget, context.clock.now_secs());
        // Carried over from the credential's previous settings by a
        // reload; the store may lag it (a save that failed), never lead it.
        let seed = handle.view();
        budget.at_least(seed.fetches_day, seed.fetches_today);
        // Only a credential that can be fought over (one with a fight
        // window: an access token) is checked upstream.
        let checks = (spec.fight_window.is_some() && source.token_check().is_some())
            .then(|| context.token_checks.clone());
        let series = context.metrics.app(&spec.name);
        Refresher {
            key: spec.key.clone(),
            budget,
            credential: spec.credential,
            spec,
            source,
            series,
            clock: context.clock,
            writer: Writer::new(handle, context),
            commands,
            cancel,
            unsaved: Unsaved::default(),
            backoff: Backoff::default(),
            next_attempt: Instant::now(),
            hold_until: None,
            last_forced: None,
            deferred: None,
            last_fight: None,
            next_check: Instant::now() + checks.as_ref().map_or(Duration::ZERO, |c| c.every),
            checks,
            checks_after_timeout: Vec::new(),
            check_asked: false,
            held_from_check: false,
        }
    }

    /// Runs until the credential's owner stops, sharing it with others as
    /// `coordination` says. Cancellation is looked at only between pieces
    /// of work, at the `select!`: an upstream fetch that has begun runs to
    /// its end (bounded by `fetch_timeout`) and its token is adopted and
    /// stored before the task ends, because WeChat has already replaced
    /// the token this broker held. It runs inside a span naming the
    /// credential (`app`, `credential`), which its log lines carry.
    #[instrument(
        name = "refresher",
        parent = None,
        skip_all,
        fields(app = %self.spec.name, credential = %self.credential)
    )]
    pub(super) async fn run(mut self, mut coordination: Box<dyn Coordination>) {
        let cancel = self.cancel.clone();
        let coordination = &mut *coordination;
        coordination.start(&mut self).await;
        self.warm_start(coordination).await;
        // A stop that came while a branch's work ran is seen here, before
        // the next wait; one that comes during the wait ends it.
        while !cancel.is_cancelled() {
            let checking = self.checks_tokens();
            let check_at = self.next_check_at();
            tokio::select! {
                () = cancel.cancelled() => break,
                () = coordination.next_result() => coordination.adopt_result(&mut self).await,
                () = deferred_due(&self.deferred) => {
                    if let Some((reported, _)) = self.deferred.take() {
                        self.publish(|view| view.deferred_refresh_at = None);
                        info!(token = %reported.fingerprint(), "running the deferred refresh");
                        self.invalidate(coordination, &reported, false, SeenBy::Deferred).await;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(WriterCommand::Invalidate { reported, defer, reply }) => {
                        let outcome = self.invalidate(coordination, &reported, defer, SeenBy::Client).await;
                        // The asker may have given up; that is fine.
                        let _ = reply.send(outcome);
                    }
                    Some(WriterCommand::ClearQuotaHold) => self.clear_quota_hold(),
                    None => break,
                },
                () = tokio::time::sleep_until(self.next_attempt) => self.scheduled_refresh(coordination).await,
                () = self.unsaved.due(), if self.unsaved.pending() => self.persist().await,
                () = tokio::time::sleep_until(check_at), if checking => self.due_check(coordination).await,
            }
        }
        if self.unsaved.pending() {
            // A restart must not find fewer fetches than were made, if
            // the store can take them by now.
            self.persist().await;
        }
    }

    fn now_secs(&self) -> u64 {
        self.clock.now_secs()
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn current(&self) -> Option<Arc<CredentialRecord>> {
        self.writer.current()
    }

    fn publish(&self, change: impl FnOnce(&mut super::CredentialView)) {
        self.writer.publish(change);
    }

    fn count_store_error(&self, op: &str) {
        self.writer.count_store_error(op);
    }

    /// When the held credential should be replaced (see [`schedule::due_ms`]).
    fn refresh_due(&self, token: &CredentialRecord) -> Instant {
        self.clock.instant_at_ms(schedule::due_ms(
            self.spec.reissue.renewal(),
            self.spec.refresh_before,
            token.fetched_at_ms,
            token.expires_at_ms,
        ))
    }

    async fn scheduled_refresh(&mut self, coordination: &mut dyn Coordination) {
        let pass = match coordination.take_turn(self, None).await {
            Turn::Mine(pass) => pass,
            Turn::Settled | Turn::Later => return,
        };
        let current = self.current();
        let fetched = match self.attempt(coordination, false).await {
            Ok((grant, sent_at)) => {
                let same = current
                    .as_ref()
                    .is_some_and(|token| token.value == grant.token);
                if same && self.answers_held_again() {
                    self.keep_held(grant, sent_at);
                    false
                } else {
                    self.adopt(grant, sent_at);
                    true
                }
            }
            Err(err) => {
                self.on_failure(err);
                false
            }
        };
        coordination.end_turn(self, pass, fetched).await;
    }
}
