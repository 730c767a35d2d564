//! The broker: one [`AppHandle`] per configured app. Each app's refresher
//! task is the only writer of its token; request handlers only read the
//! published [`AppView`] and never call WeChat themselves.

mod backoff;
mod budget;
mod refresher;
mod unsaved;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::AppConfig;
use crate::metrics::{AppLabels, Metrics};
use crate::secret::AccessToken;
use crate::store::{Store, StoredToken};
use crate::wechat::TokenSource;

pub use budget::DailyBudget;
use refresher::{Command, Refresher};

/// A token the broker holds. Times are kept in milliseconds so refresh
/// deadlines do not drift by rounding; the API shows seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub value: AccessToken,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    /// Unix milliseconds.
    pub fetched_at_ms: u64,
}

impl TokenRecord {
    /// Unix seconds, rounded down.
    pub fn expires_at(&self) -> u64 {
        self.expires_at_ms / 1000
    }

    /// Unix seconds, rounded down.
    pub fn fetched_at(&self) -> u64 {
        self.fetched_at_ms / 1000
    }

    /// Whole seconds left, rounded down: a client that trusts it never
    /// uses the token past its expiry.
    pub fn expires_in(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms) / 1000
    }

    pub fn is_valid(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }

    /// As stored: whole seconds, rounded down.
    pub fn to_stored(&self) -> StoredToken {
        StoredToken {
            access_token: self.value.clone(),
            expires_at: self.expires_at(),
            fetched_at: self.fetched_at(),
            fetched_at_ms: self.fetched_at_ms,
        }
    }

    pub fn from_stored(stored: StoredToken) -> Self {
        TokenRecord {
            fetched_at_ms: stored.fetched_ms(),
            expires_at_ms: stored.expires_ms(),
            value: stored.access_token,
        }
    }
}

/// The last upstream failure, as shown in `/v1/apps`, `/readyz` and 503s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub errcode: Option<i64>,
    pub errmsg: String,
    /// Unix seconds.
    pub at: u64,
}

/// What readers see of an app; replaced whole by the refresher.
#[derive(Debug, Clone, Default)]
pub struct AppView {
    pub token: Option<Arc<TokenRecord>>,
    pub last_error: Option<LastError>,
    pub fetches_today: u32,
    /// The Beijing day (`YYYYMMDD`) `fetches_today` counts.
    pub fetches_day: u32,
    /// While failing: the unix second of the next upstream attempt.
    pub retry_at: Option<u64>,
    /// The tokens held before the current one, newest first (a few): a
    /// client may still hold one, and it still tells which app it is for.
    pub previous: Arc<[AccessToken]>,
    /// Set while the app is held after a failure that waiting cannot fix
    /// soon (a configuration error, 45009, the daily budget spent), so
    /// readers are answered at once instead of waiting for a token.
    pub held: bool,
    /// When a refresh deferred by `min_forced_interval` is due: the unix
    /// second a caller told "retry later" may retry.
    pub deferred_refresh_at: Option<u64>,
}

/// How many replaced tokens an [`AppView`] remembers.
const REMEMBERED_TOKENS: usize = 4;

impl AppView {
    /// Makes `token` the current one, remembering the one it replaces.
    pub fn install(&mut self, token: Arc<TokenRecord>) {
        if let Some(old) = self.token.take().filter(|old| old.value != token.value) {
            self.previous = std::iter::once(old.value.clone())
                .chain(self.previous.iter().cloned())
                .take(REMEMBERED_TOKENS)
                .collect();
        }
        self.token = Some(token);
    }

    /// A token arrived: the last failure, its retry time and any hold are
    /// over.
    pub fn clear_failure(&mut self) {
        self.last_error = None;
        self.retry_at = None;
        self.held = false;
    }

