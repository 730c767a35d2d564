//! One credential's handle: its readers' lock-free cell and published
//! view, and the command channel to its writer (a refresher, or a
//! follower), the only one.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{
    CredentialRecord, CredentialSpec, CredentialView, EngineContext, InvalidateOutcome, TokenError,
};
use crate::clock::Clock;
use crate::credential::Credential;
use crate::secret::AccessToken;

/// One credential's read side (an app's access token or ticket, a
/// platform's component token), as its [`CredentialSpec`] describes it.
/// Cheap to clone.
#[derive(Clone)]
pub struct CredentialHandle {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) spec: Arc<CredentialSpec>,
    /// The current token, for the read path: an atomic load, no lock.
    /// Only the writer stores into it, together with `view`.
    pub(super) current: ArcSwapOption<CredentialRecord>,
    pub(super) view: watch::Sender<CredentialView>,
    pub(super) commands: mpsc::Sender<WriterCommand>,
    pub(super) clock: Clock,
    pub(super) cancel: CancellationToken,
    /// Cancelled when the writer's task has ended.
    pub(super) finished: CancellationToken,
}

/// Invalidations waiting for the writer beyond this many are refused
/// with the current token, which is what they would have got anyway.
const COMMAND_QUEUE: usize = 4096;

/// What a handle asks of its credential's writer (a refresher or a
/// follower).
pub(super) enum WriterCommand {
    Invalidate {
        reported: AccessToken,
        /// Schedule the refresh for later when it is not allowed now.
        defer: bool,
        reply: oneshot::Sender<InvalidateOutcome>,
    },
    /// WeChat's daily quota was reset (`clear_quota`): a 45009 hold is
    /// over, and the next attempt is due now.
    ClearQuotaHold,
}

impl CredentialHandle {
    /// What the engine knows of the credential.
    pub fn spec(&self) -> &Arc<CredentialSpec> {
        &self.shared.spec
    }

    pub fn credential(&self) -> Credential {
        self.shared.spec.credential
    }

    /// The owner's name: the app or platform.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    pub fn now_secs(&self) -> u64 {
        self.shared.clock.now_secs()
    }

    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// The current token if it is valid now. Never waits.
    pub fn valid_token(&self) -> Option<Arc<CredentialRecord>> {
        self.valid_token_at(self.now_ms())
    }

    /// The current token if it is valid at `now_ms`. Never waits.
    pub fn valid_token_at(&self, now_ms: u64) -> Option<Arc<CredentialRecord>> {
        self.shared
            .current
            .load_full()
            .filter(|token| token.is_valid(now_ms))
    }

    /// `f` of the current token if it is valid at `now_ms`, without taking
    /// a reference to it: the token API's hot path. Never waits.
    pub fn with_valid_token<R>(
        &self,
        now_ms: u64,
        f: impl FnOnce(&CredentialRecord) -> R,
    ) -> Option<R> {
        let current = self.shared.current.load();
        current
            .as_deref()
            .filter(|token| token.is_valid(now_ms))
            .map(f)
    }

    /// Whether `token` is the credential's current token or one of its
    /// last few.
    pub fn knows(&self, token: &str) -> bool {
        self.shared.view.borrow().knows(token)
    }

    /// A snapshot of the credential's state.
    pub fn view(&self) -> CredentialView {
        self.shared.view.borrow().clone()
    }

    /// A receiver of the views the writer publishes: `borrow` is the
    /// current one, `changed` resolves at the next publish. A publish does
    /// not always change the token (the daily count, a retry time), so
    /// compare before acting.
    pub fn subscribe(&self) -> watch::Receiver<CredentialView> {
        self.shared.view.subscribe()
    }

    /// A valid token, waiting up to `wait` for one when there is none. A
    /// credential held after a failure that waiting cannot fix (a configuration
    /// error, 45009, the budget spent) answers at once: a caller learns the
    /// cause now rather than after its own timeout.
    pub async fn token(&self, wait: Duration) -> Result<Arc<CredentialRecord>, TokenError> {
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

    /// Reports `reported` as rejected by WeChat. The writer has a new
    /// token fetched only if `reported` is still the current one (see
    /// [`InvalidateOutcome`]); concurrent reports of one token make one fetch.
    ///
    /// Waits at most `wait` for the writer's answer. Past it, a caller
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
    /// received (a forwarded call). Like [`Self::invalidate`], but a
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
        let command = WriterCommand::Invalidate {
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

    /// Tells the refresher that WeChat's daily quota was reset: a
    /// credential held after 45009 is fetched at once instead of waiting
    /// for Beijing midnight. Other holds (a configuration error, the
    /// broker's own daily budget) are not WeChat's quota and stay.
    pub fn lift_quota_hold(&self) {
        // A full queue holds invalidations that will wake the refresher
        // anyway; the hold then lifts at midnight as before.
        let _ = self.shared.commands.try_send(WriterCommand::ClearQuotaHold);
    }

    /// The answer to an invalidation the writer did not answer: the
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

impl CredentialHandle {
    /// Runs `writer`, the credential's only writer, on `context.tasks`;
    /// [`CredentialHandle::stop`] learns from `finished` that it ended.
    pub(super) fn run_writer(
        &self,
        context: &EngineContext,
        writer: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let finished = self.shared.finished.clone().drop_guard();
        context.tasks.spawn(async move {
            writer.await;
            drop(finished);
        });
    }

    /// The handle, publishing `seed`, and the receiving end of its
    /// command channel for the writer.
    pub(super) fn new(
        spec: Arc<CredentialSpec>,
        context: &EngineContext,
        seed: CredentialView,
    ) -> (CredentialHandle, mpsc::Receiver<WriterCommand>) {
        let current = ArcSwapOption::new(seed.token.clone());
        let (view, _) = watch::channel(seed);
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let handle = CredentialHandle {
            shared: Arc::new(Shared {
                spec,
                current,
                view,
                commands,
                clock: context.clock,
                cancel: context.cancel.child_token(),
                finished: CancellationToken::new(),
            }),
        };
        (handle, command_rx)
    }

    /// Cancelled when the credential's owner stops (removed by a reload, or
    /// shutdown).
    pub fn stopped(&self) -> &CancellationToken {
        &self.shared.cancel
    }

    /// Stops the credential's writer and waits until it has ended: a
    /// fetch it had begun has finished, and its result is published and
    /// stored.
    pub(super) async fn stop(&self) {
        self.shared.cancel.cancel();
        self.shared.finished.cancelled().await;
    }
}
