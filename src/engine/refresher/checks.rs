//! The refresher's own check of the token it holds (DESIGN.md section 21):
//! a fight is seen without waiting for a client to report one. WeChat
//! rotates a classic token for every fetch, also for a fetch this broker
//! gave up on (`fetch_timeout`) that WeChat carried out anyway, and for
//! every fetch of another party holding the secret. So the refresher asks
//! upstream about its held access token with a cheap call that has a
//! quota of its own (`get_api_domain_ip`, [`crate::wechat::TokenCheck`]):
//! after a fetch that timed out, and at a modest interval.
//!
//! A rejection of the held token, which the broker did not supersede, is
//! a fight: logged at error level once per episode, counted in
//! `wxbroker_token_fights_total`, and refreshed once through the normal
//! compare-and-refresh (`min_forced_interval` holds). Never a ping-pong:
//! when the token a check's refresh brought is rejected by a later check
//! too, something keeps fetching, and the refresher counts it but does
//! not refresh again on a check; clients' reports and the proactive
//! refresh go on as before.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::coordination::Coordination;
use super::invalidation::SeenBy;
use super::Refresher;
use crate::engine::{CredentialRecord, InvalidateOutcome};
use crate::errors::Chain;
use crate::wechat::{is_token_rejected, FetchError};

/// When a refresher checks its held token upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenChecks {
    /// The periodic check, this long after the last one.
    pub every: Duration,
    /// After a fetch that timed out, a check this long after it, for
    /// each entry: by default once the fetch WeChat may still have
    /// carried out has surely landed, and once WeChat's overlap for the
    /// token that fetch replaced has run out.
    pub after_timeout: Vec<Duration>,
}

impl Default for TokenChecks {
    fn default() -> Self {
        TokenChecks {
            every: Duration::from_secs(10 * 60),
            after_timeout: vec![Duration::from_secs(30), Duration::from_secs(330)],
        }
    }
}

impl Refresher {
    /// Whether this refresher checks its token: an access token whose
    /// source has a check.
    pub(super) fn checks_tokens(&self) -> bool {
        self.checks.is_some()
    }

    /// When the next check is due.
    pub(super) fn next_check_at(&self) -> Instant {
        self.checks_after_timeout
            .iter()
            .copied()
            .fold(self.next_check, Instant::min)
    }

    /// After a fetch that timed out: WeChat may have carried it out and
    /// rotated the token, so check the held one later.
    pub(super) fn check_after_timeout(&mut self) {
        let Some(checks) = &self.checks else { return };
        let now = Instant::now();
        self.checks_after_timeout = checks.after_timeout.iter().map(|d| now + *d).collect();
    }

    /// Runs the check that is due.
    pub(super) async fn due_check(&mut self, coordination: &mut dyn Coordination) {
        let Some(every) = self.checks.as_ref().map(|checks| checks.every) else {
            return;
        };
        let now = Instant::now();
        let after_timeout = self.checks_after_timeout.iter().any(|at| *at <= now);
        self.checks_after_timeout.retain(|at| *at > now);
        if self.next_check <= now {
            self.next_check = now + every;
        }
        let seen_by = if after_timeout {
            SeenBy::CheckAfterTimeout
        } else {
            SeenBy::Check
        };
        self.check_held(coordination, seen_by).await;
    }

    /// Asks upstream about the held token, if one is held and valid and
    /// no refresh of it is already scheduled.
    async fn check_held(&mut self, coordination: &mut dyn Coordination, seen_by: SeenBy) {
        if self.deferred.is_some() {
            return;
        }
        let Some(held) = self.current().filter(|token| token.is_valid(self.now_ms())) else {
            return;
        };
        let source = self.source.clone();
        let Some(check) = source.token_check() else {
            return;
        };
        let result = check.check(&held.value).await;
        let label = match &result {
            Ok(()) => "valid",
            Err(FetchError::Api { errcode, .. }) if is_token_rejected(*errcode) => "rejected",
            Err(_) => "failed",
        };
        self.series.count_check(label);
        match result {
            Ok(()) => {
                debug!(token = %held.value.fingerprint(), "the held token checks out upstream");
            }
            Err(FetchError::Api { errcode, .. }) if is_token_rejected(errcode) => {
                self.rejected_by_check(coordination, &held, errcode, seen_by)
                    .await;
            }
            Err(err) => {
                debug!(error = %Chain(&err), "could not check the held token upstream");
            }
        }
    }

    /// Upstream rejected the token this broker holds and did not replace.
    async fn rejected_by_check(
        &mut self,
        coordination: &mut dyn Coordination,
        held: &CredentialRecord,
        errcode: i64,
        seen_by: SeenBy,
    ) {
        if self.held_from_check {
            // The token the last check's refresh brought is dead too:
            // something keeps fetching, and a refresh now would only
            // kill its token in turn.
            let age = Duration::from_millis(self.now_ms().saturating_sub(held.fetched_at_ms));
            self.count_fight(&held.value, age, seen_by);
            debug!(token = %held.value.fingerprint(), errcode, "the token a check's refresh brought was rejected too; not refreshing again on a check");
            return;
        }
        info!(
            token = %held.value.fingerprint(),
            errcode,
            "upstream rejected the held token on the broker's own check; refreshing once"
        );
        self.check_asked = true;
        let outcome = self
            .invalidate(coordination, &held.value, true, seen_by)
            .await;
        if matches!(
            outcome,
            InvalidateOutcome::AlreadyRotated | InvalidateOutcome::Unchanged
        ) {
            self.check_asked = false;
        }
    }
}