    /// Whether `token` is the current token or one of the last few.
    pub fn knows(&self, token: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|current| current.value.expose() == token)
            || self.previous.iter().any(|old| old.expose() == token)
    }

    /// Upstream calls made this Beijing day.
    pub fn fetches_on(&self, now_secs: u64) -> u32 {
        if self.fetches_day == crate::clock::beijing_day(now_secs) {
            self.fetches_today
        } else {
            0
        }
    }

    pub fn valid_token(&self, now_ms: u64) -> Option<&Arc<TokenRecord>> {
        self.token.as_ref().filter(|token| token.is_valid(now_ms))
    }

    /// Whether the app is past its first upstream attempt: it holds a
    /// valid token, or the attempt failed (with the failure recorded).
    pub fn settled(&self, now_ms: u64) -> bool {
        self.valid_token(now_ms).is_some() || self.last_error.is_some()
    }

    /// Why the app has no valid token, or `None` when it has one.
    pub fn unready_reason(&self, now_ms: u64) -> Option<String> {
        if self.valid_token(now_ms).is_some() {
            return None;
        }
        Some(match &self.last_error {
            Some(LastError {
                errcode: Some(code),
                errmsg,
                ..
            }) => format!("errcode {code}: {errmsg}"),
            Some(error) => error.errmsg.clone(),
            None if self.token.is_some() => "token expired; refreshing".to_owned(),
            None => "no token fetched yet".to_owned(),
        })
    }
}

/// Why a reader got no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no valid token yet; next attempt in {retry_after}s")]
    Unavailable {
        retry_after: u64,
        last_error: Option<LastError>,
    },
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidateOutcome {
    /// The reported token was current; a new one was fetched.
    Refreshed,
    /// The reported token is no longer the current one; nothing to do.
    AlreadyRotated,
    /// The reported token was current but the last refresh is too recent
    /// (`min_forced_interval`), or the app is holding off after failures.
    RateLimited,
    /// The refresh was attempted and failed.
    Failed,
    /// The reported token was current but could not be replaced yet; one
    /// refresh is scheduled at the earliest allowed moment (merged with
    /// any other), for a caller that reported a rejection it saw itself.
    Deferred,
    /// The refresher did not answer within the caller's wait (a slow
    /// upstream) or stopped first (a reload, a shutdown), and the reported
    /// token is still the current, valid one. The caller keeps it; a refresh
    /// already begun goes on and is stored.
    Pending,
}

impl InvalidateOutcome {
    /// The outcomes a refresher reports and counts; [`Self::Pending`] is
    /// the caller's own answer, and the refresh it left behind is counted
    /// when it ends.
    pub const ALL: [InvalidateOutcome; 5] = [
        InvalidateOutcome::Refreshed,
        InvalidateOutcome::AlreadyRotated,
        InvalidateOutcome::RateLimited,
        InvalidateOutcome::Failed,
        InvalidateOutcome::Deferred,
    ];

    pub fn metric_label(self) -> &'static str {
        match self {
            InvalidateOutcome::Refreshed => "refreshed",
            InvalidateOutcome::AlreadyRotated => "already_rotated",
            InvalidateOutcome::RateLimited => "rate_limited",
            InvalidateOutcome::Failed => "failed",
            InvalidateOutcome::Deferred => "deferred",
            InvalidateOutcome::Pending => "pending",
        }
    }
}

/// One app's read side. Cheap to clone.
#[derive(Clone)]
pub struct AppHandle {
    shared: Arc<AppShared>,
}

struct AppShared {
    config: Arc<AppConfig>,
    /// The current token, for the read path: an atomic load, no lock.
    /// Only the refresher stores into it, together with `view`.
    current: ArcSwapOption<TokenRecord>,
    view: watch::Sender<AppView>,
    commands: mpsc::Sender<Command>,
    clock: Clock,
    cancel: CancellationToken,
    /// Cancelled when the refresher task has ended.
    finished: CancellationToken,
}

/// Invalidations waiting for the refresher beyond this many are refused
/// with the current token, which is what they would have got anyway.
const COMMAND_QUEUE: usize = 4096;

impl AppHandle {
    pub fn config(&self) -> &AppConfig {
        &self.shared.config
    }

    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    pub fn now_secs(&self) -> u64 {
        self.shared.clock.now_secs()
    }

    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// The current token if it is valid now. Never waits.
    pub fn valid_token(&self) -> Option<Arc<TokenRecord>> {
        self.valid_token_at(self.now_ms())
    }

    /// The current token if it is valid at `now_ms`. Never waits.
    pub fn valid_token_at(&self, now_ms: u64) -> Option<Arc<TokenRecord>> {
        self.shared
            .current
            .load_full()
            .filter(|token| token.is_valid(now_ms))
    }

