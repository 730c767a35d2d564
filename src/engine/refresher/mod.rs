//! The refresher: one task per credential, its only writer, run as its
//! [`CredentialSpec`] says. It waits for the next deadline (proactive
//! refresh, a retry, a stable-grant re-check), for an invalidation, for a
//! check of its held token ([`checks`]), or for cancellation, and calls
//! upstream at most once at a time, which is what makes every fetch
//! single-flight. Whether it shares the credential with a fleet is its
//! [`coordination`], a strategy; what it publishes and stores goes through
//! the [`Writer`].

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument, warn};

mod checks;
pub(super) mod coordination;

pub use checks::TokenChecks;

use self::coordination::{Coordination, Turn};
use super::backoff::Backoff;
use super::budget::DailyBudget;
use super::handle::WriterCommand;
use super::schedule::{self, Failure};
use super::unsaved::Unsaved;
use super::{
    CredentialHandle, CredentialSpec, EngineContext, InvalidateOutcome, LastError, TokenRecord,
    Writer,
};
use crate::clock::{next_beijing_midnight, Clock};
use crate::credential::Credential;
use crate::errors::Chain;
use crate::metrics::Metrics;
use crate::secret::AccessToken;
use crate::store::StoreKey;
use crate::wechat::{ErrorClass, FetchError, TokenGrant, TokenSource, SHORT_LIFETIME_LABEL};

/// A fight is logged once per episode: again only after this long
/// without one.
const FIGHT_EPISODE_GAP: Duration = Duration::from_secs(600);

/// Who saw a token rejected upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SeenBy {
    /// A client's report (an invalidation).
    Client,
    /// The refresher's periodic check.
    Check,
    /// The refresher's check after a fetch that timed out.
    CheckAfterTimeout,
    /// A rejection seen (and counted) before, whose refresh was deferred.
    Deferred,
}

impl SeenBy {
    fn describe(self) -> &'static str {
        match self {
            SeenBy::Client => "a client's report",
            SeenBy::Check => "the broker's own check",
            SeenBy::CheckAfterTimeout => "the broker's own check after a fetch that timed out",
            SeenBy::Deferred => "an earlier rejection",
        }
    }
}

/// When a credential sent for at `sent_at_ms` and granted `expires_in`
/// seconds expires. Checked arithmetic: the lifetime is clamped upstream,
/// but a wrapped sum would make a fresh token look long dead.
fn expiry_ms(sent_at_ms: u64, expires_in: u64) -> u64 {
    sent_at_ms.saturating_add(expires_in.saturating_mul(1000))
}

/// Why an attempt did not produce a token.
enum AttemptError {
    Upstream(FetchError),
    BudgetSpent,
}

