//! What the scheduler does with a finished unit of work: it adopts what
//! a fetch, an exchange or a recovery brought, counts each fetch by
//! result, and applies the engine's policy to a failed child alone
//! (DESIGN.md section 4, rule 5: a backoff or a hold), logging each
//! cause once a minute however many children meet it.

use std::time::Duration;

use tracing::{error, info, warn};

use super::tasks::Outcome;
use super::Scheduler;
use crate::children::policy::{self, Failed};
use crate::clock::next_beijing_midnight;
use crate::engine::schedule;
use crate::errors::Chain;
use crate::wechat::ErrorClass;

/// How soon a child another broker of the fleet is refreshing is looked
/// at again.
const FLEET_RECHECK: Duration = Duration::from_secs(2);

impl Scheduler {
    pub(super) async fn finish(&mut self, outcome: Outcome) {
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
}