    /// Whether `token` is the app's current token or one of its last few.
    pub fn knows(&self, token: &str) -> bool {
        self.shared.view.borrow().knows(token)
    }

    /// A snapshot of the app's state.
    pub fn view(&self) -> AppView {
        self.shared.view.borrow().clone()
    }

    /// A receiver of the views the refresher publishes: `borrow` is the
    /// current one, `changed` resolves at the next publish. A publish does
    /// not always change the token (the daily count, a retry time), so
    /// compare before acting.
    pub fn subscribe(&self) -> watch::Receiver<AppView> {
        self.shared.view.subscribe()
    }

    /// A valid token, waiting up to `wait` for one when there is none. An
    /// app held after a failure that waiting cannot fix (a configuration
    /// error, 45009, the budget spent) answers at once: a caller learns the
    /// cause now rather than after its own timeout.
    pub async fn token(&self, wait: Duration) -> Result<Arc<TokenRecord>, TokenError> {
        if let Some(token) = self.valid_token() {
            return Ok(token);
        }
        let mut changes = self.shared.view.subscribe();
        let clock = self.shared.clock;
        let waited = tokio::time::timeout(
            wait,
            changes.wait_for(|view| view.valid_token(clock.now_ms()).is_some() || view.held),
        )
        .await;
        match waited {
            Ok(Ok(view)) => match view.valid_token(clock.now_ms()) {
                Some(token) => Ok(token.clone()),
                None => {
                    drop(view);
                    Err(self.unavailable())
                }
            },
            Ok(Err(_closed)) => Err(TokenError::ShuttingDown),
            Err(_elapsed) => Err(self.unavailable()),
        }
    }

    /// Seconds until a caller told to retry later may: the deferred
    /// refresh, else the next attempt, at least 1.
    pub fn retry_after(&self) -> u64 {
        let view = self.shared.view.borrow();
        let now = self.now_secs();
        seconds_until(view.deferred_refresh_at.or(view.retry_at), now)
    }

    fn unavailable(&self) -> TokenError {
        let view = self.shared.view.borrow();
        let now = self.now_secs();
        TokenError::Unavailable {
            retry_after: seconds_until(view.retry_at, now),
            last_error: view.last_error.clone(),
        }
    }

    /// Reports `reported` as rejected by WeChat. The refresher fetches a new
    /// token only if `reported` is still the current one (see
    /// [`InvalidateOutcome`]); concurrent reports of one token make one fetch.
    ///
    /// Waits at most `wait` for the refresher's answer. Past it, a caller
    /// whose token is still valid gets [`InvalidateOutcome::Pending`] (the
    /// refresh goes on), and only one without a valid token an error.
    pub async fn invalidate(
        &self,
        reported: &str,
        wait: Duration,
    ) -> Result<InvalidateOutcome, TokenError> {
        self.send_invalidate(reported, false, wait).await
    }

    /// Reports `reported` as rejected in an answer the broker itself
    /// received (a forwarded call). Like [`AppHandle::invalidate`], but a
    /// refresh that is not allowed yet is scheduled for the earliest
    /// allowed moment ([`InvalidateOutcome::Deferred`]), since nobody
    /// else will report it: the caller was told to retry later.
    pub async fn report_rejected(
        &self,
        reported: &str,
        wait: Duration,
    ) -> Result<InvalidateOutcome, TokenError> {
        self.send_invalidate(reported, true, wait).await
    }

    async fn send_invalidate(
        &self,
        reported: &str,
        defer: bool,
        wait: Duration,
    ) -> Result<InvalidateOutcome, TokenError> {
        let (reply, outcome) = oneshot::channel();
        let command = Command::Invalidate {
            reported: AccessToken::new(reported),
            defer,
            reply,
        };
        match self.shared.commands.try_send(command) {
            Ok(()) => match tokio::time::timeout(wait, outcome).await {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(_stopped)) => self.unanswered(reported, TokenError::ShuttingDown),
                Err(_elapsed) => self.unanswered(reported, self.unavailable()),
            },
            Err(mpsc::error::TrySendError::Full(_)) => Ok(InvalidateOutcome::RateLimited),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TokenError::ShuttingDown),
        }
    }

    /// Tells the refresher that WeChat's daily quota was reset: an app held
    /// after 45009 fetches at once instead of waiting for Beijing midnight.
    /// Other holds (a configuration error, the broker's own daily budget)
    /// are not WeChat's quota and stay.
    pub fn lift_quota_hold(&self) {
        // A full queue holds invalidations that will wake the refresher
        // anyway; the hold then lifts at midnight as before.
        let _ = self.shared.commands.try_send(Command::ClearQuotaHold);
    }

    /// The answer to an invalidation the refresher did not answer: the
    /// current token, if one is valid, else `err`.
    fn unanswered(&self, reported: &str, err: TokenError) -> Result<InvalidateOutcome, TokenError> {
        match self.valid_token() {
            Some(token) if token.value.expose() == reported => Ok(InvalidateOutcome::Pending),
            Some(_) => Ok(InvalidateOutcome::AlreadyRotated),
            None => Err(err),
        }
    }
}

