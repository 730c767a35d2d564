//! One upstream call within the day's budget, and what its answer does
//! to the held credential: a new one adopted, the held one answered
//! again and kept, a lifetime too short to schedule by, a token another
//! broker of the fleet stored.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::time::Instant;
use tracing::{error, info};

use super::coordination::Coordination;
use super::failure::AttemptError;
use super::schedule;
use super::{Refresher, LOG_TARGET};
use crate::engine::CredentialRecord;
use crate::wechat::{FetchError, TokenGrant, SHORT_LIFETIME_LABEL};

/// When a credential sent for at `sent_at_ms` and granted `expires_in`
/// seconds expires. Checked arithmetic: the lifetime is clamped upstream,
/// but a wrapped sum would make a fresh token look long dead.
fn expiry_ms(sent_at_ms: u64, expires_in: u64) -> u64 {
    sent_at_ms.saturating_add(expires_in.saturating_mul(1000))
}

impl Refresher {
    /// Whether upstream answers a fetch with the credential already held
    /// while that one is valid: `stable_token` before its rotation window
    /// (rule 3), and every ticket endpoint (DESIGN.md section 11).
    pub(super) fn answers_held_again(&self) -> bool {
        self.spec.reissue.repeats_held()
    }

    /// An answer that repeats the held credential is a success, but never
    /// extends its life: it still dies when it first would have (a stable
    /// token answers with what is left, a ticket with its full lifetime
    /// again). Ask again later, never spinning: a stable token after a
    /// fraction of the time left, a ticket when it dies, since until then
    /// upstream hands out the same one ([`schedule::recheck_after`]).
    pub(super) fn keep_held(&mut self, grant: TokenGrant, sent_at: u64) {
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
            target: LOG_TARGET,
            value = %grant.token.fingerprint(),
            expires_in = left.as_secs(),
            recheck_in = ?wait,
            "upstream answered with the credential already held; keeping its expiry"
        );
        self.next_attempt = Instant::now() + wait;
        self.publish(|view| {
            if let Some(held) = &view.token {
                view.token = Some(Arc::new(CredentialRecord {
                    expires_at_ms: held_expiry,
                    ..(**held).clone()
                }));
            }
            view.clear_failure();
        });
    }

    /// One upstream call, within the daily budget. Returns the grant and
    /// the unix millisecond the request was sent, the earliest WeChat could
    /// have issued the token, so `expires_at` is never later than WeChat's.
    pub(super) async fn attempt(
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
        let (result_label, errcode_label) = match &result {
            Ok(_) => ("ok", None),
            Err(err) => (err.result_label(), Some(err.errcode_label())),
        };
        self.series.fetched(
            self.credential.label(),
            result_label,
            errcode_label,
            started.elapsed(),
        );
        result
            .map(|grant| (grant, sent_at))
            .map_err(AttemptError::Upstream)
    }

    pub(super) fn adopt(&mut self, grant: TokenGrant, sent_at: u64) {
        let short_lived = schedule::is_short_lifetime(
            Duration::from_secs(grant.expires_in),
            self.spec.refresh_before,
        );
        if !short_lived {
            self.backoff.reset();
        }
        self.hold_until = None;
        self.held_from_check = std::mem::take(&mut self.check_asked);
        let token = CredentialRecord {
            value: grant.token,
            expires_at_ms: expiry_ms(sent_at, grant.expires_in),
            fetched_at_ms: self.now_ms(),
        };
        info!(
            target: LOG_TARGET,
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
            target: LOG_TARGET,
            expires_in,
            refresh_before = ?self.spec.refresh_before,
            next_fetch_in = ?wait,
            "upstream granted a lifetime no longer than refresh_before; serving it while it lives, pacing the next fetches by the error backoff"
        );
        self.series
            .count_error(self.credential.label(), SHORT_LIFETIME_LABEL);
    }

    /// Serves `stored`, a token another broker fetched and stored.
    pub(super) fn take_stored(&mut self, stored: CredentialRecord) {
        info!(
            target: LOG_TARGET,
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
