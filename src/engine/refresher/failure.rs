//! A fetch that failed (rule 5): what the failure means decides when the
//! next attempt is and whether the credential is held until an operator
//! or the next Beijing day fixes it; it is logged with what to do about
//! it. An operator's reset of WeChat's daily quota lifts its hold.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::schedule::{self, Failure};
use super::{Refresher, LOG_TARGET};
use crate::clock::next_beijing_midnight;
use crate::engine::LastError;
use crate::errors::Chain;
use crate::wechat::{ErrorClass, FetchError};

/// Why an attempt did not produce a token.
pub(super) enum AttemptError {
    Upstream(FetchError),
    BudgetSpent,
}

impl Refresher {
    /// Rule 5: what a failure means decides when the next attempt is.
    pub(super) fn on_failure(&mut self, err: AttemptError) {
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
                    target: LOG_TARGET,
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
                warn!(target: LOG_TARGET, error = %Chain(&err), retry_in = ?wait, "{credential} fetch failed; retrying");
            }
            ErrorClass::Config => match err.blocked_ip() {
                Some(ip) => error!(
                    target: LOG_TARGET,
                    errcode = err.errcode(),
                    blocked_ip = %ip,
                    fix = format!("add {ip} to the IP whitelist of the WeChat console"),
                    error = %Chain(&err),
                    retry_in = ?wait,
                    "{credential} fetch refused: wechat refuses the broker's address {ip}"
                ),
                None => error!(
                    target: LOG_TARGET,
                    errcode = err.errcode(),
                    fix = err.fix().unwrap_or_default(),
                    error = %Chain(&err),
                    retry_in = ?wait,
                    "{credential} fetch refused: configuration error"
                ),
            },
            ErrorClass::QuotaExhausted => error!(
                target: LOG_TARGET,
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
    pub(super) fn clear_quota_hold(&mut self) {
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
        info!(target: LOG_TARGET, "wechat quota reset: lifting the 45009 hold; fetching now");
        self.hold_until = None;
        self.next_attempt = Instant::now();
        self.publish(|view| view.clear_failure());
    }
}