/// Whole seconds from `now` to `at` for a `Retry-After`: at least 1, and 1
/// when nothing is scheduled.
fn seconds_until(at: Option<u64>, now: u64) -> u64 {
    at.map_or(1, |at| at.saturating_sub(now).max(1))
}

/// Everything a refresher needs besides its app.
#[derive(Clone)]
pub struct BrokerContext {
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub clock: Clock,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
}

/// All configured apps, in configuration order. A reload replaces the set
/// atomically; readers holding a handle finish with it.
#[derive(Clone)]
pub struct Broker {
    apps: Arc<ArcSwap<Vec<AppHandle>>>,
    context: BrokerContext,
    /// Held for a whole [`Broker::reconcile`], awaits included: two
    /// reconciles at once could each start a replacement for one app.
    /// It guards no data; readers never touch it.
    reconciling: Arc<tokio::sync::Mutex<()>>,
}

/// What [`Broker::reconcile`] did, by app name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// New apps, started.
    pub added: Vec<String>,
    /// Apps whose settings changed: restarted, keeping their token when
    /// the appid, kind and grant are the same.
    pub restarted: Vec<String>,
    /// Apps no longer configured, stopped.
    pub removed: Vec<String>,
    /// Apps whose settings are unchanged, untouched.
    pub kept: Vec<String>,
}

impl AppHandle {
    /// Starts the app's refresher on `context.tasks`, publishing `seed`
    /// first (a reload carries the running app's token over).
    fn spawn(
        config: Arc<AppConfig>,
        source: Arc<dyn TokenSource>,
        context: &BrokerContext,
        seed: AppView,
    ) -> AppHandle {
        let current = ArcSwapOption::new(seed.token.clone());
        let (view, _) = watch::channel(seed);
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let handle = AppHandle {
            shared: Arc::new(AppShared {
                config: config.clone(),
                current,
                view,
                commands,
                clock: context.clock,
                cancel: context.cancel.child_token(),
                finished: CancellationToken::new(),
            }),
        };
        let errcodes: Vec<&str> = crate::wechat::errcode_labels().collect();
        let outcomes = InvalidateOutcome::ALL.map(InvalidateOutcome::metric_label);
        context.metrics.init_app(
            &config.name,
            &AppLabels {
                fetch_results: &crate::wechat::RESULT_LABELS,
                errcodes: &errcodes,
                forced_refresh_outcomes: &outcomes,
            },
        );
        let refresher = Refresher::new(config, source, handle.clone(), command_rx, context);
        let finished = handle.shared.finished.clone().drop_guard();
        context.tasks.spawn(async move {
            refresher.run().await;
            drop(finished);
        });
        handle
    }

    /// Cancelled when the app stops (removed by a reload, or shutdown).
    pub fn stopped(&self) -> &CancellationToken {
        &self.shared.cancel
    }

    /// Stops the app's refresher and waits until it has ended: a fetch it
    /// had begun has finished, and its token is published and stored.
    async fn stop(&self) {
        self.shared.cancel.cancel();
        self.shared.finished.cancelled().await;
    }

    /// Whether `other` names the same upstream token (appid, kind, grant),
    /// so a token held for one is good for the other.
    fn same_token_as(&self, other: &AppConfig) -> bool {
        let config = self.config();
        config.appid == other.appid && config.kind == other.kind && config.grant == other.grant
    }
}