pub(super) struct Refresher {
    spec: Arc<CredentialSpec>,
    credential: Credential,
    key: StoreKey,
    source: Arc<dyn TokenSource>,
    metrics: Metrics,
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

/// The deadline of a deferred refresh, or never.
async fn deferred_due(deferred: &Option<(AccessToken, Instant)>) {
    match deferred {
        Some((_, at)) => tokio::time::sleep_until(*at).await,
        None => std::future::pending().await,
    }
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
        if checks.is_some() {
            for result in checks::CHECK_RESULTS {
                context
                    .metrics
                    .token_checks
                    .with_label_values(&[&spec.name, result]);
            }
        }
        Refresher {
            key: spec.key.clone(),
            budget,
            credential: spec.credential,
            spec,
            source,
            metrics: context.metrics.clone(),
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

    fn current(&self) -> Option<Arc<TokenRecord>> {
        self.writer.current()
    }

    fn publish(&self, change: impl FnOnce(&mut super::AppView)) {
        self.writer.publish(change);
    }

    fn count_store_error(&self, op: &str) {
        self.writer.count_store_error(op);
    }

    /// Rule 7: a stored token with more than `refresh_before` left means no
    /// upstream call at all on start.
    async fn warm_start(&mut self, coordination: &mut dyn Coordination) {
        if let Some(token) = self.writer.valid() {
            self.next_attempt = self.refresh_due(&token);
            return;
        }
        let Some((record, token)) = self.writer.warm_start().await else {
            return;
        };
        self.budget.at_least(record.day, record.fetches);
        coordination.restore_count(self).await;
        if let Some(token) = token {
            info!(
                token = %token.value.fingerprint(),
                expires_in = token.expires_in(self.now_ms()),
                "loaded stored token"
            );
            self.next_attempt = self.refresh_due(&token);
            self.publish(|view| view.install(Arc::new(token)));
        }
        self.publish_budget();
    }

    /// When the held credential should be replaced (see [`schedule::due_ms`]).
    fn refresh_due(&self, token: &TokenRecord) -> Instant {
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

    /// Whether upstream answers a fetch with the credential already held
    /// while that one is valid: `stable_token` before its rotation window
    /// (rule 3), and every ticket endpoint (DESIGN.md section 11).
    fn answers_held_again(&self) -> bool {
        self.spec.reissue.repeats_held()
    }

    /// An answer that repeats the held credential is a success, but never
    /// extends its life: it still dies when it first would have (a stable
    /// token answers with what is left, a ticket with its full lifetime
    /// again). Ask again later, never spinning: a stable token after a
    /// fraction of the time left, a ticket when it dies, since until then
    /// upstream hands out the same one ([`schedule::recheck_after`]).
    fn keep_held(&mut self, grant: TokenGrant, sent_at: u64) {
        self.backoff.reset();
        self.hold_until = None;
        let now = self.now_ms();
        let answered_expiry = expiry_ms(sent_at, grant.expires_in);
        let held_expiry = self
            .current()
            .map_or(answered_expiry, |held| held.expires_at_ms)
            .min(answered_expiry);
        let left = Duration::from_millis(held_expiry.saturating_sub(now));
        let wait = schedule::recheck_after(self.spec.reissue.renewal(), left);
        info!(
            value = %grant.token.fingerprint(),
            expires_in = left.as_secs(),
            recheck_in = ?wait,
            "upstream answered with the credential already held; keeping its expiry"
        );
        self.next_attempt = Instant::now() + wait;
        self.publish(|view| {
            if let Some(held) = &view.token {
                view.token = Some(Arc::new(TokenRecord {
                    expires_at_ms: held_expiry,
                    ..(**held).clone()
                }));
            }
            view.clear_failure();
        });
    }

    /// Rule 4: refresh only if `reported` is still current and the last
    /// refresh is older than `min_forced_interval`.
    async fn invalidate(
        &mut self,
        coordination: &mut dyn Coordination,
        reported: &AccessToken,
        defer: bool,
        seen_by: SeenBy,
    ) -> InvalidateOutcome {
        let outcome = self
            .try_invalidate(coordination, reported, defer, seen_by)
            .await;
        self.metrics
            .forced_refreshes
            .with_label_values(&[&self.spec.name, outcome.metric_label()])
            .inc();
        outcome
    }

    async fn try_invalidate(
        &mut self,
        coordination: &mut dyn Coordination,
        reported: &AccessToken,
        defer: bool,
        seen_by: SeenBy,
    ) -> InvalidateOutcome {
        let Some(current) = self.current().filter(|token| token.value == *reported) else {
            return InvalidateOutcome::AlreadyRotated;
        };
        let now = Instant::now();
        let interval = self.spec.min_forced_interval;
        let fetched_ago =
            Duration::from_millis(self.now_ms().saturating_sub(current.fetched_at_ms));
        // A client's report of an older token may have other causes, so
        // it is a fight only within the kind's fight window (WeChat's
        // overlap). The broker's own check asks about the token it holds
        // and did not supersede: its rejection is a fight at any age.
        let fight = match seen_by {
            SeenBy::Client => self
                .spec
                .fight_window
                .is_some_and(|window| fetched_ago < window),
            SeenBy::Check | SeenBy::CheckAfterTimeout => self.spec.fight_window.is_some(),
            // Counted when it was seen.
            SeenBy::Deferred => false,
        };
        if fight {
            self.count_fight(reported, fetched_ago, seen_by);
        }
        // The earliest moment rule 4 allows a refresh of this token.
        let allowed_at = [
            Some(now + interval.saturating_sub(fetched_ago)),
            self.last_forced.map(|at| at + interval),
            self.hold_until,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
        if allowed_at > now {
            if !defer {
                return InvalidateOutcome::RateLimited;
            }
            return self.defer_refresh(reported, allowed_at);
        }
        let pass = match coordination.take_turn(self, Some(reported)).await {
            Turn::Mine(pass) => pass,
            Turn::Settled => return InvalidateOutcome::AlreadyRotated,
            Turn::Later => return InvalidateOutcome::RateLimited,
        };
        self.last_forced = Some(now);
        info!(token = %reported.fingerprint(), "token reported rejected; refreshing");
        let result = match self.attempt(coordination, false).await {
            // A stable-grant ask that hands back the rejected token again
            // means WeChat has not rotated it: only then force (20 a day).
            Ok((grant, _)) if self.spec.reissue.can_force() && grant.token == *reported => {
                self.attempt(coordination, true).await
            }
            other => other,
        };
        let outcome = match result {
            // A ticket endpoint answers with the held ticket while it is
            // valid upstream: there is no newer one to be had.
            Ok((grant, sent_at)) if grant.token == *reported => {
                self.keep_held(grant, sent_at);
                InvalidateOutcome::Unchanged
            }
            Ok((grant, sent_at)) => {
                self.adopt(grant, sent_at);
                InvalidateOutcome::Refreshed
            }
            Err(err) => {
                self.on_failure(err);
                InvalidateOutcome::Failed
            }
        };
        let fetched = outcome == InvalidateOutcome::Refreshed;
        coordination.end_turn(self, pass, fetched).await;
        outcome
    }

    /// Schedules one refresh of `reported` at `at`, merged with any other
    /// already scheduled: callers that saw a rejection were told to retry
    /// then, and nobody else would ask for it.
    fn defer_refresh(&mut self, reported: &AccessToken, at: Instant) -> InvalidateOutcome {
        let at = match &self.deferred {
            Some((_, scheduled)) => (*scheduled).min(at),
            None => {
                warn!(
                    token = %reported.fingerprint(),
                    refresh_in = ?at.saturating_duration_since(Instant::now()),
                    "token rejected upstream but min_forced_interval forbids a refresh now; deferred"
                );
                at
            }
        };
        self.deferred = Some((reported.clone(), at));
        let at_secs = self.now_secs()
            + at.saturating_duration_since(Instant::now())
                .as_secs()
                .max(1);
        self.publish(|view| view.deferred_refresh_at = Some(at_secs));
        InvalidateOutcome::Deferred
    }

    /// A rejection of a token younger than WeChat's overlap, which this
    /// broker did not replace: something else fetches tokens for this
    /// appid (another environment, a fleet with another key prefix).
    fn count_fight(&mut self, reported: &AccessToken, age: Duration, seen_by: SeenBy) {
        self.metrics
            .token_fights
            .with_label_values(&[&self.spec.name])
            .inc();
        let now = Instant::now();
        let new_episode = self
            .last_fight
            .is_none_or(|last| now.duration_since(last) >= FIGHT_EPISODE_GAP);
        self.last_fight = Some(now);
        if new_episode {
            error!(
                appid = %self.key.appid,
                token = %reported.fingerprint(),
                token_age = ?age,
                seen_by = seen_by.describe(),
                "token fight: WeChat rejected a token this broker fetched {}s ago and has not replaced (seen by {}); something else is fetching tokens for this appid (another environment or broker sharing the secret, a fleet with another key_prefix, or a fetch of this broker's that timed out yet was carried out). Make it read from this broker",
                age.as_secs(),
                seen_by.describe()
            );
        }
    }

    /// One upstream call, within the daily budget. Returns the grant and
    /// the unix millisecond the request was sent, the earliest WeChat could
    /// have issued the token, so `expires_at` is never later than WeChat's.
    async fn attempt(
        &mut self,
        coordination: &mut dyn Coordination,
        force_refresh: bool,
    ) -> Result<(TokenGrant, u64), AttemptError> {
        // A credential fetched with another waits for that one first, and
        // without it makes no call and spends nothing.
        self.source.ready().await.map_err(AttemptError::Upstream)?;
        let sent_at = self.now_ms();
        if !coordination.count_fetch(self, sent_at / 1000).await {
            return Err(AttemptError::BudgetSpent);
        }
        self.publish_budget();
        let started = StdInstant::now();
        let result = self.source.fetch(force_refresh).await;
        if matches!(result, Err(FetchError::Timeout(_))) {
            self.check_after_timeout();
        }
        let app = self.spec.name.as_str();
        let credential = self.credential.label();
        self.metrics
            .upstream_fetch_duration
            .with_label_values(&[app])
            .observe(started.elapsed().as_secs_f64());
        let result_label = match &result {
            Ok(_) => "ok",
            Err(err) => err.result_label(),
        };
        self.metrics
            .upstream_fetches
            .with_label_values(&[app, credential, result_label])
            .inc();
        if let Err(err) = &result {
            self.metrics
                .upstream_errors
                .with_label_values(&[app, credential, err.errcode_label()])
                .inc();
        }
        result
            .map(|grant| (grant, sent_at))
            .map_err(AttemptError::Upstream)
    }

    fn adopt(&mut self, grant: TokenGrant, sent_at: u64) {
        let short_lived = schedule::is_short_lifetime(
            Duration::from_secs(grant.expires_in),
            self.spec.refresh_before,
        );
        if !short_lived {
            self.backoff.reset();
        }
        self.hold_until = None;
        self.held_from_check = std::mem::take(&mut self.check_asked);
        let token = TokenRecord {
            value: grant.token,
            expires_at_ms: expiry_ms(sent_at, grant.expires_in),
            fetched_at_ms: self.now_ms(),
        };
        info!(
            grant = self.spec.grant,
            value = %token.value.fingerprint(),
            expires_in = grant.expires_in,
            duration_ms = token.fetched_at_ms.saturating_sub(sent_at),
            "{} refreshed",
            self.credential
        );
        self.next_attempt = self.refresh_due(&token);
        if short_lived {
            self.pace_short_lifetime(grant.expires_in);
        }
        self.publish(|view| {
            view.install(Arc::new(token));
            view.clear_failure();
        });
    }

    /// Section 17: a lifetime no longer than `refresh_before` is an
    /// upstream anomaly. The token is served while it lives, but the next
    /// fetch is paced by the error backoff rather than by the lifetime, so
    /// no answer (`expires_in: 1`, say) can make the refresher spin.
    fn pace_short_lifetime(&mut self, expires_in: u64) {
        let wait = self.backoff.next_pace();
        self.next_attempt = self.next_attempt.max(Instant::now() + wait);
        error!(
            expires_in,
            refresh_before = ?self.spec.refresh_before,
            next_fetch_in = ?wait,
            "upstream granted a lifetime no longer than refresh_before; serving it while it lives, pacing the next fetches by the error backoff"
        );
        self.metrics
            .upstream_errors
            .with_label_values(&[
                &self.spec.name,
                self.credential.label(),
                SHORT_LIFETIME_LABEL,
            ])
            .inc();
    }

    /// Rule 5: what a failure means decides when the next attempt is.
    fn on_failure(&mut self, err: AttemptError) {
        let now = self.now_secs();
        let failure = match &err {
            AttemptError::BudgetSpent => Failure::BudgetSpent,
            AttemptError::Upstream(err) => Failure::Upstream(err.class()),
        };
        let until_midnight = Duration::from_secs(next_beijing_midnight(now) - now);
        let wait = schedule::failure_wait(failure, until_midnight, || self.backoff.next_delay());
        let last_error = self.log_failure(&err, wait);
        let until = Instant::now() + wait;
        self.hold_until = Some(until);
        self.next_attempt = until;
        let retry_at = now + wait.as_secs().max(1);
        // Held: only an operator, or the next Beijing day, can fix it.
        let held = schedule::holds(failure);
        self.publish(|view| {
            view.last_error = Some(last_error);
            view.retry_at = Some(retry_at);
            view.held = held;
        });
    }

    /// Logs a failure with what to do about it; returns it as readers see it.
    fn log_failure(&self, err: &AttemptError, wait: Duration) -> LastError {
        let credential = self.credential;
        let at = self.now_secs();
        let err = match err {
            AttemptError::BudgetSpent => {
                let budget_key = &self.spec.budget_key;
                error!(
                    budget = self.budget.limit(),
                    "{budget_key} spent: no upstream call until Beijing midnight; raise {budget_key} if this is expected"
                );
                return LastError {
                    errcode: None,
                    errmsg: format!(
                        "{budget_key} of {} upstream calls spent; next attempt at Beijing midnight",
                        self.budget.limit()
                    ),
                    at,
                };
            }
            AttemptError::Upstream(err) => err,
        };
        match err.class() {
            ErrorClass::Retry => {
                warn!(error = %Chain(&err), retry_in = ?wait, "{credential} fetch failed; retrying");
            }
            ErrorClass::Config => match err.blocked_ip() {
                Some(ip) => error!(
                    errcode = err.errcode(),
                    blocked_ip = %ip,
                    fix = format!("add {ip} to the IP whitelist of the WeChat console"),
                    error = %Chain(&err),
                    retry_in = ?wait,
                    "{credential} fetch refused: wechat refuses the broker's address {ip}"
                ),
                None => error!(
                    errcode = err.errcode(),
                    fix = err.fix().unwrap_or_default(),
                    error = %Chain(&err),
                    retry_in = ?wait,
                    "{credential} fetch refused: configuration error"
                ),
            },
            ErrorClass::QuotaExhausted => error!(
                errcode = err.errcode(),
                retry_in = ?wait,
                "wechat daily quota reached (45009): no attempt until Beijing midnight"
            ),
        }
        let errmsg = match err {
            FetchError::Api { errmsg, .. } => errmsg.clone(),
            other => other.to_string(),
        };
        LastError {
            errcode: err.errcode(),
            errmsg,
            at,
        }
    }

    /// Lifts a hold that only WeChat's daily quota (45009) imposed, after
    /// an operator reset that quota; any other hold stays.
    fn clear_quota_hold(&mut self) {
        let quota_held = self
            .writer
            .handle()
            .shared
            .view
            .borrow()
            .last_error
            .as_ref()
            .is_some_and(|last| last.errcode == Some(crate::wechat::QUOTA_ERRCODE));
        if !quota_held {
            return;
        }
        info!("wechat quota reset: lifting the 45009 hold; fetching now");
        self.hold_until = None;
        self.next_attempt = Instant::now();
        self.publish(|view| view.clear_failure());
    }

    fn publish_budget(&self) {
        let (used, day) = (self.budget.used(), self.budget.day());
        self.publish(|view| {
            view.fetches_today = used;
            view.fetches_day = day;
        });
    }

    /// Rule 6 and 8: the token and the day's count survive restarts. A
    /// failure is counted.
    async fn save(&mut self) -> Result<(), crate::store::StoreError> {
        let (day, fetches) = (self.budget.day(), self.budget.used());
        self.writer.save(day, fetches).await?;
        self.unsaved.saved();
        Ok(())
    }

    /// [`Refresher::save`] of a count kept here: the count in memory stays
    /// the authority, and a store that failed gets it again soon.
    async fn persist(&mut self) {
        if let Err(err) = self.save().await {
            let retry_in = self.unsaved.failed();
            warn!(error = %Chain(&err), ?retry_in, fetches_today = self.budget.used(), "could not persist token state; keeping it in memory");
        }
    }

    /// Serves `stored`, a token another broker fetched and stored.
    fn take_stored(&mut self, stored: TokenRecord) {
        info!(
            token = %stored.value.fingerprint(),
            expires_in = stored.expires_in(self.now_ms()),
            "adopted the fleet's token"
        );
        self.next_attempt = self.refresh_due(&stored);
        self.backoff.reset();
        self.hold_until = None;
        // Another broker's token: no check of ours asked for it.
        self.check_asked = false;
        self.held_from_check = false;
        self.publish(|view| {
            view.install(Arc::new(stored));
            view.clear_failure();
        });
    }
}