impl Broker {
    /// Starts one refresher task per app on `context.tasks`; they stop when
    /// `context.cancel` is cancelled.
    pub fn start(
        apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>,
        context: &BrokerContext,
    ) -> Broker {
        let handles = apps
            .into_iter()
            .map(|(config, source)| AppHandle::spawn(config, source, context, AppView::default()))
            .collect();
        Broker {
            apps: Arc::new(ArcSwap::from_pointee(handles)),
            context: context.clone(),
            reconciling: Arc::default(),
        }
    }

    /// Makes the running apps match `apps`: starts new ones, restarts
    /// changed ones, stops removed ones, and leaves unchanged ones alone
    /// (their tokens and refresh schedules untouched).
    ///
    /// One writer per token, always: a changed app's old refresher is
    /// stopped and waited for (a fetch it had begun finishes and is stored)
    /// before its replacement starts, seeded with the old one's final
    /// state. Until then readers keep the old app, and its token.
    pub async fn reconcile(&self, apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>) -> Reconciled {
        let _one_at_a_time = self.reconciling.lock().await;
        let running = self.apps.load_full();
        let mut report = Reconciled::default();
        let gone: Vec<&AppHandle> = running
            .iter()
            .filter(|app| {
                !apps
                    .iter()
                    .any(|(config, _)| config.name == app.name() && **config == *app.config())
            })
            .collect();
        futures_util::future::join_all(gone.iter().map(|app| app.stop())).await;
        let mut next = Vec::with_capacity(apps.len());
        for (config, source) in apps {
            let name = config.name.clone();
            match running.iter().find(|app| app.name() == name) {
                Some(app) if *app.config() == *config => {
                    next.push(app.clone());
                    report.kept.push(name);
                }
                Some(app) => {
                    let seed = if app.same_token_as(&config) {
                        app.view()
                    } else {
                        AppView::default()
                    };
                    next.push(AppHandle::spawn(config, source, &self.context, seed));
                    report.restarted.push(name);
                }
                None => {
                    next.push(AppHandle::spawn(
                        config,
                        source,
                        &self.context,
                        AppView::default(),
                    ));
                    report.added.push(name);
                }
            }
        }
        self.apps.store(Arc::new(next));
        for app in gone {
            if !report.restarted.iter().any(|name| name == app.name()) {
                self.context.metrics.forget_app(app.name());
                report.removed.push(app.name().to_owned());
            }
        }
        report
    }

    pub fn app(&self, name: &str) -> Option<AppHandle> {
        self.apps
            .load()
            .iter()
            .find(|app| app.name() == name)
            .cloned()
    }

    /// The apps now configured.
    pub fn apps(&self) -> Arc<Vec<AppHandle>> {
        self.apps.load_full()
    }

    /// The app `GET /v1/token` means: the only one, if there is only one.
    pub fn default_app(&self) -> Option<AppHandle> {
        match self.apps.load().as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.apps
            .load()
            .iter()
            .map(|app| app.name().to_owned())
            .collect()
    }

    pub fn now_secs(&self) -> u64 {
        self.context.clock.now_secs()
    }

    pub fn now_ms(&self) -> u64 {
        self.context.clock.now_ms()
    }

    /// Sets the time-dependent gauges; called right before a scrape, since
    /// a token stops being valid without any event to report it.
    pub fn update_gauges(&self) {
        let now = self.now_ms();
        let metrics = &self.context.metrics;
        for app in self.apps.load().iter() {
            let view = app.view();
            let name = app.name();
            let valid = view.valid_token(now).is_some();
            metrics
                .token_valid
                .with_label_values(&[name])
                .set(i64::from(valid));
            if let Some(token) = &view.token {
                metrics
                    .token_expiry
                    .with_label_values(&[name])
                    .set(token.expires_at_ms as f64 / 1000.0);
                // From the token, not the refresh event, so a token loaded
                // on a warm start shows when it was fetched.
                metrics
                    .token_last_refresh
                    .with_label_values(&[name])
                    .set(token.fetched_at_ms as f64 / 1000.0);
            }
            metrics
                .fetches_today
                .with_label_values(&[name])
                .set(i64::from(view.fetches_on(now / 1000)));
            metrics
                .daily_budget
                .with_label_values(&[name])
                .set(i64::from(app.config().daily_budget));
        }
    }
}

#[cfg(test)]
mod tests;
